# The tutorial's warm-up lessons: XOR (one linear unit vs. an MLP) and the activation functions.
# Independent of the data; the report can include its outputs.
rule demos:
    input:
        code=code("demos"),
    output:
        xor="reports/demos/xor.json",
        xor_points="reports/figures/xor_points.png",
        xor_boundaries="reports/figures/xor_boundaries.png",
        table="reports/demos/activations.csv",
        table_md="reports/demos/activations.md",
        activations="reports/figures/activations.png",
    log:
        "logs/demos.log",
    benchmark:
        "benchmarks/stages/demos.tsv"
    priority: -5
    conda:
        "../envs/pipeline.yaml"
    # It computes on one thread (--threads 1 below) but reserves two cores, so on two cores it waits
    # until both are free, after the search: started beside download, it held a core when prepare
    # ended, and the search's two-core group then waited behind every training (4 idle core-minutes).
    # ONE_THREAD_ENV undoes the thread variables Snakemake sets to 2, so that the fork server serves
    # it (it declines a job whose import-time settings differ): the TensorFlow import cost 2.6 s.
    threads: 2
    resources:
        mem_mb=1000,
    params:
        flags=section_flags("demos"),
        seed=config["seed"],
    shell:
        f"{ONE_THREAD_ENV} fashion-mlp demos {{params.flags}} --seed {{params.seed}} --threads 1"
        " --xor_json {output.xor} --xor_points_png {output.xor_points}"
        " --xor_boundaries_png {output.xor_boundaries} --activations_csv {output.table}"
        " --activations_md {output.table_md} --activations_png {output.activations} > {log} 2>&1"
