"""Layer-wise relevance propagation (the epsilon rule) for the pipeline's Keras MLPs and small CNNs.

Written by hand on purpose: no maintained LRP library supports Keras 3. iNNvestigate pins
TensorFlow < 2.15, and zennit and captum are PyTorch. The models here need only a few layer
kinds, so the rule fits in a short, tested module (tests/test_explain.py, tests/test_lrp.py).

The model becomes a list of float64 steps, each a map z = f(a) written with TensorFlow ops
(Montavon et al., *Layer-wise relevance propagation: an overview*, 2019):
- "epsilon" steps, the affine maps: R_in = a * d/da[ sum_j z_j * s_j ],  s = R_out / (z + eps sign z),
  computed with tf.GradientTape.
  - Dense: kernel and bias. Conv2D: the convolution and its bias. Their elementwise activation
    (ReLU or another) passes relevance through unchanged, the usual convention.
  - BatchNormalization: at inference an affine map per unit (after Dense) or per channel (after Conv2D),
    x * gamma / sqrt(var + eps) + (beta - mean * that).
- "route" steps, maps that only move or pick inputs: R_in = J^T R_out (the map's gradient applied to R).
  - Flatten, Reshape: relevance is reshaped back.
  - MaxPooling2D: winner-take-all, all of a window's relevance goes to its largest input. That is the
    z-rule through the pooling seen as the locally linear map it is (it copies the winner), without the
    epsilon: pooling has no bias, so it neither creates nor absorbs relevance. Conservation stays exact,
    and bias-free LRP-0 stays gradient x input. Spreading relevance over the window in proportion to the
    inputs would credit pixels the forward pass ignored.
- Dropout: the identity at inference; InputLayer: nothing.
- The output layer: relevance starts from the chosen class's logit (its softmax is left out; see explain.py).
With zero biases and eps -> 0, relevance is conserved exactly and equals gradient x input.
Everything runs in float64, so conservation holds to rounding, not to float32's 1e-7 per sum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

SUPPORTED = (
    "InputLayer",
    "Reshape",
    "Flatten",
    "Dense",
    "Conv2D",
    "BatchNormalization",
    "MaxPooling2D",
    "Dropout",
)


class UnsupportedLayer(ValueError):
    """The model has a layer the epsilon rule here does not cover; the message names it."""


class Step(NamedTuple):
    """One layer as a float64 map z = forward(a), the way relevance crosses it, and the activation after it."""

    name: str
    rule: str  # "epsilon" (affine maps) or "route" (reshapes, max pooling)
    forward: Callable
    activation: str = "linear"


def _f64(variable) -> np.ndarray:
    return np.asarray(variable.numpy(), dtype=np.float64)


def _activation_name(layer) -> str:
    return layer.activation.__name__ if layer.activation is not None else "linear"


def _unsupported(layer, why: str) -> UnsupportedLayer:
    return UnsupportedLayer(f"layer {layer.name!r} ({type(layer).__name__}): {why}")


def _channels_last(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise _unsupported(layer, f"data_format {layer.data_format!r}; LRP here needs channels_last")


def layer_steps(model) -> list[Step]:
    """The model as a list of float64 steps ending at the logits (the last Dense's softmax is dropped).

    Refuses, naming the layer, anything outside SUPPORTED or a variant of it the steps do not model.
    """
    import tensorflow as tf

    steps = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in SUPPORTED:
            raise _unsupported(layer, f"LRP here covers only {', '.join(SUPPORTED)}")
        if kind == "Flatten":
            steps.append(Step(layer.name, "route", lambda a: tf.reshape(a, (tf.shape(a)[0], -1))))
        elif kind == "Reshape":
            target = tuple(layer.target_shape)
            steps.append(Step(layer.name, "route", lambda a, target=target: tf.reshape(a, (-1, *target))))
        elif kind == "Dense":
            steps.append(Step(layer.name, "epsilon", _dense(layer), _activation_name(layer)))
        elif kind == "Conv2D":
            steps.append(Step(layer.name, "epsilon", _conv2d(layer), _activation_name(layer)))
        elif kind == "BatchNormalization":
            steps.append(Step(layer.name, "epsilon", _batchnorm(layer)))
        elif kind == "MaxPooling2D":
            steps.append(Step(layer.name, "route", _maxpool(layer)))
    if not steps or type(model.get_layer(steps[-1].name)).__name__ != "Dense":
        raise UnsupportedLayer("the model must end with a Dense layer (the logits)")
    steps[-1] = steps[-1]._replace(activation="linear")
    return steps


def _dense(layer) -> Callable:
    import tensorflow as tf

    kernel = _f64(layer.kernel)
    bias = _f64(layer.bias) if layer.use_bias else np.zeros(layer.units)
    return lambda a: tf.matmul(a, kernel) + bias


def _conv2d(layer) -> Callable:
    import tensorflow as tf

    _channels_last(layer)
    if getattr(layer, "groups", 1) != 1:
        raise _unsupported(layer, f"groups={layer.groups}; LRP here needs groups=1")
    kernel = _f64(layer.kernel)
    bias = _f64(layer.bias) if layer.use_bias else np.zeros(layer.filters)
    strides, dilations, padding = tuple(layer.strides), tuple(layer.dilation_rate), layer.padding.upper()

    def forward(a):
        return tf.nn.convolution(a, kernel, strides=strides, padding=padding, dilations=dilations) + bias

    return forward


def batchnorm_affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization at inference as y = x * scale + shift (vectors over the units or channels)."""
    mean = _f64(layer.moving_mean)
    var = _f64(layer.moving_variance)
    gamma = _f64(layer.gamma) if layer.scale else np.ones_like(mean)
    beta = _f64(layer.beta) if layer.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + layer.epsilon)
    return scale, beta - mean * scale


def _batchnorm(layer) -> Callable:
    rank = layer.input_spec.ndim  # set when built; layer.input would fail once explain shares the layer
    if layer.axis % rank != rank - 1:  # the vectors below broadcast over the last axis only
        raise _unsupported(layer, f"axis={layer.axis}; LRP here needs the last axis (units or channels)")
    scale, shift = batchnorm_affine(layer)
    return lambda a: a * scale + shift


def _maxpool(layer) -> Callable:
    import tensorflow as tf

    _channels_last(layer)
    size, strides, padding = tuple(layer.pool_size), tuple(layer.strides), layer.padding.upper()
    return lambda a: tf.nn.max_pool2d(a, ksize=size, strides=strides, padding=padding)


def _activate(name: str, z):
    import keras

    return z if name == "linear" else keras.activations.get(name)(z)


def _forward(steps: list[Step], model, images: np.ndarray):
    """The logits, and the input of every step (kept for the backward pass)."""
    import tensorflow as tf

    a = tf.constant(images.reshape(len(images), *model.input_shape[1:]), dtype=tf.float64)
    inputs = []
    for step in steps:
        inputs.append(a)
        a = _activate(step.activation, step.forward(a))
    return a, inputs


def logits(model, images: np.ndarray) -> np.ndarray:
    """The pre-softmax scores (N, classes) of `model`, computed from its steps in float64."""
    return _forward(layer_steps(model), model, images)[0].numpy()


def relevance(model, images: np.ndarray, targets: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon-rule relevance of every input pixel for class `targets[i]` of image i.

    Returns (relevance shaped like `images`, the relevance put in at the top: each
    image's target logit). Conservation means relevance.sum(pixels) == that logit.
    """
    import tensorflow as tf

    steps = layer_steps(model)
    out, inputs = _forward(steps, model, images)
    top = out.numpy()[np.arange(len(images)), targets]
    r = tf.one_hot(targets, out.shape[1], dtype=tf.float64) * out
    for step, a_in in zip(reversed(steps), reversed(inputs), strict=True):
        if step.rule == "epsilon":
            r = epsilon_step(step.forward, a_in, r, epsilon)
        else:
            r = route_step(step.forward, a_in, r)
    return r.numpy().reshape(images.shape), top


def epsilon_step(forward: Callable, a, r, epsilon: float):
    """R_in = a * grad_a(z . s) with s = R_out / (z + eps sign z); a dead unit (z == 0) passes nothing."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(a)
        z = forward(a)
    sign = tf.where(z >= 0, tf.ones_like(z), -tf.ones_like(z))
    stabilized = z + epsilon * sign
    s = tf.where(stabilized == 0, tf.zeros_like(z), r / tf.where(stabilized == 0, tf.ones_like(z), stabilized))
    return a * tape.gradient(z, a, output_gradients=s)


def route_step(forward: Callable, a, r):
    """R_in = J^T R_out: a reshape gives R back in the input's shape, max pooling gives it to each window's max."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(a)
        z = forward(a)
    return tape.gradient(z, a, output_gradients=r)
