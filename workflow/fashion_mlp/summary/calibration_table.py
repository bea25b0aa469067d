"""The summary's "Calibration" section: ECE and NLL before and after temperature scaling, per model."""

from __future__ import annotations


def calibration_section(metrics: list[dict]) -> list[str]:
    calibrated = [m for m in metrics if "calibration" in m]
    if not calibrated:
        return []
    bins = calibrated[0]["calibration"]["bins"]
    lines = [
        "## Calibration",
        "",
        f"Expected calibration error (ECE: {bins} equal-width bins of top-class confidence, the gap between "
        "confidence and accuracy weighted by each bin's share of images) and negative log-likelihood (NLL) on the "
        "test set, as trained and after temperature scaling. One temperature T per model divides the softmax "
        "inputs; it is fitted by minimizing the NLL on the validation split, never on the test set. T > 1 means "
        "the model was over-confident, T < 1 under-confident. Scaling never changes a prediction, so the "
        "accuracies, intervals and tests above stay the same. The registered model is not rescaled: its T is "
        "`calibration.temperature` in `reports/metrics/<model>.json`, for a consumer to divide the logits by.",
        "",
        "| Model | Temperature T | ECE | ECE after scaling | Test NLL | Test NLL after scaling |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in calibrated:
        c = m["calibration"]
        lines.append(
            f"| {m['model']} | {c['temperature']:.3f} | {c['ece']:.4f} | {c['ece_scaled']:.4f} | "
            f"{c['nll']:.4f} | {c['nll_scaled']:.4f} |"
        )
    return [*lines, ""]
