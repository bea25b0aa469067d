"""Layer-wise relevance propagation (the epsilon rule) for the pipeline's Keras MLPs.

Written by hand on purpose: no maintained LRP library supports Keras 3. iNNvestigate pins
TensorFlow < 2.15, and zennit and captum are PyTorch. The MLPs here need only four layer
kinds, so the rule fits in a short, tested module (tests/test_explain.py).

The epsilon rule through an affine map z = f(a):  R_in = a * d/da[ sum_j z_j * s_j ],  s = R_out / (z + eps sign z),
computed with tf.GradientTape (Montavon et al., *Layer-wise relevance propagation: an overview*, 2019).
- Dense: its affine part is the map; its activation (ReLU or another elementwise one) passes relevance
  through unchanged, the usual convention.
- BatchNormalization: at inference an affine map per unit, x * gamma / sqrt(var + eps) + (beta - mean * that).
- Dropout: the identity at inference. Flatten: a reshape.
- The output layer: relevance starts from the chosen class's logit (its softmax is left out; see explain.py).
With zero biases and eps -> 0, relevance is conserved exactly and equals gradient x input.
Everything runs in float64, so conservation holds to rounding, not to float32's 1e-7 per sum.
"""

from __future__ import annotations

import numpy as np

SUPPORTED = ("InputLayer", "Flatten", "Dense", "BatchNormalization", "Dropout")


class UnsupportedLayer(ValueError):
    """The model has a layer the epsilon rule here does not cover; the message names it."""


def affine_steps(model) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """The model as a list of (weights, bias, activation) steps, in float64.

    Dense gives (kernel, bias, activation); BatchNormalization a diagonal step written as
    (scale vector, shift, "linear"); Flatten and Dropout give nothing. The last step's
    activation (softmax) is replaced by "linear": the steps end at the logits.
    """
    steps = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in SUPPORTED:
            raise UnsupportedLayer(f"layer {layer.name!r} ({kind}): LRP here covers only {', '.join(SUPPORTED)}")
        if kind == "Dense":
            bias = layer.bias.numpy() if layer.use_bias else np.zeros(layer.units)
            activation = layer.activation.__name__ if layer.activation is not None else "linear"
            steps.append((layer.kernel.numpy().astype(np.float64), bias.astype(np.float64), activation))
        elif kind == "BatchNormalization":
            steps.append((*batchnorm_affine(layer), "linear"))
    if not steps or steps[-1][0].ndim != 2:
        raise UnsupportedLayer("the model must end with a Dense layer (the logits)")
    steps[-1] = (steps[-1][0], steps[-1][1], "linear")
    return steps


def batchnorm_affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization at inference as y = x * scale + shift (vectors over the units)."""
    mean = layer.moving_mean.numpy().astype(np.float64)
    var = layer.moving_variance.numpy().astype(np.float64)
    gamma = layer.gamma.numpy().astype(np.float64) if layer.scale else np.ones_like(mean)
    beta = layer.beta.numpy().astype(np.float64) if layer.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + layer.epsilon)
    return scale, beta - mean * scale


def _apply(weights, bias, a):
    import tensorflow as tf

    if weights.ndim == 1:  # BatchNormalization: one scale per unit
        return a * weights + bias
    return tf.matmul(a, weights) + bias


def _activate(name: str, z):
    import keras

    return z if name == "linear" else keras.activations.get(name)(z)


def logits(model, images: np.ndarray) -> np.ndarray:
    """The pre-softmax scores (N, classes) of `model`, computed from its steps in float64."""
    import tensorflow as tf

    a = tf.constant(images.reshape(len(images), -1), dtype=tf.float64)
    for weights, bias, activation in affine_steps(model):
        a = _activate(activation, _apply(weights, bias, a))
    return a.numpy()


def relevance(model, images: np.ndarray, targets: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon-rule relevance of every input pixel for class `targets[i]` of image i.

    Returns (relevance shaped like `images`, the relevance put in at the top: each
    image's target logit). Conservation means relevance.sum(pixels) == that logit.
    """
    import tensorflow as tf

    steps = affine_steps(model)
    a = tf.constant(images.reshape(len(images), -1), dtype=tf.float64)
    inputs = []  # the input of every affine step, kept for the backward pass
    for weights, bias, activation in steps:
        inputs.append(a)
        a = _activate(activation, _apply(weights, bias, a))
    top = a.numpy()[np.arange(len(images)), targets]
    r = tf.one_hot(targets, a.shape[1], dtype=tf.float64) * a
    for (weights, bias, _), a_in in zip(reversed(steps), reversed(inputs), strict=True):
        r = epsilon_step(weights, bias, a_in, r, epsilon)
    return r.numpy().reshape(images.shape), top


def epsilon_step(weights, bias, a, r, epsilon: float):
    """R_in = a * grad_a(z . s) with s = R_out / (z + eps sign z); a dead unit (z == 0) passes nothing."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(a)
        z = _apply(weights, bias, a)
    sign = tf.where(z >= 0, tf.ones_like(z), -tf.ones_like(z))
    stabilized = z + epsilon * sign
    s = tf.where(stabilized == 0, tf.zeros_like(z), r / tf.where(stabilized == 0, tf.ones_like(z), stabilized))
    return a * tape.gradient(z, a, output_gradients=s)
