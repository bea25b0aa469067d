"""Model kinds (mlp, cnn) and the optional training levers (label_smoothing, augment, ema) of a train block."""

from __future__ import annotations

import argparse
import json
import shlex
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, dvc_render
from fashion_mlp.config import (
    ParamsError,
    add_section_flags,
    cli_flags,
    load_params,
    section_from_args,
    validate,
    validate_section,
)
from fashion_mlp.io import sha256_file
from fashion_mlp.models import kinds

PARAMS_PATH = REPO / "params.yaml"
TRAINING = {
    "learning_rate": 0.003,
    "lr_schedule": "cosine",
    "lr_decay_rate": 1.0,
    "batch_size": 16,
    "epochs": 2,
    "early_stopping_patience": None,
    "early_stopping_monitor": "val_accuracy",
    "steps_per_execution": 2,
}
TINY_CNN = {
    "kind": "cnn",
    "conv": [4, 8],
    "kernel": 3,
    "padding": "same",
    "dense": [16],
    "activation": "relu",
    "dropout": 0.1,
    "batchnorm": [True, False],
    **TRAINING,
}
DROP = object()  # a key left out
LEVERS = {"label_smoothing": 0.1, "augment": {"shift": 2, "flip": True}, "ema": 0.9}


def _round_trip(block: dict) -> dict:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_section_flags(parser, "train")
    return section_from_args(parser.parse_args(shlex.split(cli_flags(block))), "train")


# --- building ------------------------------------------------------------------------------


def test_cnn_builds_from_its_block(keras, models):
    model = models.build_model(TINY_CNN, name="cnn")
    assert [type(layer).__name__ for layer in model.layers] == [
        "Reshape",
        "Conv2D",
        "BatchNormalization",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.padding, c.activation.__name__) for c in convs] == [
        (4, (3, 3), "same", "relu"),
        (8, (3, 3), "same", "relu"),
    ]
    # conv 9*1*4+4, BatchNorm 4*4, conv 9*4*8+8, Dense (7*7*8)*16+16, output 16*10+10
    assert model.count_params() == 40 + 16 + 296 + 6_288 + 170
    assert tuple(model.input_shape) == (None, 28, 28)  # what evaluate, explain and serving feed
    assert model.layers[-1].name == "probabilities" and tuple(model.output_shape) == (None, 10)
    probabilities = np.asarray(model(np.zeros((2, 28, 28), np.float32), training=False))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_valid_padding_shrinks_the_image(models):
    model = models.build_model(dict(TINY_CNN, padding="valid", batchnorm=False), name="cnn")
    # 28 -> conv 26 -> pool 13 -> conv 11 -> pool 5: the Dense layer sees 5*5*8 values
    assert model.count_params() == 40 + 296 + (200 * 16 + 16) + 170


def test_an_mlp_block_builds_the_same_model_with_or_without_kind(models, keras):
    block = load_params(PARAMS_PATH)["train"]["regularized"]
    assert "kind" not in block
    plain = models.build_mlp(block["hidden"], block["activation"], block["dropout"], block["l2"], block["batchnorm"])
    for variant in (block, dict(block, kind="mlp")):
        keras.backend.clear_session()
        built = models.build_model(variant, name="mlp")
        assert [type(layer).__name__ for layer in built.layers] == [type(layer).__name__ for layer in plain.layers]
        assert built.count_params() == plain.count_params()


def test_params_yaml_cnn_block_is_a_cnn(models):
    block = load_params(PARAMS_PATH)["train"]["cnn"]
    model = models.build_model(block, name="cnn")
    assert block["kind"] == "cnn"
    assert type(model.layers[0]).__name__ == "Reshape" and tuple(model.output_shape) == (None, 10)


# --- the registry: every kind is built, recognised and described from one entry ---------------

TINY_MLP = {"hidden": [8], "dropout": 0.0, "l2": 0.0, "batchnorm": True, "activation": "relu", **TRAINING}
TINY = {"mlp": TINY_MLP, "cnn": TINY_CNN}  # one small block per kind: a new kind adds its own here


def test_every_kind_has_an_example_block_here():
    assert set(TINY) == set(kinds.KINDS), "add a small block of the new kind to TINY"


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_saved_model_of_each_kind_is_recognised_as_that_kind_and_no_other(models, keras, tmp_path, name):
    """register, explain and the summary read a model's kind from its file: each kind's own models must
    match its entry alone (its layers, and the layer it requires), whatever the other kinds allow."""
    block = dict(TINY[name], kind=name)
    validate_section("train", block)
    path = tmp_path / f"{name}.keras"
    models.save_model(models.build_model(block, name), path)
    assert kinds.of_saved(path).name == name
    with zipfile.ZipFile(path) as archive:
        classes = kinds.layer_classes(json.loads(archive.read("config.json")))
    assert [k.name for k in kinds.KINDS.values() if classes <= k.layers and k.requires <= classes] == [name]


def test_the_schema_takes_the_kinds_and_their_keys_from_the_registry():
    from fashion_mlp.config import load_schema

    model = load_schema()["$defs"]["model"]
    assert model["properties"]["kind"]["enum"] == list(kinds.KINDS)
    for kind in kinds.KINDS.values():
        assert set(kind.keys) <= set(model["properties"]), f"{kind.name}: give its keys a schema under $defs/model"
        assert set(kind.per_layer) <= set(model["properties"]) and set(kind.per_layer.values()) <= set(
            model["properties"]
        )
        assert kind.noun.split()[0] in ("a", "an") and kind.label


def test_an_unknown_kind_name_is_an_error_naming_the_known_kinds():
    with pytest.raises(kinds.KindError, match=f"unknown model kind 'rnn'; known kinds: {', '.join(kinds.KINDS)}$"):
        kinds.get("rnn")


# --- the schema: kind-dependent keys, named in every message --------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden": [64]}, "key 'train.hidden' is not allowed here: hidden is an mlp key"),
        ({"l2": 0.0}, "key 'train.l2' is not allowed here: l2 is an mlp key"),
        (
            {"conv": DROP},
            "missing key 'train.conv' (expected a list of 1 to 4 items, each an integer in [1, 1024]): "
            "a kind: cnn block needs conv, kernel, padding and dense",
        ),
        ({"conv": [4, 0]}, "'train.conv[1]' = 0 is not allowed"),
        ({"kernel": 0}, "'train.kernel' = 0 is not allowed"),
        ({"padding": "full"}, "'train.padding' = 'full' is not allowed; expected one of same, valid"),
        ({"kind": "rnn"}, f"'train.kind' = 'rnn' is not allowed; expected one of {', '.join(kinds.KINDS)}"),
        ({"dropout": [0.1, 0.2]}, "train.dropout has 2 values but dense has 1 layers"),
        ({"batchnorm": [True, False, True]}, "train.batchnorm has 3 values but conv has 2 layers"),
        ({"conv": [4, 4, 4, 4], "padding": "valid"}, "train.conv: 4 conv blocks with kernel 3 and padding valid"),
        ({"label_smoothing": 1.0}, "'train.label_smoothing' = 1.0 is not allowed"),
        ({"augment": {"shift": 2}}, "missing key 'train.augment.flip'"),
        ({"augment": {"shift": 2, "flip": True, "rotate": 10}}, "unknown key 'train.augment.rotate'"),
        ({"ema": 1.0}, "'train.ema' = 1.0 is not allowed"),
    ],
)
def test_schema_rejects_bad_cnn_blocks_naming_the_key(change, message):
    block = {k: v for k, v in dict(TINY_CNN, **change).items() if v is not DROP}
    with pytest.raises(ParamsError) as info:
        validate_section("train", block, source="train.cnn")
    assert message in str(info.value)
    assert str(info.value).startswith("train.cnn: ")


def test_an_unknown_kind_gets_one_message():
    with pytest.raises(ParamsError) as info:
        validate_section("train", dict(TINY_CNN, kind="rnn"))
    assert "problems" not in str(info.value)


def test_schema_rejects_cnn_keys_on_an_mlp_block():
    params = load_params(PARAMS_PATH)
    params["train"]["baseline"]["conv"] = [32]
    with pytest.raises(
        ParamsError, match=r"^params.yaml: key 'train.baseline.conv' is not allowed here: conv is a cnn"
    ):
        validate(params)
    params["train"]["baseline"] = {k: v for k, v in params["train"]["baseline"].items() if k not in ("conv", "l2")}
    with pytest.raises(
        ParamsError, match=r"missing key 'train.baseline.l2' \(expected .*\): an mlp block \(kind absent"
    ):
        validate(params)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_levers_are_accepted_on_both_kinds(kind):
    """On either kind the levers pass, on or off, and each is checked there: an out-of-range one is refused."""
    block = dict(load_params(PARAMS_PATH)["train"]["baseline"], kind="mlp") if kind == "mlp" else TINY_CNN
    validate_section("train", dict(block, **LEVERS))  # raises ParamsError if refused
    validate_section("train", dict(block, augment={"shift": 0, "flip": False}, ema=None, label_smoothing=0.0))
    out_of_range = {"label_smoothing": 1.0, "ema": 1.0, "augment.shift": 9}
    for key, bad in out_of_range.items():
        lever = {"augment": {"shift": bad, "flip": True}} if key == "augment.shift" else {key: bad}
        with pytest.raises(ParamsError, match=rf"'train\.{key}' = {bad} is not allowed"):
            validate_section("train", dict(block, **(LEVERS | lever)))


# --- flags: block -> cli_flags (DVC's rendering) -> parse -> block ---------------------------


@pytest.mark.parametrize(
    "block",
    [
        TINY_CNN,
        dict(TINY_CNN, **LEVERS),
        dict(TINY_CNN, augment={"shift": 1, "flip": False}, ema=None, label_smoothing=0.0),
        dict(TINY_CNN, augment={"shift": 0, "flip": True}, batchnorm=True, dropout=[0.5]),
    ],
    ids=["cnn", "cnn-levers", "flip-false-ema-null", "shift-0"],
)
def test_cnn_blocks_round_trip_through_the_flags(block):
    expected = dict(block, dropout=0.5) if block.get("dropout") == [0.5] else block
    assert _round_trip(block) == expected


def test_mlp_blocks_round_trip_with_and_without_the_optional_keys():
    baseline = load_params(PARAMS_PATH)["train"]["baseline"]
    assert _round_trip(baseline) == baseline  # no kind, no levers: none come back
    with_levers = dict(baseline, kind="mlp", **LEVERS)
    assert _round_trip(with_levers) == with_levers


@pytest.mark.slow  # DVC as a subprocess
def test_cnn_flags_match_dvc_rendering(tmp_path):
    block = dict(TINY_CNN, **LEVERS)
    assert [cli_flags(block)] == dvc_render(tmp_path, [block])
    assert "--augment.shift 2 --augment.flip --ema 0.9" in cli_flags(block)


# --- training levers -----------------------------------------------------------------------


def test_label_smoothing_changes_the_loss_as_expected(keras, models):
    y = np.array([0, 3])
    p = np.full((2, 10), 0.05, np.float32)
    p[0, 0] = p[1, 3] = 0.55
    plain = models.compile_model(models.build_mlp([4]), 0.001)
    assert plain.loss == "sparse_categorical_crossentropy"  # no smoothing: the loss of every existing model
    smoothed = models.compile_model(models.build_mlp([4]), 0.001, label_smoothing=0.1)
    assert isinstance(smoothed.loss, keras.losses.CategoricalCrossentropy)
    targets = models.one_hot(y)
    assert targets.dtype == np.float32 and targets.tolist()[1] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    # targets 0.9 + 0.01 on the true class and 0.01 elsewhere
    want = -(0.91 * np.log(0.55) + 9 * 0.01 * np.log(0.05))
    assert float(smoothed.loss(targets, p)) == pytest.approx(want, rel=1e-5)
    assert float(keras.losses.sparse_categorical_crossentropy(y, p).numpy().mean()) == pytest.approx(-np.log(0.55))


def test_ema_sets_adams_moving_average(keras, models):
    model = models.compile_model(models.build_mlp([4]), 0.001, ema_momentum=0.9)
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.9)
    assert not models.compile_model(models.build_mlp([4]), 0.001).optimizer.use_ema


def test_augmentation_is_seeded_random_in_training_and_off_at_inference(keras, models):
    assert models.augmenter(0, False, 1) is None
    images = np.random.default_rng(0).random((8, 28, 28), dtype=np.float32)

    def run(seed, training):
        keras.backend.clear_session()
        return np.asarray(models.augmenter(2, True, seed)(images, training=training))

    first, again, other = run(7, True), run(7, True), run(8, True)
    assert first.shape == images.shape
    assert not np.array_equal(first, images)
    np.testing.assert_array_equal(first, again)  # deterministic for a seed
    assert not np.array_equal(first, other)
    np.testing.assert_array_equal(run(7, False), images)  # inference: the identity


@pytest.mark.slow
def test_a_cnn_trained_with_every_lever_saves_only_inference_layers(keras, models, tmp_path):
    """A short fit with augmentation, label smoothing and EMA: the saved file holds no random layer,
    loads in safe mode, predicts what the trained model predicts, and is the same bytes twice."""
    from test_train import synthetic_data

    from fashion_mlp.models.training import fit, make_history_callback

    data = synthetic_data(64, 32)
    block = dict(TINY_CNN, **LEVERS)

    def train(path):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = models.build_model(block, name="cnn")
        history = make_history_callback()
        fit(model, data, block, [history], seed=0)
        models.save_model(model, path)
        return model, history

    model, history = train(tmp_path / "a.keras")
    _, _ = train(tmp_path / "b.keras")
    assert sha256_file(tmp_path / "a.keras") == sha256_file(tmp_path / "b.keras")
    assert len(history.rows) == 2 and all(np.isfinite(r["val_loss"]) for r in history.rows)
    # EMA: the weights validated in the last epoch are the ones kept and saved
    predicted = model.predict(data["x_val"], verbose=0).argmax(axis=1)
    assert float(np.mean(predicted == data["y_val"])) == pytest.approx(history.rows[-1]["val_accuracy"])

    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        config = archive.read("config.json").decode()
    assert "Random" not in config and '"augment"' not in config
    assert [layer["class_name"] for layer in json.loads(config)["config"]["layers"]][:2] == ["InputLayer", "Reshape"]

    loaded = keras.saving.load_model(tmp_path / "a.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(data["x_val"], verbose=0), model.predict(data["x_val"], verbose=0))
    assert loaded.optimizer.use_ema


# --- for the integrator's end-to-end runs ----------------------------------------------------


def check_cnn_model(repo: Path) -> None:
    """After a smoke run of either engine: every kind: cnn model of params.yaml was trained, saved with
    inference layers only (loads in safe mode), evaluated, and its MLflow train run is tagged model_kind=cnn."""
    import keras
    import mlflow
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    cnns = [name for name, block in params["train"].items() if block.get("kind") == "cnn"]
    assert cnns, "params.yaml has no kind: cnn model"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    for name in cnns:
        model = keras.saving.load_model(repo / f"models/{name}.keras", safe_mode=True)
        kinds = [type(layer).__name__ for layer in model.layers]
        assert kinds[0] == "Reshape" and "Conv2D" in kinds and not any(k.startswith("Random") for k in kinds)
        assert model.layers[-1].name == "probabilities" and tuple(model.input_shape) == (None, 28, 28)
        metrics = json.loads((repo / f"reports/metrics/{name}.json").read_text())
        assert metrics["model"] == name and metrics["params"] == model.count_params()
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            filter_string=f"tags.model = '{name}'",
        )
        kinds = [r.data.tags.get("model_kind") for r in runs]
        assert "cnn" in kinds and set(kinds) <= {"cnn", None}, kinds  # the train run (evaluate completes it)
