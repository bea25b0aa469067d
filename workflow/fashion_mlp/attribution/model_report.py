"""Everything `explain` reports for one model: the samples, both methods and every check on them.

explain_model computes all of it before anything is written. Pure functions of arrays and models:
no files, no MLflow.
"""

from __future__ import annotations

import functools

import numpy as np

from fashion_mlp import inference
from fashion_mlp.attribution import randomization
from fashion_mlp.attribution.checks import area_under, deletion_curve, randomized_copy
from fashion_mlp.attribution.methods import conservation_summary, lrp_attributions, shap_attributions
from fashion_mlp.data import NUM_CLASSES


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


def explain_model(
    model, background: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, opts: dict, seed: int, lrp: bool = True
):
    """Every number and map of the stage, computed before anything is written.

    `lrp` False (a kind LRP does not cover, models/kinds.py) leaves LRP out: its part of the report is None.
    """
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
    n = len(sample)
    maps = {"shap": shap_out["values"]}
    if lrp:
        lrp_out = lrp_attributions(model, images, targets, opts["lrp_epsilon"])
        maps["lrp"] = lrp_out["values"]

    random_model = randomized_copy(model, seed)
    random_maps = {"shap": shap_attributions(random_model, background, images[:n], targets[:n])["values"]}
    if lrp:
        random_maps["lrp"] = lrp_attributions(random_model, images[:n], targets[:n], opts["lrp_epsilon"])["values"]
    fractions = np.linspace(0.0, 1.0, opts["deletion_steps"] + 1)
    order_rng = np.random.default_rng(seed)
    curves = {key: deletion_curve(predict, images[:n], targets[:n], maps[key][:n], fractions) for key in maps}
    curves["random"] = deletion_curve(predict, images[:n], targets[:n], order_rng.random(images[:n].shape), fractions)
    areas = {key: area_under(fractions, values) for key, values in curves.items()}
    # Each method against noise of its own form: DeepSHAP's (x - background mean)·g, LRP-epsilon's x·g.
    centre = background.reshape(len(background), -1).mean(axis=0)
    shap_check = randomization.check(maps["shap"][:n], random_maps["shap"], images[:n], centre, seed)
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
            "randomization": shap_check,
            "deletion_area": areas["shap"],
        },
        "lrp": None
        if not lrp
        else {
            "method": "epsilon rule",
            "epsilon": opts["lrp_epsilon"],
            "conservation": conservation_summary(lrp_out["relevance_out"], lrp_out["relevance_in"]),
            "randomization": randomization.check(maps["lrp"][:n], random_maps["lrp"], images[:n], None, seed),
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
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value
