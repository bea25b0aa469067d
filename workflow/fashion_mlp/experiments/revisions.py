"""One side of `fashion-mlp compare`: a git revision, a DVC experiment or the workspace, as its files.

Read through DVC's own file system (`dvc.api.DVCFileSystem`), so a revision's DVC-tracked outputs
come from the cache by their hashes in that revision's dvc.lock: an experiment that was never
checked out, or an old commit, reads the same way as the workspace. A missing file is an error that
names the revision and the file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from fashion_mlp import PipelineError
from fashion_mlp.config import TUNED
from fashion_mlp.data import CLASS_NAMES

WORKSPACE = "workspace"  # the side that is the files on disk, not a revision
PREDICTIONS = {  # evaluate's per-image predictions, by split
    "test": "reports/predictions/{model}.csv",
    "validation": "reports/val_predictions/{model}.csv",
}


class Side(NamedTuple):
    label: str  # "HEAD (0d9d3d3)", "exp-1a2b3 (5e6f7a8)" or "workspace"
    params: dict  # its params.yaml
    models: list[str]  # train's entries, then tuned
    labels: dict[str, tuple[np.ndarray, np.ndarray]]  # model -> (true, predicted) class indices


def open_revision(rev: str | None, root: str | Path = "."):
    """DVC's file system of `rev` (None: the workspace) and the side's label."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException

    try:
        fs = DVCFileSystem(str(root), rev=rev)
        sha = fs.repo.get_rev() if rev is not None else ""
        label = WORKSPACE if rev is None else rev if sha.startswith(rev) else f"{rev} ({sha[:7]})"
    except DvcException as exc:
        raise PipelineError(f"revision {rev!r}: not a git revision or DVC experiment of {root} ({exc})") from None
    return fs, label


def read_text(fs, label: str, path: str) -> str:
    from dvc.exceptions import DvcException
    from dvc_data.index import DataIndexError

    try:
        return fs.read_text(path)
    except DataIndexError as exc:  # a tracked folder whose listing is in no cache here
        missing = exc
    except (FileNotFoundError, DvcException) as exc:
        if not fs.exists(path):
            raise PipelineError(f"{label}: has no {path} (was the pipeline run and committed there?)") from None
        missing = exc  # in that revision's dvc.lock, but its bytes are in no cache here
    raise PipelineError(f"{label}: {path} is not in the DVC cache ({missing}); try dvc pull or dvc exp pull")


def models_of(params: dict, label: str) -> list[str]:
    """The models a side's params.yaml makes: train's entries, distill's students, then tuned if it has a
    tune section (a side older than distill: has none)."""
    if not isinstance(params, dict) or not isinstance(params.get("train"), dict):
        raise PipelineError(f"{label}: params.yaml has no train: section")
    return [*params["train"], *(params.get("distill") or {}), *([TUNED] if "tune" in params else [])]


def parse_predictions(text: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """evaluate's CSV (actual,predicted class names) as class indices."""
    index = {name: i for i, name in enumerate(CLASS_NAMES)}
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
        pairs = [(index[row["actual"]], index[row["predicted"]]) for row in rows]
    except (KeyError, TypeError) as exc:
        raise PipelineError(f"{where}: not a predictions CSV of actual,predicted class names ({exc!r})") from None
    if not pairs:
        raise PipelineError(f"{where}: no predictions in it")
    true, predicted = np.array(pairs).T
    return true, predicted


def read_side(rev: str | None, split: str = "test", root: str | Path = ".") -> Side:
    """A side's params and, per model, the true and predicted classes of every image of `split`."""
    if split not in PREDICTIONS:
        raise PipelineError(f"split {split!r}: choose one of {', '.join(PREDICTIONS)}")
    fs, label = open_revision(rev, root)
    try:
        params = yaml.safe_load(read_text(fs, label, "params.yaml"))
    except yaml.YAMLError as exc:
        raise PipelineError(f"{label}: params.yaml is not valid YAML ({exc})") from None
    models = models_of(params, label)
    labels = {}
    for model in models:
        path = PREDICTIONS[split].format(model=model)
        labels[model] = parse_predictions(read_text(fs, label, path), f"{label}: {path}")
    return Side(label, params, models, labels)
