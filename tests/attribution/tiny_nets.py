"""Tiny nets with seeded random weights, random pictures and small `explain` options, for the explanation
tests (test_explain.py, test_sanity_checks.py, test_lrp*.py, test_data_randomization.py): nothing is trained."""

from __future__ import annotations

import keras
import numpy as np

OPTS = {
    "background_size": 20,
    "images_per_class": 2,
    "grid_correct": 2,
    "grid_mistakes": 2,
    "deletion_steps": 4,
    "lrp_rule": "composite",
    "lrp_epsilon": 0.01,
    "lrp_gamma": 0.25,
    "randomization_margin": 0.05,
    "smoothgrad_samples": 3,
    "smoothgrad_noise": 0.15,
    "ig_steps": 4,
    "cascade_images_per_class": 1,
    "cascade_methods": ["lrp", "gradient"],  # SHAP, the costly one, in the test that names every method
    "data_randomization_images": 40,
    "data_randomization_epochs": 1,
}


def tiny_mlp(seed: int = 0, zero_bias: bool = False, batchnorm: bool = True, input_shape=(28, 28)):
    """Flatten -> Dense(12, relu) -> [BatchNorm] -> Dropout -> Dense(10, softmax), with seeded random weights
    (BatchNorm's moving statistics and beta too, so it is a real affine map; zero when zero_bias)."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(shape=input_shape), keras.layers.Flatten(), keras.layers.Dense(12, activation="relu")]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization())
    layers += [keras.layers.Dropout(0.3), keras.layers.Dense(10, activation="softmax")]
    return seed_biases_and_norms(keras.Sequential(layers), seed, zero_bias)


def seed_biases_and_norms(model, seed: int, zero_bias: bool):
    """`model` with seeded random biases (Dense, Conv2D) and BatchNorm statistics, so that BatchNorm is a
    real affine map; the biases, beta and moving means zero when zero_bias."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            n = layer.bias.shape[0]
            layer.bias.assign(np.zeros(n) if zero_bias else rng.normal(0, 0.1, n))
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))
            layer.beta.assign(np.zeros(n) if zero_bias else rng.normal(0, 0.1, n))
            layer.moving_mean.assign(np.zeros(n) if zero_bias else rng.normal(0, 0.1, n))
    return model


def images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28)).astype(np.float32)
