"""params.yaml against its schema: every refusal names the key and what is allowed, and a section checks alone."""

from __future__ import annotations

import copy

import pytest

from conftest import REPO
from fashion_mlp.config import (
    ParamsError,
    validate,
    validate_section,
)

PARAMS_PATH = REPO / "params.yaml"


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
