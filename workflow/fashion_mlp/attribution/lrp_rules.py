"""The LRP rules of lrp.py: which rule each step takes (Rules), and how relevance crosses a step under each.

Written by hand for the reason lrp.py gives (no maintained LRP library supports Keras 3). The rules follow
Montavon et al., *Layer-wise relevance propagation: an overview* (2019), and the composite of Kohlbrenner
et al., *Towards best practice in explaining neural network decisions with LRP* (2020). Each is a modified
forward pass differentiated with tf.GradientTape (the gradient trick), in float64. The functions see only
a step's linear map (a, kernel) -> a·W, its kernel and bias: no Keras, so they are tested on hand numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

LINEAR = ("Dense", "Conv2D")  # the layers the composite splits into z^B, gamma and epsilon


@dataclass(frozen=True)
class Rules:
    """The LRP rules: "epsilon" everywhere, or the "composite" z^B -> gamma -> epsilon from the pixels up.

    - "epsilon": every affine step (Dense, Conv2D, a BatchNormalization left as its own step) takes the
      epsilon rule; BatchNorm is not folded unless fold_batchnorm=True. Today's maps, bit for bit.
    - "composite": BatchNorm folded where exact (canonize.py); the first linear layer, the one that sees
      the pixels, takes z^B with the pixel bounds [low, high]; the next `gamma_layers` linear layers take
      gamma; the rest, the output Dense among them, epsilon. An unfolded BatchNorm takes epsilon.
    Default split, gamma_layers=None: the lower half, rounded down, of the linear layers above the first,
    (n - 1) // 2 of n: none for a net with one hidden layer, one for the MLPs with two hidden layers and
    for the CNN with two conv blocks and one dense layer (its second conv). The output layer always keeps
    epsilon. Why: gamma favours a unit's positive evidence, which damps the sign-alternating noise that
    many mixed low-level features give LRP-0/epsilon there; the few class-specific upper units are where
    epsilon stays closest to the function (Montavon et al. 2019, section 10.3; Kohlbrenner et al. 2020).
    """

    name: str = "epsilon"
    epsilon: float = 0.01
    gamma: float = 0.25
    gamma_layers: int | None = None
    low: Any = 0.0  # z^B's pixel bounds: floats, or arrays broadcast to one image's shape
    high: Any = 1.0
    fold_batchnorm: bool | None = None  # None: folded for "composite", not for "epsilon"

    def __post_init__(self) -> None:
        if self.name not in ("epsilon", "composite"):
            raise ValueError(f"LRP rules {self.name!r}: use 'epsilon' or 'composite'")
        if self.epsilon < 0 or self.gamma < 0:
            raise ValueError(f"LRP needs epsilon >= 0 and gamma >= 0, got {self.epsilon} and {self.gamma}")
        if self.gamma_layers is not None and self.gamma_layers < 0:
            raise ValueError(f"gamma_layers={self.gamma_layers}: needs >= 0")
        if np.any(np.asarray(self.low) > np.asarray(self.high)):
            raise ValueError("z^B's bounds need low <= high")
        if self.fold_batchnorm is None:
            object.__setattr__(self, "fold_batchnorm", self.name == "composite")


def default_gamma_layers(n_linear: int) -> int:
    """How many linear layers above the first take gamma by default (see Rules)."""
    return max(n_linear - 1, 0) // 2


def assign(steps: list, rules: Rules) -> list:
    """`steps` with each linear step's rule under `rules` ("zbox", "gamma" or "epsilon"); others unchanged."""
    if rules.name == "epsilon":
        return steps
    linear = [i for i, step in enumerate(steps) if step.kind in LINEAR]
    n_gamma = default_gamma_layers(len(linear)) if rules.gamma_layers is None else rules.gamma_layers
    if n_gamma > len(linear) - 1:
        raise ValueError(f"gamma_layers={n_gamma}: only {len(linear) - 1} linear layers above the first (z^B)")
    rule = {i: "zbox" if k == 0 else "gamma" if k <= n_gamma else "epsilon" for k, i in enumerate(linear)}
    return [step._replace(rule=rule.get(i, step.rule)) for i, step in enumerate(steps)]


def _divide(r, d):
    """r / d, and 0 where d == 0: a unit with a zero denominator passes nothing on."""
    import tensorflow as tf

    zero = d == 0
    return tf.where(zero, tf.zeros_like(r), r / tf.where(zero, tf.ones_like(d), d))


def epsilon_step(forward: Callable, a, r, epsilon: float):
    """R_in = a * grad_a(z . s) with s = R_out / (z + eps sign z); a dead unit (z == 0) passes nothing.

    The bias is part of z, so it absorbs its share b / (z + eps sign z) of R_out; so does epsilon.
    """
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


def gamma_step(linear: Callable, kernel: np.ndarray, bias: np.ndarray, a, r, gamma: float):
    """The gamma rule for signed inputs (as zennit's Gamma): each unit's own-sign contributions are
    amplified by (1 + gamma), the others kept.

    A unit with z > 0 shares R_out over x_i (w_ij + gamma w_ij^+) for x_i > 0 and x_i (w_ij + gamma w_ij^-)
    for x_i < 0, over their sum plus b_j + gamma b_j^+; a unit with z < 0 the same with w^+ and w^- (and
    b^-) swapped; z == 0 passes nothing. The bias is in the denominator, so it absorbs its share; without
    biases the rule conserves exactly (the denominator has z's sign and |denominator| >= |z| > 0).
    gamma = 0 is LRP-0; gamma -> infinity keeps each unit's own-sign contributions only (LRP-alpha1-beta0
    on a unit with z > 0).
    """
    import tensorflow as tf

    w_up, w_down = kernel + gamma * np.maximum(kernel, 0), kernel + gamma * np.minimum(kernel, 0)
    a_pos, a_neg = tf.maximum(a, 0), tf.minimum(a, 0)
    with tf.GradientTape() as tape:
        tape.watch([a_pos, a_neg])
        up = linear(a_pos, w_up) + linear(a_neg, w_down)  # the positive contributions amplified
        down = linear(a_pos, w_down) + linear(a_neg, w_up)  # the negative ones amplified
        z = linear(a, kernel) + bias
        s_up = tf.where(z > 0, _divide(r, up + bias + gamma * np.maximum(bias, 0)), tf.zeros_like(r))
        s_down = tf.where(z < 0, _divide(r, down + bias + gamma * np.minimum(bias, 0)), tf.zeros_like(r))
        target = tf.reduce_sum(up * tf.stop_gradient(s_up) + down * tf.stop_gradient(s_down))
    g_pos, g_neg = tape.gradient(target, [a_pos, a_neg])
    return a_pos * g_pos + a_neg * g_neg


def zbox_step(linear: Callable, kernel: np.ndarray, a, r, low, high):
    """The z^B rule for inputs bounded by low <= a <= high (the pixels):
    R_i = sum_j (a_i w_ij - l_i w_ij^+ - h_i w_ij^-) / sum_i (same) * R_j.

    Each term is >= 0 inside the bounds ((a - l) w for w > 0, (a - h) w for w < 0), so a pixel gets
    relevance by how far it sits from the bound that would lower the unit: a black pixel under a negative
    weight counts, unlike under LRP-0. The bias is left out of the denominator (as in the rule's deep
    Taylor derivation), so the rule conserves exactly: what a unit passes on is R_j, unless every term is
    0, then nothing. low and high are tensors shaped like `a`.
    """
    import tensorflow as tf

    w_pos, w_neg = np.maximum(kernel, 0), np.minimum(kernel, 0)
    with tf.GradientTape() as tape:
        tape.watch([a, low, high])
        denominator = linear(a, kernel) - linear(low, w_pos) - linear(high, w_neg)
        target = tf.reduce_sum(denominator * tf.stop_gradient(_divide(r, denominator)))
    g_a, g_low, g_high = tape.gradient(target, [a, low, high])
    return a * g_a + low * g_low + high * g_high
