rule report:
    input:
        metrics=expand("reports/metrics/{model}.json", model=MODELS),
        figures=expand("reports/figures/{model}_{kind}.png", model=MODELS, kind=FIGURE_KINDS),
        stats="reports/data_stats.json",
        code="workflow/fashion_mlp/report.py",
    output:
        summary="reports/summary.md",
        chart="reports/figures/model_comparison.png",
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=500,
    shell:
        "fashion-mlp report --metrics {input.metrics} --data_stats {input.stats}"
        " --figures_dir reports/figures --chart_out {output.chart} --out {output.summary} > {log} 2>&1"
