"""A server's life: it removes the sockets of dead servers when it starts, its own when it stops (SIGTERM, or
its parent gone); `python -m fashion_mlp.forkserver -- COMMAND` (make repro) runs a command with a server of
its own, whose jobs are forks of it, passes on the command's status and stops the server when it ends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from test_forkserver import THREADS_1, records, slow, train_argv
from test_train import synthetic_data

from conftest import CLI, SUBPROCESS_TIMEOUT, clean_env
from fashion_mlp import forkserver
from fashion_mlp.forkserver import server as server_side
from fashion_mlp.forkserver.__main__ import main
from fashion_mlp.profiling import marks

WRAPPER = [sys.executable, "-m", "fashion_mlp.forkserver"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [([], "give --socket PATH to serve, or a command"), (["--socket", "s.sock", "--", "true"], "not both")],
)
def test_the_server_is_told_to_serve_or_to_run_a_command(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_command_that_does_not_exist_is_named_and_no_server_is_left(tmp_path):
    with tempfile.TemporaryDirectory(prefix="fm-") as sockets:  # short: a socket path stays under 108 bytes
        result = subprocess.run(
            [*WRAPPER, "--log", str(tmp_path / "server.log"), "--", "no-such-command-fm"],
            env=clean_env(TMPDIR=sockets), cwd=tmp_path, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
        )  # fmt: skip
        assert result.returncode == 1
        assert "cannot run 'no-such-command-fm': No such file or directory" in result.stderr
        assert not os.listdir(sockets)


# Run by the wrapper: one training through the CLI, then what the command saw of its server; exits 3.
COMMAND = """
import json, os, subprocess, sys
job = subprocess.Popen(sys.argv[2:])
job.wait()
path = os.environ["FASHION_MLP_FORKSERVER"]
seen = {"job": job.pid, "status": job.returncode, "socket": path, "listening": os.path.exists(path),
        "server": int(os.environ["FASHION_MLP_FORKSERVER_PID"])}
open(sys.argv[1], "w").write(json.dumps(seen))
sys.exit(3)
"""


@pytest.mark.slow  # the server imports TensorFlow
def test_a_command_s_jobs_fork_from_its_own_server_which_stops_when_it_ends(tmp_path):
    np.savez(tmp_path / "train.npz", **synthetic_data(600, 200))
    seen_file, log = tmp_path / "seen.json", tmp_path / "logs" / "server.log"
    job = [str(CLI), *train_argv(tmp_path, "wrapped")]
    with tempfile.TemporaryDirectory(prefix="fm-") as sockets:
        result = subprocess.run(
            [*WRAPPER, "--log", str(log), "--", sys.executable, "-c", COMMAND, str(seen_file), *job],
            env=clean_env(TMPDIR=sockets, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
            | {marks.ENV: str(tmp_path / "profile")},
            cwd=tmp_path, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
        )  # fmt: skip
        assert result.returncode == 3, result.stderr[-3000:]  # the command's status
        seen = json.loads(seen_file.read_text())
        assert seen["status"] == 0 and seen["listening"] and seen["socket"].startswith(sockets)
        assert not os.listdir(sockets), "the server removed its socket"
    assert not forkserver.alive(seen["server"]), "the server stopped with the command"
    (record,) = records(tmp_path / "profile")
    assert record["pid"] != seen["job"], "a fork of the server trained, not the job's own process"
    assert (tmp_path / "wrapped.keras").exists()
    assert "forkserver: train --model tiny: forked, pid" in log.read_text()


def test_a_new_server_removes_the_sockets_of_servers_that_are_gone():
    """A SIGKILLed server leaves its socket file; the next one removes the files no one listens on, and
    leaves a live server's, another program's socket and a plain file alone."""
    # Not tmp_path: with pytest's and xdist's folders and this test's name, a socket path there can pass
    # the 108 bytes AF_UNIX allows (seen in CI).
    with tempfile.TemporaryDirectory(prefix="fm-") as folder:
        check_stale_sockets_removed(Path(folder))
    assert Path(forkserver.new_socket_path()).match(forkserver.SOCKETS), "the Snakefile's names are the ones swept"


def check_stale_sockets_removed(tmp_path: Path) -> None:
    def bound(name: str, listening: bool) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(tmp_path / name))
        if listening:
            sock.listen(1)
        return sock

    gone = bound("fashion-mlp-forkserver-0123456789ab.sock", listening=False)
    gone.close()  # its file stays, as after a SIGKILL
    live = bound("fashion-mlp-forkserver-ba9876543210.sock", listening=True)
    other = bound("another-program.sock", listening=False)
    other.close()
    (tmp_path / "fashion-mlp-forkserver-notes.sock").write_text("not a socket")
    try:
        removed = server_side.remove_stale_sockets(str(tmp_path))
    finally:
        live.close()
    assert removed == [str(tmp_path / "fashion-mlp-forkserver-0123456789ab.sock")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "another-program.sock",
        "fashion-mlp-forkserver-ba9876543210.sock",
        "fashion-mlp-forkserver-notes.sock",
    ]


@pytest.fixture
def workdir():
    """Not tmp_path: under pytest's and xdist's folders, with the test's name, a socket path there can pass the
    108 bytes AF_UNIX allows (seen in CI)."""
    with tempfile.TemporaryDirectory(prefix="fm-") as folder:
        yield Path(folder)


def wait_for_socket(path: Path, proc: subprocess.Popen) -> None:
    """Wait while a starting server preloads (10-20 s on a quiet machine; far longer beside a training)."""
    deadline = time.time() + 300
    while not path.exists():
        assert time.time() < deadline and proc.poll() is None, f"no socket {path.name} in 300 s"
        time.sleep(0.2)


@slow
def test_a_terminated_server_removes_its_socket(workdir):
    """The Snakefile stops its server with SIGTERM: no socket file is left behind in the temporary directory.
    A server also removes, when it starts, the file a SIGKILLed one left there."""
    folder = workdir / "s"  # short: a socket path must stay under 108 bytes
    folder.mkdir()
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(folder / "fashion-mlp-forkserver-0123456789ab.sock"))
    left.close()  # no one listens: as after a SIGKILL
    path = folder / "fashion-mlp-forkserver-terminated.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fashion_mlp.forkserver", "--socket", str(path), "--parent", str(os.getpid())],
        env=clean_env(**THREADS_1), cwd=workdir,
    )  # fmt: skip
    try:
        wait_for_socket(path, proc)
        assert [p.name for p in folder.iterdir()] == [path.name], "the dead server's socket was removed"
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert not path.exists()


@slow
def test_the_server_leaves_when_its_parent_does(workdir):
    path = workdir / "orphan.sock"
    # The parent outlives every deadline below, so that only the test ends it: with a 60-s life it left
    # before a server slowed by load (preloading TensorFlow beside a training, CI) had made its socket.
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-m',"
         f" 'fashion_mlp.forkserver', '--socket', {str(path)!r}]); time.sleep(900)"],
        env=clean_env(**THREADS_1), cwd=workdir,
    )  # fmt: skip
    server = None
    try:
        wait_for_socket(path, parent)
        (server,) = psutil.Process(parent.pid).children()
    finally:
        if server is None:  # failed above: the server goes down with its parent
            for child in psutil.Process(parent.pid).children():
                child.kill()
        parent.kill()
        parent.wait()
    # An orphan's zombie is reaped by PID 1, which in a container may never do it, and psutil's wait
    # then hangs on it (CI, stop 42): wait until the server no longer runs.
    deadline = time.time() + 20  # it polls its parent every second; the margin is for a loaded machine
    while forkserver.alive(server.pid):
        assert time.time() < deadline, "the server outlived its parent by 20 s"
        time.sleep(0.2)
    assert not path.exists()
