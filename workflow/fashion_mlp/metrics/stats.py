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


def _scorers() -> dict:
    """Statistics of (true, predicted) labels with per-image weights that bootstrap_intervals can bound,
    by the metrics JSON's key (columns.py marks which columns get an interval)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    labels = list(range(NUM_CLASSES))

    def averaged(score, average):
        return lambda t, p, w: score(t, p, labels=labels, average=average, zero_division=0, sample_weight=w)

    return {
        "accuracy": lambda t, p, w: accuracy_score(t, p, sample_weight=w),
        "macro_f1": averaged(f1_score, "macro"),
        "macro_precision": averaged(precision_score, "macro"),
        "macro_recall": averaged(recall_score, "macro"),
        "weighted_f1": averaged(f1_score, "weighted"),
    }


SCORERS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1")  # _scorers' keys


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
    drawn as counts over the <= 100 cells and scored by scikit-learn with them as sample weights: the
    same bootstrap distribution as indexing 10,000 images, at about half the cost.
    A seeded numpy loop rather than scipy.stats.bootstrap: one resample serves every statistic, and
    scipy's default BCa method adds a jackknife of one statistic call per test image (10,000 more);
    its percentile method is this same computation.
    """
    scorers = _scorers()
    unknown = [key for key in keys if key not in scorers]
    if unknown:
        raise ValueError(f"no bootstrap scorer for {', '.join(unknown)}; stats.SCORERS has {', '.join(scorers)}")
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(f"bootstrap needs equal, non-empty label arrays; got {len(y_true)} and {len(y_pred)}")
    if resamples < 1:
        raise ValueError(f"bootstrap resamples must be >= 1, got {resamples}")
    cells, draws = resample_weights(y_true, y_pred, resamples=resamples, seed=seed)
    t, p = cells[:, 0], cells[:, 1]
    scores = np.empty((resamples, len(keys)))
    for i, weights in enumerate(draws):
        scores[i] = [scorers[key](t, p, weights) for key in keys]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(scores, [tail, 100 - tail], axis=0)
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


def pairwise_mcnemar(correct: dict[str, np.ndarray], alpha: float = ALPHA) -> list[dict]:
    """Every pair of models (in the given order), with the exact McNemar test and Holm's adjustment.

    `correct` maps a model name to a boolean array, one entry per test image, the same images in
    the same order for every model. `better` names the model that is right more often when the
    adjusted p-value is below `alpha`, and is None otherwise.
    """
    pairs = []
    for a, b in itertools.combinations(correct, 2):
        pairs.append({"a": a, "b": b, "n": len(correct[a]), **mcnemar_exact(correct[a], correct[b])})
    for pair, adjusted in zip(pairs, holm([p["p_value"] for p in pairs]), strict=True):
        pair["p_holm"] = adjusted
        ahead = pair["a"] if pair["only_a_correct"] > pair["only_b_correct"] else pair["b"]
        pair["better"] = ahead if adjusted < alpha and pair["only_a_correct"] != pair["only_b_correct"] else None
    return pairs
