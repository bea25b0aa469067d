"""The attribution methods of `explain`, each for the logit of one class per image.

- SHAP: shap's DeepExplainer (DeepLIFT rescale rules averaged over a background sample), on the logits.
- LRP: fashion_mlp.attribution.lrp's rules (epsilon, or the composite), with how much relevance reaches the
  pixels and where on the way the rest is absorbed.
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


class ShapExplainers:
    """DeepSHAP values for one model, or for many of one architecture (the layer randomization's variants):
    one DeepExplainer per class, built on first use, holds a working copy into which each model's weights are
    copied, so that shap's traced gradient is reused instead of traced again for every model (on the CNN
    about 0.4 s a class and model, against 0.08 s reused). Reused, the values are bit for bit those of
    explainers built afresh (tests/stages/test_explain.py); an explainer's expected value stays that of the model it
    was built on, so shap_attributions' additivity gaps use fresh ones.
    """

    def __init__(self, model, background: np.ndarray) -> None:
        import keras

        self.working = keras.models.clone_model(model)
        self.working.build(model.input_shape)
        self.background = background
        self.explainers: dict[int, tuple] = {}

    def values(self, model, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        import shap

        self.working.set_weights(model.get_weights())
        last = model.layers[-1]
        values = np.zeros(images.shape, dtype=np.float64)
        for cls in range(NUM_CLASSES):
            idx = np.flatnonzero(targets == cls)
            if not len(idx):
                continue
            with warnings.catch_warnings():
                # shap warns that TF > 2.4 runs eagerly; Keras that shap passes its input as a list
                # ("structure of inputs doesn't match"). Both harmless here.
                warnings.simplefilter("ignore", UserWarning)
                if cls not in self.explainers:
                    head = class_logit_model(self.working, cls)
                    self.explainers[cls] = (head, shap.DeepExplainer(head, self.background))
                head, explainer = self.explainers[cls]
                head.layers[-1].set_weights([last.kernel.numpy()[:, cls : cls + 1], last.bias.numpy()[cls : cls + 1]])
                values[idx] = np.asarray(explainer.shap_values(images[idx], check_additivity=False))[..., 0]
        return values


def shap_attributions(model, background: np.ndarray, images: np.ndarray, targets: np.ndarray) -> dict:
    """DeepSHAP values of each image for the logit of its target class.

    Returns {"values": like `images`, "additivity_gaps": per image |sum(values) - (f(x) - E f(background))|}.
    shap.DeepExplainer on purpose: shap.Explainer's default for a Keras model is the model-agnostic
    Permutation explainer, thousands of model calls per image and only approximately additive.
    """
    explainers = ShapExplainers(model, background)  # built afresh: their expected values are this model's
    values = explainers.values(model, images, targets)
    gaps = np.zeros(len(images), dtype=np.float64)
    for cls, (head, explainer) in explainers.explainers.items():
        idx = np.flatnonzero(targets == cls)
        fx = np.asarray(head(images[idx], training=False))[:, 0]
        expected = float(np.asarray(explainer.expected_value).ravel()[0])
        gaps[idx] = np.abs(values[idx].reshape(len(idx), -1).sum(axis=1) - (fx - expected))
    return {"values": values, "additivity_gaps": gaps}


def lrp_attributions(model, images: np.ndarray, targets: np.ndarray, rules) -> dict:
    """LRP relevance under `rules` (lrp.Rules), and conservation: relevance reaching the pixels against the
    target logit put in, and at the input of every step on the way ("per_layer", from the logit down;
    lrp.LayerRelevance), with the BatchNorm layers folded into the next linear layer ("folded_batchnorm").
    """
    from fashion_mlp.attribution import lrp

    result = lrp.attribute(model, images, targets, rules)
    into_pixels = result.values.reshape(len(images), -1).sum(axis=1)
    return {
        "values": result.values,
        "relevance_out": result.relevance_out,
        "relevance_in": into_pixels,
        "per_layer": result.per_layer,
        "folded_batchnorm": list(result.folded),
    }


def conservation_summary(relevance_out: np.ndarray, relevance_in: np.ndarray, per_layer=None) -> dict:
    """How much of the top relevance reaches the pixels; biases and epsilon absorb the rest.

    With `per_layer` (lrp_attributions' list) also where: "per_layer", one entry per step from the logit
    down, {"layer", "rule", "mean_relevance", "share_of_top"} (share: mean relevance there / mean logit).
    """
    gap = np.abs(relevance_in - relevance_out)
    summary = {
        "mean_relevance_out": float(relevance_out.mean()),
        "mean_relevance_in": float(relevance_in.mean()),
        "max_abs_gap": float(gap.max()),
        "mean_abs_gap_relative": float(gap.mean() / max(np.abs(relevance_out).mean(), 1e-12)),
    }
    if per_layer is not None:
        top = float(relevance_out.mean())
        summary["per_layer"] = [
            {
                "layer": entry.layer,
                "rule": entry.rule,
                "mean_relevance": float(entry.sums.mean()),
                "share_of_top": float(entry.sums.mean()) / top if top else float("nan"),
            }
            for entry in per_layer
        ]
    return summary
