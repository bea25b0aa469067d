"""Reliability without a whole pipeline run: real processes, real SIGKILLs.

- a SIGKILL in the middle of an atomic write leaves the old file, never half a file; so does one in the
  middle of a real stage's writes (`fashion-mlp report`), and its rerun leaves no temporary;
- the Snakemake profile is where Snakemake 9 finds it, with what a killed run needs, and a second
  Snakemake in the same checkout is refused.

Bad data and bad params: test_bad_input.py. Nothing unsafe loaded or served beyond this machine:
test_safety.py. The whole-pipeline properties (bit-identical reruns, parallel jobs, kill and resume under
each engine, a reverted bad edit, push/pull) are in test_e2e_snakemake.py and test_e2e_dvc.py, which share
the expensive runs; a run whose process was SIGKILLed is marked KILLED by the next stage: test_tracking.py.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import CLI, REPO, engine_env
from fashion_mlp.io import TMP_MARK, remove_stale_temporaries, write_text

TIMEOUT = 120


def leftovers(directory: Path) -> list[str]:
    """Temporaries of atomic_output left in a directory."""
    return sorted(p.name for p in directory.glob(f".*{TMP_MARK}*")) if directory.is_dir() else []


# --- atomic writes under SIGKILL ---------------------------------------------------------

# Writes through atomic_output, says so, then waits to be killed with the file half written.
DIE_WHILE_WRITING = """
import sys, time
from fashion_mlp.io import atomic_output

with atomic_output(sys.argv[1]) as tmp, open(tmp, "wb") as fh:
    fh.write(b"half of the new content")
    fh.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("existing", [b"the previous, complete content", None], ids=["old-file", "no-file"])
def test_sigkill_during_an_atomic_write_leaves_the_old_file_or_none(tmp_path, existing):
    target = tmp_path / "models" / "baseline.keras"
    target.parent.mkdir()
    if existing is not None:
        target.write_bytes(existing)
    writer = subprocess.Popen(
        [sys.executable, "-c", DIE_WHILE_WRITING, str(target)], env=engine_env(), stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "writing"
    writer.kill()  # SIGKILL: no cleanup code runs
    writer.wait(timeout=TIMEOUT)
    writer.stdout.close()

    if existing is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == existing
    assert len(leftovers(target.parent)) == 1  # the half-written temporary, under a hidden name
    neighbour = target.with_name("baseline_curves.keras")  # another target's write leaves it alone
    write_text(neighbour, "other")
    assert len(leftovers(target.parent)) == 1
    write_text(target, "rerun")  # the next write of the same file (the stage's rerun) removes it
    assert leftovers(target.parent) == [] and target.read_text() == "rerun"
    (target.parent / ".stray.tmp-x.keras").touch()
    remove_stale_temporaries(target.parent)  # what download does to data/raw before it starts
    assert leftovers(target.parent) == []


# A real stage killed while it writes: `fashion-mlp report` (no TensorFlow, well under a second) on
# synthetic inputs. Its outputs, relative to its working directory; every one goes through atomic_output.
REPORT_OUTPUTS = ("reports/summary.md", "reports/figures/model_comparison.png")
REPORT_ARGS = [
    *("--metrics", "in/metrics/baseline.json", "in/metrics/regularized.json", "--data_stats", "in/data_stats.json"),
    *("--figures_dir", "reports/figures", "--chart_out", REPORT_OUTPUTS[1], "--out", REPORT_OUTPUTS[0]),
]


def report_inputs(directory: Path, predictions, accuracy: float) -> None:
    """Two models' metrics (the second one's test accuracy is `accuracy`) and the split counts, under in/."""
    from fashion_mlp.stages.evaluate import compute_metrics

    y_true, _, probabilities = predictions
    (directory / "in" / "metrics").mkdir(parents=True, exist_ok=True)
    for model, value in (("baseline", 0.8812), ("regularized", accuracy)):
        metrics = compute_metrics(y_true, probabilities) | {"model": model, "accuracy": value}
        metrics |= {"val_accuracy": value + 0.01, "params": 101_770, "epochs_run": 10}
        (directory / "in" / "metrics" / f"{model}.json").write_text(json.dumps(metrics))
    counts = {"seed": 1, "counts": {"train": 1800, "val": 200, "test": 40}}
    (directory / "in" / "data_stats.json").write_text(json.dumps(counts))


def start_report(directory: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(CLI), "report", *REPORT_ARGS], cwd=directory, env=engine_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def run_report(directory: Path) -> None:
    report = start_report(directory)
    _, stderr = report.communicate(timeout=TIMEOUT)
    assert report.returncode == 0, stderr[-3000:]


def report_outputs(directory: Path) -> dict[str, bytes | None]:
    return {name: (directory / name).read_bytes() if (directory / name).exists() else None for name in REPORT_OUTPUTS}


def report_leftovers(directory: Path) -> list[str]:
    return leftovers(directory / "reports") + leftovers(directory / "reports" / "figures")


def files_state(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under `directory` (folders left out): (inode, size, mtime), so a creation, write or rename shows."""
    state = {}
    for path in directory.rglob("*") if directory.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):  # a temporary renamed away while we look
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                state[str(path)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return state


def kill_report_at_its_first_write(directory: Path) -> None:
    """Start `fashion-mlp report` and SIGKILL it the moment anything under reports/ changes: a temporary
    created, a file truncated or written, a rename. Fails if it finished first (the kill proved nothing)."""
    before = files_state(directory / "reports")
    report = start_report(directory)
    while report.poll() is None and files_state(directory / "reports") == before:
        time.sleep(0.0005)
    report.kill()  # SIGKILL: no cleanup code runs
    _, stderr = report.communicate(timeout=TIMEOUT)
    assert report.returncode == -signal.SIGKILL, f"report finished before it was killed:\n{stderr[-3000:]}"


@pytest.mark.slow
def test_a_stage_killed_while_writing_leaves_each_output_whole_and_its_rerun_no_temporary(tmp_path, predictions):
    """SIGKILL a real stage at its first write and at random times: each output is the previous version byte for
    byte, or absent when there was none, or the whole new version; never a partial file. The next
    successful run writes the new version and leaves no temporary behind."""
    old_accuracy, new_accuracy = 0.8851, 0.8951
    reference = tmp_path / "reference"  # the new version, run without kills: same relative paths, same bytes
    report_inputs(reference, predictions, new_accuracy)
    run_report(reference)
    new = report_outputs(reference)
    work = tmp_path / "work"
    report_inputs(work, predictions, old_accuracy)

    # No previous version: killed at its first write (the figure's temporary), it leaves no output at all.
    kill_report_at_its_first_write(work)
    assert report_outputs(work) == dict.fromkeys(REPORT_OUTPUTS), "an output appeared from a killed run"
    assert report_leftovers(work), "no temporary left: the kill did not land in the middle of a write"

    started = time.monotonic()
    run_report(work)  # the previous version; it removes the temporary the killed run left
    duration = time.monotonic() - started  # only to spread the kills below over a run
    old = report_outputs(work)
    assert report_leftovers(work) == [] and None not in old.values()
    assert all(old[name] != new[name] for name in REPORT_OUTPUTS), "the two versions must differ to tell them apart"

    report_inputs(work, predictions, new_accuracy)
    kill_report_at_its_first_write(work)
    assert report_outputs(work) == old, "a killed write changed the previous version"
    assert report_leftovers(work), "no temporary left: the kill did not land in the middle of a write"

    rng = random.Random(0)
    for _ in range(8):  # killed at random points of a run: before, during or between the two writes
        report = start_report(work)
        time.sleep(rng.uniform(0, duration))
        report.kill()
        report.communicate(timeout=TIMEOUT)
        for name, content in report_outputs(work).items():
            assert content in (old[name], new[name]), f"{name}: neither the previous version nor the new one"

    run_report(work)
    assert report_outputs(work) == new
    assert report_leftovers(work) == [], "the rerun left temporaries of the killed runs"


# --- the Snakemake profile --------------------------------------------------------------


@pytest.mark.slow
def test_snakemake_finds_the_default_profile_and_its_rerun_incomplete_and_nolock():
    """Snakemake 9 reads profiles/default beside the Snakefile; a profile elsewhere is silently ignored."""
    profile = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    # rerun-incomplete: redo the jobs a kill interrupted; nolock: Snakemake 9 never expires the
    # .snakemake/locks a SIGKILL leaves, so with them every later run would stop until `--unlock`.
    assert profile["rerun-incomplete"] is True and profile["nolock"] is True
    result = subprocess.run(
        ["snakemake", "--dry-run", "--cores", "2", "--quiet", "all"],
        cwd=REPO,
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert "Using workflow specific profile profiles/default" in result.stderr


@pytest.mark.slow
def test_a_second_snakemake_in_the_same_checkout_is_refused_before_any_job(smoke_repo):
    """With Snakemake's own lock off (nolock), the Snakefile holds a kernel lock for the run's life:
    a second run is refused at once, and the lock dies with its holder, so a SIGKILL leaves none."""
    lock = smoke_repo / ".snakemake" / "run.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = subprocess.run(
            ["snakemake", "--cores", "2"],
            cwd=smoke_repo,
            env=engine_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert refused.returncode != 0
        assert "another Snakemake is running" in refused.stdout + refused.stderr
        assert not (smoke_repo / "data").exists(), "no job ran"
    finally:
        holder.kill()
        holder.wait()
    # The holder died without unlocking (as under SIGKILL): the lock is free again.
    free = subprocess.run(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], capture_output=True, text=True, timeout=TIMEOUT, input=""
    )
    assert free.stdout.strip() == "locked"


HOLD_LOCK = """
import fcntl, sys
handle = open(sys.argv[1], "w")
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.read()  # hold until killed (or until stdin closes)
"""


@pytest.mark.slow
def test_workers_beyond_the_cores_reserve_none(smoke_repo):
    """The chief's workers start together: with --cores below tune.workers, min(tune.workers, --cores)
    of them reserve a core and the others none (the result is the same), so `--cores 1` plans the whole
    pipeline, where it used to stop at Snakemake's pipe-group resource error."""
    workers = yaml.safe_load((smoke_repo / "params.yaml").read_text())["tune"]["workers"]
    assert workers >= 2, "the smoke params must ask for more workers than one core holds"
    result = subprocess.run(
        ["snakemake", "--dry-run", "--cores", "1"],
        cwd=smoke_repo,
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    message = result.stdout + result.stderr
    assert result.returncode == 0, message[-2000:]
    assert f"tune: --cores 1: 1 of the tune.workers {workers} Hyperband workers reserve a core" in message
    stats = dict(re.findall(r"^(tune_\w+)\s+(\d+)$", message, re.M))
    assert stats == {"tune_chief": "1", "tune_worker": str(workers), "tune_finish": "1"}, message[-2000:]
    # Snakemake prints a job's threads unless they are 1: worker0 reserves the core, the others none
    jobs = re.findall(r"rule tune_worker:\n(.*?)\n\S", message, re.S)
    threads = {re.search(r"wildcards: worker=(\d+)", job)[1]: "threads: 0" not in job for job in jobs}
    assert threads == {str(i): i == 0 for i in range(workers)}, message[-2000:]
    assert "pipe group" not in message.lower()
