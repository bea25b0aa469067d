"""`explain` on a CNN: LRP's epsilon rule through Reshape, Conv2D, channel BatchNorm and MaxPooling2D,
SHAP additivity and the checks on a CNN.

Fast tier: tiny CNNs shaped like train's `cnn` kind (Input(28, 28) -> Reshape -> [Conv2D -> BatchNorm? ->
MaxPooling2D]* -> Flatten -> [Dense -> BatchNorm? -> Dropout?]* -> Dense(10, softmax)), built here with
seeded random weights, never trained. The one slow test runs every method and check of the stage on one.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from tiny_nets import OPTS, images, seed_biases_and_norms

from conftest import assert_png
from fashion_mlp.attribution import checks, lrp, methods, model_report, randomization
from fashion_mlp.attribution import figures as attribution_figures
from fashion_mlp.stages import explain


def tiny_cnn(
    conv=(3,), dense=(8,), padding="same", batchnorm=True, zero_bias=False, dropout=0.2, seed: int = 0
) -> keras.Sequential:
    """A small CNN of train's `cnn` shape, with seeded random weights (biases, BatchNorm's beta and moving
    statistics too, so each BatchNorm is a real affine map; all shifts zero when zero_bias)."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(shape=(28, 28)), keras.layers.Reshape((28, 28, 1))]
    for filters in conv:
        layers.append(keras.layers.Conv2D(filters, 3, activation="relu", padding=padding))
        if batchnorm:
            layers.append(keras.layers.BatchNormalization())
        layers.append(keras.layers.MaxPooling2D(2))
    layers.append(keras.layers.Flatten())
    for width in dense:
        layers.append(keras.layers.Dense(width, activation="relu"))
        if batchnorm:
            layers.append(keras.layers.BatchNormalization())
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(10, activation="softmax", name="probabilities"))
    return seed_biases_and_norms(keras.Sequential(layers), seed, zero_bias)


def gradient_times_input(model, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """d logit[target] / d x * x, through Keras's own layers (float32): independent of lrp.py."""
    import tensorflow as tf

    last = model.layers[-1]
    tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        h = tensor
        for layer in model.layers[:-1]:
            h = layer(h, training=False)
        scores = tf.matmul(h, last.kernel) + last.bias
        chosen = tf.reduce_sum(scores * tf.one_hot(targets, 10))
    return (tape.gradient(chosen, tensor) * tensor).numpy()


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_lrp_logits_are_the_cnns_pre_softmax_scores(padding):
    model, x = tiny_cnn(conv=(3, 4), padding=padding), images(4)
    scores = lrp.logits(model, x)
    softmax = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, model(x, training=False), atol=1e-5)


def test_lrp_on_a_bias_free_cnn_conserves_relevance_and_equals_gradient_times_input():
    model, x = tiny_cnn(conv=(3, 4), batchnorm=True, zero_bias=True), images(6)
    targets = np.array([0, 1, 2, 3, 4, 9])
    relevance, top = lrp.relevance(model, x, targets, epsilon=1e-12)
    assert relevance.shape == x.shape
    assert np.abs(top).min() > 1e-3  # a real logit, not a vacuous 0 == 0
    np.testing.assert_allclose(relevance.reshape(6, -1).sum(axis=1), top, rtol=0, atol=1e-5)
    expected = gradient_times_input(model, x, targets)
    np.testing.assert_allclose(relevance, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_lrp_max_pooling_gives_each_windows_relevance_to_its_max():
    import tensorflow as tf

    layers = [keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(10)]
    pool = lrp.layer_steps(keras.Sequential([keras.Input(shape=(2, 4, 1)), *layers]))[0]
    assert pool.rule == "route"
    a = tf.constant([[1.0, 3.0, 0.5, 0.2], [2.0, 0.0, 0.1, 0.7]], dtype=tf.float64)[None, :, :, None]
    r = tf.constant([[[[5.0], [-2.0]]]], dtype=tf.float64)
    r_in = lrp.route_step(pool.forward, a, r).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(r_in, [[0, 5, 0, 0], [0, 0, 0, -2]])


def test_lrp_on_a_cnn_with_biases_loses_relevance_to_them_and_says_how_much():
    model, x = tiny_cnn(conv=(3,)), images(4)
    result = methods.lrp_attributions(model, x, np.zeros(4, dtype=int), lrp.Rules(epsilon=0.01))
    summary = methods.conservation_summary(result["relevance_out"], result["relevance_in"])
    assert np.all(np.isfinite(result["values"]))
    assert summary["max_abs_gap"] > 1e-4


@pytest.mark.parametrize(
    ("layer", "shape", "message"),
    [
        (keras.layers.AveragePooling2D(2, name="avg"), (28, 28, 1), r"'avg' \(AveragePooling2D\): LRP here covers"),
        (keras.layers.BatchNormalization(axis=1, name="rows"), (28, 28, 1), r"'rows' \(BatchNormalization\): axis=1"),
        (keras.layers.Conv2D(2, 3, data_format="channels_first", name="cf"), (1, 28, 28), r"'cf' \(Conv2D\): data_"),
    ],
)
def test_lrp_refuses_a_layer_or_variant_it_does_not_cover_by_name(layer, shape, message):
    inputs = [keras.Input(shape=(28, 28)), keras.layers.Reshape(shape)]
    model = keras.Sequential([*inputs, layer, keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(lrp.UnsupportedLayer, match=message):
        lrp.layer_steps(model)


def test_a_saved_cnn_passes_the_model_check(tmp_path):
    path = tmp_path / "cnn.keras"
    tiny_cnn().save(path)
    model, kind = explain.load_model_checked(path)
    assert model.input_shape == (None, 28, 28) and kind.name == "cnn"


def test_lrp_randomization_lowers_the_rank_correlation_on_a_cnn():
    model, x = tiny_cnn(conv=(3,)), images(6)
    targets = np.zeros(6, dtype=int)
    random = checks.randomized_copy(model, seed=7)
    assert [type(layer).__name__ for layer in random.layers] == [type(layer).__name__ for layer in model.layers]
    assert not np.allclose(random.layers[1].kernel.numpy(), model.layers[1].kernel.numpy())

    def attribute(m):
        return methods.lrp_attributions(m, x, targets, lrp.Rules(epsilon=0.01))["values"]

    same = randomization.similarity(attribute(model), attribute(model), x, seed=0)
    other = randomization.similarity(attribute(model), attribute(random), x, seed=0)
    assert same["spearman"]["mean"] == pytest.approx(1.0)
    assert other["spearman"]["mean"] < 0.5
    assert other["spearman_abs_on_garment"]["mean"] < same["spearman_abs_on_garment"]["mean"]


def test_shap_additivity_holds_on_a_cnn():
    model, x = tiny_cnn(conv=(3,)), images(3)
    result = methods.shap_attributions(model, images(5, seed=2), x, np.full(3, 4))  # one class: one explainer
    assert result["values"].shape == x.shape
    assert result["additivity_gaps"].max() < 1e-5


@pytest.mark.slow  # a DeepExplainer per class and model: a few seconds
def test_every_method_and_check_of_explain_runs_on_a_cnn(tmp_path):
    model = tiny_cnn(conv=(3, 4))
    rng = np.random.default_rng(0)
    x_test, y_test = images(20, seed=3), np.arange(20) % 2  # two classes: fewer explainers
    opts = OPTS | {"images_per_class": 3, "grid_correct": 1, "grid_mistakes": 1}
    background = rng.random((10, 28, 28)).astype(np.float32)
    result = model_report.explain_model(model, background, x_test, y_test, opts, seed=3)
    report = result["report"]
    assert report["shap"]["additivity_max_abs_gap"] < 1e-5
    assert report["lrp"]["conservation"]["mean_relevance_out"] != 0
    for method in ("shap", "lrp"):
        check = report[method]["randomization"]
        assert -1.0 <= check["spearman_abs"] <= 1.0 and check["verdict"] in ("passes", "FAILS"), check
        assert check["noise_reference"].keys() == check["interval"].keys() == randomization.VARIANTS.keys()
        assert 0.0 <= report[method]["deletion_area"] <= 1.0
    attribution_figures.plot_class_maps(*result["sample"], tmp_path / "classes.png", "cnn")
    attribution_figures.plot_examples(*result["examples"], tmp_path / "examples.png", "cnn")
    attribution_figures.plot_deletion(result["deletion"], result["insertion"], tmp_path / "deletion.png", "cnn")
    shown = report["images"]["examples_correct"] + report["images"]["examples_mistakes"]
    assert_png(tmp_path / "classes.png", panels=(2, 2))  # SHAP and LRP; the two classes of y_test, the rest blank
    # A single column's colorbar labels can stand apart as a band of their own: columns counted from two.
    assert_png(tmp_path / "examples.png", panels=(3, shown if shown > 1 else None))
    assert_png(tmp_path / "deletion.png", panels=(1, 2))
