"""The summary (fashion_mlp.stages.report): the model table, the rendered markdown, the demos and the command.

Its statistics are tested in test_report_statistics.py, the comparison of every model and preset in
test_report_comparison.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import PNG_MAGIC, assert_png, metrics_record, no_temporaries
from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.lessons import xor
from fashion_mlp.lessons.activations import activation_markdown, activation_table
from fashion_mlp.metrics import columns
from fashion_mlp.stages import report
from fashion_mlp.summary import lessons, models_table

# The published test accuracies the summary's table sets the models against, written out here rather
# than read from summary/anchors.py, so that a wrong figure, kind, note or source there (or a row rendered
# wrongly) fails. (row name, kind, test accuracy as the table prints it, note, where it was published)
PUBLISHED = [
    ("Tutorial baseline MLP (published)", "mlp", "0.8700", "", "the Keras tutorial this project rebuilds (README)"),
    ('Tutorial "improved" MLP (published)', "mlp", "0.8660", "", "the Keras tutorial this project rebuilds (README)"),
    ("Zalando benchmark: best MLP", "mlp", "0.8833", "", "zalandoresearch/fashion-mnist, benchmark table"),
    ("scikit-learn MLPClassifier", "mlp", "0.8710", "", "zalandoresearch/fashion-mnist, benchmark table"),
    (
        "Nøkland & Eidnes 2019: 3×1024 MLP",
        "mlp",
        "0.9163",
        "settings chosen on test",
        "Nøkland & Eidnes, ICML 2019; anokland/local-loss",
    ),
    (
        "2-conv CNN, ~113K parameters",
        "cnn",
        "0.9220",
        "",
        "zalandoresearch/fashion-mnist, benchmark table (contributed by Abel G.)",
    ),
    ("2-conv CNN with augmentation", "cnn", "0.9340", "honest validation split", "cmasch/zalando-fashion-mnist"),
]


def anchor_row_start(name: str, kind: str, accuracy: str) -> str:
    """How the table opens an anchor's row: its name in italics, its kind, no validation accuracy, its test accuracy."""
    return f"| *{name}* | {kind} | | {accuracy} |"


def anchor_row_end(note: str) -> str:
    return f"| anchor: {note} |" if note else "| anchor |"


def test_model_table_rows_and_anchors(two_models):
    lines = models_table.model_table(two_models, {"baseline": "mlp", "regularized": "mlp"})
    assert lines[0].startswith("| Model | Kind | Validation accuracy | Test accuracy |")
    model_rows = [line for line in lines if line.startswith(("| baseline |", "| regularized |"))]
    assert len(model_rows) == 2
    assert model_rows[0].startswith("| baseline | mlp | 0.8912 | 0.8812 |")
    assert "101,770 | 10 | ≥ 0.880" in model_rows[0]
    assert "≥ 0.880 met" in model_rows[0]
    assert "≥ 0.890 **not met**" in model_rows[1]
    anchor_rows = lines[4:]  # after the header, its alignment row and the two models: the anchors, in order
    assert len(anchor_rows) == len(PUBLISHED)
    for row, (name, kind, accuracy, note, _) in zip(anchor_rows, PUBLISHED, strict=True):
        assert row.startswith(anchor_row_start(name, kind, accuracy)) and row.endswith(anchor_row_end(note)), row
        assert set(row.split("|")[5:-2]) <= {" "}, row  # no figure but the test accuracy
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_model_table_without_goal(predictions):
    lines = models_table.model_table([metrics_record("wide", 0.9, predictions)])
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
    assert "Highest test accuracy: **regularized** (0.8851). No paired test was run" in text
    assert "better" not in text  # no test, no claim
    assert "![Test accuracy against parameter count, every model and the published anchors](accuracy.png)" in text
    assert "[Confusion matrix](figures/baseline_confusion.png)" in text
    assert "- **regularized**: " in text and "regularized_confusion" not in text  # missing figures not linked
    assert sum(line.startswith(("| baseline |", "| regularized |")) for line in text.splitlines()) == 2
    for name, kind, accuracy, _, source in PUBLISHED:
        assert anchor_row_start(name, kind, accuracy) in text and f"\n- {name}: {source}\n" in text, name
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
            "--headline_out",
            str(tmp_path / "headline.json"),
        ]
    )
    assert_png(chart)
    text = out.read_text()
    assert text.startswith("# Fashion-MNIST MLPs: summary")
    assert "1,800 training, 200 validation" in text
    # DVC's one metrics file: a few figures per model, taken from each metrics record (nested ones too).
    headline = json.loads((tmp_path / "headline.json").read_text())
    assert list(headline) == [m["model"] for m in two_models]
    for m in two_models:
        assert headline[m["model"]]["accuracy"] == m["accuracy"]
        assert set(headline[m["model"]]) <= set(columns.HEADLINE) and "per_class" not in headline[m["model"]]
    assert no_temporaries(tmp_path)


def test_the_headline_takes_nested_figures_and_leaves_out_absent_ones() -> None:
    record = {"model": "m", "accuracy": 0.9, "calibration": {"ece": 0.05, "ece_scaled": 0.01}, "per_class": {}}
    assert columns.headline(record) == {"accuracy": 0.9, "ece": 0.05, "ece_scaled": 0.01}


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
    assert "| baseline |  | 0.8812 | 10 | 123.4 | 12.34 | abc123 |" in text
    assert "![Test accuracy against training time](accuracy_vs_time.png)" in text
    assert_png(timings / "accuracy_vs_time.png")
    assert "60 trials in 255 s (trials per worker: worker0 30, worker1 30); MLflow run def456" in text
    summary = out.read_text()
    assert "123.4" not in summary and "s/epoch" not in summary and "reports/timings/summary.md" in summary
    assert "reports/timings/accuracy_vs_time.png" in summary


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
    lines = lessons.demos_section(xor, activations_md, figures, tmp_path)
    text = "\n".join(lines)
    assert lines[0] == "## XOR and activation functions"
    assert "| 0.75 |" in text and "| 1.00 |" in text and "classifies all four points" in text
    assert "one hidden layer of 8 tanh units, 500 full-batch Adam steps" in text
    assert "| 2 | 0.8808 | 0.964 | 2 | 0.04711 |" in text
    for key in figures:
        assert f"(figures/{key}.png)" in text
    # missing figures are left out rather than linked
    assert "xor_points" not in "\n".join(lessons.demos_section(xor, "", {}, tmp_path))
    unsolved = lessons.demos_section(dict(xor, mlp_solved=False, mlp_accuracy=0.75), "", {}, tmp_path)
    assert "reached only 0.75 (raise demos.xor_epochs or demos.xor_hidden)" in "\n".join(unsolved)
