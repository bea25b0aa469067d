"""params.yaml loading, schema validation messages, DVC-style CLI flags and the project root."""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import shlex

import pytest
import yaml

from conftest import REPO, SMOKE, dvc_render, set_param
from fashion_mlp import PipelineError
from fashion_mlp.config import (
    PACKAGE_DIR,
    ParamsError,
    add_section_flags,
    cli_flags,
    flatten,
    load_params,
    per_layer,
    project_root,
    section_from_args,
    validate,
    validate_section,
)

PARAMS_PATH = REPO / "params.yaml"


@pytest.fixture(scope="module")
def real_params() -> dict:
    with open(PARAMS_PATH) as fh:
        return yaml.safe_load(fh)


@pytest.fixture
def params(real_params) -> dict:
    return copy.deepcopy(real_params)


# --- load_params -----------------------------------------------------------------------


def test_load_params_accepts_repo_params(real_params):
    loaded = load_params(PARAMS_PATH)
    assert loaded == real_params
    assert {"seed", "data", "prepare", "train", "evaluate", "mlflow"} <= set(loaded)
    assert {"baseline", "regularized"} <= set(loaded["train"])


def test_load_params_relative_path(monkeypatch, tmp_path, real_params):
    """A relative path is read from the working directory, not from the repository."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(dict(real_params, seed=real_params["seed"] + 1)))
    monkeypatch.chdir(tmp_path)
    assert load_params("params.yaml") == dict(real_params, seed=real_params["seed"] + 1)


def test_load_params_missing_file(tmp_path):
    path = tmp_path / "params.yaml"
    with pytest.raises(ParamsError, match="file not found") as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_load_params_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: [1, 2\ndata: {")
    with pytest.raises(ParamsError, match="not valid YAML") as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_load_params_reports_source_and_bad_key(tmp_path, real_params):
    broken = copy.deepcopy(real_params)
    broken["evaluate"]["grid_images"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "'evaluate.grid_images' = 0" in str(info.value)


def test_params_error_is_pipeline_and_value_error():
    assert issubclass(ParamsError, PipelineError) and issubclass(ParamsError, ValueError)


# --- validate: one broken thing per case ------------------------------------------------


def _set(*path_and_value):
    *path, value = path_and_value

    def mutate(p):
        node = p
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _drop(*path):
    def mutate(p):
        node = p
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


# (id, mutation, dotted key the message must name, fragments describing what is allowed)
BAD_CASES = [
    ("negative-seed", _set("seed", -1), "'seed'", ["an integer in [0, 4294967295]"]),
    ("seed-too-big", _set("seed", 2**32), "'seed'", ["[0, 4294967295]"]),
    ("seed-string", _set("seed", "42"), "'seed'", ["an integer"]),
    ("seed-bool", _set("seed", True), "'seed'", ["an integer"]),
    (
        "empty-mirrors",
        _set("data", "mirrors", []),
        "'data.mirrors'",
        ["0 items", "at least 1 item", "non-empty string"],
    ),
    ("empty-mirror-string", _set("data", "mirrors", [""]), "'data.mirrors[0]'", ["a non-empty string"]),
    ("mirrors-not-list", _set("data", "mirrors", "http://x/"), "'data.mirrors'", ["a list"]),
    ("timeout-zero", _set("data", "timeout", 0), "'data.timeout'", ["a number in (0, 600]"]),
    ("timeout-too-long", _set("data", "timeout", 601), "'data.timeout'", ["(0, 600]"]),
    ("val-fraction-high", _set("prepare", "val_fraction", 0.6), "'prepare.val_fraction'", ["(0, 0.5]"]),
    ("val-fraction-zero", _set("prepare", "val_fraction", 0), "'prepare.val_fraction'", ["(0, 0.5]"]),
    (
        "limit-train-too-small",
        _set("prepare", "limit_train", 50),
        "'prepare.limit_train'",
        ["null or an integer in [100, 60000]"],
    ),
    (
        "limit-test-too-big",
        _set("prepare", "limit_test", 20000),
        "'prepare.limit_test'",
        ["null or an integer in [10, 10000]"],
    ),
    (
        "missing-val-fraction",
        _drop("prepare", "val_fraction"),
        "'prepare.val_fraction'",
        ["missing key", "a number in (0, 0.5]"],
    ),
    ("missing-mlflow", _drop("mlflow"), "'mlflow'", ["missing key", "a mapping with keys experiment"]),
    (
        "missing-hidden",
        _drop("train", "baseline", "hidden"),
        "'train.baseline.hidden'",
        ["missing key", "a list of 1 to 8 items, each an integer in [1, 8192]"],
    ),
    ("dropout-one", _set("train", "baseline", "dropout", 1.0), "'train.baseline.dropout'", ["a number in [0, 1)"]),
    (
        "dropout-list-item",
        _set("train", "regularized", "dropout", [0.0, -0.1]),
        "'train.regularized.dropout'",
        ["a number in [0, 1)", "a list"],
    ),
    ("l2-negative", _set("train", "baseline", "l2", -0.01), "'train.baseline.l2'", ["a number in [0, 1]"]),
    (
        "bad-activation",
        _set("train", "baseline", "activation", "relux"),
        "'train.baseline.activation'",
        ["one of relu, tanh, sigmoid, elu, gelu"],
    ),
    (
        "bad-schedule",
        _set("train", "regularized", "lr_schedule", "step"),
        "'train.regularized.lr_schedule'",
        ["one of constant, exponential, cosine"],
    ),
    (
        "lr-zero",
        _set("train", "baseline", "learning_rate", 0),
        "'train.baseline.learning_rate'",
        ["a number in (0, 1]"],
    ),
    (
        "decay-above-one",
        _set("train", "regularized", "lr_decay_rate", 1.5),
        "'train.regularized.lr_decay_rate'",
        ["a number in (0, 1]"],
    ),
    (
        "batch-size-zero",
        _set("train", "baseline", "batch_size", 0),
        "'train.baseline.batch_size'",
        ["an integer in [1, 60000]"],
    ),
    (
        "epochs-string",
        _set("train", "baseline", "epochs", "10"),
        "'train.baseline.epochs'",
        ["an integer in [1, 1000]"],
    ),
    (
        "hidden-empty",
        _set("train", "baseline", "hidden", []),
        "'train.baseline.hidden'",
        ["0 items", "a list of 1 to 8 items"],
    ),
    (
        "hidden-zero-width",
        _set("train", "regularized", "hidden", [256, 0]),
        "'train.regularized.hidden[1]'",
        ["an integer in [1, 8192]"],
    ),
    (
        "patience-zero",
        _set("train", "regularized", "early_stopping_patience", 0),
        "'train.regularized.early_stopping_patience'",
        ["null or an integer >= 1"],
    ),
    (
        "steps-per-execution-zero",
        _set("train", "baseline", "steps_per_execution", 0),
        "'train.baseline.steps_per_execution'",
        ["an integer in [1, 10000]"],
    ),
    (
        "batchnorm-string",
        _set("train", "baseline", "batchnorm", "yes"),
        "'train.baseline.batchnorm'",
        ["true or false"],
    ),
    ("empty-experiment", _set("mlflow", "experiment", ""), "'mlflow.experiment'", ["a string matching"]),
    ("experiment-with-space", _set("mlflow", "experiment", "my runs"), "'mlflow.experiment'", ["a string matching"]),
    ("grid-images-zero", _set("evaluate", "grid_images", 0), "'evaluate.grid_images'", ["an integer in [1, 100]"]),
    ("no-models", _set("train", {}), "'train'", ["is empty", "at least one entry"]),
    (
        "misspelt-model-key",
        _set("train", "baseline", "learnin_rate", 0.01),
        "'train.baseline.learnin_rate'",
        ["did you mean 'learning_rate'?", "allowed keys here:", "steps_per_execution"],
    ),
    ("misspelt-top-key", _set("sed", 1), "'sed'", ["did you mean 'seed'?", "allowed keys here:"]),
    ("misspelt-data-key", _set("data", "timeot", 5), "'data.timeot'", ["did you mean 'timeout'?"]),
    (
        "dropout-length-mismatch",
        _set("train", "regularized", "dropout", [0.1, 0.2, 0.3]),
        "train.regularized.dropout",
        ["has 3 values but hidden has 2 layers", "one per hidden layer"],
    ),
    (
        "batchnorm-length-mismatch",
        _set("train", "baseline", "batchnorm", [True, False]),
        "train.baseline.batchnorm",
        ["has 2 values but hidden has 1 layers"],
    ),
    (
        "l2-length-mismatch",
        _set("train", "regularized", "l2", [0.0, 0.1, 0.2]),
        "train.regularized.l2",
        ["has 3 values but hidden has 2 layers"],
    ),
]


def test_enough_distinct_bad_cases():
    assert len({case[0] for case in BAD_CASES}) == len(BAD_CASES) >= 15


@pytest.mark.parametrize("mutate, key, fragments", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_validate_rejects_and_names_key(params, mutate, key, fragments):
    validate(copy.deepcopy(params))  # the real file passes: the one change below is what is refused
    mutate(params)
    with pytest.raises(ParamsError) as info:
        validate(params)
    message = str(info.value)
    assert message.startswith("params.yaml: ")
    assert key in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    "key, value, one_too_many",
    [
        ("dropout", 0.3, [0.3] * 3),
        ("dropout", [0.25], [0.25] * 3),
        ("batchnorm", [True], [True] * 3),
        ("l2", [0.0, 0.001], [0.0, 0.001, 0.001]),
    ],
)
def test_validate_accepts_scalar_single_or_full_per_layer_values(params, key, value, one_too_many):
    """A scalar, one value or one per hidden layer (regularized has 2) passes; one per layer and one more is
    refused, so the per-layer check did look at the key."""
    params["train"]["regularized"][key] = value
    validate(params)  # raises ParamsError if refused
    params["train"]["regularized"][key] = one_too_many
    with pytest.raises(ParamsError, match=rf"train\.regularized\.{key} has 3 values but hidden has 2 layers"):
        validate(params)


def test_validate_reports_every_problem_at_once(params):
    params["seed"] = -3
    params["train"]["baseline"]["dropout"] = 2.0
    params["evaluate"]["grid_images"] = 1000
    with pytest.raises(ParamsError) as info:
        validate(params, source="my.yaml")
    message = str(info.value)
    assert message.startswith("my.yaml: 3 problems:")
    assert "'seed' = -3" in message
    assert "'train.baseline.dropout' = 2.0" in message
    assert "'evaluate.grid_images' = 1000" in message


def test_validate_rejects_non_mapping():
    with pytest.raises(ParamsError):
        validate(["seed", 42])


def test_bad_model_name_is_rejected(params):
    params["train"]["Bad-Name"] = params["train"]["baseline"]
    with pytest.raises(ParamsError) as info:
        validate(params)
    assert "Bad-Name" in str(info.value)


def test_bad_model_name_message_says_what_is_allowed(params):
    params["train"]["Bad-Name"] = params["train"]["baseline"]
    with pytest.raises(ParamsError) as info:
        validate(params)
    assert "lower-case letters, digits and _" in str(info.value)


@pytest.mark.parametrize("path", [("seed",), ("train", "baseline", "epochs"), ("train", "baseline", "batch_size")])
def test_validate_rejects_integral_floats_for_integer_keys(params, path):
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = float(node[path[-1]])
    with pytest.raises(ParamsError):
        validate(params)


# --- validate_section ------------------------------------------------------------------


def test_validate_section_accepts_each_real_section(real_params):
    """Each real section passes the check of its own part of the schema, which refuses a key it does not have."""
    names = ("data", "prepare", "tune", "evaluate", "explain", "card", "demos", "mlflow")
    models = [("train", block) for block in real_params["train"].values()]
    for section, values in [*((name, real_params[name]) for name in names), *models]:
        validate_section(section, values)  # raises ParamsError if refused
        with pytest.raises(ParamsError, match=rf"unknown key '{section}\.bogus'"):
            validate_section(section, dict(values, bogus=1))


def test_validate_section_train_names_key_and_source(real_params):
    block = dict(real_params["train"]["baseline"], dropout=1.5)
    with pytest.raises(ParamsError) as info:
        validate_section("train", block, source="train.baseline")
    message = str(info.value)
    assert message.startswith("train.baseline: ")
    assert "'train.dropout' = 1.5" in message and "[0, 1)" in message


def test_validate_section_train_checks_layer_lists(real_params):
    block = dict(real_params["train"]["regularized"], batchnorm=[True, False, True])
    with pytest.raises(ParamsError, match=r"train.batchnorm has 3 values but hidden has 2 layers"):
        validate_section("train", block)


def test_validate_section_prepare_and_data(real_params):
    with pytest.raises(ParamsError) as info:
        validate_section("prepare", {"val_fraction": 0.1, "limit_train": 99, "limit_test": None})
    assert info.value.args[0].startswith("command line: ")
    assert "'prepare.limit_train' = 99" in str(info.value) and "[100, 60000]" in str(info.value)
    with pytest.raises(ParamsError, match=r"unknown key 'data.mirror' \(did you mean 'mirrors'\?\)"):
        validate_section("data", {"mirror": ["x"], "mirrors": ["x"], "timeout": 1})


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

    fixed = [
        "--model",
        "m",
        "--seed",
        "1",
        "--experiment",
        "e",
        "--data",
        "d.npz",
        "--model_out",
        "m.keras",
        "--history_out",
        "h.csv",
    ]
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


# --- per_layer and flatten -------------------------------------------------------------


def test_per_layer_broadcasts_and_checks_length():
    assert per_layer(0.2, 3, "dropout") == [0.2, 0.2, 0.2]
    assert per_layer([0.2], 3, "dropout") == [0.2, 0.2, 0.2]
    assert per_layer([0.1, 0.2], 2, "dropout") == [0.1, 0.2]
    assert per_layer((False, True), 2, "batchnorm") == [False, True]
    with pytest.raises(ParamsError, match=r"x.dropout has 2 values but hidden has 3 layers"):
        per_layer([0.1, 0.2], 3, "x.dropout")


def test_flatten_dotted_keys_keeps_lists():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}


# --- project_root ----------------------------------------------------------------------


@pytest.fixture
def clean_root_env(monkeypatch):
    monkeypatch.delenv("FASHION_MLP_ROOT", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return monkeypatch


def test_project_root_honours_fashion_mlp_root(clean_root_env, tmp_path):
    clean_root_env.setenv("FASHION_MLP_ROOT", str(tmp_path))
    clean_root_env.setenv("DVC_ROOT", str(REPO))
    assert project_root() == tmp_path.resolve()


def test_project_root_falls_back_to_dvc_root(clean_root_env, tmp_path):
    clean_root_env.setenv("DVC_ROOT", str(tmp_path))
    assert project_root() == tmp_path.resolve()


def test_project_root_finds_markers_above_cwd(clean_root_env, tmp_path):
    for marker in ("params.yaml", "dvc.yaml", "Snakefile"):
        (tmp_path / marker).write_text("")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    clean_root_env.chdir(nested)
    assert project_root() == tmp_path.resolve()


def test_project_root_without_markers_uses_package_checkout(clean_root_env, tmp_path):
    (tmp_path / "params.yaml").write_text("")  # only one marker: not a root
    clean_root_env.chdir(tmp_path)
    assert project_root() == PACKAGE_DIR.parents[1]


def test_the_check_stage_refuses_a_bad_file_by_key_and_writes_nothing(tmp_path, params):
    """DVC's first stage: every other stage depends on its output, so a refused edit stops the run
    before DVC removes any stage's outputs (test_e2e.py shows it end to end)."""
    from fashion_mlp.stages import check

    out = tmp_path / "params_check.json"
    params["train"]["baseline"]["dropout"] = 1.5
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=r"'train\.baseline\.dropout' = 1\.5 is not allowed"):
        check.main(["--params", str(bad), "--out", str(out)])
    assert not out.exists()
    check.main(["--params", str(PARAMS_PATH), "--out", str(out)])
    first = out.read_bytes()
    assert json.loads(first) == {  # that the file passed, and against what: none of its values
        "params": str(PARAMS_PATH),
        "valid": True,
        "checked_against": ["workflow/schemas/params.schema.yaml", "the kinds' registry"],
    }
    params["train"]["baseline"]["dropout"] = 0.25  # another valid value: the same bytes, nothing reruns
    bad.write_text(yaml.safe_dump(params))
    check.main(["--params", str(bad), "--out", str(out)])
    assert out.read_bytes() == first.replace(str(PARAMS_PATH).encode(), str(bad).encode())
