rule aggregate:
    input:
        metrics=scenario_metrics,
        reference=P.reference_files(),
    output:
        md=report(
            "results/{run}/{scenario}/table.md",
            caption="../report/table.rst",
            category="Tables",
            labels={"scenario": "{scenario}", "table": "both (Markdown)"},
        ),
        csv=report(
            "results/{run}/{scenario}/table.csv",
            caption="../report/table_csv.rst",
            category="Tables",
            labels={"scenario": "{scenario}", "table": "output metrics (CSV)"},
        ),
        csv_features=report(
            "results/{run}/{scenario}/table_features.csv",
            caption="../report/table_features.rst",
            category="Tables",
            labels={"scenario": "{scenario}", "table": "feature space (CSV)"},
        ),
        tex="results/{run}/{scenario}/table.tex",
        summary="results/{run}/{scenario}/summary.json",
        headline="results/{run}/{scenario}/headline.json",
        long="results/{run}/{scenario}/metrics_long.csv",
    log:
        "results/{run}/logs/{scenario}/aggregate.log",
    localrule: True
    conda:
        ENV
    params:
        models=MODELS,
        dataset=config["dataset"],
        arch=config["arch"],
        title=TITLE,
        code=P.rule_code("aggregate"),
        out_dir=lambda wc, output: os.path.dirname(output.summary),
        reference_dir=lambda wc, input: (
            os.path.dirname(input.reference[0]) if input.reference else P.REFERENCE_DIR
        ),
    shell:
        "python -m unlearn_da aggregate --inputs {input.metrics:q} --models {params.models:q}"
        " --scenario {wildcards.scenario:q} --dataset {params.dataset:q} --arch {params.arch:q}"
        " --title {params.title:q}"
        " --reference-dir {params.reference_dir:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule plots:
    input:
        unpack(plot_inputs),
    output:
        **{
            name: report(
                f"results/{{run}}/{{scenario}}/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Figures",
                subcategory="{scenario}",
                labels={"scenario": "{scenario}", "figure": name},
            )
            for name in FIGURES
        },
        pdfs=expand(
            "results/{{run}}/{{scenario}}/figures/{name}.pdf",
            name=FIGURES,
        ),
        da_k_csv="results/{run}/{scenario}/da_k.csv",
        da_k_json="results/{run}/{scenario}/da_k.json",
    log:
        "results/{run}/logs/{scenario}/plots.log",
    localrule: True
    conda:
        ENV
    params:
        models=MODELS,
        title=lambda wc: f"{TITLE} — {wc.scenario}",
        code=P.rule_code("plots"),
        split=lambda wc, input: os.path.dirname(input.manifest),
        out_dir=lambda wc, output: os.path.dirname(output.pdfs[0]),
        max_points=config["evaluation"]["embedding"]["max_points"],
        seed=config["evaluation"]["seed"],
        da=P.as_json(config["evaluation"]["da"]),
        da_k_out=lambda wc, output: output.da_k_csv.removesuffix(".csv"),
    shell:
        "python -m unlearn_da plot --long-csv {input.long:q} --metrics {input.metrics:q}"
        " --steps {input.steps:q} --embed-features {input.embed:q} --data {input.data:q}"
        " --split {params.split:q} --models {params.models:q}"
        " --title {params.title:q}"
        " --max-points {params.max_points:q} --seed {params.seed:q}"
        " --da-k-features {input.da_k:q} --da-params {params.da:q} --da-k-out {params.da_k_out:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule backdoor_figure:
    input:
        long="results/{run}/{scenario}/metrics_long.csv",
    output:
        png=report(
            "results/{run}/{scenario}/figures/asr.png",
            caption="../report/asr.rst",
            category="Figures",
            subcategory="{scenario}",
            labels={"scenario": "{scenario}", "figure": "asr"},
        ),
        pdf="results/{run}/{scenario}/figures/asr.pdf",
    log:
        "results/{run}/logs/{scenario}/backdoor_figure.log",
    wildcard_constraints:
        scenario=BACKDOOR_SCENARIO,
    localrule: True
    conda:
        ENV
    params:
        models=MODELS,
        title=lambda wc: f"{TITLE} — {wc.scenario}",
        code=P.rule_code("backdoor_figure"),
    shell:
        "python -m unlearn_da backdoor-figure --long-csv {input.long:q} --models {params.models:q}"
        " --title {params.title:q}"
        " --out {output.png:q} > {log:q} 2>&1"
