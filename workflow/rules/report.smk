rule aggregate:
    input:
        scenario_metrics,
    output:
        md=report(
            "results/{dataset}-{arch}/{scenario}/table.md",
            caption="../report/table.rst",
            category="Tables",
            labels={"scenario": "{scenario}", "table": "main"},
        ),
        csv="results/{dataset}-{arch}/{scenario}/table.csv",
        tex="results/{dataset}-{arch}/{scenario}/table.tex",
        summary="results/{dataset}-{arch}/{scenario}/summary.json",
        long="results/{dataset}-{arch}/{scenario}/metrics_long.csv",
    log:
        "results/{dataset}-{arch}/logs/{scenario}/aggregate.log",
    localrule: True
    conda:
        ENV
    params:
        models=MODELS,
        code=P.rule_code("aggregate"),
        out_dir=lambda wc, output: os.path.dirname(output.summary),
    shell:
        "python -m unlearn_da aggregate --inputs {input:q} --models {params.models:q}"
        " --scenario {wildcards.scenario} --title '{wildcards.dataset} / {wildcards.arch}'"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule plot_accuracy:
    input:
        "results/{dataset}-{arch}/{scenario}/metrics_long.csv",
    output:
        png=report(
            "results/{dataset}-{arch}/{scenario}/figures/accuracy.png",
            caption="../report/accuracy.rst",
            category="Figures",
            labels={"scenario": "{scenario}", "figure": "accuracy"},
        ),
        pdf="results/{dataset}-{arch}/{scenario}/figures/accuracy.pdf",
    log:
        "results/{dataset}-{arch}/logs/{scenario}/plot_accuracy.log",
    localrule: True
    conda:
        ENV
    params:
        models=MODELS,
        code=P.rule_code("plots"),
    shell:
        "python -m unlearn_da plot --long-csv {input:q} --models {params.models:q}"
        " --title '{wildcards.dataset} / {wildcards.arch} — {wildcards.scenario}'"
        " --out {output.png:q} > {log} 2>&1"
