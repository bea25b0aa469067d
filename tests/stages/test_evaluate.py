"""Metrics, figures and prediction CSVs (fashion_mlp.stages.evaluate); the summary is in test_report.py."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from conftest import assert_png, no_temporaries
from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.stages import evaluate

# The synthetic `predictions` fixture (40 images, known mistakes) is in conftest.py: the report's tests share it.


def _expected_per_class(y_true, y_pred, c):
    tp = np.sum((y_pred == c) & (y_true == c))
    predicted = np.sum(y_pred == c)
    actual = np.sum(y_true == c)
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1, actual


def test_compute_metrics_accuracy_and_per_class(predictions):
    y_true, y_pred, probabilities = predictions
    metrics = evaluate.compute_metrics(y_true, probabilities)
    assert metrics["accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    assert metrics["accuracy"] == pytest.approx((40 - 5 - 4) / 40)
    assert metrics["n_test"] == 40
    assert list(metrics["per_class"]) == list(CLASS_NAMES)
    for c, name in enumerate(CLASS_NAMES):
        precision, recall, f1, support = _expected_per_class(y_true, y_pred, c)
        got = metrics["per_class"][name]
        assert got["precision"] == pytest.approx(precision), name
        assert got["recall"] == pytest.approx(recall), name
        assert got["f1"] == pytest.approx(f1), name
        assert got["support"] == support == 4
    assert metrics["per_class"]["Ankle boot"]["precision"] == 0.0
    assert metrics["per_class"]["Ankle boot"]["recall"] == 0.0
    per_class_f1 = [metrics["per_class"][n]["f1"] for n in CLASS_NAMES]
    assert metrics["macro_f1"] == pytest.approx(np.mean(per_class_f1))
    assert metrics["macro_precision"] == pytest.approx(
        np.mean([metrics["per_class"][n]["precision"] for n in CLASS_NAMES])
    )
    assert metrics["macro_recall"] == pytest.approx(np.mean([metrics["per_class"][n]["recall"] for n in CLASS_NAMES]))
    assert metrics["weighted_f1"] == pytest.approx(np.mean(per_class_f1))  # equal supports


def test_compute_metrics_loss_is_log_loss(predictions):
    from sklearn.metrics import log_loss

    y_true, _, probabilities = predictions
    metrics = evaluate.compute_metrics(y_true, probabilities)
    assert metrics["loss"] == pytest.approx(log_loss(y_true, probabilities, labels=list(range(10))), rel=1e-6)
    by_hand = -np.mean(np.log(probabilities[np.arange(len(y_true)), y_true].astype(np.float64)))
    assert metrics["loss"] == pytest.approx(by_hand, rel=1e-4)


def test_compute_metrics_handles_classes_missing_from_the_test_set():
    y_true = np.array([0, 0, 1, 1])
    probabilities = np.full((4, 10), 0.01)
    probabilities[[0, 1, 2, 3], [0, 1, 1, 1]] = 0.91
    metrics = evaluate.compute_metrics(y_true, probabilities)
    assert set(metrics["per_class"]) == set(CLASS_NAMES)
    assert metrics["per_class"]["Bag"]["support"] == 0
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert math.isfinite(metrics["loss"])


def test_compute_metrics_is_plain_json(predictions):
    y_true, _, probabilities = predictions
    metrics = evaluate.compute_metrics(y_true, probabilities)
    text = json.dumps(metrics)
    assert json.loads(text) == metrics

    def check(node):
        if isinstance(node, dict):
            for value in node.values():
                check(value)
        else:
            assert type(node) in (int, float), (node, type(node))

    check(metrics)


def test_metric_key():
    assert evaluate.metric_key("T-shirt/top") == "t_shirt_top"
    assert evaluate.metric_key("Ankle boot") == "ankle_boot"
    keys = [evaluate.metric_key(n) for n in CLASS_NAMES]
    assert len(set(keys)) == 10


# --- history ---------------------------------------------------------------------------


@pytest.fixture
def history_rows():
    # Epoch 2 is the kept one, as if early stopping had restored its weights.
    return [
        {
            "epoch": e,
            "loss": 1.0 / e,
            "accuracy": 0.5 + 0.1 * e,
            "val_loss": 1.1 / e,
            "val_accuracy": 0.45 + 0.1 * e,
            "learning_rate": 0.001,
            "kept": int(e == 2),
        }
        for e in (1, 2, 3)
    ]


def test_history_round_trip_and_training_summary(tmp_path, history_rows):
    from fashion_mlp.models.training import HISTORY_COLUMNS, write_history

    path = tmp_path / "history.csv"
    write_history(path, history_rows)
    with open(path, newline="") as fh:
        assert next(csv.reader(fh)) == list(HISTORY_COLUMNS)
    rows = evaluate.read_history(path)
    assert rows == [{k: float(v) for k, v in r.items()} for r in history_rows]
    summary = evaluate.training_summary(rows, 101_770)
    assert summary == {"val_accuracy": pytest.approx(0.65), "kept_epoch": 2, "params": 101_770, "epochs_run": 3}


# --- figures and predictions CSV -------------------------------------------------------


def test_plot_confusion_writes_png(tmp_path, predictions):
    y_true, y_pred, _ = predictions
    path = tmp_path / "figures" / "m_confusion.png"  # directory created on demand
    evaluate.plot_confusion(y_true, y_pred, path, "m: confusion")
    rgb = assert_png(path)
    # The darkest blues of the "Blues" map: the 10 full cells (a diagonal of 3s and 4s, and 9 -> 8) of 100, and
    # the top of the colour bar. An empty or uniform matrix leaves the bar alone (1 %), another map none at all.
    dark = ((rgb[..., 0] < 60) & (rgb[..., 2] > 100)).mean()
    assert 0.03 < dark < 0.2, f"{dark:.1%} of the pixels are dark blue: is the matrix drawn?"
    assert no_temporaries(path.parent)
    assert [p.name for p in path.parent.iterdir()] == ["m_confusion.png"]


def test_plot_curves_writes_png(tmp_path, history_rows):
    path = tmp_path / "m_curves.png"
    evaluate.plot_curves(history_rows, path, "m: curves")
    assert_png(path, panels=(1, 2))  # accuracy and loss, side by side
    assert no_temporaries(tmp_path)


@pytest.mark.parametrize("n_images, grid, panels", [(30, 25, (5, 5)), (7, 25, (3, 3))])
def test_plot_predictions_writes_png(tmp_path, predictions, n_images, grid, panels):
    """`grid` images or all there are, in a square-ish grid: 25 in 5 x 5, 7 in 3 x 3 (the last row holds one)."""
    y_true, y_pred, _ = predictions
    images = np.random.default_rng(0).random((40, 28, 28), dtype=np.float32)[:n_images]
    path = tmp_path / "m_predictions.png"
    evaluate.plot_predictions(images, y_true[:n_images], y_pred[:n_images], path, "m", grid, seed=42)
    rgb = assert_png(path, panels=panels)  # colour: the mistakes' titles and frames are red
    gray = (np.ptp(rgb, axis=2) < 10) & (rgb.mean(axis=2) > 40) & (rgb.mean(axis=2) < 215)
    assert gray.mean() > 0.1, f"{gray.mean():.1%} of the pixels are gray: are the pictures drawn?"
    assert no_temporaries(tmp_path)


def test_plots_replace_existing_file(tmp_path, history_rows):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    evaluate.plot_curves(history_rows, path, "again")
    assert_png(path, panels=(1, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_write_predictions_csv(tmp_path, predictions):
    y_true, y_pred, _ = predictions
    path = tmp_path / "predictions" / "m.csv"
    evaluate.write_predictions(path, y_true, y_pred)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["actual", "predicted"]
    assert len(rows) == 1 + len(y_true)
    assert rows[1:] == [[CLASS_NAMES[t], CLASS_NAMES[p]] for t, p in zip(y_true, y_pred, strict=True)]
    assert ["T-shirt/top", "Trouser"] in rows  # first misclassified image
    assert no_temporaries(path.parent)


# --- intervals and calibration (issue 12) ---------------------------------------------------


def test_the_mlflow_metrics_are_the_column_list_s_flat_names():
    from fashion_mlp.metrics import columns

    ci = {"accuracy": {"low": 0.87, "high": 0.89}, "macro_f1": {"low": 0.86, "high": 0.88}}
    cal = {"temperature": 1.3, "ece": 0.03, "ece_scaled": 0.01, "nll": 0.35, "nll_scaled": 0.33}
    figures = {"accuracy": 0.88, "macro_f1": 0.87, "loss": 0.33, "macro_precision": 0.871, "macro_recall": 0.872,
               "weighted_f1": 0.873, "val_accuracy": 0.9, "params": 10}  # fmt: skip
    metrics = {**figures, "confidence_intervals": ci, "calibration": cal}
    scalars = columns.mlflow_metrics(metrics) | evaluate.calibration_metrics(metrics)
    assert scalars == {
        "test_accuracy": 0.88,
        "test_macro_f1": 0.87,
        "test_loss": 0.33,
        "test_macro_precision": 0.871,
        "test_macro_recall": 0.872,
        "test_weighted_f1": 0.873,
        "test_accuracy_ci_low": 0.87,
        "test_accuracy_ci_high": 0.89,
        "test_macro_f1_ci_low": 0.86,
        "test_macro_f1_ci_high": 0.88,
        "temperature": 1.3,
        "test_ece": 0.03,
        "test_ece_scaled": 0.01,
        "test_nll_scaled": 0.33,
    }


def test_evaluate_needs_the_validation_split_and_the_reliability_figure():
    parser = evaluate.build_parser()
    required = {a.dest for a in parser._actions if a.required}
    assert {"val_data", "reliability_png"} <= required
    defaults = {a.dest: a.default for a in parser._actions}
    assert "bootstrap_resamples" in defaults and "calibration_bins" in defaults


def test_evaluate_reads_only_the_validation_arrays_of_train_npz(tmp_path):
    from fashion_mlp.data import DataError, load_arrays

    path = tmp_path / "train.npz"
    np.savez(path, x_train=np.zeros((5, 2)), y_train=np.zeros(5), x_val=np.ones((2, 2)), y_val=np.ones(2))
    assert sorted(load_arrays(path, keys=("x_val", "y_val"))) == ["x_val", "y_val"]
    assert sorted(load_arrays(path)) == ["x_train", "x_val", "y_train", "y_val"]
    with pytest.raises(DataError, match=r"train\.npz: no array x_val.*holds x_train, y_train"):
        np.savez(path, x_train=np.zeros((5, 2)), y_train=np.zeros(5))
        load_arrays(path, keys=("x_val", "y_val"))
