"""Where a run comes from: one id per pipeline invocation, DVC's experiment name, and the prepared splits
a run read, logged as MLflow dataset inputs. Tags and inputs only: no file a stage writes changes."""

from __future__ import annotations

import os
import socket
import uuid
import warnings
from pathlib import Path

from fashion_mlp.tracking.store import with_retry

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
