"""The fork server: a job forked from it gives the same bytes, streams and status as its own process,
dies with its job's process, hears its signals, and is refused when an import-time setting differs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from test_train import synthetic_data

from conftest import CLI, SUBPROCESS_TIMEOUT, clean_env
from fashion_mlp import forkserver
from fashion_mlp.forkserver import server as server_side
from fashion_mlp.io import sha256_file
from fashion_mlp.profiling import marks

slow = pytest.mark.slow  # a server that imports TensorFlow, and trainings

THREADS_1 = forkserver.one_thread_env({})  # what Snakemake gives a 1-thread job


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--model", "baseline"], True),
        (["tune", "--role", "finish", "--seed", "1"], True),
        (["tune", "--role=finish"], True),
        (["tune", "--role", "worker", "--worker_id", "0"], True),
        (["tune", "--role", "chief"], True),
        (["tune"], False),  # the whole search in one process
        (["tune", "--role", "finish", "--role", "worker"], False),
        (["predict", "--image", "x.png"], False),  # run by hand
        ([], False),
    ],
)
def test_the_server_runs_the_pipelines_jobs_and_the_searchs_roles(argv, expected):
    assert forkserver.served(argv) is expected


def test_tcmalloc_is_preloaded_where_installed_and_a_set_preload_wins(monkeypatch):
    monkeypatch.setattr(forkserver.ctypes.util, "find_library", lambda name: f"lib{name}.so.4")
    assert forkserver.with_tcmalloc({"A": "1"}) == {"A": "1", "LD_PRELOAD": "libtcmalloc_minimal.so.4"}
    assert forkserver.with_tcmalloc({"LD_PRELOAD": "libjemalloc.so.2"}) == {"LD_PRELOAD": "libjemalloc.so.2"}
    monkeypatch.setattr(forkserver.ctypes.util, "find_library", lambda name: None)
    assert forkserver.with_tcmalloc({"A": "1"}) == {"A": "1"}


LISTENS_LATE = (  # a server that takes a while to import, then listens
    "import socket, sys, time; time.sleep(float(sys.argv[2])); s = socket.socket(socket.AF_UNIX);"
    " s.bind(sys.argv[1]); s.listen(); time.sleep(30)"
)


def test_a_job_waits_for_a_starting_server_but_a_light_one_does_not(tmp_path, monkeypatch):
    path = str(tmp_path / "late.sock")
    starting = subprocess.Popen([sys.executable, "-c", LISTENS_LATE, path, "0.5"])
    try:
        monkeypatch.setenv(forkserver.PID_ENV, str(starting.pid))
        assert forkserver.connect(path, wait=0) is None, "a light job runs at once"
        began = time.monotonic()
        client = forkserver.connect(path, wait=30)
        assert client is not None and time.monotonic() - began >= 0.3
        client.close()
    finally:
        starting.kill()
        starting.wait()


@pytest.mark.parametrize(
    ("argv", "seconds"),
    [
        (["prepare"], 0),
        (["tune", "--role", "chief", "--seed", "1"], forkserver.START_WAIT["chief"]),
        (["tune", "--role=worker"], forkserver.START_TIMEOUT),
        (["train", "--model", "cnn"], forkserver.START_TIMEOUT),
    ],
)
def test_the_search_s_chief_waits_less_than_snakemake_waits_for_its_file(argv, seconds):
    assert forkserver.start_wait(argv) == seconds
    assert forkserver.START_WAIT["chief"] < 5 - 2, "Snakemake's --latency-wait is 5 s; the chief then needs ~1 s"


def test_a_job_stops_waiting_for_a_server_that_died_or_was_never_named(tmp_path, monkeypatch):
    path = str(tmp_path / "never.sock")
    monkeypatch.delenv(forkserver.PID_ENV, raising=False)
    assert forkserver.connect(path, wait=30) is None, "no server's pid: nothing to wait for"
    dying = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    monkeypatch.setenv(forkserver.PID_ENV, str(dying.pid))
    began = time.monotonic()
    assert forkserver.connect(path, wait=30) is None
    # It is not reaped while connect waits: a zombie counts as gone.
    assert time.monotonic() - began < 10 and not forkserver.alive(dying.pid)
    dying.wait()


class DvcProcess:
    pid, started = 4242, 1700000000.5

    def create_time(self) -> float:
        return self.started


@pytest.mark.parametrize("under_dvc", [True, False])
def test_under_dvc_a_job_sends_the_invocation_id_its_fork_cannot_derive(tmp_path, monkeypatch, under_dvc):
    """DVC sets no invocation id: tracking derives one from the `dvc` process among a stage's ancestors. A fork
    of the server has none, so the job's own process settles the id and sends it in the fork's environment.
    Under Snakemake the Snakefile exports it, and nothing changes."""
    from fashion_mlp.tracking import lineage

    for var in (lineage.INVOCATION_VAR, "DVC_STAGE"):
        monkeypatch.delenv(var, raising=False)
    if under_dvc:
        monkeypatch.setenv("DVC_STAGE", "train@baseline")
    monkeypatch.setattr(lineage, "dvc_process", DvcProcess)
    monkeypatch.setenv(forkserver.ENV, str(tmp_path / "server.sock"))
    ours, theirs = socket.socketpair()
    monkeypatch.setattr(forkserver, "connect", lambda path, wait: ours)
    sent = []
    monkeypatch.setattr(forkserver, "send_request", lambda client, argv: sent.append(dict(os.environ)))  # declined
    assert forkserver.request_job(["train", "--model", "baseline"]) is None
    theirs.close()
    if not under_dvc:
        assert lineage.INVOCATION_VAR not in sent[0]
        return
    expected = lineage.invocation_id()  # what this process derives from its `dvc` ancestor
    monkeypatch.setattr(lineage, "dvc_process", lambda: None)  # the fork: no `dvc` among its ancestors
    monkeypatch.setattr(os, "environ", sent[0])
    assert lineage.invocation_id() == expected


ASKS_FOR_A_JOB = "import sys; from fashion_mlp import forkserver; sys.exit(forkserver.request_job(['train']))"


def test_a_signal_before_the_job_hears_of_its_fork_is_passed_on_to_the_fork(tmp_path):
    # The server's part played here, so that the signal lands in the gap between fork and answer.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = str(tmp_path / "fake.sock")
    listener.bind(path)
    listener.listen()
    job = subprocess.Popen([sys.executable, "-c", ASKS_FOR_A_JOB], env=clean_env(**{forkserver.ENV: path}))
    fork = subprocess.Popen(["sleep", "60"])  # stands in for the fork
    try:
        conn, _ = listener.accept()
        request, fds = server_side.read_request(conn)
        for fd in fds:
            os.close(fd)
        assert request["argv"] == ["train"]
        job.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert job.poll() is None, "the job's process held the signal while it waited for the answer"
        conn.sendall(f"forked\n{fork.pid}\n".encode())
        assert fork.wait(timeout=10) == -signal.SIGTERM, "the held signal reached the fork"
        conn.sendall(f"{-signal.SIGTERM}\n".encode())
        assert job.wait(timeout=10) == -signal.SIGTERM, "the job's process died of its fork's signal"
    finally:
        for proc in (job, fork):
            proc.kill()
            proc.wait()
        listener.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forkserver")
    np.savez(tmp / "train.npz", **synthetic_data(600, 200))
    return tmp


@pytest.fixture(scope="module")
def server(workdir):
    """A server started the way the Snakefile starts it, and the environment its jobs share."""
    path = workdir / "server.sock"
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}", **THREADS_1)
    with open(workdir / "server.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fashion_mlp.forkserver", "--socket", str(path)],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.time() + 120
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, (workdir / "server.log").read_text()
        time.sleep(0.2)
    yield proc, env | {forkserver.ENV: str(path)}
    proc.terminate()
    proc.wait(timeout=30)


def train_argv(workdir: Path, name: str, epochs: int = 2, data: str = "train.npz") -> list[str]:
    """A tiny training; `name` names its files only (the model's name is in its file's bytes)."""
    return [
        "train", "--model", "tiny", "--hidden", "16", "--activation", "relu", "--dropout", "0.1", "--l2", "0.0",
        "--learning_rate", "0.01", "--lr_schedule", "constant", "--lr_decay_rate", "1.0", "--batch_size", "32",
        "--epochs", str(epochs), "--early_stopping_patience", "None", "--early_stopping_monitor", "val_loss",
        "--steps_per_execution", "4", "--seed", "3", "--experiment", "forkserver-test",
        "--data", str(workdir / data), "--model_out", str(workdir / f"{name}.keras"),
        "--history_out", str(workdir / f"{name}.csv"), "--timings_dir", str(workdir / "timings"),
    ]  # fmt: skip


def run_cli(argv: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )


def records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


@slow
def test_a_forked_job_gives_the_bytes_output_and_record_of_its_own_process(server, workdir):
    proc, env = server
    own = {k: v for k, v in env.items() if k != forkserver.ENV} | {marks.ENV: str(workdir / "alone")}
    alone = run_cli(train_argv(workdir, "alone"), own, workdir)
    forked = run_cli(train_argv(workdir, "forked"), env | {marks.ENV: str(workdir / "profile")}, workdir)
    assert alone.returncode == 0 and forked.returncode == 0, forked.stderr[-2000:]
    assert sha256_file(workdir / "alone.keras") == sha256_file(workdir / "forked.keras")
    assert (workdir / "alone.csv").read_bytes() == (workdir / "forked.csv").read_bytes()
    assert "train: tiny: 2 epochs" in forked.stdout  # the child wrote to the job's own streams
    (record,) = records(workdir / "profile")
    assert record["label"] == "tiny" and record["pid"] != proc.pid
    assert not psutil.Process(proc.pid).children(), "the server reaped its child"
    # The fork skipped the imports: TensorFlow was there less than half as long after its start.
    (own_record,) = records(workdir / "alone")
    assert dict(record["marks"])[marks.TF_IMPORTED] < dict(own_record["marks"])[marks.TF_IMPORTED] / 2


@slow
def test_a_failing_job_returns_its_status_and_message(server, workdir):
    _, env = server
    result = run_cli(["train", "--no_such_flag"], env, workdir)
    assert result.returncode == 2 and "fashion-mlp train: error: the following arguments are required" in result.stderr
    missing = run_cli(train_argv(workdir, "nodata", data="missing.npz"), env, workdir)
    assert missing.returncode != 0 and "missing.npz" in missing.stderr


@slow
def test_a_job_whose_import_time_settings_differ_runs_in_its_own_process(server, workdir):
    _, env = server
    folder = workdir / "declined"
    job = subprocess.Popen(
        [str(CLI), *train_argv(workdir, "two_threads")],
        env=env | {"OMP_NUM_THREADS": "2", marks.ENV: str(folder)}, cwd=workdir,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    job.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert job.returncode == 0
    (record,) = records(folder)
    assert record["pid"] == job.pid, "the job's own process ran it, not a fork of the server"


def wait_for_child(proc: subprocess.Popen, timeout: float = 60) -> psutil.Process:
    deadline = time.time() + timeout
    while time.time() < deadline:
        children = psutil.Process(proc.pid).children()
        if children:
            return children[0]
        time.sleep(0.1)
    raise AssertionError("the server forked no child")


@slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_the_fork_dies_with_its_jobs_process_or_hears_its_signal(server, workdir, how):
    proc, env = server
    job = subprocess.Popen([str(CLI), *train_argv(workdir, f"long_{how}", epochs=500)], env=env, cwd=workdir,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    child = wait_for_child(proc)
    job.send_signal(getattr(signal, how))
    job.wait(timeout=30)
    child.wait(timeout=30)  # SIGKILL: the server saw the connection close; SIGTERM: passed on
    if how == "SIGTERM":
        assert job.returncode == -signal.SIGTERM, "the job's process ended as its child did"
    assert not (workdir / f"long_{how}.keras").exists()


@slow
def test_the_server_kills_a_fork_whose_job_process_left_before_the_answer(server, workdir):
    proc, env = server
    client = forkserver.connect(env[forkserver.ENV], wait=0)
    request = forkserver.request_bytes(train_argv(workdir, "unheard", epochs=500), str(workdir), env)
    socket.send_fds(client, [request], [0, 1, 2])
    client.close()  # gone before the server answers "forked": that answer fails (it crashed the server, CI stop 44)
    after = run_cli(train_argv(workdir, "after_unheard"), env, workdir)  # the server takes requests in turn
    assert after.returncode == 0 and proc.poll() is None, "the server goes on serving"
    deadline = time.time() + 30
    while psutil.Process(proc.pid).children():
        assert time.time() < deadline, "the fork outlived its job's process by 30 s"
        time.sleep(0.2)
    assert not (workdir / "unheard.keras").exists()
