rule prepare_data:
    output:
        data=DATA,
        meta=DATA_META,
    log:
        "data/prepared/{run}/logs/prepare_data.log",
    conda:
        ENV
    params:
        dataset=config["dataset"],
        hp=P.as_json(P.data_params(config)),
        code=P.rule_code("prepare_data"),
    shell:
        "python -m unlearn_da prepare-data --dataset {params.dataset:q}"
        " --params {params.hp:q} --code {params.code:q} --out {output.data:q} > {log:q} 2>&1"


rule split:
    input:
        data=DATA,
        meta=DATA_META,
    output:
        forget=SPLIT_FILES["forget"],
        retain=SPLIT_FILES["retain"],
        manifest=SPLIT_FILES["manifest"],
    log:
        SPLIT_FILES["log"],
    wildcard_constraints:
        scenario=CLEAN_SCENARIO,
    conda:
        ENV
    params:
        code=P.rule_code("split"),
        out_dir=lambda wc, output: os.path.dirname(output.manifest),
    shell:
        "python -m unlearn_da split --data {input.data:q} --scenario {wildcards.scenario:q}"
        " --seed {wildcards.seed:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule split_backdoor:
    # the poisoned train images and the triggered test images, made once per (scenario, seed)
    input:
        data=DATA,
        meta=DATA_META,
    output:
        forget=SPLIT_FILES["forget"],
        retain=SPLIT_FILES["retain"],
        manifest=SPLIT_FILES["manifest"],
        poison=SPLIT_FILES["poison"],
    log:
        SPLIT_FILES["log"],
    wildcard_constraints:
        scenario=BACKDOOR_SCENARIO,
    conda:
        ENV
    params:
        hp=P.as_json(P.backdoor_params(config)),
        code=P.rule_code("split"),
        out_dir=lambda wc, output: os.path.dirname(output.manifest),
    shell:
        "python -m unlearn_da split --data {input.data:q} --scenario {wildcards.scenario:q}"
        " --seed {wildcards.seed:q} --params {params.hp:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
