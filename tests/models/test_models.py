"""The MLPs and learning-rate schedules of fashion_mlp.models (small TensorFlow tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import REPO
from fashion_mlp.config import ParamsError, load_params
from fashion_mlp.io import sha256_file

PARAMS_PATH = REPO / "params.yaml"


@pytest.fixture(scope="module")
def train_params() -> dict:
    return load_params(PARAMS_PATH)["train"]


def _build(models, block: dict):
    return models.build_mlp(block["hidden"], block["activation"], block["dropout"], block["l2"], block["batchnorm"])


def _summary(keras, model) -> list[tuple]:
    """(kind, units/rate, activation, l2) per layer, for comparing architectures."""
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            reg = layer.kernel_regularizer
            l2 = None if reg is None else pytest.approx(float(reg.l2))
            rows.append(("Dense", layer.units, layer.activation.__name__, l2))
        elif isinstance(layer, keras.layers.Dropout):
            rows.append(("Dropout", pytest.approx(layer.rate)))
        else:
            rows.append((type(layer).__name__,))
    return rows


# --- architectures ---------------------------------------------------------------------


def test_baseline_matches_tutorial(keras, models):
    model = models.build_mlp([128], "relu", 0.2, 0.0, False)
    assert model.count_params() == 101_770
    assert _summary(keras, model) == [
        ("Flatten",),
        ("Dense", 128, "relu", None),
        ("Dropout", pytest.approx(0.2)),
        ("Dense", 10, "softmax", None),
    ]
    assert tuple(model.input_shape) == (None, 28, 28)
    assert tuple(model.output_shape) == (None, 10)


def test_baseline_from_params_yaml(keras, models, train_params):
    block = train_params["baseline"]
    assert (block["hidden"], block["activation"], block["dropout"], block["l2"], block["batchnorm"]) == (
        [128],
        "relu",
        0.2,
        0.0,
        False,
    )
    model = _build(models, block)
    assert model.count_params() == 101_770
    assert [type(layer).__name__ for layer in model.layers] == ["Flatten", "Dense", "Dropout", "Dense"]


def test_regularized_from_params_yaml(keras, models, train_params):
    model = _build(models, train_params["regularized"])
    assert _summary(keras, model) == [
        ("Flatten",),
        ("Dense", 256, "relu", None),
        ("Dense", 128, "relu", pytest.approx(0.005)),
        ("BatchNormalization",),
        ("Dropout", pytest.approx(0.3)),
        ("Dense", 10, "softmax", None),
    ]
    # 784*256+256 + 256*128+128 + 4*128 (BatchNorm) + 128*10+10
    assert model.count_params() == 200_960 + 32_896 + 512 + 1_290


def test_scalar_options_apply_to_every_layer(keras, models):
    model = models.build_mlp([32, 16], "tanh", 0.5, 0.01, True)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Flatten",
        "Dense",
        "BatchNormalization",
        "Dropout",
        "Dense",
        "BatchNormalization",
        "Dropout",
        "Dense",
    ]
    hidden = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][:-1]
    assert all(layer.activation.__name__ == "tanh" for layer in hidden)
    assert all(float(layer.kernel_regularizer.l2) == pytest.approx(0.01) for layer in hidden)


def test_per_layer_length_mismatch_is_refused(models):
    with pytest.raises(ParamsError, match="dropout has 3 values but hidden has 2 layers"):
        models.build_mlp([32, 16], "relu", [0.1, 0.2, 0.3], 0.0, False)


def test_output_is_a_probability_distribution(keras, models):
    model = models.build_mlp([8], "relu", 0.0, 0.0, False)
    x = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)
    probabilities = np.asarray(model(x, training=False))
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


# --- learning-rate schedules -------------------------------------------------------------


def _at(schedule, step: int) -> float:
    return float(np.asarray(schedule(step)))


def test_constant_schedule_is_the_float(models):
    assert models.learning_rate_schedule(0.001, "constant", 0.9, 100, 10) == 0.001


def test_exponential_schedule_decays_per_epoch(models):
    lr, rate, steps_per_epoch = 0.001, 0.9, 1688  # 54,000 images / batch 32
    schedule = models.learning_rate_schedule(lr, "exponential", rate, steps_per_epoch, 30)
    assert _at(schedule, 0) == pytest.approx(lr)
    assert _at(schedule, steps_per_epoch) == pytest.approx(lr * rate, rel=1e-5)
    assert _at(schedule, 2 * steps_per_epoch) == pytest.approx(lr * rate**2, rel=1e-5)
    # The tutorial's decay_steps=100_000 would leave the rate at ~0.99x after two epochs.
    assert _at(schedule, 2 * steps_per_epoch) < 0.85 * lr
    # smooth, step by step
    assert lr * rate < _at(schedule, steps_per_epoch // 2) < lr


def test_cosine_schedule_anneals_to_zero(models):
    lr, steps_per_epoch, epochs = 0.002, 50, 4
    schedule = models.learning_rate_schedule(lr, "cosine", 1.0, steps_per_epoch, epochs)
    assert _at(schedule, 0) == pytest.approx(lr)
    assert _at(schedule, steps_per_epoch * epochs // 2) == pytest.approx(lr / 2, rel=1e-4)
    assert _at(schedule, steps_per_epoch * epochs) == pytest.approx(0.0, abs=1e-9)
    assert _at(schedule, steps_per_epoch * epochs - 5) < 0.01 * lr


def test_unknown_schedule_is_refused(models):
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        models.learning_rate_schedule(0.001, "step", 0.9, 10, 10)


def test_compile_model_settings(keras, models):
    model = models.compile_model(models.build_mlp([8], "relu", 0.0, 0.0, False), 0.005, steps_per_execution=7)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(0.005)
    assert model.loss == "sparse_categorical_crossentropy"
    assert model.steps_per_execution == 7


@pytest.mark.slow
def test_exponential_schedule_really_decays_in_a_short_fit(keras, models):
    """Three real epochs: each starts at lr * rate**epoch, as recorded in the history."""
    from fashion_mlp.models.training import fit, make_history_callback

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    data = {
        "x_train": rng.random((64, 28, 28), dtype=np.float32),
        "y_train": rng.integers(0, 10, 64),
        "x_val": rng.random((16, 28, 28), dtype=np.float32),
        "y_val": rng.integers(0, 10, 16),
    }
    params = {
        "learning_rate": 0.01,
        "lr_schedule": "exponential",
        "lr_decay_rate": 0.5,
        "batch_size": 16,
        "epochs": 3,
        "early_stopping_patience": None,
        "early_stopping_monitor": "val_loss",
        "steps_per_execution": 2,
    }
    model = models.build_mlp([8], "relu", 0.0, 0.0, False)
    history = make_history_callback()
    fit(model, data, params, [history])
    rates = [row["learning_rate"] for row in history.rows]
    assert rates == pytest.approx([0.01, 0.005, 0.0025], rel=1e-5)
    assert int(model.optimizer.iterations) == 3 * 4
    assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(0.01 * 0.5**3, rel=1e-5)
    assert [row["epoch"] for row in history.rows] == [1, 2, 3]
    assert all(math.isfinite(row["val_loss"]) and row["epoch_seconds"] > 0 for row in history.rows)


# --- saving ------------------------------------------------------------------------------


def test_the_same_weights_saved_twice_give_the_same_bytes(keras, models, tmp_path):
    """Keras' .keras files differ from save to save; save_model's depend on the model alone.

    Between the two saves the clock moves on by more than 2 s (a zip member's date has a 2 s
    resolution) and the model is rebuilt around a new dtype-policy object, which Keras names
    by its memory address: Keras' own saves differ, save_model's do not. The file still
    loads in safe mode and predicts the same.
    """
    import json
    import zipfile

    def build():
        keras.backend.clear_session()  # the same layer names again
        keras.config.set_dtype_policy("float32")  # a new policy object, shared by every layer
        keras.utils.set_random_seed(0)
        model = models.compile_model(models.build_mlp([16, 8], "relu", [0.0, 0.3], 1e-4, [False, True]), 0.001)
        model.optimizer.build(model.trainable_variables)  # a trained model's file holds Adam's state too
        return model

    first = build()
    first.save(tmp_path / "keras_a.keras")
    models.save_model(first, tmp_path / "a.keras")
    model = build()
    model.save(tmp_path / "keras_b.keras")
    models.save_model(model, tmp_path / "b.keras")

    # What makes Keras' own archive differ from save to save is in it (a clock-free check): the save's
    # date, and objects shared between layers named by their memory address. save_model removes both.
    for name in ("keras_a.keras", "keras_b.keras"):
        with zipfile.ZipFile(tmp_path / name) as archive:
            assert "date_saved" in json.loads(archive.read("metadata.json"))
            assert "shared_object_id" in archive.read("config.json").decode()
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        assert "date_saved" not in json.loads(archive.read("metadata.json"))
    assert sha256_file(tmp_path / "a.keras") == sha256_file(tmp_path / "b.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.keras", "b.keras", "keras_a.keras", "keras_b.keras"], (
        "no temporary file is left"
    )

    loaded = keras.saving.load_model(tmp_path / "b.keras", safe_mode=True)
    images = np.random.default_rng(1).random((4, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
    for want, got in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(want, got)
    assert [v.numpy().tolist() for v in loaded.optimizer.variables] == [
        v.numpy().tolist() for v in model.optimizer.variables
    ]
