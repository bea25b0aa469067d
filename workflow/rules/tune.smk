# Stage `tune`: Hyperband in KerasTuner's distributed mode, one rule per role of
# `fashion-mlp tune --role <role>`, each logging to logs/tune/<role>.log: tune_chief serves
# the oracle while tune.workers tune_worker jobs (worker0, worker1, ...; those beyond --cores reserve no
# core) run the trials, then tune_finish writes the stage's outputs and retrains the best as `tuned`.
# dvc.yaml runs the same roles in its one stage `tune` (`fashion-mlp tune --role all`).

WORKERS = range(config["tune"]["workers"])  # the first TUNE_CORED_WORKERS reserve a core (common.smk)
# The search and its retrain are the run's longest chain: they go first. Without a priority,
# Snakemake filled each freed core with a one-core training, and the search, whose group needs
# tune.workers cores at once, started only after all of them (7 min into a 15-min run).
SEARCH_PRIORITY = 10
TUNE_CODE = code("tune")


# A service job: it runs beside its consumers (the workers), which Snakemake starts
# once the chief has published its address, and is stopped after they finish.
rule tune_chief:
    input:
        data="data/prepared/train.npz",
    output:
        service(".tuner/chief.json"),
    log:
        "logs/tune/chief.log",
    priority: SEARCH_PRIORITY
    conda:
        "../envs/pipeline.yaml"
    # No benchmark: Snakemake may stop a service job before it can write one.
    threads: 0  # it only answers the workers' requests; the cores are theirs
    resources:
        mem_mb=1000,
    params:
        flags=section_flags("tune"),
        seed=config["seed"],
        experiment=config["mlflow"]["experiment"],
    shell:
        f"{ONE_THREAD_ENV} fashion-mlp tune --role chief"
        " {params.flags} --seed {params.seed} --experiment {params.experiment}"
        " --data {input.data} --work_dir .tuner --chief_file {output} > {log} 2>&1"


rule tune_worker:
    input:
        data="data/prepared/train.npz",  # the search, too, sees only train and validation
        chief=".tuner/chief.json",
        code=TUNE_CODE,
    output:
        temp(".tuner/worker{worker}.json"),
    log:
        "logs/tune/worker{worker}.log",
    benchmark:
        "benchmarks/stages/tune/worker{worker}.tsv"
    wildcard_constraints:
        worker=r"\d+",
    priority: SEARCH_PRIORITY
    conda:
        "../envs/pipeline.yaml"
    # One thread, like train: several single-thread trials beat one two-thread trial. A worker
    # beyond --cores reserves none and runs in the time the others leave idle (common.smk).
    threads: lambda wildcards: int(int(wildcards.worker) < TUNE_CORED_WORKERS)
    resources:
        mem_mb=2000,
    params:
        flags=section_flags("tune"),
        seed=config["seed"],
        experiment=config["mlflow"]["experiment"],
    shell:
        f"{ONE_THREAD_ENV} fashion-mlp tune --role worker"
        " {params.flags} --seed {params.seed} --experiment {params.experiment}"
        " --data {input.data} --work_dir .tuner --threads 1 --chief_file {input.chief}"
        " --worker_id {wildcards.worker} --worker_out {output} > {log} 2>&1"


rule tune_finish:
    input:
        data="data/prepared/train.npz",  # the search, too, sees only train and validation
        workers=expand(".tuner/worker{worker}.json", worker=WORKERS),
        code=TUNE_CODE,
    output:
        trials=report("reports/tuning/trials.csv", caption="../report/trials.rst", category="Tuning"),
        best="reports/tuning/best_hparams.json",
        figure=report("reports/figures/tuning_trials.png", caption="../report/tuning.rst", category="Tuning"),
        model="models/tuned.keras",
        history="reports/history/tuned.csv",
    log:
        "logs/tune/finish.log",
    benchmark:
        "benchmarks/stages/tune/finish.tsv"
    priority: SEARCH_PRIORITY
    conda:
        "../envs/pipeline.yaml"
    # One thread, like train: on two, the retrain of a small MLP took 115 s but 137 CPU-s, and a
    # training (the CNN's) can use the other core meanwhile.
    threads: 1
    resources:
        mem_mb=2000,
    params:
        flags=section_flags("tune"),
        seed=config["seed"],
        experiment=config["mlflow"]["experiment"],
    shell:
        "fashion-mlp tune --role finish {params.flags} --seed {params.seed} --experiment {params.experiment}"
        " --data {input.data} --work_dir .tuner --threads {threads} --worker_results {input.workers}"
        " --trials_out {output.trials} --best_out {output.best} --figure_out {output.figure} --model_out {output.model} --history_out {output.history} > {log} 2>&1"
