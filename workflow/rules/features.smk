rule extract_features:
    input:
        unpack(backdoor_split_files),
        data=DATA,
        meta=DATA_META,
        model="results/{run}/{where}/models/{model}.pt",
        model_meta="results/{run}/{where}/models/{model}.pt.meta.json",
    output:
        features="results/{run}/{where}/features/{model}.npz",
        meta="results/{run}/{where}/features/{model}.npz.meta.json",
    log:
        "results/{run}/logs/{where}/features_{model}.log",
    benchmark:
        "results/{run}/benchmarks/{where}/features_{model}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
    params:
        hp=P.as_json(P.features_params(config)),
        code=P.rule_code("extract_features"),
        split=lambda wc, input: (
            f"--split {os.path.dirname(input.manifest)}"
            if "manifest" in input.keys()
            else ""
        ),
    shell:
        "python -m unlearn_da features --data {input.data} --model {input.model:q} {params.split}"
        " --threads {threads} --params {params.hp:q} --code {params.code}"
        " --out {output.features:q} > {log:q} 2>&1"
