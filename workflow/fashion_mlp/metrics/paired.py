"""The same model in two runs, image by image: did B do better than A on the same images?

`compare` calls `compare_models` with each model's predictions from both sides. Per model: accuracy
and macro F1 on each side, the difference B − A with a paired bootstrap interval (both sides scored
on the same resample of images), the exact McNemar test, and Holm's adjustment across the models
compared, so that "better" or "worse" holds at `alpha` for the whole table.
"""

from __future__ import annotations

import numpy as np

from fashion_mlp.metrics.stats import ALPHA, CONFIDENCE, confusion_counts, holm, mcnemar_exact, resample_weights, scores


def paired_bootstrap(
    y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, resamples: int, seed: int, confidence=CONFIDENCE
) -> dict:
    """Percentile intervals of B − A (accuracy and macro F1), resampling images with replacement.

    Each resample draws the same images for both sides, so the interval is of the paired difference:
    much narrower than the two sides' own intervals when the runs err on the same images.
    """
    if resamples < 1:
        raise ValueError(f"bootstrap resamples must be >= 1, got {resamples}")
    cells, draws = resample_weights(y_true, pred_a, pred_b, resamples=resamples, seed=seed)
    a = scores(confusion_counts(cells[:, 0], cells[:, 1], draws))
    b = scores(confusion_counts(cells[:, 0], cells[:, 2], draws))
    tail = 100 * (1 - confidence) / 2
    out = {}
    for key in ("accuracy", "macro_f1"):
        low, high = np.percentile(b[key] - a[key], [tail, 100 - tail])
        out[key] = {"low": float(low), "high": float(high)}
    return out


def verdict(pair: dict, alpha: float = ALPHA) -> str:
    if pair["p_holm"] < alpha and pair["only_b_correct"] != pair["only_a_correct"]:
        return "better" if pair["only_b_correct"] > pair["only_a_correct"] else "worse"
    return f"no significant difference at {alpha}"


def compare_models(
    sides: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], resamples: int, seed: int, alpha: float = ALPHA
) -> list[dict]:
    """One row per model: `sides` maps a model to (true labels, A's predictions, B's predictions)."""
    rows = []
    for model, (y_true, pred_a, pred_b) in sides.items():
        y_true, pred_a, pred_b = (np.asarray(v, dtype=int) for v in (y_true, pred_a, pred_b))
        a, b = scores(confusion_counts(y_true, pred_a)), scores(confusion_counts(y_true, pred_b))
        row = {"model": model, "n": len(y_true)}
        for key in ("accuracy", "macro_f1"):
            row[key] = {"a": float(a[key][0]), "b": float(b[key][0]), "difference": float(b[key][0] - a[key][0])}
        row["per_class_f1"] = {"a": a["per_class_f1"][0].tolist(), "b": b["per_class_f1"][0].tolist()}
        for key, interval in paired_bootstrap(y_true, pred_a, pred_b, resamples, seed).items():
            row[key]["interval"] = interval
        row |= mcnemar_exact(pred_a == y_true, pred_b == y_true)
        rows.append(row)
    for row, adjusted in zip(rows, holm([row["p_value"] for row in rows]), strict=True):
        row["p_holm"] = adjusted
        row["verdict"] = verdict(row, alpha)
    return rows
