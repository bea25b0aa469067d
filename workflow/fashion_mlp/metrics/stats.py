"""How sure are the test scores? Bootstrap confidence intervals and paired exact McNemar tests.

`evaluate` puts the intervals in each model's metrics JSON; `report` runs the tests on
the per-image predictions of every pair of models (the same test images, so paired).
"""

from __future__ import annotations

import itertools

import numpy as np

from fashion_mlp.data import NUM_CLASSES

CONFIDENCE = 0.95  # the intervals' level
ALPHA = 0.05  # a difference is called significant below this family-wise (Holm-adjusted) p-value


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Confusion matrices (true × predicted), one per row of `weights` (resample counts per image)."""
    cell = np.asarray(y_true) * NUM_CLASSES + np.asarray(y_pred)
    onehot = np.zeros((len(cell), NUM_CLASSES * NUM_CLASSES))
    onehot[np.arange(len(cell)), cell] = 1.0
    weights = np.ones((1, len(cell))) if weights is None else np.atleast_2d(weights)
    return (weights @ onehot).reshape(-1, NUM_CLASSES, NUM_CLASSES)


def scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """scikit-learn's scores (labels 0-9, zero_division=0) of stacked confusion matrices, one per matrix,
    and the per-class F1.

    By hand, because a thousand resamples are scored at once as matrix sums: scikit-learn's scorers take
    one weight vector per call, and their input validation made 1,000 calls about 3 s of every evaluate
    job. The counts are integers, so every sum is exact and each score rounds as scikit-learn's does:
    tests/libraries/test_stats.py checks them against accuracy_score, f1_score, precision_score and recall_score
    to the last bit.
    """
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    support, predicted = confusion.sum(axis=2), confusion.sum(axis=1)

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    f1 = ratio(2 * tp, support + predicted)
    return {
        "accuracy": tp.sum(axis=1) / confusion.sum(axis=(1, 2)),
        "macro_f1": f1.mean(axis=1),
        "macro_precision": ratio(tp, predicted).mean(axis=1),
        "macro_recall": ratio(tp, support).mean(axis=1),
        "weighted_f1": (f1 * support).sum(axis=1) / support.sum(axis=1),
        "per_class_f1": f1,
    }


SCORERS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1")  # scores() keys with an interval


def bootstrap_intervals(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    resamples: int,
    seed: int,
    confidence: float = CONFIDENCE,
    keys: tuple[str, ...] = ("accuracy", "macro_f1"),
) -> dict:
    """Percentile-bootstrap intervals of `keys` (scikit-learn's scores, SCORERS), resampling test images.

    Both statistics depend only on how many images fall in each (true, predicted) cell, and drawing
    n images with replacement gives those cells Multinomial(n, cell shares) counts. So a resample is
    drawn as counts over the <= 100 cells and scored with them as weights: the same bootstrap
    distribution as indexing 10,000 images, at a fraction of the cost.
    A seeded numpy loop rather than scipy.stats.bootstrap: one resample serves every statistic, and
    scipy's default BCa method adds a jackknife of one statistic call per test image (10,000 more);
    its percentile method is this same computation.
    """
    unknown = [key for key in keys if key not in SCORERS]
    if unknown:
        raise ValueError(f"no bootstrap scorer for {', '.join(unknown)}; stats.SCORERS has {', '.join(SCORERS)}")
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(f"bootstrap needs equal, non-empty label arrays; got {len(y_true)} and {len(y_pred)}")
    if resamples < 1:
        raise ValueError(f"bootstrap resamples must be >= 1, got {resamples}")
    cells, draws = resample_weights(y_true, y_pred, resamples=resamples, seed=seed)
    scored = scores(confusion_counts(cells[:, 0], cells[:, 1], draws))
    scores_ = np.stack([scored[key] for key in keys], axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(scores_, [tail, 100 - tail], axis=0)
    return {
        "method": "percentile bootstrap over test images",
        "level": confidence,
        "resamples": resamples,
        "seed": seed,
        **{key: {"low": float(low[j]), "high": float(high[j])} for j, key in enumerate(keys)},
    }


def resample_weights(*labels: np.ndarray, resamples: int, seed: int):
    """The cells of per-image labels ((true, predicted) for bootstrap_intervals; (true, A's, B's) for a paired
    comparison) and the per-cell counts of each resample: images of one cell are interchangeable."""
    cells, counts = np.unique(np.stack(labels, axis=1), axis=0, return_counts=True)
    rng = np.random.default_rng(seed)
    return cells, rng.multinomial(len(labels[0]), counts / counts.sum(), size=resamples)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact (binomial) McNemar test of two classifiers on the same images.

    Only the discordant images count: b = A right and B wrong, c = the reverse. Under "equally
    accurate" b ~ Binomial(b + c, 1/2); scipy's two-sided binomtest is the exact McNemar p-value.
    """
    from scipy.stats import binomtest

    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"McNemar needs the same images for both models; got {correct_a.shape} and {correct_b.shape}")
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return {"only_a_correct": b, "only_b_correct": c, "p_value": p}


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, so that "significant" holds at ALPHA for all the pairs together.

    By hand: scipy has only false-discovery-rate control, and statsmodels is not a dependency
    for these few lines.
    """
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p_values) - rank) * p_values[i])
        adjusted[i] = min(1.0, running)
    return [float(p) for p in adjusted]


def pairwise_mcnemar(correct: dict[str, np.ndarray], alpha: float = ALPHA, tested=None) -> list[dict]:
    """Every pair of models (in the given order), with the exact McNemar test and Holm's adjustment.

    `correct` maps a model name to a boolean array, one entry per test image, the same images in
    the same order for every model. `better` names the model that is right more often when the
    adjusted p-value is below `alpha`, and is None otherwise. `tested(a, b)`, when given, keeps only
    the pairs it accepts, and Holm's adjustment counts only those.
    """
    pairs = []
    for a, b in itertools.combinations(correct, 2):
        if tested is not None and not tested(a, b):
            continue
        pairs.append({"a": a, "b": b, "n": len(correct[a]), **mcnemar_exact(correct[a], correct[b])})
    for pair, adjusted in zip(pairs, holm([p["p_value"] for p in pairs]), strict=True):
        pair["p_holm"] = adjusted
        ahead = pair["a"] if pair["only_a_correct"] > pair["only_b_correct"] else pair["b"]
        pair["better"] = ahead if adjusted < alpha and pair["only_a_correct"] != pair["only_b_correct"] else None
    return pairs
