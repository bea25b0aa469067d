"""Canonization for LRP: each BatchNormalization folded into the next linear layer, where that is exact.

Written by hand for the reason lrp.py gives (no maintained LRP library supports Keras 3); zennit's
canonizers do the same in PyTorch. Why: the LRP rules are made for linear layers. Kept as its own
affine step, a BatchNorm has the epsilon rule whatever the composite says, and its shift takes relevance
in a step of its own. Folded, the network computes the same logits with one step fewer, and the shift
becomes part of the next layer's bias, where that layer's rule decides what it takes. Under LRP-0 that
is the same share, only moved (tests/attribution/test_lrp_rules.py); gamma's amplified contributions leave it less.

Here BatchNorm follows the activation (architectures.py), so it folds forward, y = x * scale + shift
into the next layer's a -> a·W + b:
- Dense: W' = scale[:, None] * W, b' = b + shift · W. Through a Flatten the vectors repeat per position
  (channels-last flattening: input row k is channel k mod C).
- Conv2D with padding "valid": the kernel scaled per input channel, b' = b + sum of shift times the kernel.
  With "same" the padded zeros would stand for BatchNorm outputs equal to its shift, not 0: exact only
  if shift == 0.
- Through MaxPooling2D only if every scale > 0: max(scale x + shift) = scale max(x) + shift needs it.
Anything else (a negative scale before a pooling, "same" padding with a shift, another layer in between)
keeps the BatchNorm as its own step; the folded step names the BatchNorm layers it absorbed.
"""

from __future__ import annotations

import numpy as np


def fold_batchnorm(steps: list) -> list:
    """`steps` (lrp.Step) with every BatchNormalization step folded into the next linear step where exact."""
    steps = list(steps)
    folded = set()
    for i, step in enumerate(steps):
        if step.kind != "BatchNormalization":
            continue
        j = _target(steps, i)
        if j is not None:
            steps[j] = _fold(step, steps[j])
            folded.add(i)
    return [step for i, step in enumerate(steps) if i not in folded]


def _target(steps: list, i: int) -> int | None:
    """The index of the linear step that can absorb BatchNorm step i exactly, or None."""
    scale, shift = steps[i].kernel, steps[i].bias
    flattened = False
    for j in range(i + 1, len(steps)):
        kind = steps[j].kind
        if kind == "MaxPooling2D" and np.all(scale > 0):
            continue
        if kind == "Flatten" and not flattened:
            flattened = True
            continue
        if kind == "Dense" and steps[j].kernel.shape[0] % len(scale) == 0:
            return j
        if kind == "Conv2D" and not flattened and (steps[j].padding == "VALID" or not np.any(shift)):
            return j
        return None
    return None


def _fold(bn, step):
    """`step` with BatchNorm step `bn` (y = x * scale + shift, per channel) folded into its kernel and bias."""
    scale, shift = bn.kernel, bn.bias
    kernel = step.kernel
    if step.kind == "Dense":
        repeats = kernel.shape[0] // len(scale)
        scale, shift = np.tile(scale, repeats), np.tile(shift, repeats)
        new_kernel, new_bias = scale[:, None] * kernel, step.bias + shift @ kernel
    else:  # Conv2D, kernel (height, width, in, out)
        new_kernel = kernel * scale[None, None, :, None]
        new_bias = step.bias + np.einsum("hwio,i->o", kernel, shift)
    return step._replace(
        kernel=new_kernel,
        bias=new_bias,
        forward=lambda a: step.linear(a, new_kernel) + new_bias,
        folded=(*step.folded, bn.name),
    )
