rule report:
    input:
        metrics=expand("reports/metrics/{model}.json", model=EVALUATED),
        presets="reports/presets",  # recorded runs of `fashion-mlp preset`, a row each (docs/models.md)
        predictions=expand("reports/predictions/{model}.csv", model=EVALUATED),  # paired McNemar tests
        explain=expand("reports/explain/{model}.json", model=EVALUATED),
        stats="reports/data_stats.json",
        best="reports/tuning/best_hparams.json",
        trials_figure="reports/figures/tuning_trials.png",
        champion="reports/champion.json",
        xor="reports/demos/xor.json",
        activations="reports/demos/activations.md",
        lessons=expand("reports/lessons/{lesson}.json", lesson=LESSONS),  # the tutorial's claims, checked
        demo_figures=[
            "reports/figures/xor_points.png",
            "reports/figures/xor_boundaries.png",
            "reports/figures/activations.png",
        ],
        code=code("report"),
    output:
        summary="reports/summary.md",
        headline="reports/headline.json",  # dvc.yaml's one metrics file: a few figures per model
        chart=report("reports/figures/model_comparison.png", caption="../report/comparison.rst", category="Summary"),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/stages/report.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=500,
    params:
        models=EVALUATED,  # the rows (--params): a new or removed entry reruns report
        lessons=LESSONS,  # the lessons' sections, likewise
    shell:
        "fashion-mlp report --params params.yaml --metrics reports/metrics --predictions reports/predictions"
        " --data_stats {input.stats} --tuning {input.best} --champion {input.champion} --demos_xor {input.xor}"
        " --demos_activations {input.activations} --explain reports/explain --lessons reports/lessons"
        " --figures_dir reports/figures --presets_dir {input.presets} --chart_out {output.chart} --out {output.summary}"
        " --headline_out {output.headline} > {log} 2>&1"
