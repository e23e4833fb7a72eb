# Hyper-parameter search on the validation split: `snakemake tune` (or `make tune`).
# Candidates are method variants; they reuse the original and oracle checkpoints.


rule tune:
    input:
        P.tuning_targets(config),


rule select_hyperparameters:
    input:
        P.tuning_metrics(config),
    output:
        md="results/{run}/tuning/selection.md",
        csv="results/{run}/tuning/selection.csv",
        json="results/{run}/tuning/selection.json",
    log:
        "results/{run}/logs/tuning/select.log",
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
        code=P.rule_code("choose_da_energy"),
        prefix=lambda wc, output: output.md.removesuffix(".md"),
    shell:
        "python -m unlearn_da choose-da-energy --pairs {params.pairs:q} --params {params.da:q}"
        " --seed {params.seed} --out-prefix {params.prefix} > {log} 2>&1"
