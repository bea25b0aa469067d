"""Fixed costs stay small: parsing the Snakefile or a command line imports nothing heavy.

The timings themselves are measured by benchmarks/speed.py, not asserted here.
(The speed settings' equivalence is tested in test_train.py.)
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import BIN, REPO
from fashion_mlp.cli import COMMANDS

# Each takes from half a second (matplotlib) to five (TensorFlow) to import.
HEAVY = ("tensorflow", "keras", "mlflow", "keras_tuner", "sklearn", "matplotlib", "seaborn", "pandas", "dvc")


def imported(cmd: list[str]) -> set[str]:
    """Top-level packages a command imports, from CPython's -X importtime report."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *cmd], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_parsing_a_command_line_imports_nothing_heavy(command):
    names = imported(["-m", "fashion_mlp", command, "--help"])
    assert "fashion_mlp" in names  # the report is real
    assert not names & set(HEAVY), f"`fashion-mlp {command} --help` imports {sorted(names & set(HEAVY))}"


@pytest.mark.slow
def test_parsing_the_snakefile_imports_nothing_heavy():
    names = imported([str(BIN / "snakemake"), "--list-rules"])
    assert {"snakemake", "fashion_mlp"} <= names
    assert not names & set(HEAVY), f"parsing the Snakefile imports {sorted(names & set(HEAVY))}"


# The program's exit (cli.leave): what Python's exit does for a job, less the interpreter's teardown.
LEAVING = """
import atexit, pathlib, sys, threading, time
from fashion_mlp import cli
out = pathlib.Path(sys.argv[1])

class TornDown:  # a module global: freed only by the interpreter's teardown
    def __del__(self):
        (out / "torn-down").write_text("")

kept = TornDown()
atexit.register(lambda: (out / "atexit").write_text(""))
threading.Thread(target=lambda: (time.sleep(0.3), (out / "thread").write_text(""))).start()
import concurrent.futures  # a pool never shut down (MLflow's downloads leave one): its workers must not hang the exit
pool = concurrent.futures.ThreadPoolExecutor(2)
pool.submit(time.sleep, 0.1)
sys.stdout.write("buffered, no newline")
sys.argv = ["fashion-mlp", *sys.argv[2:]]
cli.main() if sys.argv[1:] != ["in-process"] else cli.main(["--help"])
"""


@pytest.mark.parametrize(
    ("argv", "status", "stderr"),
    [(["--help"], 0, ""), (["no-such-command"], 1, "fashion-mlp: unknown command 'no-such-command'")],
)
def test_the_program_leaves_as_python_would_without_the_teardown(tmp_path, argv, status, stderr):
    result = subprocess.run(
        [sys.executable, "-c", LEAVING, str(tmp_path), *argv], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == status, result.stderr
    assert result.stderr.startswith(stderr)
    assert result.stdout.startswith("buffered, no newline")  # the streams were flushed
    assert (tmp_path / "thread").exists() and (tmp_path / "atexit").exists()  # the thread joined, atexit ran
    assert not (tmp_path / "torn-down").exists()  # os._exit: no teardown


def test_main_called_with_arguments_returns_as_a_function(tmp_path):
    """Tests and other callers pass argv: main returns, and the interpreter ends as usual."""
    result = subprocess.run(
        [sys.executable, "-c", LEAVING, str(tmp_path), "in-process"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "torn-down").exists() and (tmp_path / "atexit").exists()  # the teardown the test above lacks
