# Fashion-MNIST multilayer perceptrons, end to end:
#   download -> prepare -> train (per model) -> evaluate (per model) -> report
# Every knob is in params.yaml; dvc.yaml describes the same stages with the same
# commands. Run: snakemake --cores all   (profile: workflow/profiles/default)

configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "reports/summary.md",


onstart:
    init_tracking()


onsuccess:
    commit_to_dvc()
