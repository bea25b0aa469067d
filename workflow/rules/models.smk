rule train:
    input:
        data="data/prepared/train.npz",  # never test.npz: the test set is evaluate's alone
        code=["workflow/fashion_mlp/train.py", "workflow/fashion_mlp/models.py"],
    output:
        model="models/{model}.keras",
        history="reports/history/{model}.csv",
    params:
        flags=lambda w: section_flags("train", w.model),
        seed=config["seed"],
        experiment=config["mlflow"]["experiment"],
    log:
        "logs/train/{model}.log",
    benchmark:
        "benchmarks/train/{model}.tsv"
    threads: 2
    resources:
        mem_mb=2500,
    shell:
        "fashion-mlp train --model {wildcards.model} {params.flags} --seed {params.seed}"
        " --experiment {params.experiment} --data {input.data}"
        " --model_out {output.model} --history_out {output.history} > {log} 2>&1"


rule evaluate:
    input:
        model="models/{model}.keras",
        history="reports/history/{model}.csv",
        data="data/prepared/test.npz",
        code="workflow/fashion_mlp/evaluate.py",
    output:
        metrics="reports/metrics/{model}.json",
        predictions="reports/predictions/{model}.csv",
        confusion="reports/figures/{model}_confusion.png",
        curves="reports/figures/{model}_curves.png",
        grid="reports/figures/{model}_predictions.png",
    params:
        flags=section_flags("evaluate"),
        seed=config["seed"],
        experiment=config["mlflow"]["experiment"],
    log:
        "logs/evaluate/{model}.log",
    benchmark:
        "benchmarks/evaluate/{model}.tsv"
    threads: 2
    resources:
        mem_mb=1500,
    shell:
        "fashion-mlp evaluate {params.flags} --seed {params.seed} --experiment {params.experiment}"
        " --model {wildcards.model} --model_path {input.model} --history {input.history}"
        " --data {input.data} --metrics_out {output.metrics} --predictions_out {output.predictions}"
        " --confusion_png {output.confusion} --curves_png {output.curves} --grid_png {output.grid}"
        " > {log} 2>&1"
