"""Metrics, figures and prediction CSVs (fashion_mlp.evaluate) and the summary (fashion_mlp.report)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fashion_mlp import evaluate, report
from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.io import TMP_MARK

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 1000, path


def no_temporaries(directory: Path) -> bool:
    return not list(directory.glob(f".*{TMP_MARK}*"))


# --- synthetic predictions -------------------------------------------------------------


@pytest.fixture
def predictions():
    """40 test images, 4 per class. Class c is predicted correctly except:
    - the first image of classes 0..4 is predicted as class (c + 1);
    - class 9 is never predicted (its images go to 8), so its precision is 0 by convention.
    """
    y_true = np.repeat(np.arange(10), 4)
    y_pred = y_true.copy()
    for c in range(5):
        y_pred[4 * c] = c + 1
    y_pred[y_true == 9] = 8
    rng = np.random.default_rng(3)
    probabilities = rng.random((40, 10)) * 0.1
    probabilities[np.arange(40), y_pred] += 1.0
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return y_true, y_pred, probabilities.astype(np.float32)


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
        np.mean([metrics["per_class"][n]["precision"] for n in CLASS_NAMES]))
    assert metrics["macro_recall"] == pytest.approx(
        np.mean([metrics["per_class"][n]["recall"] for n in CLASS_NAMES]))
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
    return [{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5 + 0.1 * e, "val_loss": 1.1 / e,
             "val_accuracy": 0.45 + 0.1 * e, "learning_rate": 0.001, "kept": int(e == 2)}
            for e in (1, 2, 3)]


def test_history_round_trip_and_training_summary(tmp_path, history_rows):
    from fashion_mlp.train import HISTORY_COLUMNS, write_history

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
    assert_png(path)
    assert no_temporaries(path.parent)
    assert [p.name for p in path.parent.iterdir()] == ["m_confusion.png"]


def test_plot_curves_writes_png(tmp_path, history_rows):
    path = tmp_path / "m_curves.png"
    evaluate.plot_curves(history_rows, path, "m: curves")
    assert_png(path)
    assert no_temporaries(tmp_path)


@pytest.mark.parametrize("n_images, grid", [(30, 25), (7, 25)])
def test_plot_predictions_writes_png(tmp_path, predictions, n_images, grid):
    y_true, y_pred, _ = predictions
    images = np.random.default_rng(0).random((40, 28, 28), dtype=np.float32)[:n_images]
    path = tmp_path / "m_predictions.png"
    evaluate.plot_predictions(images, y_true[:n_images], y_pred[:n_images], path, "m", grid, seed=42)
    assert_png(path)
    assert no_temporaries(tmp_path)


def test_plots_replace_existing_file(tmp_path, history_rows):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    evaluate.plot_curves(history_rows, path, "again")
    assert_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_write_predictions_csv(tmp_path, predictions):
    y_true, y_pred, _ = predictions
    path = tmp_path / "predictions" / "m.csv"
    evaluate.write_predictions(path, y_true, y_pred)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["actual", "predicted"]
    assert len(rows) == 1 + len(y_true)
    assert rows[1:] == [[CLASS_NAMES[t], CLASS_NAMES[p]] for t, p in zip(y_true, y_pred)]
    assert ["T-shirt/top", "Trouser"] in rows  # first misclassified image
    assert no_temporaries(path.parent)


# --- report ----------------------------------------------------------------------------


def _metrics(model: str, accuracy: float, predictions) -> dict:
    y_true, _, probabilities = predictions
    return {"model": model, **evaluate.compute_metrics(y_true, probabilities), "accuracy": accuracy,
            "params": 101_770, "epochs_run": 10}


@pytest.fixture
def two_models(predictions):
    return [_metrics("baseline", 0.8812, predictions), _metrics("regularized", 0.8851, predictions)]


def test_model_table_rows_and_anchors(two_models):
    lines = report.model_table(two_models)
    assert lines[0].startswith("| Model | Test accuracy |")
    model_rows = [line for line in lines if line.startswith(("| baseline |", "| regularized |"))]
    assert len(model_rows) == 2
    assert model_rows[0].startswith("| baseline | 0.8812 |")
    assert "101,770 | 10 | ≥ 0.880" in model_rows[0]
    assert "≥ 0.880 met" in model_rows[0]
    assert "≥ 0.890 **not met**" in model_rows[1]
    anchor_rows = [line for line in lines if line.endswith("| anchor |")]
    assert [row.split("|")[2].strip() for row in anchor_rows] == ["0.8700", "0.8660", "0.8833", "0.8710"]
    assert len(lines) == 2 + 2 + 4


def test_model_table_without_goal(predictions):
    lines = report.model_table([_metrics("wide", 0.9, predictions)])
    row = next(line for line in lines if line.startswith("| wide |"))
    assert row.rstrip().endswith("|  |")
    assert "met" not in row


def test_render_summary(tmp_path, two_models):
    figures = tmp_path / "reports" / "figures"
    figures.mkdir(parents=True)
    for kind in ("confusion", "curves", "predictions"):
        (figures / f"baseline_{kind}.png").write_bytes(PNG_MAGIC)
    out = tmp_path / "reports" / "summary.md"
    chart = tmp_path / "reports" / "accuracy.png"
    stats = {"seed": 42, "counts": {"train": 54_000, "val": 6_000, "test": 10_000}}
    text = report.render(two_models, stats, figures, chart, out)
    assert "54,000 training, 6,000 validation (stratified, seed 42) and 10,000 test images" in text
    assert "Best on the test set: **regularized** (0.8851)" in text
    assert "![Test accuracy per model](accuracy.png)" in text
    assert "[Confusion matrix](figures/baseline_confusion.png)" in text
    assert "- **regularized**: " in text and "regularized_confusion" not in text  # missing figures not linked
    assert sum(line.startswith(("| baseline |", "| regularized |")) for line in text.splitlines()) == 2
    for anchor in ("0.8700", "0.8660", "0.8833", "0.8710"):
        assert f"| {anchor} |" in text
    for name in CLASS_NAMES:
        assert f"| {name} | " in text


def test_report_main_writes_summary_and_chart(tmp_path, two_models):
    paths = []
    for m in two_models:
        path = tmp_path / "metrics" / f"{m['model']}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(m))
        paths.append(str(path))
    stats = tmp_path / "data_stats.json"
    stats.write_text(json.dumps({"seed": 1, "counts": {"train": 1800, "val": 200, "test": 500}}))
    out, chart = tmp_path / "summary.md", tmp_path / "accuracy.png"
    report.main(["--metrics", *paths, "--data_stats", str(stats), "--figures_dir", str(tmp_path / "figures"),
                 "--chart_out", str(chart), "--out", str(out)])
    assert_png(chart)
    text = out.read_text()
    assert text.startswith("# Fashion-MNIST MLPs: summary")
    assert "1,800 training, 200 validation" in text
    assert no_temporaries(tmp_path)


def test_wall_times_go_to_the_untracked_timings_summary_not_the_versioned_one(tmp_path, two_models):
    timings = tmp_path / "reports" / "timings"
    timings.mkdir(parents=True)
    (timings / "baseline.json").write_text(json.dumps({
        "model": "baseline", "fit_seconds": 125.0, "train_seconds": 123.4, "seconds_per_epoch": 12.34,
        "epochs_run": 10, "epoch_seconds": [12.34] * 10, "mlflow_run_id": "abc123"}))
    (timings / "tune.json").write_text(json.dumps({
        "search_seconds": 255.2, "mlflow_run_id": "def456", "workers": {"worker0": 30, "worker1": 30},
        "trials": [{"draw": 1, "round": 0, "trial_id": "0000", "worker": "worker1"}] * 60}))
    paths = []
    for m in two_models:
        path = tmp_path / "reports" / "metrics" / f"{m['model']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(m))
        paths.append(str(path))
    stats = tmp_path / "reports" / "data_stats.json"
    stats.write_text(json.dumps({"seed": 1, "counts": {"train": 1800, "val": 200, "test": 500}}))
    out = tmp_path / "reports" / "summary.md"
    report.main(["--metrics", *paths, "--data_stats", str(stats), "--figures_dir", str(tmp_path / "figures"),
                 "--chart_out", str(tmp_path / "chart.png"), "--out", str(out)])
    text = (timings / "summary.md").read_text()
    assert "| baseline | 10 | 123.4 | 12.34 | abc123 |" in text
    assert "60 trials in 255 s (trials per worker: worker0 30, worker1 30); MLflow run def456" in text
    summary = out.read_text()
    assert "123.4" not in summary and "s/epoch" not in summary and "reports/timings/" in summary
