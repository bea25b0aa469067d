"""Stage `evaluate`: score one trained model on the held-out test set and draw its figures.

The only stage that reads `test.npz`. Writes the metrics JSON (scikit-learn's
classification report plus loss, bootstrap intervals and calibration), a
predictions CSV for DVC's confusion plot, and four PNGs; everything is logged
into the model's training run in MLflow. It also reads the validation split of
`train.npz`, to fit the temperature that the calibration figures report.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import numpy as np

from fashion_mlp import inference
from fashion_mlp.config import add_section_flags, section_from_args, validate_section
from fashion_mlp.data import CLASS_NAMES, NUM_CLASSES
from fashion_mlp.figures import pyplot, save_figure
from fashion_mlp.io import atomic_output, write_json
from fashion_mlp.metrics import calibration, columns, stats
from fashion_mlp.stages.common import add_flags


def compute_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict:
    """Accuracy, cross-entropy and per-class precision/recall/F1 (scikit-learn), as plain JSON types."""
    from sklearn.metrics import accuracy_score, classification_report, log_loss

    y_pred = probabilities.argmax(axis=1)
    labels = list(range(NUM_CLASSES))
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=CLASS_NAMES, output_dict=True, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "loss": float(log_loss(y_true, probabilities, labels=labels)),
        "macro_precision": report["macro avg"]["precision"],
        "macro_recall": report["macro avg"]["recall"],
        "macro_f1": report["macro avg"]["f1-score"],
        "weighted_f1": report["weighted avg"]["f1-score"],
        "n_test": len(y_true),
        "per_class": {
            name: {
                "precision": report[name]["precision"],
                "recall": report[name]["recall"],
                "f1": report[name]["f1-score"],
                "support": int(report[name]["support"]),
            }
            for name in CLASS_NAMES
        },
    }


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def training_summary(history: list[dict], n_params: int) -> dict:
    """Size of the model and its training, and the validation score of the epoch whose weights were kept.

    No wall times: they differ on every run, and this file is versioned. They are in the train
    run's MLflow metrics (fit_seconds, train_seconds, epoch_seconds) and reports/timings/.
    """
    kept = next((r for r in history if r.get("kept")), history[-1])
    return {
        "val_accuracy": kept["val_accuracy"],
        "kept_epoch": int(kept["epoch"]),
        "params": int(n_params),
        "epochs_run": len(history),
    }


def calibration_metrics(metrics: dict) -> dict[str, float]:
    """The calibration figures as flat MLflow metric names."""
    cal = metrics["calibration"]
    return {
        "temperature": cal["temperature"],
        "test_ece": cal["ece"],
        "test_ece_scaled": cal["ece_scaled"],
        "test_nll_scaled": cal["nll_scaled"],
    }


def metric_key(name: str) -> str:
    """'T-shirt/top' -> 't_shirt_top', for MLflow metric names."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# --- figures ------------------------------------------------------------------------


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, path: Path, title: str) -> None:
    import seaborn as sns
    from sklearn.metrics import confusion_matrix

    plt = pyplot()
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(NUM_CLASSES)))
    fig, ax = plt.subplots(figsize=(8, 6.5))
    sns.heatmap(
        matrix, annot=True, fmt="d", cmap="Blues", cbar=True, ax=ax, xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES
    )
    ax.set(title=title, xlabel="Predicted class", ylabel="True class")
    ax.tick_params(axis="x", labelrotation=45)
    save_figure(fig, path)


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    plt = pyplot()
    epochs = [int(r["epoch"]) for r in history]
    kept = [int(r["epoch"]) for r in history if r.get("kept")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, label in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        ax.plot(epochs, [r[metric] for r in history], marker="o", label="training")
        ax.plot(epochs, [r[f"val_{metric}"] for r in history], marker="o", label="validation")
        if kept:
            ax.axvline(kept[0], color="gray", linestyle="--", linewidth=1, label=f"kept weights (epoch {kept[0]})")
        ax.set(xlabel="Epoch", ylabel=label, title=f"{label} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    save_figure(fig, path)


def plot_predictions(
    images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, path: Path, title: str, n: int, seed: int
) -> None:
    """A grid of n test images (a seeded sample) titled predicted/true; wrong ones in red."""
    plt = pyplot()
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))
    cols = int(np.ceil(np.sqrt(len(picks))))
    rows = int(np.ceil(len(picks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picks, strict=False):  # a small test set leaves cells empty
        ok = y_pred[i] == y_true[i]
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=1)
        label = CLASS_NAMES[y_pred[i]] if ok else f"{CLASS_NAMES[y_pred[i]]}\n(true: {CLASS_NAMES[y_true[i]]})"
        ax.set_title(label, fontsize=8, color="black" if ok else "red")
        if not ok:
            for spine in ax.spines.values():
                spine.set(visible=True, color="red", linewidth=2)
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{title}: predicted class (wrong ones in red)")
    save_figure(fig, path)


def write_predictions(path: Path, y_true: np.ndarray, y_pred: np.ndarray) -> None:
    """Class names per image, for DVC's confusion-matrix plot template and compare's paired tests."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actual", "predicted"])
        writer.writerows((CLASS_NAMES[t], CLASS_NAMES[p]) for t, p in zip(y_true, y_pred, strict=True))


# --- stage --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp evaluate", description=__doc__.splitlines()[0])
    add_section_flags(parser, "evaluate")
    add_flags(parser, "model", "seed", "threads", "experiment")
    parser.add_argument("--model_path", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True, help="history CSV from train")
    parser.add_argument("--data", type=Path, required=True, help="test.npz from prepare")
    parser.add_argument("--val_data", type=Path, required=True, help="train.npz from prepare (its validation split)")
    parser.add_argument("--metrics_out", type=Path, required=True)
    parser.add_argument("--predictions_out", type=Path, required=True, help="per test image: actual,predicted")
    parser.add_argument(
        "--val_predictions_out", type=Path, required=True, help="per validation image, for compare --split validation"
    )
    parser.add_argument("--confusion_png", type=Path, required=True)
    parser.add_argument("--curves_png", type=Path, required=True)
    parser.add_argument("--grid_png", type=Path, required=True)
    parser.add_argument("--reliability_png", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    validate_section("evaluate", section_from_args(args, "evaluate"))

    from fashion_mlp.runtime import configure_tensorflow

    configure_tensorflow(args.threads, args.seed)
    import keras

    from fashion_mlp.data import load_arrays

    test = load_arrays(args.data)
    val = load_arrays(args.val_data, keys=("x_val", "y_val"))  # not the 54,000 training images
    model = keras.saving.load_model(args.model_path, safe_mode=True)
    probabilities = inference.probabilities(model, test["x_test"])
    val_probabilities = inference.probabilities(model, val["x_val"])
    y_true, y_pred = test["y_test"], probabilities.argmax(axis=1)
    history = read_history(args.history)

    metrics = {
        "model": args.model,
        **compute_metrics(y_true, probabilities),
        "confidence_intervals": stats.bootstrap_intervals(
            y_true, y_pred, args.bootstrap_resamples, args.seed, keys=columns.INTERVALS
        ),
        "calibration": calibration.calibrate(
            val_probabilities, val["y_val"], probabilities, y_true, args.calibration_bins
        ),
        **training_summary(history, model.count_params()),
    }
    title = f"{args.model}: test accuracy {metrics['accuracy']:.4f}"
    write_json(args.metrics_out, metrics)
    write_predictions(args.predictions_out, y_true, y_pred)
    write_predictions(args.val_predictions_out, val["y_val"], val_probabilities.argmax(axis=1))
    plot_confusion(y_true, y_pred, args.confusion_png, f"{args.model}: confusion matrix on the test set")
    plot_curves(history, args.curves_png, f"{args.model}: training and validation curves")
    plot_predictions(test["x_test"], y_true, y_pred, args.grid_png, title, args.grid_images, args.seed)
    reliability_title = f"{args.model}: reliability on the test set"
    calibration.plot_reliability(probabilities, y_true, metrics["calibration"], args.reliability_png, reliability_title)
    run_id = log_to_mlflow(args, metrics, (test["x_test"], y_true))
    ci, cal = metrics["confidence_intervals"], metrics["calibration"]
    print(
        f"evaluate: {args.model}: test accuracy {metrics['accuracy']:.4f} (95 % CI {ci['accuracy']['low']:.4f}-"
        f"{ci['accuracy']['high']:.4f}), macro F1 {metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f}; "
        f"ECE {cal['ece']:.4f} -> {cal['ece_scaled']:.4f} at T = {cal['temperature']:.3f}; MLflow run {run_id}"
    )


def log_to_mlflow(args: argparse.Namespace, metrics: dict, test: tuple) -> str:
    """Add the test metrics and figures to the run that trained this exact model file."""
    import mlflow

    from fashion_mlp import tracking

    experiment_id = tracking.init(args.experiment)
    with tracking.model_run(experiment_id, args.model_path, args.model, "evaluate", args.data) as active:
        scalars = columns.mlflow_metrics(metrics) | calibration_metrics(metrics)
        for name, scores in metrics["per_class"].items():
            for score in ("precision", "recall", "f1"):
                scalars[f"test_{score}_{metric_key(name)}"] = scores[score]
        tracking.with_retry(mlflow.log_metrics, scalars)
        tracking.with_retry(mlflow.set_tags, {"stage": "train,evaluate", "evaluate_engine": tracking.engine()})
        # A reopened train run keeps the invocation that made it; this one's goes beside it.
        tracking.with_retry(mlflow.set_tags, {f"evaluate_{k}": v for k, v in tracking.invocation_tags().items()})
        tracking.log_datasets(args.data, {"test": test})
        for path in (args.metrics_out, args.predictions_out, args.val_predictions_out):
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        for path in (args.confusion_png, args.curves_png, args.grid_png, args.reliability_png):
            mlflow.log_artifact(str(path), artifact_path="figures")
        return active.info.run_id


if __name__ == "__main__":
    main()
