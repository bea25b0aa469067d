"""The summary (fashion_mlp.report): the model table, the rendered markdown and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import PNG_MAGIC, assert_png, no_temporaries
from fashion_mlp import evaluate, report, xor
from fashion_mlp.activations import activation_markdown, activation_table
from fashion_mlp.data import CLASS_NAMES


def _metrics(model: str, accuracy: float, predictions) -> dict:
    y_true, _, probabilities = predictions
    return {
        "model": model,
        **evaluate.compute_metrics(y_true, probabilities),
        "accuracy": accuracy,
        "params": 101_770,
        "epochs_run": 10,
    }


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
    report.main(
        [
            "--metrics",
            *paths,
            "--data_stats",
            str(stats),
            "--figures_dir",
            str(tmp_path / "figures"),
            "--chart_out",
            str(chart),
            "--out",
            str(out),
        ]
    )
    assert_png(chart)
    text = out.read_text()
    assert text.startswith("# Fashion-MNIST MLPs: summary")
    assert "1,800 training, 200 validation" in text
    assert no_temporaries(tmp_path)


def test_wall_times_go_to_the_untracked_timings_summary_not_the_versioned_one(tmp_path, two_models):
    timings = tmp_path / "reports" / "timings"
    timings.mkdir(parents=True)
    (timings / "baseline.json").write_text(
        json.dumps(
            {
                "model": "baseline",
                "fit_seconds": 125.0,
                "train_seconds": 123.4,
                "seconds_per_epoch": 12.34,
                "epochs_run": 10,
                "epoch_seconds": [12.34] * 10,
                "mlflow_run_id": "abc123",
            }
        )
    )
    (timings / "tune.json").write_text(
        json.dumps(
            {
                "search_seconds": 255.2,
                "mlflow_run_id": "def456",
                "workers": {"worker0": 30, "worker1": 30},
                "trials": [{"draw": 1, "round": 0, "trial_id": "0000", "worker": "worker1"}] * 60,
            }
        )
    )
    paths = []
    for m in two_models:
        path = tmp_path / "reports" / "metrics" / f"{m['model']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(m))
        paths.append(str(path))
    stats = tmp_path / "reports" / "data_stats.json"
    stats.write_text(json.dumps({"seed": 1, "counts": {"train": 1800, "val": 200, "test": 500}}))
    out = tmp_path / "reports" / "summary.md"
    report.main(
        [
            "--metrics",
            *paths,
            "--data_stats",
            str(stats),
            "--figures_dir",
            str(tmp_path / "figures"),
            "--chart_out",
            str(tmp_path / "chart.png"),
            "--out",
            str(out),
        ]
    )
    text = (timings / "summary.md").read_text()
    assert "| baseline | 10 | 123.4 | 12.34 | abc123 |" in text
    assert "60 trials in 255 s (trials per worker: worker0 30, worker1 30); MLflow run def456" in text
    summary = out.read_text()
    assert "123.4" not in summary and "s/epoch" not in summary and "reports/timings/" in summary


@pytest.fixture
def xor_outputs():
    """xor.json and activations.md as `fashion-mlp demos` writes them; the models' results are made up
    (no TensorFlow, scikit-learn or linear programming)."""
    x, y = xor.xor_data()
    proof = {"all_points_separable": False, "subsets_of_size_n_minus_1": [], "best_achievable_accuracy": 0.75}
    perceptron = {"weights": [0.0, 0.0], "bias": 0.0, "predictions": [0, 0, 0, 0], "accuracy": 0.5}
    summary = xor.xor_summary(x, y, proof, perceptron, np.array([0.01, 0.99, 0.98, 0.02]), 0.01, 8, 500, 0.05, 42)
    return json.loads(json.dumps(summary)), activation_markdown(activation_table([-5, -3, 0, 2, 5]))


def test_demos_section(tmp_path, xor_outputs):
    xor, activations_md = xor_outputs
    figures = {key: tmp_path / "figures" / f"{key}.png" for key in ("xor_points", "xor_boundaries", "activations")}
    figures["xor_points"].parent.mkdir()
    for path in figures.values():
        path.write_bytes(PNG_MAGIC)
    lines = report.demos_section(xor, activations_md, figures, tmp_path)
    text = "\n".join(lines)
    assert lines[0] == "## XOR and activation functions"
    assert "| 0.75 |" in text and "| 1.00 |" in text and "classifies all four points" in text
    assert "one hidden layer of 8 tanh units, 500 full-batch Adam steps" in text
    assert "| 2 | 0.8808 | 0.964 | 2 | 0.04711 |" in text
    for key in figures:
        assert f"(figures/{key}.png)" in text
    # missing figures are left out rather than linked
    assert "xor_points" not in "\n".join(report.demos_section(xor, "", {}, tmp_path))
    unsolved = report.demos_section(dict(xor, mlp_solved=False, mlp_accuracy=0.75), "", {}, tmp_path)
    assert "reached only 0.75 (raise demos.xor_epochs or demos.xor_hidden)" in "\n".join(unsolved)
