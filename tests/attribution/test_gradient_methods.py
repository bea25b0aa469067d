"""The reference attribution methods (fashion_mlp.attribution.gradients): gradient, gradient x input,
integrated gradients and SmoothGrad, checked against their closed forms on a linear softmax model, and
how the randomization check judges a plain gradient.
"""

from __future__ import annotations

import keras
import numpy as np
from tiny_nets import images, tiny_mlp

from fashion_mlp.attribution import gradients, randomization

# --- the reference methods (attribution/gradients.py) ----------------------------------------


def linear_softmax(seed: int = 0):
    """Flatten -> Dense(10, softmax): every gradient method has a closed form on it."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    )
    model.layers[-1].bias.assign(np.random.default_rng(seed).normal(size=10).astype(np.float32))
    return model


def test_the_gradient_methods_on_a_linear_model_have_their_closed_forms():
    model = linear_softmax()
    x, targets = images(6, seed=1), np.arange(6) % 10
    centre = images(10, seed=2).reshape(10, -1).mean(axis=0)
    opts = {"smoothgrad_samples": 4, "smoothgrad_noise": 0.15, "ig_steps": 3}
    maps = gradients.reference_maps(model, x, targets, centre, opts, seed=0)
    assert list(maps) == list(gradients.REFERENCE_METHODS)
    w = model.layers[-1].kernel.numpy()[:, targets].T.reshape(x.shape)  # each image's class column
    np.testing.assert_allclose(maps["gradient"], w, atol=1e-6)  # the logit, not the softmax
    np.testing.assert_allclose(maps["smoothgrad"], w, atol=1e-6)  # noise cannot move a constant gradient
    np.testing.assert_allclose(maps["input_x_gradient"], x * w, atol=1e-6)
    np.testing.assert_allclose(maps["integrated_gradients_zero"], x * w, atol=1e-6)
    np.testing.assert_allclose(maps["integrated_gradients_background"], (x - centre.reshape(28, 28)) * w, atol=1e-6)


def test_integrated_gradients_is_complete_and_smoothgrad_is_seeded():
    model = tiny_mlp(seed=3, batchnorm=False)
    x, targets = images(8, seed=4), np.arange(8) % 10
    centre = images(10, seed=5).reshape(10, -1).mean(axis=0)
    opts = {"smoothgrad_samples": 5, "smoothgrad_noise": 0.15, "ig_steps": 64}
    maps = gradients.reference_maps(model, x, targets, centre, opts, seed=0)
    gaps = gradients.completeness_gaps(model, x, targets, maps, centre)
    assert max(gaps.values()) < 0.02, gaps  # the sum of the map is the logit's change from the baseline
    again = gradients.reference_maps(model, x, targets, centre, opts, seed=0)
    assert np.array_equal(maps["smoothgrad"], again["smoothgrad"])
    other = gradients.reference_maps(model, x, targets, centre, opts, seed=1)
    assert not np.array_equal(maps["smoothgrad"], other["smoothgrad"])


def test_a_plain_gradient_is_judged_against_plain_noise():
    rng = np.random.default_rng(0)
    x = images(30, seed=6) * (rng.random((30, 28, 28)) > 0.5)  # half the pixels 0, as in the data
    trained, randomized = rng.normal(size=x.shape), rng.normal(size=x.shape)
    check = randomization.check(trained, randomized, x, None, seed=0, by_input=False)
    assert check["reference"] == "noise"
    assert abs(check["noise_reference"]["spearman_abs"]) < 0.05  # plain noise shares nothing, even off the garment
    assert check["verdict"] == "passes"
    by_input = randomization.check(x * trained, x * randomized, x, None, seed=0)
    assert by_input["noise_reference"]["spearman_abs"] > 0.3  # the zeros of x tie in both maps


def test_an_excess_below_the_margin_is_no_failure():
    """Maps barely more alike than noise (|ρ| about 0.04): resolved on 60 images, not a failure under the margin."""
    rng = np.random.default_rng(1)
    x = images(60, seed=7) * (rng.random((60, 28, 28)) > 0.5)
    trained = rng.normal(size=x.shape)
    randomized = rng.normal(size=x.shape) + 0.2 * trained
    strict = randomization.check(trained, randomized, x, None, seed=0, by_input=False)
    lenient = randomization.check(trained, randomized, x, None, seed=0, by_input=False, margin=0.05)
    assert 0.0 < strict["excess"] < 0.05, strict["excess"]
    assert strict["verdict"] == "FAILS" and lenient["verdict"] == "passes"
