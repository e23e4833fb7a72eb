# Hyper-parameter search on the validation split: `snakemake tune` (or `make tune`).
# Candidates are method variants; they reuse the original and oracle checkpoints.


rule tune:
    input:
        P.tuning_targets(config),


rule select_hyperparameters:
    input:
        P.tuning_metrics(config),
    output:
        md="results/{dataset}-{arch}/tuning/selection.md",
        csv="results/{dataset}-{arch}/tuning/selection.csv",
        json="results/{dataset}-{arch}/tuning/selection.json",
    log:
        "results/{dataset}-{arch}/logs/tuning/select.log",
    localrule: True
    conda:
        ENV
    params:
        candidates=P.as_json(TUNING),
        code=P.rule_code("select"),
        prefix=lambda wc, output: output.md.removesuffix(".md"),
    shell:
        "python -m unlearn_da select --inputs {input:q} --candidates {params.candidates:q}"
        " --out-prefix {params.prefix} > {log} 2>&1"
