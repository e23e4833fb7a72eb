rule train_original:
    input:
        data=DATA,
        meta=DATA_META,
    output:
        **model_outputs("results/{run}/seed{seed}", "original"),
    log:
        "results/{run}/logs/seed{seed}/train_original.log",
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        hp=P.as_json(P.train_params(config)),
        code=P.rule_code("train"),
        features=P.as_json(P.features_params(config)),
    shell:
        "python -m unlearn_da train --data {input.data:q} --role original"
        " --seed {wildcards.seed:q} --threads {threads} --params {params.hp:q}"
        " --code {params.code:q} --out {output.model:q}"
        " --features-out {output.features:q} --features-params {params.features:q} > {log:q} 2>&1"


rule train_original_backdoor:
    # a backdoor scenario's original learns the trigger: trained on D with the poisoned forget set
    input:
        unpack(split_files),
        data=DATA,
        meta=DATA_META,
    output:
        **model_outputs("results/{run}/{scenario}/seed{seed}", "original"),
    log:
        "results/{run}/logs/{scenario}/seed{seed}/train_original.log",
    wildcard_constraints:
        scenario=BACKDOOR_SCENARIO,
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        hp=P.as_json(P.train_params(config, "backdoor")),
        code=P.rule_code("train"),
        features=P.as_json(P.features_params(config)),
        split=lambda wc, input: os.path.dirname(input.manifest),
    shell:
        "python -m unlearn_da train --data {input.data:q} --split {params.split:q} --role original"
        " --seed {wildcards.seed:q} --threads {threads} --params {params.hp:q}"
        " --code {params.code:q} --out {output.model:q}"
        " --features-out {output.features:q} --features-params {params.features:q} > {log:q} 2>&1"


rule train_retrain:
    input:
        unpack(split_files),
        data=DATA,
        meta=DATA_META,
    output:
        **model_outputs("results/{run}/{scenario}/seed{seed}", "{oracle}"),
    log:
        "results/{run}/logs/{scenario}/seed{seed}/train_{oracle}.log",
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        hp=P.as_json(P.train_params(config)),
        code=P.rule_code("train"),
        features=P.as_json(P.features_params(config)),
        split=lambda wc, input: os.path.dirname(input.manifest),
    shell:
        "python -m unlearn_da train --data {input.data:q} --split {params.split:q}"
        " --role {wildcards.oracle:q} --seed {wildcards.seed:q} --threads {threads}"
        " --params {params.hp:q} --code {params.code:q} --out {output.model:q}"
        " --features-out {output.features:q} --features-params {params.features:q} > {log:q} 2>&1"
