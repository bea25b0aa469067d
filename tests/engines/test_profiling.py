"""The run's profile: each job's own record, the machine's sampled CPU, and the table and figure drawn from them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO
from fashion_mlp.profiling import draw, marks, sampler


def write_job(folder: Path, command: str, label: str, started: float, wall: float, cpu: float, rss: float, at):
    record = {
        "command": command,
        "label": label,
        "pid": 1000 + len(list(folder.glob("*.json"))),
        "started": started,
        "ended": started + wall,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "max_rss_mb": rss,
        "marks": [list(pair) for pair in at],
    }
    (folder / f"{command}-{label}-{record['pid']}.json").write_text(json.dumps(record))


def test_a_profiled_process_writes_its_record_at_exit_and_an_unprofiled_one_nothing(tmp_path):
    code = (
        "import sys; from fashion_mlp.profiling import marks\n"
        "marks.start('train', ['--model', 'tiny', '--seed', '1'])\n"
        "marks.mark('model built'); sum(i * i for i in range(300000)); marks.mark('model saved')\n"
        "sys.exit(0)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != marks.ENV}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tmp_path)
    assert not list(tmp_path.rglob("*.json")), "no record without $FASHION_MLP_PROFILE_DIR"

    folder = tmp_path / "run"
    subprocess.run([sys.executable, "-c", code], env=env | {marks.ENV: str(folder)}, check=True)
    (path,) = folder.glob("train-tiny-*.json")
    record = json.loads(path.read_text())
    assert record["command"] == "train" and record["label"] == "tiny"
    assert [name for name, _ in record["marks"]] == ["model built", "model saved"]
    built, saved = (at for _, at in record["marks"])
    # The process's start is the kernel's, before the interpreter: every mark comes after it.
    assert 0 < built <= saved <= record["wall_seconds"]
    assert record["ended"] - record["started"] == pytest.approx(record["wall_seconds"], abs=1e-6)
    assert record["cpu_seconds"] > 0 and 5 < record["max_rss_mb"] < 2000


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--model", "cnn", "--seed", "1"], "cnn"),
        (["--role", "worker", "--worker_id", "1"], "worker1"),
        (["backprop", "--seed", "1"], "backprop"),
        (["--seed", "1"], ""),
    ],
)
def test_a_jobs_label_is_its_model_its_role_or_its_lesson(argv, expected):
    assert marks.label(argv) == expected


def test_the_sampler_writes_busy_cores_between_zero_and_the_cores(tmp_path):
    stop, path = threading.Event(), tmp_path / "machine.tsv"
    thread = threading.Thread(target=sampler.sample, args=(path, stop, 0.05))
    thread.start()
    deadline = time.time() + 0.4
    while time.time() < deadline:  # some work to see
        sum(i * i for i in range(10000))
    stop.set()
    thread.join()
    lines = path.read_text().splitlines()
    assert lines[0] == f"# cores\t{os.cpu_count()}"
    busy = [float(line.split("\t")[1]) for line in lines[1:]]
    assert len(busy) >= 3 and all(0 <= b <= os.cpu_count() for b in busy)


def test_start_points_the_jobs_at_a_new_run_and_prune_keeps_the_newest_runs_with_jobs(tmp_path, monkeypatch):
    monkeypatch.delenv(marks.ENV, raising=False)
    for name in ("20260101T000000", "20260102T000000", "20260103T000000", "20260104T000000"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train-x-1.json").write_text("{}")
    folder = sampler.start(tmp_path)
    try:
        assert os.environ[marks.ENV] == str(folder) and (folder / sampler.MACHINE_FILE).exists()
        (folder / "init-tracking-7.json").write_text("{}")  # onstart's own job, in a no-op rerun too
    finally:
        assert sampler.stop() == folder
    assert not sampler.ran_jobs(folder)
    sampler.prune(tmp_path, keep=2)  # the new run ran no job (a no-op rerun): it goes, the last real run stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20260103T000000", "20260104T000000"]


def table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| t")]


@pytest.fixture
def run_dir(tmp_path):
    """Two trainings side by side, a tune worker with two trials, and the machine's samples."""
    folder = tmp_path / "runs" / "20260101T000000"
    folder.mkdir(parents=True)
    t0 = 1_000_000.0
    training = [
        (marks.TF_IMPORTED, 6.0),
        (marks.BUILT, 8.0),
        (marks.RUN_STARTED, 8.25),
        (marks.EPOCHS_START, 9.0),
        (marks.FIRST_EPOCH_END, 12.0),
        (marks.EPOCHS_END, 30.0),
        (marks.SAVED, 30.5),
        (marks.LOGGED, 33.0),
    ]
    write_job(folder, "train", "baseline", t0 + 2, 34.0, 33.0, 900.0, training)
    write_job(folder, "train", "cnn", t0 + 3, 40.0, 38.0, 1300.0, [(n, a + 1) for n, a in training])
    trial = [
        ("trial 00: trial start", 7.0),
        (f"trial 00: {marks.EPOCHS_START}", 7.5),
        (f"trial 00: {marks.FIRST_EPOCH_END}", 9.5),
        (f"trial 00: {marks.EPOCHS_END}", 12.5),
        ("trial 00: trial end", 13.0),
        ("trial 01: trial start", 14.0),
        (f"trial 01: {marks.EPOCHS_START}", 14.5),
        (f"trial 01: {marks.FIRST_EPOCH_END}", 16.5),
        (f"trial 01: {marks.EPOCHS_END}", 19.5),
        ("trial 01: trial end", 20.0),
    ]
    write_job(folder, "tune", "worker1", t0 + 40, 21.0, 20.0, 700.0, trial)
    lines = [f"# started\t{t0}", "# cores\t2", *(f"{t0 + s}\t{1.5 if s < 40 else 1.0}" for s in range(1, 62))]
    (folder / sampler.MACHINE_FILE).write_text("\n".join(lines) + "\n")
    return folder


def test_the_profile_names_each_jobs_cpu_rss_fixed_cost_and_phases(run_dir, tmp_path):
    draw.main(["--run_dir", str(run_dir), "--out_dir", str(tmp_path / "out")])
    text = (tmp_path / "out" / "profile.md").read_text()
    assert (tmp_path / "out" / "profile.png").stat().st_size > 10_000
    assert "- 3 jobs in 61.0 s of wall time on 2 cores; the jobs' own CPU (getrusage): 91.0 s, 75% of" in text
    assert "The machine's cores were 66% busy" in text  # (39 x 1.5 + 22 x 1.0) / 61 s / 2 cores
    # Fixed cost: 9 s to the first epoch plus 4 s after the last (cnn: 10 + 9): median 16 s.
    assert "median 16.0 s over 2 trainings" in text
    assert "Peak RSS: 1300 MB (train cnn)" in text
    rows = {cells[0]: cells[1:] for cells in table_rows(text)}
    # start, wall, CPU s, CPU %, RSS, fixed; then imports, build, MLflow run, compile, first epoch, other epochs,
    # save, MLflow logging, exit
    own = ["2.0", "34.0", "33.0", "97", "900", "13.0"]
    phases = ["6.0", "2.0", "0.2", "0.8", "3.0", "18.0", "0.5", "2.5", "1.0"]
    assert rows["train baseline"] == own + phases
    assert rows["tune worker1"][5:] == [""] * 10, "a worker's epochs are its trials': no training phases of its own"
    # Trials: setup 0.5, first epoch 2, other epochs 3, teardown 0.5, 1.0 s to the next trial (one pair)
    assert "### The search's 2 trials: median seconds per phase" in text
    assert "| 0.50 | 2.00 | 3.00 | 0.50 | 1.00 |" in text


def test_profile_without_records_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / draw.RUNS_DIR / "20260101T000000"  # a no-op rerun's folder, before pruning
    folder.mkdir(parents=True)
    (folder / "init-tracking-7.json").write_text("{}")
    assert sampler.newest_run(tmp_path / draw.RUNS_DIR) is None
    with pytest.raises(SystemExit, match="no run with job records under"):
        draw.main(["--out_dir", str(tmp_path)])


def test_the_whole_run_benchmark_reads_ratio_goals_and_new_jobs_from_its_runs():
    """benchmarks/pipeline.py's summary: medians, the ratio against the goal, and the new commit's
    jobs that the old one lacks, with their own time (here lesson/backprop.tsv, 20 s and 22 s), less a search
    worker more (the search's time spread over more processes, not new work)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_pipeline", REPO / "benchmarks/pipeline.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def run(commit, seconds, busy, noop, jobs, fixed=None):
        return {
            "commit": commit,
            "seconds": seconds,
            "busy": busy,
            "max_rss_mb": 1500.0,
            "largest_job": "x",
            "noop_seconds": noop,
            "fixed_seconds_median": fixed,
            "jobs": jobs,
        }

    old_jobs = {"train/baseline.tsv": 50.0}
    runs = {
        "old": [run("aaa", s, 0.85, 2.0, old_jobs) for s in (300.0, 290.0, 310.0)],
        "new": [
            run("bbb", s, 0.93, 3.0, old_jobs | {"lesson/backprop.tsv": t, "tune/worker2.tsv": 110.0}, 2.5)
            for s, t in ((200.0, 20.0), (210.0, 22.0), (205.0, 30.0))
        ],
    }
    text = bench.summary(runs)
    assert "old aaa: median 300.0 s over 3 runs" in text and "new bbb: median 205.0 s over 3 runs" in text
    assert "wall time new/old: 0.68 (goal <= 0.7)" in text
    assert "busy cores, new: 93% (goal >= 90%); old: 85%" in text
    assert "a training's fixed cost, new: median 2.50 s (goal <= 3.0)" in text
    assert "jobs the old commit lacks (1: lesson/backprop.tsv): 22.0 s of job time" in text


def test_the_epoch_marks_start_at_the_first_epoch_a_fit_runs_even_a_resumed_one(monkeypatch, tmp_path):
    """A promoted Hyperband trial resumes at its parent's last epoch: its first epoch is marked too."""
    monkeypatch.setenv(marks.ENV, str(tmp_path))
    monkeypatch.setattr(marks, "_marks", [])
    for prefix, epochs in (("trial 1: ", range(0, 2)), ("trial 2: ", range(2, 5))):
        callback = marks.epoch_marks(prefix)
        for epoch in epochs:
            callback.on_epoch_begin(epoch)
            callback.on_epoch_end(epoch)
        callback.on_train_end()
    names = [name for name, _ in marks._marks]
    assert names == [
        prefix + name
        for prefix in ("trial 1: ", "trial 2: ")
        for name in (marks.EPOCHS_START, marks.FIRST_EPOCH_END, marks.EPOCHS_END)
    ]


def test_a_process_start_is_its_fork_to_the_hundredth_of_a_second():
    """The record's start comes from the kernel's clock ticks (10 ms), not /proc/stat's whole-second boot time."""
    before = time.time()
    result = subprocess.run(
        [sys.executable, "-c", "from fashion_mlp.profiling import marks; print(repr(marks.process_start()))"],
        capture_output=True,
        text=True,
        check=True,
    )
    started = float(result.stdout)
    assert before - 0.03 <= started <= before + 0.5, (before, started)
