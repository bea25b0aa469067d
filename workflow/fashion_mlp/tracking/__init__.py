"""MLflow in one place: the store, the experiment, the runs a stage opens and their tags.

The store's location and the retries are in store.py, the owners' tags and the closing of orphaned runs
in owners.py, the invocation id and the datasets' lineage in lineage.py; every name is here too. MLflow
is imported lazily: it takes seconds, and only the stages that log need it.

Every run is tagged with the host and process that own it, so that the next stage can close runs that a
SIGKILL left RUNNING (owners.close_orphaned_runs), with the pipeline invocation that made it
(lineage.invocation_id) and, under `dvc exp run`, DVC's experiment name. Runs that fit or score a model
log the prepared splits they read as MLflow dataset inputs (lineage.log_datasets).
"""

from __future__ import annotations

import os
from pathlib import Path

from fashion_mlp.tracking.lineage import (
    DATASET_CONTEXTS,
    DIGEST_CHARS,
    INVOCATION_VAR,
    dvc_process,
    invocation_id,
    invocation_tags,
    log_datasets,
    temporary_experiment,
)
from fashion_mlp.tracking.owners import close_orphaned_runs, process_alive, process_tags
from fashion_mlp.tracking.store import (
    RETRIES,
    artifact_location,
    default_tracking_uri,
    engine,
    git_commit,
    store_lock,
    tracking_uri,
    with_retry,
)

__all__ = [
    "DATASET_CONTEXTS",
    "DIGEST_CHARS",
    "INVOCATION_VAR",
    "RETRIES",
    "artifact_location",
    "base_tags",
    "close_orphaned_runs",
    "default_tracking_uri",
    "dvc_process",
    "engine",
    "find_run_by_tag",
    "git_commit",
    "init",
    "invocation_id",
    "invocation_tags",
    "log_datasets",
    "model_run",
    "process_alive",
    "process_tags",
    "resume_run",
    "store_lock",
    "temporary_experiment",
    "tracking_uri",
    "trained_run",
    "with_retry",
]


def init(experiment: str) -> str:
    """Point MLflow at the store, create it and the experiment if needed; return the experiment id.

    An existing experiment's runs left RUNNING by a killed process are marked KILLED. On a SQLite
    store, processes take turns (store_lock): the Snakefile's onstart starts `fashion-mlp
    init-tracking` beside the first jobs, and a job that gets here first creates the store itself,
    so parallel jobs never race to create the schema.
    """
    import mlflow

    location = artifact_location()  # before set_tracking_uri, which exports MLFLOW_TRACKING_URI
    mlflow.set_tracking_uri(tracking_uri())
    with store_lock(tracking_uri()):
        found = with_retry(mlflow.get_experiment_by_name, experiment)
        if found is not None:
            mlflow.set_experiment(experiment_id=found.experiment_id)
            close_orphaned_runs(found.experiment_id)
            return found.experiment_id
        try:
            experiment_id = with_retry(mlflow.create_experiment, experiment, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            # Another process created it between our lookup and create (a store on a server).
            experiment_id = with_retry(mlflow.get_experiment_by_name, experiment).experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id


def resume_run(run_id: str):
    """Reopen a finished run (evaluate adds to train's run), owned from now on by this process.

    The owner tags are updated first, so that no other stage's close_orphaned_runs
    mistakes the reopened run for one left behind by the (finished) training process.
    """
    import mlflow
    from mlflow.entities import RunTag

    tags = [RunTag(key, value) for key, value in process_tags().items()]
    with_retry(mlflow.MlflowClient().log_batch, run_id, tags=tags)
    return with_retry(mlflow.start_run, run_id=run_id)


def find_run_by_tag(experiment_id: str, key: str, value: str):
    """The newest run of the experiment whose tag `key` equals `value`, or None."""
    import mlflow

    runs = with_retry(
        mlflow.search_runs,
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{key}` = '{value}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0] if runs else None


def trained_run(experiment_id: str, model_path: str | os.PathLike):
    """The run that trained this exact model file (its `model_sha256` tag), or None; and the file's hash."""
    from fashion_mlp.io import sha256_file

    model_sha = sha256_file(model_path)
    return find_run_by_tag(experiment_id, "model_sha256", model_sha), model_sha


def model_run(experiment_id: str, model_path: str | os.PathLike, model: str, stage: str, data_path: str | os.PathLike):
    """The run a stage adds a model's results to: the one that trained this exact file, reopened; for a
    model from elsewhere (dvc pull, another store), a new run of its own, tagged with the file's hash."""
    import mlflow

    run, model_sha = trained_run(experiment_id, model_path)
    if run is not None:
        return resume_run(run.info.run_id)
    print(f"{stage}: no MLflow run trained {model_path} (sha256 {model_sha[:12]}); starting one")
    tags = base_tags(stage, data_path) | {"model": model, "model_sha256": model_sha}
    return with_retry(mlflow.start_run, run_name=model, tags=tags)


def base_tags(stage: str, data_path: str | os.PathLike) -> dict[str, str]:
    from fashion_mlp.io import sha256_file
    from fashion_mlp.machine import label, machine

    return (
        {
            "git_commit": git_commit(),
            "data_sha256": sha256_file(data_path),
            "data_file": str(Path(data_path)),
            "engine": engine(),
            "stage": stage,
            "cpu": label(machine()),  # the same code and data train other weights on other vector instructions
        }
        | process_tags()
        | invocation_tags()
    )


def main(argv: list[str] | None = None) -> None:
    """`fashion-mlp init-tracking --experiment NAME`: create the store and experiment."""
    import argparse

    parser = argparse.ArgumentParser(prog="fashion-mlp init-tracking", description=main.__doc__)
    parser.add_argument("--experiment", required=True, help="mlflow.experiment")
    args = parser.parse_args(argv)
    experiment_id = init(args.experiment)
    print(f"init-tracking: experiment {args.experiment!r} (id {experiment_id}) at {tracking_uri()}")
