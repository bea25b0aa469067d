"""Does a 0.95 softmax score mean 95 %? Expected calibration error, temperature scaling, reliability diagram.

The temperature is fitted on the validation split and only measured on the test set. It
divides the logits, so it never changes a prediction: accuracy, intervals and tests stay as
they are. The saved model is not rescaled; the temperature is reported in the metrics JSON.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Temperatures searched, as log T: 1/20 to 20 covers everything from sharpening to flattening.
LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """log softmax output in float64, standing in for the logits.

    log p = z - logsumexp(z) differs from the logits z by a constant per image, which softmax
    ignores: softmax(log p / T) = softmax(z / T). So fitting on these is fitting on the logits,
    without reaching inside the model. Zeros (float32 underflow) are clipped to the smallest float32.
    """
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), np.finfo(np.float32).tiny, None))


def scaled_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    from scipy.special import softmax

    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def nll(logits: np.ndarray, y_true: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / T), computed as the metrics' `loss` is.

    That is scikit-learn's log loss of float32 probabilities, which clips each at float32's eps
    (so no image costs more than 15.9); at T = 1 it equals `loss`.
    """
    from sklearn.metrics import log_loss

    probabilities = scaled_probabilities(logits, temperature).astype(np.float32)
    return float(log_loss(y_true, probabilities, labels=list(range(probabilities.shape[1]))))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The T > 0 that minimizes the NLL of softmax(logits / T) (Guo et al., 2017), by scipy's bounded Brent search.

    The NLL is convex in 1/T, so it has one minimum along log T, which scipy.optimize.minimize_scalar finds.
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true)
    if len(z) == 0 or len(z) != len(y):
        raise ValueError(f"temperature scaling needs as many labels as rows of logits; got {len(y)} and {len(z)}")

    def objective(log_t: float) -> float:
        return float(-np.mean(log_softmax(z / np.exp(log_t), axis=1)[np.arange(len(y)), y]))

    result = minimize_scalar(objective, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def reliability_bins(probabilities: np.ndarray, y_true: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """Top-label confidence and accuracy in `bins` equal-width bins ((0, 1/M], (1/M, 2/M], ...)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(which, minlength=bins)
    filled = np.maximum(count, 1)
    return {
        "edges": edges,
        "count": count,
        "confidence": np.bincount(which, weights=confidence, minlength=bins) / filled,
        "accuracy": np.bincount(which, weights=correct, minlength=bins) / filled,
    }


def expected_calibration_error(probabilities: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """Sum over bins of (share of images) x |accuracy - mean confidence|, on the top label.

    By hand: scikit-learn's calibration_curve is for binary problems and drops the bin sizes
    that the weighting needs; the maintained multi-class ECEs (torchmetrics, netcal) bring PyTorch.
    """
    table = reliability_bins(probabilities, y_true, bins)
    weights = table["count"] / table["count"].sum()
    return float(np.sum(weights * np.abs(table["accuracy"] - table["confidence"])))


def calibrate(
    val_probabilities: np.ndarray,
    y_val: np.ndarray,
    test_probabilities: np.ndarray,
    y_test: np.ndarray,
    bins: int,
) -> dict:
    """Fit T on the validation split; ECE and NLL on the test set before and after, as plain JSON types."""
    val_logits, test_logits = log_probabilities(val_probabilities), log_probabilities(test_probabilities)
    temperature = fit_temperature(val_logits, y_val)
    scaled = scaled_probabilities(test_logits, temperature)
    return {
        "bins": bins,
        "temperature": temperature,
        "fitted_on": "validation",
        "val_images": len(y_val),
        "ece": expected_calibration_error(test_probabilities, y_test, bins),
        "ece_scaled": expected_calibration_error(scaled, y_test, bins),
        "nll": nll(test_logits, y_test),
        "nll_scaled": nll(test_logits, y_test, temperature),
    }


def plot_reliability(
    test_probabilities: np.ndarray, y_test: np.ndarray, calibration: dict, path: Path, title: str
) -> None:
    """Accuracy against confidence per bin, before and after temperature scaling, over how many images each holds."""
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    bins, temperature = calibration["bins"], calibration["temperature"]
    scaled = scaled_probabilities(log_probabilities(test_probabilities), temperature)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    top.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    series = (
        (test_probabilities, f"softmax as trained (ECE {calibration['ece']:.4f})", "tab:blue"),
        (scaled, f"temperature T = {temperature:.3f} (ECE {calibration['ece_scaled']:.4f})", "tab:orange"),
    )
    for probabilities, label, color in series:
        table = reliability_bins(probabilities, y_test, bins)
        filled = table["count"] > 0
        top.plot(table["confidence"][filled], table["accuracy"][filled], marker="o", color=color, label=label)
        centers = (table["edges"][:-1] + table["edges"][1:]) / 2
        bottom.step(centers, table["count"], where="mid", color=color)
    top.set(ylabel="Accuracy in the bin", xlim=(0, 1), ylim=(0, 1.02), title=title)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    bottom.set(xlabel=f"Top-class confidence ({bins} equal-width bins)", ylabel="Test images", yscale="log")
    bottom.grid(alpha=0.3)
    save_figure(fig, path)
