rule metrics:
    input:
        unpack(split_files),
        unpack(model_inputs),
        data=DATA,
        meta=DATA_META,
    output:
        "results/{run}/{scenario}/seed{seed}/metrics/{model}.json",
    log:
        "results/{run}/logs/{scenario}/seed{seed}/metrics_{model}.log",
    conda:
        ENV
    params:
        hp=P.as_json(P.metrics_params(config)),
        code=P.rule_code("metrics"),
        split=lambda wc, input: os.path.dirname(input.manifest),
    shell:
        "python -m unlearn_da metrics --data {input.data:q} --split {params.split:q}"
        " --features {input.features:q} --model-meta {input.model_meta:q}"
        " --model {wildcards.model:q} --scenario {wildcards.scenario:q}"
        " --seed {wildcards.seed:q} --params {params.hp:q} --code {params.code:q}"
        " --out {output:q} > {log:q} 2>&1"
