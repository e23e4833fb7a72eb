# Hyper-parameter search on the validation split: `snakemake tune` (or `make tune`).
# Candidates are method variants; they reuse the original and oracle checkpoints.


rule tune:
    input:
        P.tuning_targets(config),


# round 2 of the search (src/unlearn_da/settings/search.py), planned from round 1's scores
checkpoint plan_round2:
    input:
        P.tuning_metrics(config),
    output:
        "results/{run}/tuning/round2.json",
    log:
        "results/{run}/logs/tuning/plan_round2.log",
    localrule: True
    conda:
        ENV
    params:
        space=P.as_json(tuning_space(config)),
        candidates=P.as_json(TUNING),
        budget=config["tuning"]["budget"],
        widen=config["tuning"]["widen"],
        seed=config["tuning"]["seed"],
        code=P.rule_code("plan_tuning"),
    shell:
        "python -m unlearn_da plan-round2 --inputs {input:q} --space {params.space:q}"
        " --candidates {params.candidates:q} --budget {params.budget:q} --widen {params.widen:q}"
        " --seed {params.seed:q} --out {output:q} > {log:q} 2>&1"


# the DA variants' weights (of each name+da), at their base method's choice over both rounds
checkpoint plan_da_weights:
    input:
        round1=P.tuning_metrics(config),
        round2=round2_metrics,
        plan="results/{run}/tuning/round2.json",
    output:
        "results/{run}/tuning/da_round.json",
    log:
        "results/{run}/logs/tuning/plan_da_weights.log",
    localrule: True
    conda:
        ENV
    params:
        candidates=P.as_json(TUNING),
        methods=P.da_tuning_methods(config),
        weights=config["tuning"]["da_weights"],
        code=P.rule_code("plan_tuning"),
    shell:
        "python -m unlearn_da plan-da --inputs {input.round1:q} {input.round2:q}"
        " --candidates {params.candidates:q} --round2 {input.plan:q} --methods {params.methods:q}"
        " --weights {params.weights:q} --out {output:q} > {log:q} 2>&1"


rule select_hyperparameters:
    input:
        round1=P.tuning_metrics(config),
        round2=round2_metrics,
        da=da_metrics,
        plans=[
            "results/{run}/tuning/round2.json",
            "results/{run}/tuning/da_round.json",
        ],
    output:
        md="results/{run}/tuning/selection.md",
        csv="results/{run}/tuning/selection.csv",
        json="results/{run}/tuning/selection.json",
        figures=directory("results/{run}/tuning/figures"),
    log:
        "results/{run}/logs/tuning/select.log",
    localrule: True
    conda:
        ENV
    params:
        candidates=P.as_json(TUNING),
        # a function: the code hashes it holds are computed only when a search is in the DAG
        provenance=lambda wildcards: P.as_json(P.tuning_provenance(config)),
        code=P.rule_code("select"),
        prefix=lambda wc, output: output.md.removesuffix(".md"),
    shell:
        "python -m unlearn_da select --inputs {input.round1:q} {input.round2:q} {input.da:q}"
        " --candidates {params.candidates:q} --plans {input.plans:q} --provenance {params.provenance:q}"
        " --figures-dir {output.figures:q} --out-prefix {params.prefix:q} > {log:q} 2>&1"


# The DA metric's eigenspace size (`make da-energy`): the energy rule that best separates the
# original from the oracle on the TRAINING features of the tuning seeds (never a reported seed,
# never the test set). The result is copied by hand into evaluation.da.energy, marked (ours).
rule da_energy:
    input:
        P.da_energy_targets(config),


rule choose_da_energy:
    input:
        features=[
            f
            for pair in P.da_energy_pairs(config)
            for f in (pair["original"], pair["oracle"])
        ],
        manifests=[
            f"{pair['split']}/manifest.json" for pair in P.da_energy_pairs(config)
        ],
    output:
        md="results/{run}/tuning/da_energy.md",
        json="results/{run}/tuning/da_energy.json",
    log:
        "results/{run}/logs/tuning/da_energy.log",
    localrule: True
    conda:
        ENV
    params:
        pairs=P.as_json(P.da_energy_pairs(config)),
        da=P.as_json(P.da_energy_params(config)),
        seed=config["evaluation"]["seed"],
        provenance=P.as_json(P.da_energy_provenance(config)),
        code=P.rule_code("choose_da_energy"),
        prefix=lambda wc, output: output.md.removesuffix(".md"),
    shell:
        "python -m unlearn_da choose-da-energy --pairs {params.pairs:q} --params {params.da:q}"
        " --seed {params.seed:q} --provenance {params.provenance:q} --out-prefix {params.prefix:q} > {log:q} 2>&1"
