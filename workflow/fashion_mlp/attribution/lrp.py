"""Layer-wise relevance propagation for the pipeline's Keras MLPs and small CNNs: the epsilon rule, or the
composite z^B / gamma / epsilon with BatchNorm folded (lrp_rules.py, canonize.py).

Written by hand on purpose: no maintained LRP library supports Keras 3. iNNvestigate pins
TensorFlow < 2.15, and zennit and captum are PyTorch. The models here need only a few layer
kinds, so the rules fit in short, tested modules (tests/stages/test_explain.py, tests/attribution/test_lrp.py,
tests/attribution/test_lrp_rules.py).

The model becomes a list of float64 steps, each a map z = f(a) written with TensorFlow ops
(Montavon et al., *Layer-wise relevance propagation: an overview*, 2019):
- affine steps (rule "epsilon" until Rules say otherwise): a -> linear(a, kernel) + bias.
  - Dense: kernel and bias. Conv2D: the convolution and its bias. Their elementwise activation
    (ReLU or another) passes relevance through unchanged, the usual convention.
  - BatchNormalization: at inference an affine map per unit (after Dense) or per channel (after Conv2D),
    x * gamma / sqrt(var + eps) + (beta - mean * that). canonize.py folds it into the next linear layer.
  The epsilon rule: R_in = a * d/da[ sum_j z_j * s_j ],  s = R_out / (z + eps sign z), with tf.GradientTape;
  z^B and gamma: lrp_rules.py.
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

from fashion_mlp.attribution import canonize, lrp_rules
from fashion_mlp.attribution.lrp_rules import Rules, epsilon_step, route_step

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
    """The model has a layer the rules here do not cover; the message names it."""


class Step(NamedTuple):
    """One layer as a float64 map z = forward(a), the way relevance crosses it, and the activation after it.

    Affine steps also keep their parts, forward(a) == linear(a, kernel) + bias, for the rules that
    modify the weights (z^B, gamma) and for folding BatchNorm into them.
    """

    name: str
    rule: str  # "epsilon", "gamma", "zbox" (affine maps) or "route" (reshapes, max pooling)
    forward: Callable
    activation: str = "linear"
    kind: str = ""  # the Keras layer class
    linear: Callable | None = None  # (a, kernel) -> the map without its bias
    kernel: np.ndarray | None = None  # BatchNorm: its scale
    bias: np.ndarray | None = None  # BatchNorm: its shift
    padding: str = ""  # Conv2D: "VALID" or "SAME"
    folded: tuple[str, ...] = ()  # the BatchNormalization layers folded into this step


class LayerRelevance(NamedTuple):
    """The relevance per image at the input of step `layer` (first entry: "logit", the top)."""

    layer: str
    rule: str
    sums: np.ndarray


class Attribution(NamedTuple):
    """LRP's result: the pixel relevance, the target logit put in at the top, the per-step sums, the steps."""

    values: np.ndarray  # shaped like the images
    relevance_out: np.ndarray  # (N,): each image's target logit
    per_layer: list[LayerRelevance]  # from the logit down to the pixels; the last sums `values`
    steps: list[Step]  # with the rule each took

    @property
    def folded(self) -> tuple[str, ...]:
        """The BatchNormalization layers folded into the next linear layer."""
        return tuple(name for step in self.steps for name in step.folded)


def _f64(variable) -> np.ndarray:
    return np.asarray(variable.numpy(), dtype=np.float64)


def _activation_name(layer) -> str:
    return layer.activation.__name__ if layer.activation is not None else "linear"


def _unsupported(layer, why: str) -> UnsupportedLayer:
    return UnsupportedLayer(f"layer {layer.name!r} ({type(layer).__name__}): {why}")


def _channels_last(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise _unsupported(layer, f"data_format {layer.data_format!r}; LRP here needs channels_last")


def _affine(layer, linear: Callable, kernel, bias, activation: str = "linear", padding: str = "") -> Step:
    def forward(a):
        return linear(a, kernel) + bias

    kind = type(layer).__name__
    return Step(layer.name, "epsilon", forward, activation, kind, linear, kernel, bias, padding)


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
            _channels_last(layer)  # channels_first would move the channels before flattening
            flatten = Step(layer.name, "route", lambda a: tf.reshape(a, (tf.shape(a)[0], -1)), kind=kind)
            steps.append(flatten)
        elif kind == "Reshape":
            target = tuple(layer.target_shape)
            steps.append(Step(layer.name, "route", lambda a, target=target: tf.reshape(a, (-1, *target)), kind=kind))
        elif kind == "Dense":
            steps.append(_dense(layer))
        elif kind == "Conv2D":
            steps.append(_conv2d(layer))
        elif kind == "BatchNormalization":
            steps.append(_batchnorm(layer))
        elif kind == "MaxPooling2D":
            steps.append(Step(layer.name, "route", _maxpool(layer), kind=kind))
    if not steps or steps[-1].kind != "Dense":
        raise UnsupportedLayer("the model must end with a Dense layer (the logits)")
    steps[-1] = steps[-1]._replace(activation="linear")
    return steps


def _dense(layer) -> Step:
    import tensorflow as tf

    kernel = _f64(layer.kernel)
    bias = _f64(layer.bias) if layer.use_bias else np.zeros(layer.units)
    return _affine(layer, tf.matmul, kernel, bias, _activation_name(layer))


def _conv2d(layer) -> Step:
    import tensorflow as tf

    _channels_last(layer)
    if getattr(layer, "groups", 1) != 1:
        raise _unsupported(layer, f"groups={layer.groups}; LRP here needs groups=1")
    kernel = _f64(layer.kernel)
    bias = _f64(layer.bias) if layer.use_bias else np.zeros(layer.filters)
    strides, dilations, padding = tuple(layer.strides), tuple(layer.dilation_rate), layer.padding.upper()

    def convolve(a, kernel):
        return tf.nn.convolution(a, kernel, strides=strides, padding=padding, dilations=dilations)

    return _affine(layer, convolve, kernel, bias, _activation_name(layer), padding)


def batchnorm_affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization at inference as y = x * scale + shift (vectors over the units or channels)."""
    mean = _f64(layer.moving_mean)
    var = _f64(layer.moving_variance)
    gamma = _f64(layer.gamma) if layer.scale else np.ones_like(mean)
    beta = _f64(layer.beta) if layer.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + layer.epsilon)
    return scale, beta - mean * scale


def _batchnorm(layer) -> Step:
    rank = layer.input_spec.ndim  # set when built; layer.input would fail once explain shares the layer
    if layer.axis % rank != rank - 1:  # the vectors below broadcast over the last axis only
        raise _unsupported(layer, f"axis={layer.axis}; LRP here needs the last axis (units or channels)")
    scale, shift = batchnorm_affine(layer)
    return _affine(layer, lambda a, scale: a * scale, scale, shift)


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


def plan(model, rules: Rules) -> list[Step]:
    """The model's steps under `rules`: BatchNorm folded if rules.fold_batchnorm, each step's rule set."""
    steps = layer_steps(model)
    if rules.fold_batchnorm:
        steps = canonize.fold_batchnorm(steps)
    return lrp_rules.assign(steps, rules)


def logits(model, images: np.ndarray, rules: Rules | None = None) -> np.ndarray:
    """The pre-softmax scores (N, classes) of `model`, computed from its steps (under `rules`) in float64."""
    steps = layer_steps(model) if rules is None else plan(model, rules)
    return _forward(steps, model, images)[0].numpy()


def relevance(model, images: np.ndarray, targets: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon-rule relevance of every input pixel for class `targets[i]` of image i (BatchNorm unfolded).

    Returns (relevance shaped like `images`, the relevance put in at the top: each
    image's target logit). Conservation means relevance.sum(pixels) == that logit.
    """
    result = attribute(model, images, targets, Rules("epsilon", epsilon=epsilon))
    return result.values, result.relevance_out


def attribute(model, images: np.ndarray, targets: np.ndarray, rules: Rules) -> Attribution:
    """LRP relevance of every input pixel for class `targets[i]` of image i under `rules`, with the
    relevance per image at the input of every step: where the biases and epsilon absorb it (Attribution).

    Bias per rule: epsilon and gamma keep it in the denominator, so it absorbs its share;
    z^B leaves it out and conserves. Routes and max pooling conserve.
    """
    import tensorflow as tf

    steps = plan(model, rules)
    out, inputs = _forward(steps, model, images)
    top = out.numpy()[np.arange(len(images)), targets]
    r = tf.one_hot(targets, out.shape[1], dtype=tf.float64) * out
    per_layer = [LayerRelevance("logit", "", top)]
    bounds = _pixel_bounds(steps, model, images, rules) if rules.name == "composite" else None
    for step, a_in in zip(reversed(steps), reversed(inputs), strict=True):
        if step.rule == "route":
            r = route_step(step.forward, a_in, r)
        elif step.rule == "zbox":
            r = lrp_rules.zbox_step(step.linear, step.kernel, a_in, r, *bounds)
        elif step.rule == "gamma":
            r = lrp_rules.gamma_step(step.linear, step.kernel, step.bias, a_in, r, rules.gamma)
        else:
            r = epsilon_step(step.forward, a_in, r, rules.epsilon)
        per_layer.append(LayerRelevance(step.name, step.rule, tf.reduce_sum(r, axis=list(range(1, r.ndim))).numpy()))
    return Attribution(r.numpy().reshape(images.shape), top, per_layer, steps)


def _pixel_bounds(steps: list[Step], model, images: np.ndarray, rules: Rules) -> tuple:
    """z^B's bounds at the input of its layer: the pixel bounds carried through the steps before it.

    Those may only reshape or max-pool: monotone maps, so they keep low <= a <= high.
    """
    first = next(i for i, step in enumerate(steps) if step.rule == "zbox")
    for step in steps[:first]:
        if step.rule != "route":
            raise UnsupportedLayer(
                f"layer {step.name!r} ({step.kind}) before {steps[first].name!r}: z^B needs "
                "the first linear layer to see the pixels through reshapes and pooling only"
            )
    low, high = (
        np.broadcast_to(np.asarray(bound, dtype=np.float64), images.shape) for bound in (rules.low, rules.high)
    )
    if np.any(images < low) or np.any(images > high):
        raise ValueError(f"z^B's bounds: images outside [{np.min(rules.low)}, {np.max(rules.high)}]")
    return tuple(_forward(steps[:first], model, bound)[0] for bound in (low, high))
