"""The reference methods beside SHAP and LRP: gradient-based maps of the logit of one class per image.

- gradient: ∂logit/∂x (Simonyan et al. 2014), signed;
- smoothgrad: the gradient averaged over noisy copies of the image (Smilkov et al. 2017);
- input_x_gradient: x·∂logit/∂x (Shrikumar et al. 2016), what LRP-ε is on a bias-free ReLU net;
- integrated_gradients_zero and _background: (x − x')·the mean gradient on the straight path from a
  baseline x' to x (Sundararajan et al. 2017), x' the black image or the background sample's mean.

Written with tf.GradientTape: xplique, which has them, pins TensorFlow ≤ 2.20, SciPy ≤ 1.15 and
scikit-learn ≤ 1.7, all older than this project's; quantus' TensorFlow support needs Keras 2. Each
method is a few lines on one function, `logit_gradients`. Pure functions of arrays and models.
"""

from __future__ import annotations

import numpy as np

# name: (label, the form of the noise maps it is judged against in the randomization check)
REFERENCE_METHODS = {
    "gradient": ("Gradient", "noise"),
    "smoothgrad": ("SmoothGrad", "noise"),
    "input_x_gradient": ("Input × gradient", "x·noise"),
    "integrated_gradients_zero": ("Integrated Gradients, black baseline", "x·noise"),
    "integrated_gradients_background": (
        "Integrated Gradients, background-mean baseline",
        "(x − background mean)·noise",
    ),
}


def logits_of(model):
    """`model` with its last layer's softmax taken off: the same weights, the ten logits out."""
    import keras

    last = model.layers[-1]
    head = keras.layers.Dense(last.units, name="logits")
    inputs = keras.Input(shape=model.input_shape[1:])
    x = inputs
    for layer in model.layers[:-1]:
        x = layer(x)
    logits = keras.Model(inputs, head(x))
    head.set_weights([last.kernel.numpy(), last.bias.numpy()])
    return logits


def logit_gradients(logits, images: np.ndarray, targets: np.ndarray, batch: int = 500) -> np.ndarray:
    """∂(logit of each image's target class)/∂(its pixels), in batches."""
    import tensorflow as tf

    out = np.empty(images.shape, dtype=np.float32)
    for start in range(0, len(images), batch):
        x = tf.convert_to_tensor(images[start : start + batch], dtype=tf.float32)
        picked = tf.convert_to_tensor(targets[start : start + batch].astype(np.int32))
        with tf.GradientTape() as tape:
            tape.watch(x)
            chosen = tf.gather(logits(x, training=False), picked, axis=1, batch_dims=1)
        out[start : start + batch] = tape.gradient(chosen, x).numpy()
    return out


def integrated(logits, images: np.ndarray, targets: np.ndarray, baseline: np.ndarray, steps: int) -> np.ndarray:
    """(x − x')·the mean gradient at the midpoints of `steps` equal steps from x' to x."""
    alphas = (np.arange(steps) + 0.5) / steps
    path = baseline + alphas[:, None, None, None] * (images - baseline)[None]  # (steps, n, 28, 28)
    grads = logit_gradients(logits, path.reshape(-1, *images.shape[1:]), np.tile(targets, steps))
    return (images - baseline) * grads.reshape(steps, *images.shape).mean(axis=0)


def reference_maps(
    model, images: np.ndarray, targets: np.ndarray, centre: np.ndarray, opts: dict, seed: int, methods=None
) -> dict:
    """The reference methods' maps of `images` for their `targets`' logits: {name: array like `images`}, for
    `methods` (all of REFERENCE_METHODS by default)."""
    logits = logits_of(model)
    images = images.astype(np.float32)
    wanted = list(REFERENCE_METHODS) if methods is None else [m for m in REFERENCE_METHODS if m in methods]
    out = {}
    if {"gradient", "input_x_gradient"} & set(wanted):
        gradient = logit_gradients(logits, images, targets)
        out |= {"gradient": gradient, "input_x_gradient": images * gradient}
    if "smoothgrad" in wanted:
        rng = np.random.default_rng(seed)
        samples, spread = opts["smoothgrad_samples"], opts["smoothgrad_noise"] * float(images.max() - images.min())
        noisy = images[None] + rng.normal(0.0, spread, (samples, *images.shape)).astype(np.float32)
        smooth = logit_gradients(logits, noisy.reshape(-1, *images.shape[1:]), np.tile(targets, samples))
        out["smoothgrad"] = smooth.reshape(samples, *images.shape).mean(axis=0)
    if "integrated_gradients_zero" in wanted:
        out["integrated_gradients_zero"] = integrated(logits, images, targets, np.zeros_like(images), opts["ig_steps"])
    if "integrated_gradients_background" in wanted:
        background = np.broadcast_to(centre.reshape(images.shape[1:]), images.shape).astype(np.float32)
        out["integrated_gradients_background"] = integrated(logits, images, targets, background, opts["ig_steps"])
    return {m: out[m] for m in wanted}


def completeness_gaps(model, images: np.ndarray, targets: np.ndarray, maps: dict, centre: np.ndarray) -> dict:
    """IG's completeness: per baseline, mean |Σ map − (logit(x) − logit(x'))| (0 with enough steps)."""
    logits = logits_of(model)
    picked = np.arange(len(images)), targets
    at_x = np.asarray(logits(images.astype(np.float32), training=False))[picked]
    background = np.broadcast_to(centre.reshape(images.shape[1:]), images.shape)
    gaps = {}
    for name, baseline in (
        ("integrated_gradients_zero", np.zeros_like(images)),
        ("integrated_gradients_background", background),
    ):
        at_base = np.asarray(logits(baseline.astype(np.float32), training=False))[picked]
        total = maps[name].reshape(len(images), -1).sum(axis=1)
        gaps[name] = float(np.mean(np.abs(total - (at_x - at_base))))
    return gaps
