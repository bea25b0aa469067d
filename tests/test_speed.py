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
