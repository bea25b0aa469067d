"""The checks that tell whether to trust an attribution method.

SHAP additivity and LRP conservation are computed with the methods (methods.py), the
model-randomization test of Adebayo et al. (*Sanity checks for saliency maps*, NeurIPS 2018) with its
reference levels in randomization.py; here are the randomized model, the deletion and insertion curves
(pixels removed from the image, or put back on an empty canvas, in order of attribution) and the orders
every method must beat: random, random among the garment's pixels, and brightest pixel first.
Pure functions of arrays and models: no files, no MLflow.
"""

from __future__ import annotations

import numpy as np

# the methods explain maps, with their labels in figures and tables (LRP's rules: params.yaml explain.lrp_rule)
METHODS = (("shap", "SHAP (DeepExplainer)"), ("lrp", "LRP"))
# control_orders' names, in the report's order, with their labels in figures and tables
CONTROLS = {
    "random": "random order",
    "random_garment": "random order on the garment",
    "brightest": "brightest pixel first",
}


def randomized_copy(model, seed: int):
    """The same architecture with freshly initialized weights (Adebayo et al.'s model randomization)."""
    import keras

    keras.utils.set_random_seed(seed)
    clone = keras.models.clone_model(model)
    clone.build(model.input_shape)
    return clone


def deletion_curve(
    predict,
    images: np.ndarray,
    labels: np.ndarray,
    order_by: np.ndarray,
    fractions: np.ndarray,
    fill: float = 0.0,
    insert: bool = False,
) -> np.ndarray:
    """Accuracy after setting the top `fraction` of each image's pixels (ranked by `order_by`) to `fill`.

    `insert`: the insertion curve instead, accuracy when only the top `fraction` is kept and the rest is `fill`.
    `predict` maps images (N, 28, 28) to class scores. 0 is the Fashion-MNIST background, so a deleted
    pixel looks like empty canvas. A stable sort makes ties (LRP's exact zeros) break the same way every run.
    """  # fmt: skip
    n, size = len(images), images[0].size
    flat = images.reshape(n, size)
    ranks = np.argsort(-order_by.reshape(n, size), axis=1, kind="stable")
    accuracy = []
    for fraction in fractions:
        k = round(fraction * size)
        if insert:
            changed = np.full_like(flat, fill)
            np.put_along_axis(changed, ranks[:, :k], np.take_along_axis(flat, ranks[:, :k], axis=1), axis=1)
        else:
            changed = flat.copy()
            np.put_along_axis(changed, ranks[:, :k], fill, axis=1)
        predicted = np.asarray(predict(changed.reshape(images.shape))).argmax(axis=1)
        accuracy.append(float((predicted == labels).mean()))
    return np.array(accuracy)


def control_orders(images: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The orders a method's ranking must beat, as scores (highest first).

    random: any pixel, so about half its deletions hit background already at 0 and change nothing;
    random_garment: a random order of the garment's pixels (x > 0) first, then the rest;
    brightest: the most intense pixel first, what any ranking gets for free from the input alone.
    """
    rng = np.random.default_rng(seed)
    noise = rng.random(images.shape)
    return {"random": noise, "random_garment": (images > 0) + noise, "brightest": images.astype(np.float64)}


def area_under(fractions: np.ndarray, values: np.ndarray) -> float:
    """Trapezoidal area under a curve over [0, 1]: lower for deletion means a more faithful ordering."""
    return float(np.trapezoid(values, fractions))
