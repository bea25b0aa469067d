rule download:
    input:
        code=code("download"),
    output:
        RAW,
    log:
        "logs/download.log",
    benchmark:
        "benchmarks/stages/download.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=500,
    params:
        flags=section_flags("data"),
    shell:
        "fashion-mlp download {params.flags} --out_dir data/raw > {log} 2>&1"


rule prepare:
    input:
        RAW,
        code("prepare"),  # images.py among them: the scaling, shared with predict and serving
    output:
        train="data/prepared/train.npz",
        test="data/prepared/test.npz",
        stats="reports/data_stats.json",
    log:
        "logs/prepare.log",
    benchmark:
        "benchmarks/stages/prepare.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        flags=section_flags("prepare"),
        seed=config["seed"],
    shell:
        "fashion-mlp prepare {params.flags} --seed {params.seed} --raw_dir data/raw"
        " --train_out {output.train} --test_out {output.test} --stats_out {output.stats} > {log} 2>&1"
