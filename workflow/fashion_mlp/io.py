"""Atomic file output, hashing and reading JSON back: a crash leaves the old file or none, never half a
file, and a bad metrics file is an error naming it."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fashion_mlp import PipelineError

TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync and rename it into place.

    The temporary name keeps the target's suffix, because Keras, numpy and
    matplotlib choose the format from it. On any error the temporary file is
    removed and an existing `path` is left untouched; a temporary that a killed
    writer of `path` left is removed by the next write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A process killed mid-write (SIGKILL skips cleanup) left its temporary: this target
    # has one writer at a time, so any temporary of it is dead.
    for stale in path.parent.glob(f".{glob.escape(path.stem)}{TMP_MARK}*{glob.escape(path.suffix)}"):
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}{TMP_MARK}", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the block: one process at a time."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Delete temporaries that a killed process (SIGKILL skips cleanup) left behind."""
    directory = Path(directory)
    if directory.is_dir():
        for stale in directory.glob(f".*{TMP_MARK}*"):
            stale.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)


def read_metrics(paths: list[Path], required: tuple[str, ...]) -> list[dict]:
    """evaluate's metrics JSONs, in order (register and report read them); a missing, garbled or
    incomplete file (without one of `required`) is an error naming it."""
    metrics = []
    for path in paths:
        try:
            m = read_json(path)
        except (OSError, ValueError) as exc:
            raise PipelineError(f"{path}: cannot read the metrics JSON ({exc})") from None
        missing = [key for key in required if key not in m] if isinstance(m, dict) else list(required)
        if missing:
            raise PipelineError(f"{path}: not a metrics JSON from evaluate (missing {', '.join(missing)})")
        metrics.append(m)
    return metrics


def model_files(paths: list[Path], models: list[str] | None, suffix: str) -> list[Path]:
    """Per-model files: each path is a file, or a folder holding <model><suffix> for each of `models`
    (every <name><suffix> in it when `models` is None). A model without its file is an error naming both."""
    files = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
        elif models is None:
            files += sorted(path.glob(f"*{suffix}"))
        else:
            missing = [m for m in models if not (path / f"{m}{suffix}").is_file()]
            if missing:
                raise PipelineError(
                    f"{path}: no {', '.join(m + suffix for m in missing)} for model(s) {', '.join(missing)}"
                )
            files += [path / f"{m}{suffix}" for m in models]
    return files


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
