"""A job's own record: when it started and ended, its CPU from getrusage, its peak RSS, named marks.

Written only when $FASHION_MLP_PROFILE_DIR is set (the Snakefile's onstart sets it for its jobs), as
<dir>/<command>-<label>-<pid>.json at exit, so tests and ad hoc commands write nothing. Marks cost a
list append; `mark()` is a no-op when profiling is off.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import time
from pathlib import Path

ENV = "FASHION_MLP_PROFILE_DIR"
# The marks of a training, in order: fixed cost is start -> EPOCHS_START plus EPOCHS_END -> exit.
TRAINING_MARKS = (
    "tensorflow imported",
    "model built",
    "mlflow run started",
    "first epoch start",
    "first epoch end",
    "last epoch end",
    "model saved",
    "mlflow logged",
)
TF_IMPORTED, BUILT, RUN_STARTED, EPOCHS_START, FIRST_EPOCH_END, EPOCHS_END, SAVED, LOGGED = TRAINING_MARKS
TABLE_BUILT = "teacher table built"  # a student with teacher.views, between RUN_STARTED and EPOCHS_START

_marks: list[tuple[str, float]] = []


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def mark(name: str) -> None:
    """Note that `name` happened now (wall clock), if this process is profiled."""
    if enabled():
        _marks.append((name, time.time()))


def process_start() -> float:
    """This process's start, wall clock: /proc/self/stat's start (clock ticks after boot) set against
    the boot clock now. (/proc/stat's boot time is in whole seconds, which put starts up to 1 s early.)"""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        since_start = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - since_start
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED  # not Linux: the closest we know


_IMPORTED = time.time()


def label(argv: list[str]) -> str:
    """What tells this command's jobs apart: its model, its lesson or its tune role."""
    for flag in ("--model", "--role"):
        if flag in argv[:-1]:
            value = argv[argv.index(flag) + 1]
            if flag == "--role" and "--worker_id" in argv[:-1]:
                value += argv[argv.index("--worker_id") + 1]
            return value
    return argv[0] if argv and not argv[0].startswith("-") else ""


def record(command: str, argv: list[str]) -> dict:
    """This process's record so far: times, CPU (its own and its waited-for children's), peak RSS, marks."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    # Rounded once, so that the record's own wall time is exactly its ended minus its started.
    started, ended = round(process_start(), 3), round(time.time(), 3)
    return {
        "command": command,
        "label": label(argv),
        "pid": os.getpid(),
        "started": started,
        "ended": ended,
        "wall_seconds": round(ended - started, 3),
        "cpu_seconds": round(own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime, 3),
        "max_rss_mb": round(max(own.ru_maxrss, children.ru_maxrss) / 1024, 1),  # KiB on Linux
        "marks": [[name, round(at - started, 3)] for name, at in _marks],
    }


def start(command: str, argv: list[str]) -> None:
    """Write this process's record at exit (normal or sys.exit), if profiling is on."""
    if not enabled():
        return

    def write() -> None:
        folder = Path(os.environ[ENV])
        folder.mkdir(parents=True, exist_ok=True)
        data = record(command, argv)
        name = "-".join(filter(None, (command, data["label"], str(data["pid"]))))
        (folder / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")

    atexit.register(write)


def epoch_marks(prefix: str = ""):
    """A Keras callback marking the first epoch's start and end and the last epoch's end.

    The first epoch is the first this fit runs: a promoted Hyperband trial resumes at a later one."""
    import keras

    class EpochMarks(keras.callbacks.Callback):
        first = None

        def on_epoch_begin(self, epoch, logs=None):
            if self.first is None:
                self.first = epoch
                mark(prefix + EPOCHS_START)

        def on_epoch_end(self, epoch, logs=None):
            if epoch == self.first:
                mark(prefix + FIRST_EPOCH_END)

        def on_train_end(self, logs=None):
            mark(prefix + EPOCHS_END)

    return EpochMarks()
