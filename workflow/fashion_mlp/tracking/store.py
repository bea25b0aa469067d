"""Where the MLflow store is, which engine runs the stage, the code's commit, and retries on a busy store.

The default store is sqlite:///<repo root>/mlflow.db with artifacts in <repo root>/mlartifacts,
whatever the current directory; MLFLOW_TRACKING_URI overrides it (for a team server, say).
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time
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
