"""The machine's CPU over a Snakemake run: a thread of the Snakemake process reads /proc/stat every second.

`start(root)` makes the run's folder <root>/<UTC time>, points $FASHION_MLP_PROFILE_DIR at it (the
jobs inherit it and write their records there, marks.py) and starts the thread; `stop()` ends it.
machine.tsv holds, per sample, the wall-clock time and how many cores were busy since the last one
(all processes, the jobs' and anyone else's: a noisy neighbour shows as CPU no job used).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from fashion_mlp.profiling.marks import ENV

MACHINE_FILE = "machine.tsv"
INTERVAL = 1.0  # seconds between samples

_stop = threading.Event()
_thread: threading.Thread | None = None


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot: /proc/stat's first line; idle and iowait are not busy."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def sample(path: Path, stop: threading.Event, interval: float = INTERVAL) -> None:
    """Append `time<TAB>busy cores` to `path` every `interval` seconds until `stop` is set."""
    cores = os.cpu_count() or 1
    busy, total = cpu_ticks()
    with open(path, "a", buffering=1) as out:
        out.write(f"# cores\t{cores}\n")
        while not stop.wait(interval):
            now_busy, now_total = cpu_ticks()
            share = (now_busy - busy) / max(1, now_total - total)
            out.write(f"{time.time():.3f}\t{share * cores:.3f}\n")
            busy, total = now_busy, now_total


def start(root: Path) -> Path:
    """A new run folder under `root`, the jobs pointed at it, and the sampler running; returns the folder."""
    global _thread
    folder = Path(root) / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(folder)
    (folder / MACHINE_FILE).write_text(f"# started\t{time.time():.3f}\n")
    if Path("/proc/stat").exists():
        _stop.clear()
        _thread = threading.Thread(target=sample, args=(folder / MACHINE_FILE, _stop), daemon=True)
        _thread.start()
    return folder


def stop() -> Path | None:
    """End the sampling; the run's folder, or None if start() was not called."""
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=5)
    return Path(os.environ[ENV]) if os.environ.get(ENV) else None


SETUP_COMMANDS = ("init-tracking",)  # what onstart runs itself, in every run, a no-op one too


def job_records(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("*.json"))


def ran_jobs(folder: Path) -> bool:
    """Whether a run ran any job, beyond what onstart runs every time."""
    return any(not p.name.startswith(tuple(f"{c}-" for c in SETUP_COMMANDS)) for p in job_records(folder))


def newest_run(root: Path) -> Path | None:
    """The newest run folder under `root` that ran a job, if any."""
    runs = sorted(p for p in Path(root).iterdir() if p.is_dir() and ran_jobs(p)) if Path(root).is_dir() else []
    return runs[-1] if runs else None


def prune(root: Path, keep: int = 3) -> None:
    """Drop run folders without a job (a no-op rerun) and all but the `keep` newest others."""
    import shutil

    runs = sorted(p for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []
    with_jobs = [p for p in runs if ran_jobs(p)]
    for folder in runs:
        if folder not in with_jobs[-keep:]:
            shutil.rmtree(folder, ignore_errors=True)
