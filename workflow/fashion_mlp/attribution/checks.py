"""The checks that tell whether to trust an attribution method.

SHAP additivity and LRP conservation are computed with the methods (methods.py); here are the
model-randomization test of Adebayo et al. (*Sanity checks for saliency maps*, NeurIPS 2018) and
the deletion curve (pixels removed in order of attribution, against a random order).
Pure functions of arrays and models: no files, no MLflow.
"""

from __future__ import annotations

import warnings

import numpy as np


def randomized_copy(model, seed: int):
    """The same architecture with freshly initialized weights (Adebayo et al.'s model randomization)."""
    import keras

    keras.utils.set_random_seed(seed)
    clone = keras.models.clone_model(model)
    clone.build(model.input_shape)
    return clone


def rank_correlation(a: np.ndarray, b: np.ndarray, images: np.ndarray | None = None) -> dict:
    """Mean Spearman correlation over images between two sets of maps: signed, of absolute values, and
    (given the images) of absolute values on the garment's pixels only (image > 0), where the shared
    zeros of the background cannot make two maps look alike."""
    from scipy.stats import spearmanr

    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)

    def mean_rho(x, y, masks=None) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant map has no ranks: nan, left out of the mean
            if masks is None:
                rhos = [spearmanr(u, v).statistic for u, v in zip(x, y, strict=True)]
            else:
                rhos = [spearmanr(u[m], v[m]).statistic for u, v, m in zip(x, y, masks, strict=True) if m.sum() > 2]
        finite = [r for r in rhos if np.isfinite(r)]
        return float(np.mean(finite)) if finite else float("nan")

    out = {"spearman": mean_rho(a, b), "spearman_abs": mean_rho(np.abs(a), np.abs(b))}
    if images is not None:
        out["spearman_abs_on_garment"] = mean_rho(np.abs(a), np.abs(b), images.reshape(len(images), -1) > 0)
    return out


def randomization_verdict(correlation: dict, threshold: float) -> dict:
    """Adebayo et al.'s test: maps of a re-initialized model must not resemble the trained model's.

    Judged on the absolute maps (what a reader takes for "important pixels"): at or above
    `threshold` the method FAILS, its maps follow the input more than the model.
    """
    passed = bool(correlation["spearman_abs"] < threshold)
    return {
        **correlation,
        "threshold": threshold,
        "verdict": "passes" if passed else "FAILS",
        "meaning": "the maps depend on the learned weights"
        if passed
        else "the maps barely change when the weights are random: they explain the input, not the model",
    }


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
