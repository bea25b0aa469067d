rule train:
    input:
        data="data/prepared/train.npz",  # never test.npz: only evaluate and explain read it, to measure
        teacher=teacher_model,  # a distill: entry's teacher
        code=code("train"),
    output:
        model="models/{model}.keras",
        history="reports/history/{model}.csv",
    log:
        "logs/train/{model}.log",
    benchmark:
        "benchmarks/stages/train/{model}.tsv"
    wildcard_constraints:
        model="|".join(MODELS),
    # The longest trainings first, so the short jobs fill the gaps at the end (kind_priority); one
    # above the explanations of their kind, which wait for a training (the run's longest chains).
    priority: lambda w: kind_priority(w) + 1
    conda:
        "../envs/pipeline.yaml"
    # The block's threads (1 when absent): the small MLPs are bound by per-step overhead, which
    # a second thread only adds to (benchmarks/speed.py), so two trainings run side by side.
    # The flag comes from the block, not from {threads}: fewer --cores must not change the weights.
    threads: lambda w: config[block_section(w.model)][w.model].get("threads", 1)
    resources:
        mem_mb=2500,
    params:
        flags=lambda w: section_flags(block_section(w.model), w.model),
        teacher=lambda w, input: f"--teacher_path {input.teacher}" if input.teacher else "",
        seed=config["seed"],
        experiment=config["mlflow"]["experiment"],
    shell:
        "fashion-mlp train --model {wildcards.model} {params.flags} --seed {params.seed}"
        " --experiment {params.experiment} --data {input.data}"
        " {params.teacher} --model_out {output.model} --history_out {output.history} > {log} 2>&1"


rule evaluate:
    input:
        model="models/{model}.keras",
        history="reports/history/{model}.csv",
        data="data/prepared/test.npz",
        val="data/prepared/train.npz",  # only its validation split: it fits the calibration temperature
        code=code("evaluate"),
    output:
        metrics="reports/metrics/{model}.json",
        predictions="reports/predictions/{model}.csv",
        val_predictions="reports/val_predictions/{model}.csv",  # fashion-mlp compare --split validation
        confusion=report(
            "reports/figures/{model}_confusion.png",
            caption="../report/confusion.rst",
            category="Models",
            subcategory="{model}",
        ),
        curves=report(
            "reports/figures/{model}_curves.png",
            caption="../report/curves.rst",
            category="Models",
            subcategory="{model}",
        ),
        grid=report(
            "reports/figures/{model}_predictions.png",
            caption="../report/predictions.rst",
            category="Models",
            subcategory="{model}",
        ),
        reliability=report(
            "reports/figures/{model}_reliability.png",
            caption="../report/reliability.rst",
            category="Models",
            subcategory="{model}",
        ),
    log:
        "logs/evaluate/{model}.log",
    benchmark:
        "benchmarks/stages/evaluate/{model}.tsv"
    # One below the explanations of its kind: the 2-s evaluations fill both cores at the end,
    # where an explanation left last ran alone for 9 s.
    priority: lambda w: kind_priority(w) - 1
    conda:
        "../envs/pipeline.yaml"
    threads: 1  # predicting 10,000 images is quick; plotting is single-threaded anyway
    resources:
        mem_mb=1500,
    params:
        flags=section_flags("evaluate"),
        seed=config["seed"],
        experiment=config["mlflow"]["experiment"],
    shell:
        "fashion-mlp evaluate {params.flags} --seed {params.seed} --threads {threads} --experiment {params.experiment}"
        " --model {wildcards.model} --model_path {input.model} --history {input.history}"
        " --data {input.data} --val_data {input.val} --metrics_out {output.metrics}"
        " --predictions_out {output.predictions}"
        " --val_predictions_out {output.val_predictions}"
        " --confusion_png {output.confusion} --curves_png {output.curves} --grid_png {output.grid}"
        " --reliability_png {output.reliability}"
        " > {log} 2>&1"


# register and report read every model's files by folder, like dvc.yaml's stages (which cannot
# list them); `--params params.yaml` says which models, so a removed entry's leftovers are not read.
rule register:
    input:
        metrics=expand("reports/metrics/{model}.json", model=EVALUATED),
        models=expand("models/{model}.keras", model=EVALUATED),
        code=code("register"),
    output:
        champion="reports/champion.json",
        model="registered/champion.keras",  # DVC's artifact fashion-mnist-classifier
    log:
        "logs/register.log",
    benchmark:
        "benchmarks/stages/register.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=1500,  # loads TensorFlow: MLflow checks the served model's input example
    params:
        models=EVALUATED,  # the candidates (--params): a new or removed entry reruns register
        registered_model=config["mlflow"]["registered_model"],
        tolerance=config["mlflow"]["promotion_tolerance"],
        experiment=config["mlflow"]["experiment"],
    shell:
        "fashion-mlp register --registered_model {params.registered_model} --promotion_tolerance {params.tolerance}"
        " --experiment {params.experiment}"
        " --params params.yaml --metrics reports/metrics --models_dir models --out {output.champion}"
        " --champion_out {output.model} > {log} 2>&1"


# The model card of the champion (and the best MLP): reads test.npz to measure its answers on
# photo-like pictures, and chooses nothing.
rule card:
    input:
        champion="reports/champion.json",
        metrics=expand("reports/metrics/{model}.json", model=EVALUATED),
        explain=expand("reports/explain/{model}.json", model=EVALUATED),
        predictions=expand("reports/predictions/{model}.csv", model=EVALUATED),
        stats="reports/data_stats.json",
        best="reports/tuning/best_hparams.json",
        models=expand("models/{model}.keras", model=EVALUATED),
        train="data/prepared/train.npz",
        test="data/prepared/test.npz",
        code=code("card"),
    output:
        card="reports/model_card.md",
        robustness="reports/robustness.json",
    log:
        "logs/card.log",
    benchmark:
        "benchmarks/stages/card.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=1500,
    params:
        flags=section_flags("card"),
        models=EVALUATED,  # the train blocks it quotes (--params)
        seed=config["seed"],
        experiment=config["mlflow"]["experiment"],
    shell:
        "fashion-mlp card {params.flags} --seed {params.seed} --threads {threads} --experiment {params.experiment}"
        " --params params.yaml --champion {input.champion} --metrics reports/metrics --explain reports/explain"
        " --predictions reports/predictions --data_stats {input.stats} --tuning {input.best} --models_dir models"
        " --train_data {input.train} --test_data {input.test} --out {output.card}"
        " --robustness_out {output.robustness} > {log} 2>&1"
