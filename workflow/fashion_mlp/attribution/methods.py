"""The attribution methods of `explain`, each for the logit of one class per image.

- SHAP: shap's DeepExplainer (DeepLIFT rescale rules averaged over a background sample), on the logits.
- LRP: the epsilon rule of fashion_mlp.attribution.lrp, with how much relevance reaches the pixels.
Pure functions of arrays and models: no files, no MLflow.
"""

from __future__ import annotations

import warnings

import numpy as np

from fashion_mlp.data import NUM_CLASSES


def class_logit_model(model, cls: int):
    """`model` up to its logits, with one output: the logit of class `cls`.

    The hidden layers are shared with `model`; the softmax layer is replaced by a one-unit
    Dense holding that class's column. One output per explainer lets DeepExplainer explain
    just the class asked for (it would otherwise compute all ten, ten times the work).
    """
    import keras

    inputs = keras.Input(shape=model.input_shape[1:])
    x = inputs
    for layer in model.layers[:-1]:
        x = layer(x)
    last = model.layers[-1]
    head = keras.layers.Dense(1, name=f"explained_logit_{cls}")
    outputs = head(x)
    head.set_weights([last.kernel.numpy()[:, cls : cls + 1], last.bias.numpy()[cls : cls + 1]])
    return keras.Model(inputs, outputs)


def shap_attributions(model, background: np.ndarray, images: np.ndarray, targets: np.ndarray) -> dict:
    """DeepSHAP values of each image for the logit of its target class.

    Returns {"values": like `images`, "additivity_gaps": per image |sum(values) - (f(x) - E f(background))|}.
    shap.DeepExplainer on purpose: shap.Explainer's default for a Keras model is the model-agnostic
    Permutation explainer, thousands of model calls per image and only approximately additive.
    """
    import shap

    values = np.zeros(images.shape, dtype=np.float64)
    gaps = np.zeros(len(images), dtype=np.float64)
    for cls in range(NUM_CLASSES):
        idx = np.flatnonzero(targets == cls)
        if not len(idx):
            continue
        head = class_logit_model(model, cls)
        with warnings.catch_warnings():
            # shap warns that TF > 2.4 runs eagerly; Keras that shap passes its input as a list
            # ("structure of inputs doesn't match"). Both harmless here.
            warnings.simplefilter("ignore", UserWarning)
            explainer = shap.DeepExplainer(head, background)
            phi = np.asarray(explainer.shap_values(images[idx], check_additivity=False))[..., 0]
            fx = np.asarray(head(images[idx], training=False))[:, 0]
        expected = float(np.asarray(explainer.expected_value).ravel()[0])
        values[idx] = phi
        gaps[idx] = np.abs(phi.reshape(len(idx), -1).sum(axis=1) - (fx - expected))
    return {"values": values, "additivity_gaps": gaps}


def lrp_attributions(model, images: np.ndarray, targets: np.ndarray, epsilon: float) -> dict:
    """Epsilon-LRP relevance, and conservation: relevance reaching the pixels against the target logit put in."""
    from fashion_mlp.attribution import lrp

    values, top = lrp.relevance(model, images, targets, epsilon)
    into_pixels = values.reshape(len(images), -1).sum(axis=1)
    return {"values": values, "relevance_out": top, "relevance_in": into_pixels}


def conservation_summary(relevance_out: np.ndarray, relevance_in: np.ndarray) -> dict:
    """How much of the top relevance reaches the pixels; biases and epsilon absorb the rest."""
    gap = np.abs(relevance_in - relevance_out)
    return {
        "mean_relevance_out": float(relevance_out.mean()),
        "mean_relevance_in": float(relevance_in.mean()),
        "max_abs_gap": float(gap.max()),
        "mean_abs_gap_relative": float(gap.mean() / max(np.abs(relevance_out).mean(), 1e-12)),
    }
