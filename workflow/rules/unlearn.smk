rule unlearn:
    input:
        unpack(split_files),
        unpack(original_files),
        data=DATA,
        meta=DATA_META,
    output:
        **model_outputs("results/{run}/{scenario}/seed{seed}", "{method}"),
        steps="results/{run}/{scenario}/seed{seed}/models/{method}.steps.csv",
    log:
        "results/{run}/logs/{scenario}/seed{seed}/unlearn_{method}.log",
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        hp=lambda wc: P.as_json(
            P.unlearn_params(config, wc.method, P.load_planned(config))
        ),
        code=lambda wc: P.method_code(config, wc.method, P.load_planned(config)),
        split=lambda wc, input: os.path.dirname(input.manifest),
        features=P.as_json(P.features_params(config)),
    shell:
        "python -m unlearn_da unlearn --data {input.data:q} --split {params.split:q}"
        " --original {input.original:q} --method {wildcards.method:q}"
        " --seed {wildcards.seed:q} --threads {threads} --params {params.hp:q}"
        " --code {params.code:q} --out {output.model:q} --steps {output.steps:q}"
        " --features-out {output.features:q} --features-params {params.features:q} > {log:q} 2>&1"
