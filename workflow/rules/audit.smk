# The oracle-ensemble audit (docs/audit.md): one forget set (audit.split_seed), K training seeds;
# K oracles twice (retrain, retrain_alt), K originals and K unlearned models per method, their
# logits on the audit's examples, then per-example KLoM and U-LiRA per scenario.
rule audit_train_oracle:
    input:
        unpack(audit_split_files),
        data=DATA,
        meta=DATA_META,
    output:
        model="results/{run}/audit/{scenario}/train{train_seed}/models/{oracle}.pt",
        meta="results/{run}/audit/{scenario}/train{train_seed}/models/{oracle}.pt.meta.json",
    log:
        "results/{run}/logs/audit/{scenario}/train{train_seed}/train_{oracle}.log",
    wildcard_constraints:
        scenario=CLEAN_SCENARIO,
        train_seed="[0-9]+",
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        hp=P.as_json(P.train_params(config)),
        code=P.rule_code("train"),
        split=lambda wc, input: os.path.dirname(input.manifest),
        seed=lambda wc: P.audit_oracle_seed(wc.oracle, wc.train_seed),
    shell:
        "python -m unlearn_da train --data {input.data:q} --split {params.split:q}"
        " --role {wildcards.oracle:q} --seed {params.seed:q} --threads {threads}"
        " --params {params.hp:q} --code {params.code:q} --out {output.model:q} > {log:q} 2>&1"


rule audit_unlearn:
    input:
        unpack(audit_split_files),
        data=DATA,
        meta=DATA_META,
        original="results/{run}/seed{train_seed}/models/original.pt",
        original_meta="results/{run}/seed{train_seed}/models/original.pt.meta.json",
    output:
        model="results/{run}/audit/{scenario}/train{train_seed}/models/{method}.pt",
        meta="results/{run}/audit/{scenario}/train{train_seed}/models/{method}.pt.meta.json",
        steps="results/{run}/audit/{scenario}/train{train_seed}/models/{method}.steps.csv",
    log:
        "results/{run}/logs/audit/{scenario}/train{train_seed}/unlearn_{method}.log",
    wildcard_constraints:
        scenario=CLEAN_SCENARIO,
        train_seed="[0-9]+",
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        hp=lambda wc: P.as_json(P.unlearn_params(config, wc.method)),
        code=lambda wc: P.method_code(config, wc.method),
        split=lambda wc, input: os.path.dirname(input.manifest),
    shell:
        "python -m unlearn_da unlearn --data {input.data:q} --split {params.split:q}"
        " --original {input.original:q} --method {wildcards.method:q}"
        " --seed {wildcards.train_seed:q} --threads {threads} --params {params.hp:q}"
        " --code {params.code:q} --out {output.model:q} --steps {output.steps:q} > {log:q} 2>&1"


rule audit_logits:
    input:
        unpack(audit_split_files),
        data=DATA,
        meta=DATA_META,
        models=audit_model_files,
    output:
        logits="results/{run}/audit/{scenario}/logits/{model}.npz",
        meta="results/{run}/audit/{scenario}/logits/{model}.npz.meta.json",
    log:
        "results/{run}/logs/audit/{scenario}/logits_{model}.log",
    wildcard_constraints:
        scenario=CLEAN_SCENARIO,
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        hp=P.as_json(P.audit_logits_params(config)),
        code=P.rule_code("audit_logits"),
        split=lambda wc, input: os.path.dirname(input.manifest),
        seeds=P.audit_train_seeds(config),
    shell:
        "python -m unlearn_da audit-logits --data {input.data:q} --split {params.split:q}"
        " --models {input.models:q} --train-seeds {params.seeds:q} --threads {threads}"
        " --params {params.hp:q} --code {params.code:q} --out {output.logits:q} > {log:q} 2>&1"


rule audit:
    input:
        unpack(audit_logits_inputs),
    output:
        json="results/{run}/audit/{scenario}/audit.json",
        md=report(
            "results/{run}/audit/{scenario}/audit.md",
            caption="../report/audit_table.rst",
            category="Audit",
            labels={"scenario": "{scenario}", "table": "audit (Markdown)"},
        ),
        csv="results/{run}/audit/{scenario}/audit.csv",
        scores="results/{run}/audit/{scenario}/scores.npz",
        klom=report(
            "results/{run}/audit/{scenario}/figures/klom.png",
            caption="../report/audit_klom.rst",
            category="Audit",
            labels={"scenario": "{scenario}", "figure": "KLoM per example"},
        ),
        roc=report(
            "results/{run}/audit/{scenario}/figures/roc.png",
            caption="../report/audit_roc.rst",
            category="Audit",
            labels={"scenario": "{scenario}", "figure": "U-LiRA ROC"},
        ),
    log:
        "results/{run}/logs/audit/{scenario}/audit.log",
    wildcard_constraints:
        scenario=CLEAN_SCENARIO,
    conda:
        ENV
    params:
        hp=P.as_json(P.audit_params(config)),
        code=P.rule_code("audit"),
        rows=lambda wc: P.audit_rows(config),
        title=TITLE,
        out_dir=lambda wc, output: os.path.dirname(output.json),
    shell:
        "python -m unlearn_da audit --reference {input.reference:q} --inputs {input.rows:q}"
        " --rows {params.rows:q} --scenario {wildcards.scenario:q} --title {params.title:q}"
        " --params {params.hp:q} --code {params.code:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
