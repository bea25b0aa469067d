# Fashion-MNIST multilayer perceptrons, end to end:
#   download -> prepare -> train (per model)
#                       + tune (Hyperband: a chief and N workers, then retrains `tuned`)
#            -> evaluate, explain (per model) -> register (champion) -> report
#   demos: the tutorial's XOR and activation-function lessons, into the report
#   lesson (per entry of lessons:): the tutorial's claims, shown and checked, into the report
# Every knob is in params.yaml; dvc.yaml describes the same stages with the same
# commands. Run: snakemake --cores all   (profile: profiles/default)

from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"  # snakemake --report reports/report.html


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/explain.smk"
include: "workflow/rules/demos.smk"
include: "workflow/rules/lessons.smk"
include: "workflow/rules/report.smk"


# Everything the pipeline makes. Naming the models and figures, not just the
# summary, matters in a fresh clone: summary.md and the metrics are in git, so
# without them Snakemake would find its target present and do nothing.
rule all:
    default_target: True
    input:
        "reports/summary.md",
        "reports/figures/model_comparison.png",
        "reports/champion.json",
        "registered/champion.keras",
        "reports/model_card.md",
        rules.demos.output,
        expand("reports/lessons/{lesson}.json", lesson=LESSONS),
        expand("models/{model}.keras", model=EVALUATED),
        expand("reports/figures/{model}_{kind}.png", model=EVALUATED, kind=FIGURE_KINDS),
        expand("reports/figures/{model}_{kind}.png", model=EVALUATED, kind=EXPLAIN_FIGURE_KINDS),


onstart:
    hold_run_lock()
    start_profile()  # reports/timings/profile.png: the run's jobs, true CPU and fixed costs
    start_forkserver()  # the jobs fork from one process that imported TensorFlow & co.
    init_tracking()  # the MLflow store, beside the first jobs


onsuccess:
    tracking_initialized()
    stop_forkserver()
    drawn = draw_profile()  # beside dvc commit
    commit_to_dvc()
    drawn()


onerror:
    tracking_initialized()
    stop_forkserver()
