"""MLflow in one place: where the store is, the experiment, run tags and retries.

The default store is sqlite:///<repo root>/mlflow.db with artifacts in
<repo root>/mlartifacts, whatever the current directory; MLFLOW_TRACKING_URI
overrides it (for a team server, say). MLflow is imported lazily: it takes
seconds, and only train and evaluate need it.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path
from typing import Callable, TypeVar

from fashion_mlp import PipelineError
from fashion_mlp.config import project_root

T = TypeVar("T")
RETRIES = 8


def default_tracking_uri() -> str:
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def artifact_location() -> str | None:
    """<repo>/mlartifacts for the default SQLite store (MLflow would pick ./mlruns of the
    current directory); any other store chooses its own."""
    try:
        default = default_tracking_uri()
    except PipelineError:  # outside a checkout: only a user-chosen store is possible
        return None
    if tracking_uri() != default:
        return None
    return (project_root() / "mlartifacts").as_uri()


def engine() -> str:
    """Which engine runs this stage: the Snakefile exports FASHION_MLP_ENGINE, DVC sets DVC_STAGE."""
    if os.environ.get("FASHION_MLP_ENGINE"):
        return os.environ["FASHION_MLP_ENGINE"]
    if os.environ.get("DVC_STAGE"):
        return "dvc"
    return "cli"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True,
                             text=True, check=True, timeout=10)
        commit = out.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(),
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError, PipelineError):
        return "unknown"


def _is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc) or "database table is locked" in str(exc)


def with_retry(fn: Callable[..., T], *args, **kwargs) -> T:
    """Call fn, retrying with jittered exponential backoff while SQLite says it is locked."""
    for attempt in range(RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not _is_locked(exc) or attempt == RETRIES - 1:
                raise
            time.sleep(min(0.2 * 2**attempt, 5.0) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def init(experiment: str) -> str:
    """Point MLflow at the store, create it and the experiment if needed; return the experiment id.

    The Snakefile calls this once (`fashion-mlp init-tracking`) before jobs fan
    out, so parallel jobs never race to create the SQLite schema.
    """
    import mlflow

    location = artifact_location()  # before set_tracking_uri, which exports MLFLOW_TRACKING_URI
    mlflow.set_tracking_uri(tracking_uri())
    found = with_retry(mlflow.get_experiment_by_name, experiment)
    if found is not None:
        mlflow.set_experiment(experiment_id=found.experiment_id)
        return found.experiment_id
    try:
        experiment_id = with_retry(mlflow.create_experiment, experiment, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        experiment_id = with_retry(mlflow.get_experiment_by_name, experiment).experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


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


def base_tags(stage: str, data_path: str | os.PathLike) -> dict[str, str]:
    from fashion_mlp.io import sha256_file

    return {
        "git_commit": git_commit(),
        "data_sha256": sha256_file(data_path),
        "data_file": str(Path(data_path)),
        "engine": engine(),
        "stage": stage,
    }


def main(argv: list[str] | None = None) -> None:
    """`fashion-mlp init-tracking --experiment NAME`: create the store and experiment."""
    import argparse

    parser = argparse.ArgumentParser(prog="fashion-mlp init-tracking", description=main.__doc__)
    parser.add_argument("--experiment", required=True, help="mlflow.experiment")
    args = parser.parse_args(argv)
    experiment_id = init(args.experiment)
    print(f"init-tracking: experiment {args.experiment!r} (id {experiment_id}) at {tracking_uri()}")
