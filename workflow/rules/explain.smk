# SHAP and LRP explanations of every evaluated model, with their sanity checks (docs/explain.md).
# Reads test.npz like evaluate, to measure and draw only: nothing is fitted or chosen on it.
rule explain:
    input:
        model="models/{model}.keras",
        train="data/prepared/train.npz",  # the background sample: training images only
        test="data/prepared/test.npz",
        code=code("explain"),
    output:
        json="reports/explain/{model}.json",
        deletion="reports/deletion/{model}.csv",
        classes=report(
            "reports/figures/{model}_explain_classes.png",
            caption="../report/explain_classes.rst",
            category="Explanations",
            subcategory="{model}",
        ),
        examples=report(
            "reports/figures/{model}_explain_examples.png",
            caption="../report/explain_examples.rst",
            category="Explanations",
            subcategory="{model}",
        ),
        deletion_png=report(
            "reports/figures/{model}_explain_deletion.png",
            caption="../report/explain_deletion.rst",
            category="Explanations",
            subcategory="{model}",
        ),
        cascade_png=report(
            "reports/figures/{model}_explain_cascade.png",
            caption="../report/explain_cascade.rst",
            category="Explanations",
            subcategory="{model}",
        ),
        randomized_png=report(
            "reports/figures/{model}_explain_randomized.png",
            caption="../report/explain_randomized.rst",
            category="Explanations",
            subcategory="{model}",
        ),
    log:
        "logs/explain/{model}.log",
    benchmark:
        "benchmarks/stages/explain/{model}.tsv"
    # The CNN's explanation is the longest job after the search: started last, it ran alone for 30 s.
    priority: kind_priority
    conda:
        "../envs/pipeline.yaml"
    threads: 1  # DeepExplainer runs one image at a time; the models run side by side
    resources:
        mem_mb=2000,
    params:
        flags=section_flags("explain"),
        seed=config["seed"],
        experiment=config["mlflow"]["experiment"],
    shell:
        "fashion-mlp explain {params.flags} --seed {params.seed} --threads {threads} --experiment {params.experiment}"
        " --model {wildcards.model} --model_path {input.model} --train_data {input.train} --test_data {input.test}"
        " --json_out {output.json} --deletion_out {output.deletion} --classes_png {output.classes}"
        " --examples_png {output.examples} --deletion_png {output.deletion_png}"
        " --cascade_png {output.cascade_png} --randomized_png {output.randomized_png} > {log} 2>&1"
