"""`python -m fashion_mlp.forkserver -- COMMAND` (make repro): the command runs with a server of its own, its
jobs are forks of that server, its status is the wrapper's, and the server and its socket are gone when it ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from test_forkserver import records, train_argv
from test_train import synthetic_data

from conftest import CLI, SUBPROCESS_TIMEOUT, clean_env
from fashion_mlp import forkserver
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
