"""Tracking (fashion_mlp.tracking): a run whose process was SIGKILLed is marked KILLED by the next stage,
and no other run is touched. Real processes, a real SIGKILL, a real SQLite store."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys

import pytest

from conftest import REPO, cli, engine_env

pytestmark = pytest.mark.slow  # MLflow's SQLite store is created in a subprocess, then `fashion-mlp init-tracking`
TIMEOUT = 120

# A stage's first steps (tracking.init, a run with the stage's tags), then a SIGKILL with the run open.
DIE_IN_A_RUN = """
import os, signal, sys
import mlflow
from fashion_mlp import tracking

tracking.init(sys.argv[1])
run = mlflow.start_run(run_name="killed", tags=tracking.base_tags("train", sys.argv[2]))
mlflow.start_run(run_name="nested", nested=True)  # like a Hyperband trial: no tags of its own
print(run.info.run_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_run_that_ends_while_the_closer_looks_stays_finished(tmp_path, monkeypatch):
    """The closer lists the RUNNING runs, then asks whether each owner lives. An owner that ended its run and
    exited in between is gone by then, but its run is FINISHED, and must stay so (CI saw it marked KILLED)."""
    import mlflow
    from mlflow import MlflowClient

    from fashion_mlp import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("exp")
    tags = tracking.process_tags() | {"pid": "999999", "pid_started": "1000.00"}  # an owner that is gone
    ended = client.create_run(experiment_id, tags=tags).info.run_id
    orphan = client.create_run(experiment_id, tags=tags).info.run_id

    def owner_ends_its_run_and_exits(pid, started=None):
        client.set_terminated(ended, status="FINISHED")  # what the owner did just before it exited
        return False

    monkeypatch.setattr(tracking.owners, "process_alive", owner_ends_its_run_and_exits)
    assert tracking.close_orphaned_runs(experiment_id) == [orphan]
    assert client.get_run(ended).info.status == "FINISHED"
    assert client.get_run(orphan).info.status == "KILLED"


def test_run_of_a_killed_process_is_marked_killed_by_the_next_stage(tmp_path):
    from mlflow import MlflowClient

    from fashion_mlp.tracking import process_tags

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, "FASHION_MLP_ROOT": str(REPO)}
    data = tmp_path / "train.npz"
    data.write_bytes(b"stand-in for the prepared data")
    killed = subprocess.run(
        [sys.executable, "-c", DIE_IN_A_RUN, "exp", str(data)],
        cwd=tmp_path,
        env=engine_env() | env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    killed_id = killed.stdout.split()[0]

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name("exp").experiment_id
    nested_id = next(
        r.info.run_id for r in client.search_runs([experiment_id]) if r.data.tags.get("mlflow.parentRunId") == killed_id
    )
    tags = client.get_run(killed_id).data.tags
    assert tags["host"] == socket.gethostname() and tags["pid"].isdigit() and tags["pid_started"]
    assert tags["data_sha256"] and tags["git_commit"]
    # Runs that must survive: this live process's, another host's, one without owner tags.
    mine = process_tags()
    live = client.create_run(experiment_id, tags=mine).info.run_id
    elsewhere = client.create_run(experiment_id, tags=mine | {"host": "another-host"}).info.run_id
    untagged = client.create_run(experiment_id).info.run_id
    # Same pid as this live process but another start time: the pid was reused, the owner is gone.
    reused = client.create_run(experiment_id, tags=mine | {"pid_started": "1000.00"}).info.run_id
    assert {client.get_run(i).info.status for i in (killed_id, nested_id, live, elsewhere)} == {"RUNNING"}

    # What every stage, and Snakemake's onstart, runs first.
    result = cli(["init-tracking", "--experiment", "exp"], tmp_path, **env)
    assert result.returncode == 0, result.stderr
    status = {i: client.get_run(i).info.status for i in (killed_id, nested_id, live, elsewhere, untagged, reused)}
    assert status == {
        killed_id: "KILLED",
        nested_id: "KILLED",
        reused: "KILLED",
        live: "RUNNING",
        elsewhere: "RUNNING",
        untagged: "RUNNING",
    }
    assert f"run {killed_id} was left RUNNING by a process that is gone; marked KILLED" in result.stderr


def test_the_dataset_insert_race_and_a_locked_store_are_retried_other_errors_are_not(monkeypatch):
    """Two Hyperband workers logging the same splits at once: one insert loses MLflow's race for the
    datasets row (seen in a cluster smoke run on SQLite, and in CI on the PostgreSQL-backed server: a trial
    FAILED). The transaction is rolled back, and a retry finds the row."""
    from fashion_mlp import tracking

    monkeypatch.setattr(tracking.store.time, "sleep", lambda seconds: None)
    failures = [
        "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest",
        "(sqlite3.OperationalError) database is locked",
        # As MLflow's REST client raised it when four processes logged one new dataset to `mlflow server`
        # on PostgreSQL (workflow/scripts/mlflow_server.py) at once:
        'BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"\n'
        "DETAIL:  Key (experiment_id, name, digest)=(1, train, d1) already exists.",
    ]

    def flaky():
        if failures:
            raise RuntimeError(failures.pop(0))
        return "logged"

    random.seed(7)
    assert tracking.with_retry(flaky) == "logged" and failures == []
    # The stages seed `random`, and Keras draws its initializers' seeds from it: retries must not move it.
    assert random.random() == random.Random(7).random()

    def broken():
        raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: runs.run_uuid")

    with pytest.raises(RuntimeError, match=r"runs\.run_uuid"):
        tracking.with_retry(broken)


def test_processes_take_turns_setting_up_a_sqlite_store(tmp_path):
    """init()'s lock: held, another process cannot take it; released, it can. Other stores take none."""
    from fashion_mlp import tracking

    store = tmp_path / "mlflow.db"
    probe = (
        "import fcntl, sys\n"
        "handle = open(sys.argv[1], 'a')\n"
        "try:\n    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(1)\n"
    )

    def free() -> bool:
        return subprocess.run([sys.executable, "-c", probe, f"{store}.lock"]).returncode == 0

    with tracking.store_lock(f"sqlite:///{store}"):
        assert not free()
    assert free()
    with tracking.store_lock("http://127.0.0.1:5000"):  # a server's store: no lock to wait for
        assert free()
