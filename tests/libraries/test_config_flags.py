"""A params.yaml section as command-line flags, rendered as DVC unpacks ${section}, and parsed back by every stage."""

from __future__ import annotations

import argparse
import copy
import importlib
import shlex

import pytest

from conftest import REPO, SMOKE, dvc_render, set_param
from fashion_mlp.config import (
    ParamsError,
    add_section_flags,
    cli_flags,
    parse_bool,
    section_from_args,
    validate,
    validate_section,
)

PARAMS_PATH = REPO / "params.yaml"


# --- cli_flags: rendered exactly as DVC unpacks ${section} --------------------------------


def test_cli_flags_renders_types_like_dvc():
    section = {
        "hidden": [256, 128],
        "on": True,
        "off": False,
        "limit": None,
        "lr": 1e-05,
        "rate": 0.1,
        "name": "relu",
        "n": 32,
    }
    assert cli_flags(section) == "--hidden 256 128 --on --limit None --lr 1e-05 --rate 0.1 --name relu --n 32"


def test_cli_flags_regularized_style_block():
    block = {
        "hidden": [256, 128],
        "activation": "relu",
        "dropout": [0.0, 0.3],
        "l2": [0.0, 0.005],
        "batchnorm": [False, True],
        "learning_rate": 0.001,
        "lr_schedule": "exponential",
        "lr_decay_rate": 0.9,
        "batch_size": 32,
        "epochs": 30,
        "early_stopping_patience": 3,
        "early_stopping_monitor": "val_loss",
        "steps_per_execution": 64,
    }
    validate_section("train", block)
    assert cli_flags(block) == (
        "--hidden 256 128 --activation relu --dropout 0.0 0.3 --l2 0.0 0.005 --batchnorm False True "
        "--learning_rate 0.001 --lr_schedule exponential --lr_decay_rate 0.9 --batch_size 32 --epochs 30 "
        "--early_stopping_patience 3 --early_stopping_monitor val_loss --steps_per_execution 64"
    )
    assert cli_flags({"val_fraction": 0.1, "limit_train": None, "limit_test": 500}) == (
        "--val_fraction 0.1 --limit_train None --limit_test 500"
    )
    assert cli_flags({"batchnorm": True}) == "--batchnorm"
    assert cli_flags({"batchnorm": False}) == ""


def test_cli_flags_round_trip_through_the_train_parser(real_params):
    """Each real train block, rendered as DVC would, parses back to the same block."""
    import shlex

    from fashion_mlp.stages.train import build_parser, model_params

    fixed = shlex.split("--model m --seed 1 --experiment e --data d.npz --model_out m.keras --history_out h.csv")
    for name, block in real_params["train"].items():
        args = build_parser().parse_args(shlex.split(cli_flags(block)) + fixed)
        assert model_params(args) == block, name


@pytest.mark.slow  # DVC as a subprocess
def test_cli_flags_render_every_section_as_dvc_does(real_params, tmp_path):
    """Both engines must run the same command: Snakemake's rules use cli_flags, DVC its own `${section}`."""
    sections = [real_params[s] for s in ("data", "prepare", "evaluate", "mlflow", "card")]
    sections += list(real_params["train"].values())
    edge = {"a": True, "b": False, "c": None, "d": 1e-05, "e": [1, 2.5], "f": [True, False], "g": 3}
    quoted = {"mirrors": ["/srv/my mirror", "http://x/"], "experiment": "my runs"}
    levers = {"augment": {"shift": 2, "flip": True}, "ema": 0.9, "label_smoothing": 0.1}
    sections += [edge, quoted, levers]
    assert [cli_flags(section) for section in sections] == dvc_render(tmp_path, sections)
    assert cli_flags(quoted) == "--mirrors '/srv/my mirror' http://x/ --experiment 'my runs'"
    assert "--augment.shift 2 --augment.flip --ema 0.9" in cli_flags(levers)


# --- add_section_flags / section_from_args: the inverse of cli_flags -------------------------


def _sections(params: dict) -> list[tuple[str, str, dict]]:
    """(name, section, block) for every section a stage takes as flags; train: one per model."""
    blocks = [(s, s, params[s]) for s in ("data", "prepare", "tune", "evaluate", "demos", "mlflow")]
    return blocks + [(f"train.{m}", "train", block) for m, block in params["train"].items()]


def _smoke_params(real_params) -> dict:
    smoke = copy.deepcopy(real_params)
    for dotted, value in SMOKE.items():
        set_param(smoke, dotted, value)
    return smoke


def _round_trip(section: str, block: dict) -> dict:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_section_flags(parser, section)
    return section_from_args(parser.parse_args(shlex.split(cli_flags(block))), section)


@pytest.mark.parametrize("which", ["params.yaml", "smoke"])
def test_section_flags_round_trip_every_section(real_params, which):
    """params block -> cli_flags (as DVC renders it) -> parse -> section_from_args is the identity."""
    params = real_params if which == "params.yaml" else _smoke_params(real_params)
    validate(params)
    for name, section, block in _sections(params):
        assert _round_trip(section, block) == block, name


@pytest.mark.parametrize(
    "changes",
    [
        {"batchnorm": True, "dropout": 0.5, "l2": 1e-05},  # true: a bare flag; scalars stay scalars
        {"batchnorm": False, "early_stopping_patience": None},  # false: left out; null: None
        {"hidden": [64, 32, 16], "dropout": [0.1, 0.0, 0.2], "l2": [0.0, 0.001, 0.0], "batchnorm": [True, False, True]},
        {"hidden": [64], "activation": "gelu", "lr_schedule": "cosine", "early_stopping_monitor": "val_accuracy"},
    ],
)
def test_section_flags_round_trip_train_edge_cases(real_params, changes):
    block = dict(real_params["train"]["baseline"], **changes)
    assert _round_trip("train", block) == block


def test_section_flags_unwrap_one_element_per_layer_lists(real_params):
    """A one-element per-layer list means "every layer": it comes back as the scalar (tune.space lists do not)."""
    block = dict(real_params["train"]["baseline"], dropout=[0.3], l2=[0.0], batchnorm=[True])
    assert _round_trip("train", block) == dict(block, dropout=0.3, l2=0.0, batchnorm=True)
    tune = copy.deepcopy(real_params["tune"])
    tune["space"].update(l2=[0.0], batchnorm=[True])
    tune["search_limit_train"] = None
    assert _round_trip("tune", tune) == tune


def test_section_flags_quoted_strings_and_negative_numbers(real_params):
    data = {"mirrors": ["/srv/my mirror", "http://x/"], "timeout": 2.5}
    assert _round_trip("data", data) == data
    demos = dict(real_params["demos"], activation_points=[-5.5, -3, 0, 2, 5])
    assert _round_trip("demos", demos) == demos


def test_nested_keys_get_plain_dests(real_params):
    parser = argparse.ArgumentParser()
    add_section_flags(parser, "tune")
    args = parser.parse_args(shlex.split(cli_flags(real_params["tune"])))
    assert args.space_units == real_params["tune"]["space"]["units"]
    assert not any("." in dest for dest in vars(args))


STAGES = {
    "train": "train",
    "tune": "tune",
    "demos": "demos",
    "prepare": "prepare",
    "evaluate": "evaluate",
    "download": "data",
    "register": "mlflow",
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_parses_its_section_with_the_helper(real_params, stage):
    """Each stage's own parser reads back what both engines give it."""
    section = STAGES[stage]
    parser = importlib.import_module(f"fashion_mlp.stages.{stage}").build_parser()
    others = []  # the stage's other required flags, with a placeholder value
    for action in parser._actions:
        if action.required and action.dest not in {"_".join(k.split(".")) for k in _flag_names(section)}:
            others += [action.option_strings[0], "1"]
    blocks = [b for _, s, b in _sections(real_params) if s == section]
    for block in blocks:
        args = parser.parse_args(shlex.split(cli_flags(block)) + others)
        assert section_from_args(args, section) == block, stage


def _flag_names(section: str) -> set[str]:
    parser = argparse.ArgumentParser()
    add_section_flags(parser, section)
    return {action.option_strings[0][2:] for action in parser._actions if action.option_strings[0] != "-h"}


def _parse_error(section: str, argv: list[str]) -> str:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_section_flags(parser, section)
    with pytest.raises((argparse.ArgumentError, SystemExit)) as info:
        parser.parse_args(argv)
    return str(info.value)


def test_section_flags_errors_name_the_flag(real_params, capsys):
    flags = shlex.split(cli_flags(real_params["train"]["baseline"]))
    bad = [*flags[: flags.index("--epochs") + 1], "ten", *flags[flags.index("--epochs") + 2 :]]
    assert "argument --epochs: invalid int value: 'ten'" in _parse_error("train", bad)
    i = flags.index("--early_stopping_patience")
    assert "argument --early_stopping_patience: invalid int or None value: 'never'" in _parse_error(
        "train", [*flags[: i + 1], "never", *flags[i + 2 :]]
    )
    tune = shlex.split(cli_flags(real_params["tune"]))
    i = tune.index("--space.batchnorm")
    assert "argument --space.batchnorm: expected true or false, got 'maybe'" in _parse_error(
        "tune", [*tune[: i + 1], "maybe"]
    )
    i = tune.index("--space.units")
    assert "argument --space.units: expected 3 arguments" in _parse_error("tune", [*tune[: i + 1], "32", "64"])
    # A missing flag: argparse exits (3.11, 3.12) or, with exit_on_error=False, raises (3.13).
    message = _parse_error("prepare", ["--val_fraction", "0.1", "--limit_train", "None"])
    assert "the following arguments are required: --limit_test" in message + capsys.readouterr().err


def test_out_of_range_values_are_left_to_validate_section(real_params):
    """Parsing accepts any value of the right type; validate_section then names the params.yaml key."""
    block = dict(real_params["train"]["baseline"], epochs=0, dropout=[0.1, 1.5], activation="relux")
    with pytest.raises(ParamsError) as info:
        validate_section("train", _round_trip("train", block), source="train.baseline")
    message = str(info.value)
    assert message.startswith("train.baseline: 3 problems")
    assert "'train.epochs' = 0" in message and "'train.activation' = 'relux'" in message
    assert "'train.dropout' = [0.1, 1.5]" in message
    tune = copy.deepcopy(real_params["tune"])
    tune["space"]["layers"] = [3, 1]
    with pytest.raises(ParamsError, match=r"tune.space.layers: min 3 is above max 1"):
        validate_section("tune", _round_trip("tune", tune))


def test_section_flags_unknown_section():
    with pytest.raises(ValueError, match=r"params.yaml has no section 'trian'"):
        add_section_flags(argparse.ArgumentParser(), "trian")


def test_section_flags_help_comes_from_the_schema():
    parser = argparse.ArgumentParser()
    add_section_flags(parser, "tune")
    text = parser.format_help()
    assert "params.yaml tune:" in text and "--space.units N N N" in text and "--search_limit_train N|None" in text
    assert "tune.space.units: min, max, step; a list of 3 items, each an integer in [1, 8192]" in " ".join(text.split())


# --- parse_bool: the flags' booleans as DVC renders them -------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
    ],
)
def test_parse_bool(text, value):
    assert parse_bool(text) is value


def test_parse_bool_rejects_other_text():
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bool("maybe")
