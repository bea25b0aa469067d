"""The checks that tell whether to trust an attribution method.

SHAP additivity and LRP conservation are computed with the methods (methods.py), the
model-randomization test of Adebayo et al. (*Sanity checks for saliency maps*, NeurIPS 2018) with its
reference levels in randomization.py; here are the randomized model and the deletion curve (pixels
removed in order of attribution, against a random order).
Pure functions of arrays and models: no files, no MLflow.
"""

from __future__ import annotations

import numpy as np


def randomized_copy(model, seed: int):
    """The same architecture with freshly initialized weights (Adebayo et al.'s model randomization)."""
    import keras

    keras.utils.set_random_seed(seed)
    clone = keras.models.clone_model(model)
    clone.build(model.input_shape)
    return clone


def deletion_curve(
    predict, images: np.ndarray, labels: np.ndarray, order_by: np.ndarray, fractions: np.ndarray, fill: float = 0.0
) -> np.ndarray:
    """Accuracy after setting the top `fraction` of each image's pixels (ranked by `order_by`) to `fill`.

    `predict` maps images (N, 28, 28) to class scores. 0 is the Fashion-MNIST background, so a deleted
    pixel looks like empty canvas. A stable sort makes ties (LRP's exact zeros) break the same way every run.
    """
    n, size = len(images), images[0].size
    flat = images.reshape(n, size)
    ranks = np.argsort(-order_by.reshape(n, size), axis=1, kind="stable")
    accuracy = []
    for fraction in fractions:
        k = round(fraction * size)
        deleted = flat.copy()
        np.put_along_axis(deleted, ranks[:, :k], fill, axis=1)
        predicted = np.asarray(predict(deleted.reshape(images.shape))).argmax(axis=1)
        accuracy.append(float((predicted == labels).mean()))
    return np.array(accuracy)


def area_under(fractions: np.ndarray, values: np.ndarray) -> float:
    """Trapezoidal area under a curve over [0, 1]: lower for deletion means a more faithful ordering."""
    return float(np.trapezoid(values, fractions))
