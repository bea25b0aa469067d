rule download:
    output:
        RAW,
    params:
        flags=section_flags("data"),
    log:
        "logs/download.log",
    benchmark:
        "benchmarks/stages/download.tsv"
    threads: 1
    resources:
        mem_mb=500,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "fashion-mlp download {params.flags} --out_dir data/raw > {log} 2>&1"


rule prepare:
    input:
        RAW,
        "workflow/fashion_mlp/prepare.py",
    output:
        train="data/prepared/train.npz",
        test="data/prepared/test.npz",
        stats="reports/data_stats.json",
    params:
        flags=section_flags("prepare"),
        seed=config["seed"],
    log:
        "logs/prepare.log",
    benchmark:
        "benchmarks/stages/prepare.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "fashion-mlp prepare {params.flags} --seed {params.seed} --raw_dir data/raw"
        " --train_out {output.train} --test_out {output.test} --stats_out {output.stats} > {log} 2>&1"
