"""Distributed Hyperband: a chief and two workers, run by Snakemake as jobs, on the smoke data.

The search is the one of the Snakemake smoke run (tests/smoke_runs.py: 4 cores, the default
two workers); later tests in that copy rerun trainings only, never the search.

The search must complete every trial, log each as a nested MLflow run under the one
search run, and find exactly what a single process finds: the same trials, the same
scores, the same best hyperparameters (the oracle decides in lockstep, trials are
seeded by their id).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from conftest import run
from fashion_mlp.config import cli_flags
from fashion_mlp.io import sha256_file
from snapshots import Snapshot

pytestmark = pytest.mark.e2e

HANG = 600  # seconds: a search that fails takes a minute at most (FAILURE_GRACE); this catches a hang


def read_trials(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def job_span(log: str, rule: str, wildcard: str = "") -> tuple[int, int]:
    """Where Snakemake's log says a job of `rule` started and finished (matched by a line of its block):
    positions in the log, so that concurrency is read from Snakemake's own account, not from a clock."""
    blocks = log.split("\n[")
    offsets = [0]
    for block in blocks[:-1]:
        offsets.append(offsets[-1] + len(block) + 2)
    start = end = None
    for i, block in enumerate(blocks):
        if f"rule {rule}:" in block and wildcard in block:
            start = offsets[i]
            jobid = block.split("jobid: ", 1)[1].split()[0]
            for j in range(i + 1, len(blocks)):
                if f"Finished jobid: {jobid} " in blocks[j]:
                    end = offsets[j]
                    break
            break
    assert start is not None and end is not None, f"no start and end of {rule} {wildcard} in Snakemake's log"
    return start, end


@pytest.fixture(scope="module")
def distributed(snakemake_first: Snapshot) -> Path:
    """The Snakemake smoke copy, searched by 1 chief and 2 workers as Snakemake jobs."""
    repo = snakemake_first.repo
    assert yaml.safe_load((repo / "params.yaml").read_text())["tune"]["workers"] == 2
    return repo


def test_chief_and_two_workers_run_as_concurrent_snakemake_jobs(distributed: Path, snakemake_first: Snapshot):
    log = snakemake_first.output
    chief = job_span(log, "tune_chief")
    workers = [job_span(log, "tune_worker", f"worker={i}") for i in (0, 1)]
    # the workers ran while the chief served, side by side: each started before the other finished
    assert all(chief[0] <= start and end <= chief[1] for start, end in workers), (chief, workers)
    assert workers[0][0] < workers[1][1] and workers[1][0] < workers[0][1], workers
    best = json.loads((distributed / "reports/tuning/best_hparams.json").read_text())
    # Who ran how many trials varies from run to run: it is in the untracked timings, not best_hparams.json.
    per_worker = json.loads((distributed / "reports/timings/tune.json").read_text())["workers"]
    assert set(per_worker) == {"worker0", "worker1"}
    assert sum(per_worker.values()) == best["search"]["trials"]
    assert all(n >= 1 for n in per_worker.values()), f"a worker ran no trial: {per_worker}"
    # the chief's address and the workers' hand-offs are gone; each role's log stays
    assert not (distributed / ".tuner/chief.json").exists()
    assert not list((distributed / ".tuner").glob("worker*.json"))
    logs = distributed / "logs/tune"
    assert sorted(path.name for path in logs.iterdir()) == ["chief.log", "finish.log", "worker0.log", "worker1.log"]
    assert "tune chief: oracle at 127.0.0.1:" in (logs / "chief.log").read_text()


def test_every_trial_completes_and_is_a_nested_run_of_the_one_search(distributed: Path, snakemake_first: Snapshot):
    from mlflow import MlflowClient

    rows = read_trials(distributed / "reports/tuning/trials.csv")
    assert rows and all(row["status"] == "COMPLETED" for row in rows)
    assert "trial_id" not in rows[0] and "worker" not in rows[0], "they follow the order trials were handed out"
    ran_by = {
        (t["draw"], t["round"]): t["worker"]
        for t in json.loads((distributed / "reports/timings/tune.json").read_text())["trials"]
    }
    assert set(ran_by.values()) == {"worker0", "worker1"}

    client = MlflowClient(tracking_uri=f"sqlite:///{distributed / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fashion-mnist-mlp")
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    runs = [r for r in found if r.info.run_id in snakemake_first.run_ids]
    parents = [r for r in runs if r.info.run_name == "tune"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert all(t.info.status == "FINISHED" for t in trials)
    by_key = {(int(t.data.tags["draw"]), int(t.data.tags["round"])): t for t in trials}
    assert sorted(by_key) == sorted((int(row["draw"]), int(row["round"])) for row in rows)
    for row in rows:  # each trial's run says which worker ran it and what it scored
        trial = by_key[int(row["draw"]), int(row["round"])]
        assert trial.data.tags["worker"] == ran_by[int(row["draw"]), int(row["round"])]
        assert trial.data.metrics["val_accuracy"] == pytest.approx(float(row["val_accuracy"]))
    assert int(parent.data.metrics["trials"]) == len(rows)
    tuned = [r for r in runs if r.info.run_name == "tuned"]
    assert len(tuned) == 1 and tuned[0].data.tags["tune_run_id"] == parent.info.run_id


def test_the_search_equals_a_single_process_search(distributed: Path, tmp_path: Path):
    """`fashion-mlp tune` with workers 1 runs the search in one process, without chief or gRPC."""
    params = yaml.safe_load((distributed / "params.yaml").read_text())
    section = params["tune"] | {"workers": 1}
    out = tmp_path / "single"
    cmd = (
        f"fashion-mlp tune {cli_flags(section)} --seed {params['seed']} --experiment single"
        f" --data data/prepared/train.npz --work_dir {out}/tuner --trials_out {out}/trials.csv"
        f" --best_out {out}/best.json --figure_out {out}/trials.png --model_out {out}/tuned.keras"
        f" --history_out {out}/tuned.csv --timings_dir {out}/timings"
    )
    run(["bash", "-c", cmd], distributed)
    distributed_rows = read_trials(distributed / "reports/tuning/trials.csv")
    single_rows = read_trials(out / "trials.csv")
    assert single_rows == distributed_rows  # trial for trial, score for score
    # The stage's files are byte for byte the same; only the untracked timings say who ran what.
    assert (out / "trials.csv").read_bytes() == (distributed / "reports/tuning/trials.csv").read_bytes()
    assert (out / "best.json").read_bytes() == (distributed / "reports/tuning/best_hparams.json").read_bytes()
    assert sha256_file(out / "tuned.keras") == sha256_file(distributed / "models/tuned.keras"), (
        "the retrain, in the process that ran the search, gives the model of a fresh process"
    )
    assert json.loads((out / "timings/tune.json").read_text())["workers"] == {"worker0": len(single_rows)}


def test_a_dead_worker_fails_the_search_within_seconds_instead_of_hanging(distributed: Path, tmp_path: Path):
    """KerasTuner's chief would wait forever for a trial whose worker died, and its workers an
    hour for a chief that is gone. Here the chief fails, the other worker stops, and nothing
    is written."""
    import os
    import signal
    import subprocess
    import time

    from conftest import engine_env
    from fashion_mlp.tracking import process_alive

    params = yaml.safe_load((distributed / "params.yaml").read_text())
    out = tmp_path / "killed"
    cmd = (
        f"fashion-mlp tune {cli_flags(params['tune'] | {'workers': 2})} --seed {params['seed']}"
        f" --experiment killed --data data/prepared/train.npz --work_dir {out}/tuner"
        f" --trials_out {out}/trials.csv --best_out {out}/best.json --figure_out {out}/trials.png"
        f" --model_out {out}/tuned.keras --history_out {out}/tuned.csv"
    )
    proc = subprocess.Popen(
        ["bash", "-c", cmd],
        cwd=distributed,
        env=engine_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("tuner/*/process-worker1.json")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            time.sleep(0.2)
        tags = json.loads(next(out.glob("tuner/*/process-worker1.json")).read_text())
        address = json.loads((out / "tuner/all/chief.json").read_text())
        os.kill(int(tags["pid"]), signal.SIGKILL)
        # Only a hang fails here: a generous timeout, no claim about how fast (speed lives in benchmarks/).
        output, _ = proc.communicate(timeout=HANG)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert f"tuning worker1 (pid {tags['pid']}) died before the search ended" in output, output[-3000:]
    assert not process_alive(int(address["pid"]), address["pid_started"]), "the chief is still running"
    assert not any((out / name).exists() for name in ("trials.csv", "best.json", "tuned.keras"))
