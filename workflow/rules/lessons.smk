# The tutorial's own claims, one job per entry of lessons: in params.yaml, on the training split only,
# and of model_lessons:, on the trained models.
rule lesson:
    input:
        data="data/prepared/train.npz",
        models=lambda w: expand("models/{model}.keras", model=EVALUATED) if w.lesson in MODEL_LESSONS else [],
        code=code("lesson"),
    output:
        record="reports/lessons/{lesson}.json",
        figure=report(
            "reports/figures/lesson_{lesson}.png",
            caption="../report/lesson.rst",
            category="Lessons",
            subcategory="{lesson}",
        ),
    log:
        "logs/lesson/{lesson}.log",
    benchmark:
        "benchmarks/stages/lesson/{lesson}.tsv"
    priority: -5
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=1100,
    params:
        flags=lambda w: section_flags("model_lessons" if w.lesson in MODEL_LESSONS else "lessons", w.lesson),
        models=lambda w: "--params params.yaml --models_dir models " if w.lesson in MODEL_LESSONS else "",
        seed=config["seed"],
        experiment=config["mlflow"]["experiment"],
    shell:
        "fashion-mlp lesson {wildcards.lesson} {params.flags} --seed {params.seed} --threads {threads}"
        " --experiment {params.experiment} --data {input.data} {params.models}--json_out {output.record}"
        " --figure_out {output.figure} > {log} 2>&1"
