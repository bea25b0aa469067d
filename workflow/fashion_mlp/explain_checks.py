"""The attribution methods of `explain` and the checks that tell whether to trust them.

- SHAP: shap's DeepExplainer (DeepLIFT rescale rules averaged over a background sample), on the logits.
- LRP: the epsilon rule of fashion_mlp.lrp.
- Checks: SHAP additivity, LRP conservation, the model-randomization test of Adebayo et al.
  (*Sanity checks for saliency maps*, NeurIPS 2018) and the deletion curve (pixels removed in
  order of attribution against a random order).
explain_model runs them all on one model's samples. Pure functions of arrays and models: no files, no MLflow.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from fashion_mlp import inference
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
    from fashion_mlp import lrp

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


# --- the samples, and every method and check on them -----------------------------------


def stratified_sample(labels: np.ndarray, n_per_class: int | list[int], seed: int) -> np.ndarray:
    """Sorted indices of up to `n_per_class` images of every class (one count, or one per class), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    counts = [n_per_class] * NUM_CLASSES if isinstance(n_per_class, int) else n_per_class
    picks = []
    for cls, count in enumerate(counts):
        members = np.flatnonzero(labels == cls)
        picks.append(rng.choice(members, size=min(count, len(members)), replace=False))
    return np.sort(np.concatenate(picks)).astype(np.int64)


def pick_examples(
    labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, pool: np.ndarray, n_correct: int, n_mistakes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices for the examples figure: correct predictions from `pool`, one class after another,
    and the most confident mistakes of the whole test set (ties broken by index)."""
    correct = [i for i in pool if predicted[i] == labels[i]]
    by_class = [[i for i in correct if labels[i] == cls] for cls in range(NUM_CLASSES)]
    chosen: list[int] = []
    while len(chosen) < n_correct and any(by_class):
        for members in by_class:
            if members and len(chosen) < n_correct:
                chosen.append(members.pop(0))
    wrong = np.flatnonzero(predicted != labels)
    mistakes = wrong[np.argsort(-confidence[wrong], kind="stable")][:n_mistakes]
    return np.array(chosen, dtype=np.int64), mistakes.astype(np.int64)


def explain_model(model, background: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, opts: dict, seed: int):
    """Every number and map of the stage, computed before anything is written."""
    predict = functools.partial(inference.probabilities, model)
    probabilities = predict(x_test)
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    sample = stratified_sample(y_test, opts["images_per_class"], seed)
    correct, mistakes = pick_examples(
        y_test, predicted, confidence, sample, opts["grid_correct"], opts["grid_mistakes"]
    )
    shown = np.concatenate([correct, mistakes])
    # The sample explains its true class (per-class maps, deletion); the examples their predicted class.
    images = np.concatenate([x_test[sample], x_test[shown]])
    targets = np.concatenate([y_test[sample], predicted[shown]])
    shap_out = shap_attributions(model, background, images, targets)
    lrp_out = lrp_attributions(model, images, targets, opts["lrp_epsilon"])
    n = len(sample)
    maps = {"shap": shap_out["values"], "lrp": lrp_out["values"]}

    random_model = randomized_copy(model, seed)
    random_maps = {
        "shap": shap_attributions(random_model, background, images[:n], targets[:n])["values"],
        "lrp": lrp_attributions(random_model, images[:n], targets[:n], opts["lrp_epsilon"])["values"],
    }
    fractions = np.linspace(0.0, 1.0, opts["deletion_steps"] + 1)
    order_rng = np.random.default_rng(seed)
    curves = {key: deletion_curve(predict, images[:n], targets[:n], maps[key][:n], fractions) for key in maps}
    curves["random"] = deletion_curve(predict, images[:n], targets[:n], order_rng.random(images[:n].shape), fractions)
    areas = {key: area_under(fractions, values) for key, values in curves.items()}
    threshold = opts["randomization_threshold"]
    report = {
        "explained_output": "logits (pre-softmax score of the explained class)",
        "images": {
            "explained": n,
            "per_class": opts["images_per_class"],
            "target": "true class",
            "examples_correct": len(correct),
            "examples_mistakes": len(mistakes),
            "background": len(background),
            "background_source": f"training split, stratified, seed {seed}",
        },
        "shap": {
            "method": "shap.DeepExplainer",
            "additivity_max_abs_gap": float(shap_out["additivity_gaps"].max()),
            "additivity_mean_abs_gap": float(shap_out["additivity_gaps"].mean()),
            "randomization": randomization_verdict(
                rank_correlation(maps["shap"][:n], random_maps["shap"], images[:n]), threshold
            ),
            "deletion_area": areas["shap"],
        },
        "lrp": {
            "method": "epsilon rule",
            "epsilon": opts["lrp_epsilon"],
            "conservation": conservation_summary(lrp_out["relevance_out"], lrp_out["relevance_in"]),
            "randomization": randomization_verdict(
                rank_correlation(maps["lrp"][:n], random_maps["lrp"], images[:n]), threshold
            ),
            "deletion_area": areas["lrp"],
        },
        "deletion": {"random_area": areas["random"], "steps": opts["deletion_steps"], "fill": 0.0},
    }
    return {
        "report": rounded(report),
        "sample": (images[:n], targets[:n], {k: v[:n] for k, v in maps.items()}),
        "examples": (
            images[n:],
            y_test[shown],
            predicted[shown],
            confidence[shown],
            {k: v[n:] for k, v in maps.items()},
        ),
        "deletion": (fractions, curves, areas),
    }


def rounded(value):
    """Floats to 6 significant digits: the JSON stays readable and diffs show real changes only."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value
