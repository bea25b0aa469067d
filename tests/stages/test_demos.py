"""`fashion-mlp demos`: XOR beats one linear unit but not an MLP, the activation table matches the tutorial."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SUBPROCESS_TIMEOUT, assert_png, clean_env
from fashion_mlp.config import ParamsError, cli_flags, section_from_args, validate_section
from fashion_mlp.stages import demos

# A demos section (params.yaml's today), fixed here so that editing params.yaml does not change the tests.
DEMOS_PARAMS = {"xor_hidden": 8, "xor_epochs": 500, "xor_learning_rate": 0.05, "activation_points": [-5, -3, 0, 2, 5]}
OUTPUTS = {  # flag -> file name
    "--xor_json": "demos/xor.json",
    "--xor_points_png": "figures/xor_points.png",
    "--xor_boundaries_png": "figures/xor_boundaries.png",
    "--activations_csv": "demos/activations.csv",
    "--activations_md": "demos/activations.md",
    "--activations_png": "figures/activations.png",
}

# Runs in a fresh interpreter: the CLI, or the activation part alone.
RUN_CLI = """
import sys
from fashion_mlp import cli
if sys.argv[1] == "demos":
    cli.main(sys.argv[1:])
else:  # the activation part alone: it must not load TensorFlow
    from fashion_mlp.lessons import activations
    table = activations.activation_table([-5, -3, 0, 2, 5])
    activations.activation_markdown(table)
    activations.plot_activations([-5, -3, 0, 2, 5], sys.argv[2])
    print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""


def cli_argv(out: Path, params: dict = DEMOS_PARAMS, seed: int = 42) -> list[str]:
    """The command line both engines would run: params rendered as DVC renders ${demos}."""
    argv = ["demos", *shlex.split(cli_flags(params)), "--seed", str(seed), "--threads", "1"]
    for flag, name in OUTPUTS.items():
        argv += [flag, str(out / name)]
    return argv


def test_activation_part_loads_no_tensorflow(tmp_path):
    png = tmp_path / "activations.png"
    proc = subprocess.run(
        [sys.executable, "-c", RUN_CLI, "activations", str(png)],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert_png(png, panels=(2, None))  # 2 x 2 panels; the right column's labels join the columns


# --- command line and params -----------------------------------------------------------------


def test_demos_is_a_cli_command():
    from fashion_mlp.cli import COMMANDS

    assert COMMANDS["demos"][0] == "fashion_mlp.stages.demos"


def test_flags_round_trip_dvc_rendering(tmp_path):
    """`${demos}` as DVC renders it (negative numbers included) parses back to the same section."""
    args = demos.build_parser().parse_args(cli_argv(tmp_path)[1:])
    assert section_from_args(args, "demos") == DEMOS_PARAMS
    assert args.seed == 42 and args.threads == 1
    assert args.xor_json == tmp_path / "demos" / "xor.json"


def test_proposed_params_validate():
    """The section the tests run is a valid one with every key of the real section, which is valid too."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert sorted(DEMOS_PARAMS) == sorted(params["demos"]), "a key of params.yaml's demos: section is not tested here"
    for section in (DEMOS_PARAMS, params["demos"]):
        validate_section("demos", section)  # raises ParamsError naming the key


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("xor_hidden", 1, "'demos.xor_hidden' = 1"),
        ("xor_epochs", 2.5, "'demos.xor_epochs' = 2.5"),
        ("xor_learning_rate", 0, "'demos.xor_learning_rate' = 0"),
        ("activation_points", [], "'demos.activation_points' has 0 items"),
    ],
)
def test_bad_params_are_rejected(key, value, expected):
    with pytest.raises(ParamsError, match=expected):
        validate_section("demos", dict(DEMOS_PARAMS, **{key: value}))


def test_main_validates_before_doing_anything(tmp_path):
    argv = cli_argv(tmp_path)[1:]
    argv[argv.index("--xor_hidden") + 1] = "0"
    with pytest.raises(ParamsError, match=r"demos.xor_hidden"):
        demos.main(argv)
    assert not any(tmp_path.rglob("*"))


# --- the command end to end, twice -----------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two separate processes run `fashion-mlp demos` with the same params and seed, in parallel."""
    tmp = tmp_path_factory.mktemp("demos")
    procs = {}
    for name in ("a", "b"):
        argv = cli_argv(tmp / name / "reports")
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", RUN_CLI, *argv],
            cwd=tmp,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    outputs = {}
    for name, proc in procs.items():
        try:
            outputs[name], _ = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        assert proc.returncode == 0, f"run {name} failed:\n{outputs[name][-4000:]}"
    return {name: (tmp / name / "reports", outputs[name]) for name in procs}


@pytest.mark.slow
def test_demos_writes_every_output(runs):
    out, stdout = runs["a"]
    for name in OUTPUTS.values():
        assert (out / name).is_file(), name
    assert_png(out / "figures/xor_points.png", panels=(1, 1))
    assert_png(out / "figures/xor_boundaries.png", panels=(1, 2))  # the perceptron's line, the MLP's regions
    assert_png(out / "figures/activations.png", panels=(2, None))
    for folder in (out / "demos", out / "figures"):
        assert not list(folder.glob(".*.tmp-*"))
    assert "MLP 1.00" in stdout


@pytest.mark.slow
def test_perceptron_fails_and_mlp_solves_xor(runs):
    xor = json.loads((runs["a"][0] / "demos" / "xor.json").read_text())
    assert xor["perceptron_best_accuracy"] == 0.75
    assert xor["perceptron_accuracy"] <= 0.75
    assert xor["mlp_accuracy"] == 1.0 and xor["mlp_solved"] is True
    assert [p["mlp_prediction"] for p in xor["points"]] == [0, 1, 1, 0]
    assert [p["x"] for p in xor["points"]] == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert (xor["seed"], xor["xor_hidden"], xor["xor_epochs"], xor["xor_learning_rate"]) == (42, 8, 500, 0.05)
    assert xor["xor_activation"] == "tanh"  # the report names it


@pytest.mark.slow
def test_demos_is_deterministic(runs):
    a, b = runs["a"][0], runs["b"][0]
    for name in ("demos/xor.json", "demos/activations.csv", "demos/activations.md"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
