"""LRP that reaches the pixels: BatchNorm folding (canonize.py), the z^B and gamma rules and the composite
(lrp_rules.py), the per-layer conservation report (lrp.attribute, methods.lrp_attributions).

Fast tier: the rules on hand-computed numbers, and tiny MLPs and CNNs of train's shapes with seeded random
weights (tests/attribution/tiny_nets.py, tests/attribution/test_lrp.py), never trained.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_lrp import tiny_cnn
from tiny_nets import OPTS, images, seed_biases_and_norms, tiny_mlp

from fashion_mlp.attribution import lrp, lrp_rules, methods, model_report


def mlp(hidden=(12, 8), batchnorm=True, zero_bias=False, activation="relu", seed: int = 0) -> keras.Sequential:
    """Flatten -> [Dense(width) -> BatchNorm?] per width -> Dropout -> Dense(10, softmax): three linear layers
    by default, so the composite's default split has one of each rule."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(shape=(28, 28)), keras.layers.Flatten()]
    for width in hidden:
        layers.append(keras.layers.Dense(width, activation=activation))
        if batchnorm:
            layers.append(keras.layers.BatchNormalization())
    layers += [keras.layers.Dropout(0.2), keras.layers.Dense(10, activation="softmax")]
    return seed_biases_and_norms(keras.Sequential(layers), seed, zero_bias)


def f64(*values) -> tf.Tensor:
    return tf.constant(values, dtype=tf.float64)


def sums(result: lrp.Attribution) -> np.ndarray:
    return np.stack([entry.sums for entry in result.per_layer])


# The rules on hand numbers


def test_zbox_gives_relevance_by_distance_from_the_bound_that_would_lower_the_unit():
    # Two pixels, two units, W[i, j]; each unit passes on R_j = 1. The terms of z^B:
    # (x - 0) w for w > 0, (x - 1) w for w < 0.
    kernel = np.array([[2.0, -1.0], [-1.0, 3.0]])
    x = f64([0.0, 0.5], [0.25, 1.0])
    low, high = tf.zeros_like(x), tf.ones_like(x)
    r = lrp_rules.zbox_step(tf.matmul, kernel, x, tf.ones_like(x), low, high).numpy()
    # Image 0, unit 0: terms 0 * 2 = 0, (0.5 - 1)(-1) = 0.5 -> (0, 1). Unit 1: (0 - 1)(-1) = 1, 0.5 * 3 = 1.5
    # -> (0.4, 0.6). The black pixel 0 counts through its negative weight; LRP-0 would give it nothing.
    # Image 1, unit 0: 0.25 * 2 = 0.5, (1 - 1)(-1) = 0 -> (1, 0): pixel 1 is at the bound. Unit 1: (0.25 - 1)(-1)
    # = 0.75, 1 * 3 = 3 -> (0.2, 0.8).
    np.testing.assert_allclose(r, [[0.4, 1.6], [1.2, 0.8]], rtol=0, atol=1e-12)
    lrp0 = lrp_rules.epsilon_step(lambda a: tf.matmul(a, kernel), x, tf.ones_like(x), 0.0).numpy()
    assert lrp0[0, 0] == 0


def test_zbox_at_the_bounds_everywhere_passes_nothing():
    # All pixels 0 and positive weights: no pixel could lower the units, every term is 0.
    r = lrp_rules.zbox_step(
        tf.matmul, np.ones((2, 2)), f64([0.0, 0.0]), f64([1.0, 1.0]), f64([0.0, 0.0]), f64([1.0, 1.0])
    )
    np.testing.assert_array_equal(r.numpy(), [[0.0, 0.0]])


def test_gamma_amplifies_each_units_own_sign_contributions():
    # x = (2, -1), W = [[1, -1], [1, 2]], b = (0.5, 0), gamma = 0.5, R_out = (1, 2).
    kernel, bias = np.array([[1.0, -1.0], [1.0, 2.0]]), np.array([0.5, 0.0])
    r = lrp_rules.gamma_step(tf.matmul, kernel, bias, f64([2.0, -1.0]), f64([1.0, 2.0]), gamma=0.5).numpy()
    # Unit 0: z = 2 - 1 + 0.5 = 1.5 > 0. Positive contribution 2 * 1 -> 2 * (1 + 0.5) = 3; negative -1 * 1 kept;
    # denominator 3 - 1 + 0.5 + 0.5 * 0.5 = 2.75. Unit 1: z = -2 - 2 = -4 < 0: its negative contributions
    # amplified, 2 * (-1.5) = -3 and -1 * 3 = -3, denominator -6, R_out 2 -> (1, 1).
    np.testing.assert_allclose(r, [[3 / 2.75 + 1, -1 / 2.75 + 1]], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_gamma_zero_is_lrp_0_on_signed_inputs(kind):
    rng = np.random.default_rng(0)
    if kind == "dense":
        kernel, bias, shape = rng.normal(size=(6, 4)), rng.normal(size=4), (3, 6)
        linear = tf.matmul
    else:
        kernel, bias, shape = rng.normal(size=(3, 3, 2, 4)), rng.normal(size=4), (3, 5, 5, 2)

        def linear(a, k):
            return tf.nn.convolution(a, k, padding="VALID")

    a = tf.constant(rng.normal(size=shape))  # signed: a tanh layer's output, say
    r = tf.constant(rng.normal(size=linear(a, kernel).shape))
    gamma0 = lrp_rules.gamma_step(linear, kernel, bias, a, r, gamma=0.0)
    lrp0 = lrp_rules.epsilon_step(lambda x: linear(x, kernel) + bias, a, r, 0.0)
    np.testing.assert_allclose(gamma0.numpy(), lrp0.numpy(), rtol=1e-10, atol=1e-12)


# The composite on models


def test_the_default_split_is_zbox_then_the_lower_half_gamma_then_epsilon():
    assert [lrp_rules.default_gamma_layers(n) for n in range(1, 6)] == [0, 0, 1, 1, 2]
    composite = lrp.Rules("composite")
    assert [s.rule for s in lrp.plan(mlp(), composite) if s.kind == "Dense"] == ["zbox", "gamma", "epsilon"]
    cnn = [s.rule for s in lrp.plan(tiny_cnn(conv=(3, 4), padding="valid"), composite) if s.kind in lrp_rules.LINEAR]
    assert cnn == ["zbox", "gamma", "epsilon", "epsilon"]
    two = lrp.plan(mlp(), lrp.Rules("composite", gamma_layers=2))
    assert [s.rule for s in two if s.kind == "Dense"] == ["zbox", "gamma", "gamma"]
    with pytest.raises(ValueError, match="gamma_layers=3: only 2 linear layers above the first"):
        lrp.plan(mlp(), lrp.Rules("composite", gamma_layers=3))


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_the_composite_conserves_relevance_layer_by_layer_without_biases(model):
    net = mlp(zero_bias=True) if model == "mlp" else tiny_cnn(conv=(3, 4), padding="valid", zero_bias=True)
    x, targets = images(4), np.array([0, 3, 5, 9])
    result = lrp.attribute(net, x, targets, lrp.Rules("composite", epsilon=1e-12))
    assert {"zbox", "gamma", "epsilon", "route"} == {entry.rule for entry in result.per_layer[1:]}
    assert np.abs(result.relevance_out).min() > 1e-3  # a real logit, not a vacuous 0 == 0
    np.testing.assert_allclose(
        sums(result), np.broadcast_to(result.relevance_out, (len(result.per_layer), 4)), atol=1e-9
    )
    np.testing.assert_allclose(result.values.reshape(4, -1).sum(axis=1), result.relevance_out, atol=1e-9)


def test_the_per_layer_report_shows_relevance_change_only_where_a_bias_or_epsilon_takes_it():
    keras.utils.set_random_seed(0)
    layers = [
        keras.Input(shape=(28, 28)),
        keras.layers.Flatten(name="pixels"),
        keras.layers.Dense(8, activation="relu", name="first"),  # z^B: its bias takes nothing
        keras.layers.Dense(6, activation="relu", use_bias=False, name="no_bias"),  # gamma, no bias
        keras.layers.Dense(5, activation="relu", name="biased"),  # gamma with a bias
        keras.layers.Dense(10, name="out"),  # epsilon with a bias
    ]
    model = keras.Sequential(layers)
    for layer in model.layers:
        if getattr(layer, "use_bias", False):
            layer.bias.assign(np.random.default_rng(1).normal(0, 0.1, layer.units))
    x, targets = images(5), np.arange(5)
    result = lrp.attribute(model, x, targets, lrp.Rules("composite", gamma_layers=2))
    names = [entry.layer for entry in result.per_layer]
    assert names == ["logit", "out", "biased", "no_bias", "first", "pixels"]
    assert [entry.rule for entry in result.per_layer] == ["", "epsilon", "gamma", "gamma", "zbox", "route"]
    np.testing.assert_allclose(result.per_layer[0].sums, lrp.logits(model, x)[np.arange(5), targets], atol=1e-12)
    np.testing.assert_allclose(result.per_layer[-1].sums, result.values.reshape(5, -1).sum(axis=1), atol=1e-12)
    change = np.abs(np.diff(sums(result), axis=0)).max(axis=1)  # entry k+1 against entry k
    assert dict(zip(names[1:], change > 1e-9, strict=True)) == {
        "out": True,
        "biased": True,
        "no_bias": False,
        "first": False,
        "pixels": False,
    }

    report = methods.lrp_attributions(model, x, targets, lrp.Rules("composite", gamma_layers=2))
    summary = methods.conservation_summary(report["relevance_out"], report["relevance_in"], report["per_layer"])
    shares = summary["per_layer"]
    assert [row["layer"] for row in shares] == names and shares[0]["share_of_top"] == 1.0
    assert shares[-1]["share_of_top"] == pytest.approx(summary["mean_relevance_in"] / summary["mean_relevance_out"])


def test_z_b_refuses_images_outside_its_bounds():
    with pytest.raises(ValueError, match="images outside"):
        lrp.attribute(mlp(), images(2) * 2, np.zeros(2, dtype=int), lrp.Rules("composite"))


# BatchNorm folding


@pytest.mark.parametrize("model", ["mlp", "cnn valid", "cnn same, no shift"])
def test_folding_every_batchnorm_keeps_the_logits(model):
    net = {
        "mlp": lambda: mlp(),
        "cnn valid": lambda: tiny_cnn(conv=(3, 4), padding="valid"),
        "cnn same, no shift": lambda: tiny_cnn(conv=(3, 4), padding="same", zero_bias=True),
    }[model]()
    x = images(5)
    steps = lrp.plan(net, lrp.Rules("composite"))
    batchnorms = [layer.name for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert [name for step in steps for name in step.folded] == batchnorms
    assert all(step.kind != "BatchNormalization" for step in steps)
    np.testing.assert_allclose(lrp.logits(net, x, lrp.Rules("composite")), lrp.logits(net, x), rtol=0, atol=1e-9)


@pytest.mark.parametrize("case", ["same padding with a shift", "a negative scale before pooling"])
def test_a_batchnorm_that_would_not_fold_exactly_stays_its_own_step(case):
    net = tiny_cnn(conv=(3, 4), padding="same" if case.startswith("same") else "valid")
    first = next(layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization))
    if case.startswith("a negative"):
        first.gamma.assign(first.gamma.numpy() * np.array([1.0, -1.0, 1.0]))
    steps = lrp.plan(net, lrp.Rules("composite"))
    assert [s.name for s in steps if s.kind == "BatchNormalization"] == [first.name]
    assert first.name not in [name for step in steps for name in step.folded]
    assert next(s for s in steps if s.name == first.name).rule == "epsilon"
    x = images(4)
    np.testing.assert_allclose(lrp.logits(net, x, lrp.Rules("composite")), lrp.logits(net, x), rtol=0, atol=1e-9)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_folding_moves_the_shifts_absorption_into_the_next_layer_and_leaves_lrp_0_unchanged(model):
    # Under LRP-0 a folded BatchNorm gives the same maps: its shift, now in the next layer's bias, takes
    # the same share there that it took as its own step. The report says where.
    net = mlp() if model == "mlp" else tiny_cnn(conv=(3, 4), padding="valid")
    x, targets = images(4), np.array([1, 2, 3, 4])
    kept = lrp.attribute(net, x, targets, lrp.Rules("epsilon", epsilon=0.0))
    folded = lrp.attribute(net, x, targets, lrp.Rules("epsilon", epsilon=0.0, fold_batchnorm=True))
    scale = np.abs(kept.values).max()
    np.testing.assert_allclose(folded.values, kept.values, rtol=0, atol=1e-9 * scale)
    assert any(entry.layer.startswith("batch_normalization") for entry in kept.per_layer)
    assert not any(entry.layer.startswith("batch_normalization") for entry in folded.per_layer)
    assert folded.folded and not kept.folded


def test_on_an_mlp_with_shifts_the_composite_reports_what_reaches_the_pixels():
    net, x, targets = mlp(hidden=(16, 12)), images(8), np.arange(8)
    results = {
        "epsilon": methods.lrp_attributions(net, x, targets, lrp.Rules(epsilon=0.01)),
        "composite": methods.lrp_attributions(net, x, targets, lrp.Rules("composite", epsilon=0.01)),
    }
    assert results["epsilon"]["folded_batchnorm"] == []
    batchnorms = [layer.name for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert results["composite"]["folded_batchnorm"] == batchnorms and len(batchnorms) == 2
    assert [entry.rule for entry in results["composite"]["per_layer"]] == ["", "epsilon", "gamma", "zbox", "route"]
    for result in results.values():
        summary = methods.conservation_summary(result["relevance_out"], result["relevance_in"], result["per_layer"])
        share = summary["per_layer"][-1]["share_of_top"]
        assert np.isfinite(share) and share == pytest.approx(
            result["relevance_in"].mean() / result["relevance_out"].mean()
        )


# The epsilon path and refusals


def test_the_epsilon_rule_is_the_one_explain_has_always_used():
    # The epsilon rule with BatchNorm as its own step, by hand in numpy (relevance.py before the composite).
    model, x, targets, eps = tiny_mlp(), images(5), np.arange(5), 0.01
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    (w1, b1), (w2, b2) = ((d.kernel.numpy().astype(np.float64), d.bias.numpy().astype(np.float64)) for d in dense)
    scale, shift = lrp.batchnorm_affine(model.layers[2])

    def stabilized(z):
        return z + eps * np.where(z >= 0, 1.0, -1.0)

    flat = x.reshape(5, -1).astype(np.float64)
    z1 = flat @ w1 + b1
    a1 = np.maximum(z1, 0)
    y = a1 * scale + shift
    z2 = y @ w2 + b2
    r2 = np.eye(10)[targets] * z2
    r_y = y * ((r2 / stabilized(z2)) @ w2.T)
    r_a1 = a1 * scale * r_y / stabilized(y)
    r_x = flat * ((r_a1 / stabilized(z1)) @ w1.T)

    values, top = lrp.relevance(model, x, targets, eps)
    np.testing.assert_allclose(values.reshape(5, -1), r_x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(top, z2[np.arange(5), targets], rtol=1e-12)
    result = methods.lrp_attributions(model, x, targets, lrp.Rules(epsilon=eps))
    np.testing.assert_array_equal(result["values"], values)
    expected = [z2[np.arange(5), targets], r_y.sum(1), r_a1.sum(1), r_x.sum(1), r_x.sum(1)]
    np.testing.assert_allclose(np.stack([e.sums for e in result["per_layer"]]), expected, rtol=1e-9, atol=1e-12)


def test_unknown_rules_are_refused():
    with pytest.raises(ValueError, match="'alpha-beta': use 'epsilon' or 'composite'"):
        lrp.Rules("alpha-beta")


def test_the_composite_refuses_an_unsupported_layer_by_name():
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28)),
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.AveragePooling2D(2, name="avg"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    with pytest.raises(lrp.UnsupportedLayer, match=r"'avg' \(AveragePooling2D\)"):
        lrp.attribute(model, images(1), np.zeros(1, dtype=int), lrp.Rules("composite"))


def test_z_b_refuses_a_first_linear_layer_that_does_not_see_the_pixels():
    # A BatchNorm on the pixels with a negative scale cannot fold through the pooling after it.
    keras.utils.set_random_seed(0)
    norm = keras.layers.BatchNormalization(name="pixel_norm")
    layers = [keras.layers.Reshape((28, 28, 1)), norm, keras.layers.MaxPooling2D(2), keras.layers.Conv2D(2, 3)]
    model = keras.Sequential([keras.Input(shape=(28, 28)), *layers, keras.layers.Flatten(), keras.layers.Dense(10)])
    norm.gamma.assign([-1.0])
    with pytest.raises(lrp.UnsupportedLayer, match=r"'pixel_norm' \(BatchNormalization\) before 'conv2d"):
        lrp.attribute(model, images(1), np.zeros(1, dtype=int), lrp.Rules("composite"))


@pytest.mark.slow  # a whole explain report twice (SHAP for ten classes each): 9 s
def test_explain_puts_lrp_epsilon_beside_the_composite_and_not_beside_itself():
    """With the composite, LRP-ε goes through the same checks as a reference method: the composite's effect shows
    in one table; with LRP-ε itself, no copy of it."""
    model, x, y = tiny_mlp(), images(20), np.arange(20) % 10
    cheap = {"images_per_class": 1, "cascade_methods": ["gradient"], "smoothgrad_samples": 1, "ig_steps": 1}
    opts = OPTS | cheap
    composite = model_report.explain_model(model, x[:10], x, y, opts, seed=0)["report"]
    assert composite["lrp"]["method"] == "composite rule"
    assert composite["reference_methods"]["lrp_epsilon"]["label"] == "LRP, ε in every layer"
    assert composite["reference_methods"]["lrp_epsilon"]["randomization"]["reference"] == "x·noise"
    epsilon = model_report.explain_model(model, x[:10], x, y, opts | {"lrp_rule": "epsilon"}, seed=0)["report"]
    assert epsilon["lrp"]["method"] == "epsilon rule" and "lrp_epsilon" not in epsilon["reference_methods"]
    assert epsilon["lrp"]["deletion_area"] == composite["reference_methods"]["lrp_epsilon"]["deletion_area"]
    assert epsilon["lrp"]["randomization"]["reference"] == "x·noise"
    assert composite["lrp"]["randomization"]["reference"] == "noise"
