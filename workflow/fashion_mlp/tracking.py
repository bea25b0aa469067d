"""MLflow in one place: where the store is, the experiment, run tags and retries.

The default store is sqlite:///<repo root>/mlflow.db with artifacts in
<repo root>/mlartifacts, whatever the current directory; MLFLOW_TRACKING_URI
overrides it (for a team server, say). MLflow is imported lazily: it takes
seconds, and only train and evaluate need it.

Every run is tagged with the host and process that own it, so that the next
stage can close runs that a SIGKILL left RUNNING (see close_orphaned_runs), with
the pipeline invocation that made it (see invocation_id) and, under `dvc exp run`,
DVC's experiment name. Runs that fit or score a model log the prepared splits
they read as MLflow dataset inputs (see log_datasets).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fashion_mlp import PipelineError
from fashion_mlp.config import project_root

T = TypeVar("T")
RETRIES = 8
# The backoff's jitter has its own generator: a retry that drew from `random`, which the stages seed,
# would shift the weights Keras initializes next, so a trial's result would depend on lock contention.
_JITTER = random.Random()


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
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True, check=True, timeout=10
        )
        commit = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError, PipelineError):
        return "unknown"


# How each store says that another process inserted the same dataset row between MLflow's lookup
# and its insert: SQLite, and PostgreSQL behind `mlflow server` (a 400, which MLflow's HTTP client
# does not retry; seen in CI, where a trial then FAILED).
_DATASET_RACE = ("UNIQUE constraint failed: datasets.", 'violates unique constraint "dataset_pk"')


def _is_transient(exc: BaseException) -> bool:
    """SQLite is locked by another writer, or the dataset insert lost a race with another process
    (two Hyperband workers logging the same splits at once): the transaction was rolled back, and
    a retry finds the row."""
    text = str(exc)
    return any(sign in text for sign in ("database is locked", "database table is locked", *_DATASET_RACE))


def with_retry(fn: Callable[..., T], *args, **kwargs) -> T:
    """Call fn, retrying with jittered exponential backoff while the store's failure is transient."""
    for attempt in range(RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not _is_transient(exc) or attempt == RETRIES - 1:
                raise
            time.sleep(min(0.2 * 2**attempt, 5.0) * (0.5 + _JITTER.random()))
    raise AssertionError("unreachable")


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


@contextlib.contextmanager
def store_lock(uri: str):
    """An exclusive lock on a SQLite store (`<file>.lock` beside it) while this process sets it up;
    no lock for any other store, whose server serializes the setup itself."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from fashion_mlp.io import file_lock

    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock):
        yield


# --- runs whose process is gone ----------------------------------------------------------


def process_tags() -> dict[str, str]:
    """The host and process that own a run; `pid_started` tells a reused pid from the original."""
    import psutil

    return {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "pid_started": f"{psutil.Process().create_time():.2f}",
    }


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether the process that tagged a run still runs on this host."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # killed, only waiting for its parent to reap it
        # Another process that got the same pid later is not the run's owner.
        return started is None or abs(process.create_time() - float(started)) < 1.0
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, ValueError):
        return True  # cannot tell: leave the run alone


def close_orphaned_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the runs that a process of this host left RUNNING and that no longer exists.

    A SIGKILL, an OOM kill or a power cut ends a stage before MLflow's end_run, so
    its run would show RUNNING forever. Every stage calls this through init(), and
    the Snakefile before its jobs start. Runs tagged with another host are left
    alone: from here we cannot tell whether their process still runs, and closing a
    live run (a colleague's, on a shared server) would be worse than leaving a dead
    one open. Runs without a `pid` tag (older ones) are left alone too. Nested runs
    (Hyperband trials) live in their parent's process and are closed with it.
    Returns the ids of the runs it closed.
    """
    import mlflow

    client = mlflow.MlflowClient()
    running = with_retry(client.search_runs, [experiment_id], filter_string="attributes.status = 'RUNNING'")
    host = socket.gethostname()
    gone = {
        run.info.run_id
        for run in running
        if run.data.tags.get("host") == host
        and run.data.tags.get("pid", "").isdigit()
        and not process_alive(int(run.data.tags["pid"]), run.data.tags.get("pid_started"))
    }
    gone |= {run.info.run_id for run in running if run.data.tags.get("mlflow.parentRunId") in gone}
    # Read again now that the owners are known gone: one that ended its run and exited after the search
    # above left it FINISHED, which KILLED must not overwrite (seen in CI: a run listed RUNNING while its
    # job was ending). A gone process writes nothing more, so what is RUNNING now stays an orphan.
    orphans = {run_id for run_id in gone if with_retry(client.get_run, run_id).info.status == "RUNNING"}
    for run_id in sorted(orphans):
        with_retry(client.set_terminated, run_id, status="KILLED")
        print(f"tracking: run {run_id} was left RUNNING by a process that is gone; marked KILLED", file=sys.stderr)
    return sorted(orphans)


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


# --- one id per pipeline invocation, DVC's experiment name ----------------------------------

INVOCATION_VAR = "FASHION_MLP_INVOCATION"  # set by the Snakefile, inherited by every job


def invocation_id() -> str:
    """The id shared by every run of one `snakemake` or `dvc repro` / `dvc exp run` invocation.

    The Snakefile exports FASHION_MLP_INVOCATION (a new one per invocation, passed on to cluster
    jobs through `envvars:`). DVC has no such id, so under DVC it is derived from the `dvc` process
    that runs the stage commands (host, pid, start time): the same for all of its stages, new for
    the next invocation, one per queued experiment. A stage run by hand gets its own. The id is
    exported, so the processes a stage starts (tune's chief and workers) share it. It only ever
    goes into MLflow tags, never into a command line or an output, so no tracked file changes.
    """
    if not os.environ.get(INVOCATION_VAR):
        parent = dvc_process() if os.environ.get("DVC_STAGE") else None
        if parent is not None:
            key = f"dvc:{socket.gethostname()}:{parent.pid}:{parent.create_time():.2f}"
            os.environ[INVOCATION_VAR] = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
        else:
            os.environ[INVOCATION_VAR] = str(uuid.uuid4())
    return os.environ[INVOCATION_VAR]


def dvc_process():
    """The nearest ancestor process that runs DVC (`dvc repro`, `dvc exp run`, a queue's `dvc exp exec-run`)."""
    import psutil

    try:
        for process in psutil.Process().parents():
            try:
                argv = process.cmdline()
            except (psutil.AccessDenied, psutil.NoSuchProcess):
                continue
            if any(Path(arg).name == "dvc" for arg in argv[:2]) or argv[1:3] == ["-m", "dvc"]:
                return process
    except psutil.Error:
        pass
    return None


def invocation_tags() -> dict[str, str]:
    """`invocation_id` on every run (MLflow's Group by), and `dvc_exp_name` under `dvc exp run`."""
    tags = {"invocation_id": invocation_id()}
    if os.environ.get("DVC_EXP_NAME"):  # set by DVC for the commands of `dvc exp run`
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def temporary_experiment() -> str | None:
    """The DVC experiment's name when this stage runs in a temporary copy of the repository (`dvc exp run
    --temp`, a queued experiment), else None (the workspace, `dvc exp run` without --temp included).

    DVC points DVC_ROOT at the workspace even then, so that the copy's runs reach the workspace's MLflow
    store; the stage itself runs in the copy, under .dvc/tmp/exps/.
    """
    name, root = os.environ.get("DVC_EXP_NAME"), os.environ.get("DVC_ROOT")
    if not name or not root:
        return None
    return name if Path.cwd().resolve() != Path(root).resolve() else None


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


# --- dataset lineage ------------------------------------------------------------------------

DATASET_CONTEXTS = {"train": "training", "validation": "validation", "test": "testing"}
DIGEST_CHARS = 36  # MLflow's limit on a dataset digest; the full SHA-256 is the input's `sha256` tag


def log_datasets(path: str | os.PathLike, splits: dict, sha256: str | None = None) -> None:
    """Log the splits {name: (images, labels)} read from the prepared file `path` as the active
    run's dataset inputs, in one call: MLflow's Dataset column, with the name, the file's SHA-256
    as digest and the file as source. Cheap (no copy, no hashing of the arrays), so trials log too.
    """
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if sha256 is None:
        from fashion_mlp.io import sha256_file

        sha256 = sha256_file(path)
    with warnings.catch_warnings():  # MLflow registers its local source twice (for "" and "file:") and says so
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(Path(path).resolve()))
    datasets = [
        mlflow.data.from_numpy(x, targets=y, source=source, name=name, digest=sha256[:DIGEST_CHARS])
        for name, (x, y) in splits.items()
    ]
    with_retry(
        mlflow.log_inputs,
        datasets=datasets,
        contexts=[DATASET_CONTEXTS.get(name, name) for name in splits],
        tags_list=[{"sha256": sha256}] * len(datasets),
    )


def main(argv: list[str] | None = None) -> None:
    """`fashion-mlp init-tracking --experiment NAME`: create the store and experiment."""
    import argparse

    parser = argparse.ArgumentParser(prog="fashion-mlp init-tracking", description=main.__doc__)
    parser.add_argument("--experiment", required=True, help="mlflow.experiment")
    args = parser.parse_args(argv)
    experiment_id = init(args.experiment)
    print(f"init-tracking: experiment {args.experiment!r} (id {experiment_id}) at {tracking_uri()}")
