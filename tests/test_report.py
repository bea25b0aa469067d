"""The summary (fashion_mlp.stages.report): the model table, the rendered markdown and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import PNG_MAGIC, assert_png, no_temporaries
from fashion_mlp import PipelineError
from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.lessons import xor
from fashion_mlp.lessons.activations import activation_markdown, activation_table
from fashion_mlp.metrics import columns
from fashion_mlp.metrics.stats import pairwise_mcnemar
from fashion_mlp.stages import evaluate, report
from fashion_mlp.summary import calibration_table, comparison_figure, lessons, models_table, significance
from fashion_mlp.summary import champion as champion_text

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


def _metrics(model: str, accuracy: float, predictions) -> dict:
    y_true, _, probabilities = predictions
    return {
        "model": model,
        **evaluate.compute_metrics(y_true, probabilities),
        "accuracy": accuracy,
        "val_accuracy": accuracy + 0.01,
        "params": 101_770,
        "epochs_run": 10,
    }


@pytest.fixture
def two_models(predictions):
    return [_metrics("baseline", 0.8812, predictions), _metrics("regularized", 0.8851, predictions)]


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
    lines = models_table.model_table([_metrics("wide", 0.9, predictions)])
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


# --- intervals, paired tests and calibration (issue 12) --------------------------------------


def _with_uncertainty(m: dict, low: float, high: float, temperature: float) -> dict:
    """A metrics dict as evaluate now writes it: bootstrap intervals and calibration added."""
    ci = {"method": "percentile bootstrap over test images", "level": 0.95, "resamples": 1000, "seed": 42}
    calibration = {"bins": 15, "temperature": temperature, "fitted_on": "validation", "val_images": 6000}
    calibration |= {"ece": 0.0312, "ece_scaled": 0.0081, "nll": 0.3479, "nll_scaled": 0.3301}
    return m | {
        "confidence_intervals": ci | {"accuracy": {"low": low, "high": high}, "macro_f1": {"low": 0.87, "high": 0.89}},
        "calibration": calibration,
    }


def _write_predictions(path, actual, predicted):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = (f"{CLASS_NAMES[a]},{CLASS_NAMES[p]}" for a, p in zip(actual, predicted, strict=True))
    path.write_text("\n".join(["actual,predicted", *rows]) + "\n")


def three_models(tmp_path, gap: int):
    """Metrics and prediction CSVs of three models on the same 1,000 images. `strong` gets `gap` more right than
    `middle`; `weak` gets 100 fewer right than `middle`."""
    actual = np.arange(1000) % 10

    def wrong(k: int) -> np.ndarray:  # the first k images misclassified
        return np.where(np.arange(1000) < k, (actual + 1) % 10, actual)

    predicted = {"weak": wrong(200), "middle": wrong(100), "strong": wrong(100 - gap)}
    metrics, paths = [], []
    for name, pred in predicted.items():
        m = {"model": name, **evaluate.compute_metrics(actual, np.eye(10)[pred] * 0.9 + 0.01), "params": 10}
        m["epochs_run"], m["val_accuracy"] = 1, m["accuracy"]
        metrics.append(_with_uncertainty(m, m["accuracy"] - 0.02, m["accuracy"] + 0.02, 1.2))
        metrics[-1]["confidence_intervals"]["macro_f1"] = {"low": m["macro_f1"] - 0.02, "high": m["macro_f1"] + 0.02}
        paths.append(tmp_path / "predictions" / f"{name}.csv")
        _write_predictions(paths[-1], actual, pred)
    return metrics, paths


def test_model_table_shows_the_intervals(two_models):
    models = [_with_uncertainty(two_models[0], 0.8757, 0.8883, 1.3), two_models[1]]
    lines = models_table.model_table(models)
    assert "95 % CI" in lines[0] and lines[0].count("|") == lines[1].count("|")
    row = next(line for line in lines if line.startswith("| baseline |"))
    assert row.startswith("| baseline |  | 0.8912 | 0.8812 | 0.8757–0.8883 | ")
    assert "| 0.8700–0.8900 |" in row
    regularized = next(line for line in lines if line.startswith("| regularized |"))
    assert regularized.startswith("| regularized |  | 0.8951 | 0.8851 |  |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_summary_says_better_only_for_a_significant_pair(tmp_path):
    metrics, paths = three_models(tmp_path, gap=5)  # strong vs middle: 5 discordant images, p = 0.0625
    pairs = pairwise_mcnemar(significance.read_correct(paths, metrics))
    sentence = significance.ranking_sentence(metrics, pairs)
    assert sentence.startswith("Highest test accuracy: **strong** (0.9050). It is significantly better than weak")
    assert "but the test set cannot tell it from middle (p = 0.062)" in sentence
    table = "\n".join(significance.significance_section(pairs))
    assert "| weak | middle | 0 | 100 | -0.1000 |" in table and "| **middle** better |" in table
    assert "| middle | strong | 0 | 5 | -0.0050 | 0.062 | 0.062 | no significant difference at 0.05 |" in table
    stats = {"seed": 42, "counts": {"train": 900, "val": 100, "test": 1000}}
    text = report.render(metrics, stats, tmp_path, tmp_path / "chart.png", tmp_path / "summary.md", pairs=pairs)
    claims = [line for line in text.splitlines() if "better" in line]
    assert len(claims) == 3  # the sentence (strong over weak) and the rows weak-middle and weak-strong
    assert claims[0].startswith("Highest test accuracy") and "better than weak" in claims[0]
    assert [line.split(" | ")[:2] for line in claims[1:]] == [["| weak", "middle"], ["| weak", "strong"]]
    assert "## Are the differences real? Paired exact McNemar tests" in text


def test_summary_says_better_when_every_pair_is_significant(tmp_path):
    metrics, paths = three_models(tmp_path, gap=40)
    pairs = pairwise_mcnemar(significance.read_correct(paths, metrics))
    assert all(p["better"] for p in pairs)
    sentence = significance.ranking_sentence(metrics, pairs)
    assert "It is significantly better than weak (p = " in sentence and ") and middle (p = " in sentence
    assert "cannot tell" not in sentence


def test_no_model_is_called_better_when_no_pair_is_significant(tmp_path):
    metrics, paths = three_models(tmp_path, gap=2)
    metrics, paths = metrics[1:], paths[1:]  # middle and strong only: 2 discordant images
    pairs = pairwise_mcnemar(significance.read_correct(paths, metrics))
    sentence = significance.ranking_sentence(metrics, pairs)
    assert "better" not in sentence and "The test set cannot tell it from middle (p = 0.500)" in sentence


def test_calibration_section(two_models):
    models = [_with_uncertainty(two_models[0], 0.87, 0.89, 1.3456), two_models[1]]
    text = "\n".join(calibration_table.calibration_section(models))
    assert "| baseline | 1.346 | 0.0312 | 0.0081 | 0.3479 | 0.3301 |" in text
    assert "regularized" not in text  # no calibration in its metrics, no row
    assert "validation split, never on the test set" in text
    assert calibration_table.calibration_section(two_models) == []


def test_read_correct_refuses_different_test_images_and_missing_files(tmp_path):
    metrics, paths = three_models(tmp_path, gap=5)
    with pytest.raises(PipelineError, match=r"names no strong\.csv"):
        significance.read_correct(paths[:2], metrics)
    _write_predictions(paths[2], np.arange(1000) % 9, np.arange(1000) % 9)
    with pytest.raises(PipelineError, match="do not hold the same test images"):
        significance.read_correct(paths, metrics)
    paths[2].write_text("a,b\n1,2\n")
    with pytest.raises(PipelineError, match="not a predictions CSV"):
        significance.read_correct(paths, metrics)


def test_report_main_runs_the_paired_tests(tmp_path):
    metrics, predictions = three_models(tmp_path, gap=40)
    paths = []
    for m in metrics:
        paths.append(tmp_path / "metrics" / f"{m['model']}.json")
        paths[-1].parent.mkdir(exist_ok=True)
        paths[-1].write_text(json.dumps(m))
    stats = tmp_path / "data_stats.json"
    stats.write_text(json.dumps({"seed": 1, "counts": {"train": 900, "val": 100, "test": 1000}}))
    out = tmp_path / "summary.md"
    outputs = ["--figures_dir", str(tmp_path / "figures"), "--chart_out", str(tmp_path / "chart.png")]
    report.main(
        [
            *("--metrics", *map(str, paths), "--predictions", *map(str, predictions), "--data_stats", str(stats)),
            *outputs,
            *("--out", str(out)),
        ]
    )
    text = out.read_text()
    assert "| weak | strong | 0 | 140 |" in text and "## Calibration" in text
    assert "It is significantly better than weak" in text
    assert no_temporaries(tmp_path)


def test_comparison_chart_draws_the_intervals_as_error_bars(tmp_path, two_models):
    with_ci = [_with_uncertainty(two_models[0], 0.8757, 0.8883, 1.3), _with_uncertainty(two_models[1], 0.88, 0.89, 1.3)]
    errors = comparison_figure.accuracy_error_bars(with_ci)
    assert errors == pytest.approx(np.array([[0.8812 - 0.8757, 0.8851 - 0.88], [0.8883 - 0.8812, 0.89 - 0.8851]]))
    assert comparison_figure.accuracy_error_bars([with_ci[0], two_models[1]]) is None  # all or nothing
    comparison_figure.plot_comparison(with_ci, tmp_path / "chart.png", {"baseline": "mlp", "regularized": "cnn"})
    assert_png(tmp_path / "chart.png")


def check_uncertainty(repo: Path) -> None:
    """For the end-to-end runs of both engines (issue 12): every evaluated model's metrics JSON holds its
    intervals and calibration, its reliability diagram exists, and the summary has the paired tests, with
    "better" only in rows whose Holm-adjusted p is below 0.05, and the calibration table."""
    models = sorted(path.stem for path in (repo / "reports/metrics").glob("*.json"))
    counts = json.loads((repo / "reports/data_stats.json").read_text())["counts"]
    for model in models:
        m = json.loads((repo / f"reports/metrics/{model}.json").read_text())
        ci, cal = m["confidence_intervals"], m["calibration"]
        assert ci["resamples"] >= 1000 and ci["level"] == 0.95, model
        for key in ("accuracy", "macro_f1"):
            assert ci[key]["low"] < ci[key]["high"] and ci[key]["low"] - 0.02 <= m[key] <= ci[key]["high"] + 0.02
        assert cal["fitted_on"] == "validation" and cal["val_images"] == counts["val"] and cal["temperature"] > 0
        assert 0 <= cal["ece"] <= 1 and 0 <= cal["ece_scaled"] <= 1, model
        assert cal["nll"] == pytest.approx(m["loss"], rel=1e-4), model  # NLL at T = 1 is the test loss
        assert_png(repo / f"reports/figures/{model}_reliability.png", panels=(2, 1))  # diagram, histogram
    summary = (repo / "reports/summary.md").read_text()
    lines = summary.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Model A | Model B | Only A right |"))
    rows = [line for line in lines[start + 2 :] if line.startswith("| ")][: len(models) * (len(models) - 1) // 2]
    assert len(rows) == len(models) * (len(models) - 1) // 2
    for row in rows:
        holm_p, verdict = (cell.strip() for cell in row.strip("|").split("|")[-2:])
        assert ("better" in verdict) == (float(holm_p) < 0.05), row
    assert any(line.startswith("Highest test accuracy: **") for line in lines)
    assert all(f"| {model} | " in summary.split("## Calibration", 1)[1] for model in models)
    assert all(f"figures/{model}_reliability.png" in summary for model in models)


def test_check_uncertainty_accepts_what_evaluate_and_report_write(tmp_path):
    from fashion_mlp.metrics.calibration import calibrate, plot_reliability

    metrics, predictions = three_models(tmp_path / "reports", gap=5)
    (tmp_path / "reports/figures").mkdir(parents=True)
    labels = np.arange(200) % 10
    probabilities = np.random.default_rng(0).dirichlet(np.full(10, 0.3), 200)
    figure = tmp_path / "reliability.png"  # one diagram, drawn by evaluate's code, for every model
    plot_reliability(probabilities, labels, calibrate(probabilities, labels, probabilities, labels, 15), figure, "m")
    for m in metrics:
        m["calibration"]["nll"] = m["loss"]
        (tmp_path / f"reports/figures/{m['model']}_reliability.png").write_bytes(figure.read_bytes())
        path = tmp_path / f"reports/metrics/{m['model']}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(m))
    stats = {"seed": 1, "counts": {"train": 5400, "val": 6000, "test": 1000}}
    (tmp_path / "reports/data_stats.json").write_text(json.dumps(stats))
    report.main(
        [
            *("--metrics", *sorted(str(p) for p in (tmp_path / "reports/metrics").glob("*.json"))),
            *("--predictions", *map(str, predictions), "--data_stats", str(tmp_path / "reports/data_stats.json")),
            *("--figures_dir", str(tmp_path / "reports/figures"), "--chart_out", str(tmp_path / "chart.png")),
            *("--out", str(tmp_path / "reports/summary.md")),
        ]
    )
    check_uncertainty(tmp_path)
    summary = tmp_path / "reports/summary.md"
    summary.write_text(summary.read_text().replace("no significant difference at 0.05", "**strong** better"))
    with pytest.raises(AssertionError):
        check_uncertainty(tmp_path)


# --- every model kind compared, champion and best MLP (issue 14) ------------------------------

CNN_CHAMPION = {
    "champion": "cnn",
    "kind": "cnn",
    "registered_model": "fashion-mnist-classifier",
    "alias": "champion",
    "model_sha256": "0" * 64,
    "reason": "highest validation accuracy (0.9300) among cnn, regularized, baseline",
    "best_mlp": {
        "model": "regularized",
        "kind": "mlp",
        "alias": "best-mlp",
        "model_sha256": "1" * 64,
        "reason": "highest validation accuracy (0.8951) among the MLPs regularized, baseline",
    },
    "candidates": [
        {"model": "cnn", "kind": "cnn", "val_accuracy": 0.93, "test_accuracy": 0.925},
        {"model": "regularized", "kind": "mlp", "val_accuracy": 0.8951, "test_accuracy": 0.8851},
        {"model": "baseline", "kind": "mlp", "val_accuracy": 0.8912, "test_accuracy": 0.8812},
    ],
}


@pytest.fixture
def cnn_run(tmp_path, two_models):
    """Metrics JSONs of two MLPs and a CNN champion, the split counts and champion.json, as report's flags."""
    cnn = two_models[0] | {"model": "cnn", "accuracy": 0.925, "val_accuracy": 0.93, "params": 93_322, "epochs_run": 12}
    paths = []
    for m in [*two_models, cnn]:
        paths.append(tmp_path / "reports/metrics" / f"{m['model']}.json")
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
        paths[-1].write_text(json.dumps(_with_uncertainty(m, m["accuracy"] - 0.006, m["accuracy"] + 0.006, 1.3)))
    stats = {"seed": 1, "counts": {"train": 9, "val": 1, "test": 5}}
    (tmp_path / "reports/data_stats.json").write_text(json.dumps(stats))
    (tmp_path / "reports/champion.json").write_text(json.dumps(CNN_CHAMPION))
    return [
        *("--metrics", *map(str, paths), "--data_stats", str(tmp_path / "reports/data_stats.json")),
        *("--champion", str(tmp_path / "reports/champion.json"), "--figures_dir", str(tmp_path / "reports/figures")),
        *("--chart_out", str(tmp_path / "reports/figures/model_comparison.png")),
        *("--out", str(tmp_path / "reports/summary.md")),
    ]


def test_summary_names_the_winning_kind_and_the_best_mlp(tmp_path, cnn_run):
    report.main(cnn_run)
    text = (tmp_path / "reports/summary.md").read_text()
    assert "Champion by validation accuracy: **cnn**, a CNN; best MLP: **regularized**." in text
    assert "**cnn** (a CNN) is registered as `fashion-mnist-classifier@champion`" in text
    assert "The winning kind is **cnn**." in text
    assert (
        "The best MLP, **regularized**, is registered as `fashion-mnist-classifier@best-mlp`: highest validation"
        in text
    )
    mlp_champion = CNN_CHAMPION | {"champion": "regularized", "kind": "mlp"}
    lines = "\n".join(champion_text.champion_section(mlp_champion))
    assert "(an MLP)" in lines and "the same version carries `fashion-mnist-classifier@best-mlp`" in lines
    no_mlp = champion_text.champion_section(CNN_CHAMPION | {"best_mlp": None})
    assert "this run offers no version for the alias `best-mlp`" in "\n".join(no_mlp)
    gated = "\n".join(champion_text.champion_section(CNN_CHAMPION | {"promotion_tolerance": 0.002}))
    assert "at most 0.002 lower and both were trained on the same data" in gated and "promotion_<alias>" in gated
    assert "promotion gate" not in lines  # a champion.json from before the gate: no sentence about it


def test_the_one_comparison_table_lists_every_model_with_its_kind_and_every_anchor(tmp_path, cnn_run):
    report.main(cnn_run)
    text = (tmp_path / "reports/summary.md").read_text()
    table = [line for line in text.split("## Models", 1)[1].split("\n\n")[1].splitlines()]
    assert table[0].startswith("| Model | Kind | Validation accuracy | Test accuracy | 95 % CI |")
    rows = {row.split(" | ")[0].strip("| *"): row for row in table[2:]}
    assert rows["cnn"].startswith("| cnn | cnn | 0.9300 | 0.9250 | 0.9190–0.9310 |")
    assert "| 93,322 | 12 |" in rows["cnn"]
    assert rows["baseline"].startswith("| baseline | mlp | 0.8912 | 0.8812 |")
    assert {name for name, *_ in PUBLISHED} <= set(rows) and len(rows) == 3 + len(PUBLISHED)
    assert_png(tmp_path / "reports/figures/model_comparison.png")


def test_summary_and_figure_bytes_are_the_same_on_a_second_render(tmp_path, cnn_run):
    outputs = [tmp_path / "reports/summary.md", tmp_path / "reports/figures/model_comparison.png"]
    report.main(cnn_run)
    first = [path.read_bytes() for path in outputs]
    report.main(cnn_run)
    assert [path.read_bytes() for path in outputs] == first


@pytest.mark.parametrize(
    "content, message",
    [
        (None, r"baseline\.json: cannot read the metrics JSON"),
        ("{garbled", r"baseline\.json: cannot read the metrics JSON"),
        ('{"model": "baseline", "accuracy": 0.9}', r"baseline\.json: not a metrics JSON from evaluate \(missing "
         "val_accuracy, per_class\\)"),
    ],
)  # fmt: skip
def test_a_missing_or_garbled_metrics_file_is_named(tmp_path, cnn_run, content, message):
    path = tmp_path / "reports/metrics/baseline.json"
    path.unlink()
    if content is not None:
        path.write_text(content)
    with pytest.raises(PipelineError, match=message):
        report.main(cnn_run)
    assert not (tmp_path / "reports/summary.md").exists()


def test_a_record_without_a_newer_column_shows_a_blank_cell(two_models):
    """A metrics file or a preset record written before a column existed keeps its row: blank there."""
    old = {k: v for k, v in two_models[0].items() if k not in ("macro_f1", "loss", "confidence_intervals")}
    lines = models_table.model_table([old, two_models[1]])
    row = next(line for line in lines if line.startswith("| baseline |"))
    assert row.count("|") == lines[0].count("|")
    cells = [c.strip() for c in row.split("|")[1:-1]]
    headers = [c.strip() for c in lines[0].split("|")[1:-1]]
    assert cells[headers.index("Macro F1")] == "" and cells[headers.index("Test loss")] == ""
    assert cells[headers.index("Test accuracy")] == f"{old['accuracy']:.4f}"


def test_every_table_column_comes_from_the_column_list(two_models):
    from fashion_mlp.metrics.columns import COLUMNS

    header = models_table.model_table(two_models)[0]
    for column in COLUMNS:
        assert (f"| {column.header} |" in header) == bool(column.header), column.key
    assert header.count("95 % CI") == sum(c.interval for c in COLUMNS if c.header)


def test_the_timing_report_compares_test_accuracy_with_training_seconds(tmp_path, cnn_run):
    timings = tmp_path / "reports/timings"
    timings.mkdir(parents=True)
    for name, seconds in (("baseline", 60.0), ("cnn", 200.0), ("old", 5.0)):  # `old`: no metrics, no point
        t = {"model": name, "train_seconds": seconds, "seconds_per_epoch": seconds / 10, "epochs_run": 10}
        (timings / f"{name}.json").write_text(json.dumps(t | {"mlflow_run_id": "r"}))
    report.main(cnn_run)
    text = (timings / "summary.md").read_text()
    assert "| cnn | cnn | 0.9250 | 10 | 200.0 | 20.00 | r |" in text and "| old |  |  | 10 | 5.0 |" in text
    assert_png(timings / "accuracy_vs_time.png")
    assert "200.0" not in (tmp_path / "reports/summary.md").read_text()


def check_comparison(repo: Path) -> None:
    """For the end-to-end runs (issue 14): the summary's one comparison table has a row per evaluated model, with
    the kind and validation accuracy champion.json and its metrics JSON give, and every anchor; it names the
    champion's kind and the best MLP; the figure exists; the untracked timing report has its figure."""
    champion = json.loads((repo / "reports/champion.json").read_text())
    kinds = {c["model"]: c["kind"] for c in champion["candidates"]}
    summary = (repo / "reports/summary.md").read_text()
    for path in sorted((repo / "reports/metrics").glob("*.json")):
        m = json.loads(path.read_text())
        assert f"| {m['model']} | {kinds[m['model']]} | {m['val_accuracy']:.4f} | {m['accuracy']:.4f} |" in summary
    for name, kind, accuracy, note, source in PUBLISHED:
        row = next((line for line in summary.splitlines() if line.startswith(f"| *{name}* |")), "")
        assert row.startswith(anchor_row_start(name, kind, accuracy)) and row.endswith(anchor_row_end(note)), name
        assert f"\n- {name}: {source}\n" in summary, name
    best = champion["best_mlp"]
    mlp = f"best MLP: **{best['model']}**" if best else "no MLP among the models"
    kind = champion_text.KIND_NAMES.get(champion["kind"], champion["kind"])
    assert f"Champion by validation accuracy: **{champion['champion']}**, {kind}; {mlp}." in summary
    assert_png(repo / "reports/figures/model_comparison.png")
    if (repo / "reports/timings/summary.md").exists():
        assert_png(repo / "reports/timings/accuracy_vs_time.png")


def test_check_comparison_accepts_what_report_writes(tmp_path, cnn_run):
    report.main(cnn_run)
    check_comparison(tmp_path)
    summary = tmp_path / "reports/summary.md"
    written = summary.read_text()
    for wrong in (("| cnn | cnn |", "| cnn | mlp |"), ("| 0.9163 |", "| 0.9136 |"), ("local-loss\n", "\n")):
        assert wrong[0] in written
        summary.write_text(written.replace(*wrong))
        with pytest.raises(AssertionError):
            check_comparison(tmp_path)


# --- recorded preset runs (fashion-mlp preset) ---------------------------------------------------


def preset_record(metrics_path: Path) -> dict:
    metrics = json.loads(metrics_path.read_text()) | {"model": "regularized", "accuracy": 0.9112}
    return {
        "preset": "mlp-long",
        "description": "A longer retrain.",
        "model": "regularized",
        "kind": "mlp",
        "goal": 0.91,
        "command": "dvc exp run --temp -n mlp-long -S tune.final_epochs=150",
        "code_commit": "a" * 40,
        "experiment_commit": "b" * 40,
        "recorded": "2026-12-03",
        "seconds": 1234,
        "metrics": metrics,
    }


def test_a_recorded_preset_is_its_own_row_with_its_goal_and_command(tmp_path, cnn_run):
    presets = tmp_path / "reports/presets"
    presets.mkdir()
    (presets / "mlp-long.json").write_text(json.dumps(preset_record(tmp_path / "reports/metrics/regularized.json")))
    report.main([*cnn_run, "--presets_dir", str(presets)])
    text = (tmp_path / "reports/summary.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| regularized (preset mlp-long) |"))
    assert row.startswith("| regularized (preset mlp-long) | mlp |") and "| 0.9112 |" in row
    assert row.endswith("| ≥ 0.910 met |")
    assert "## Longer recipes (presets)" in text
    assert "Ran in 20.6 min on 2026-12-03 (code aaaaaaa, experiment commit bbbbbbb): `dvc exp run --temp" in text
    # a record that names its CPU says where it ran (the weights and the time depend on it)
    zen3 = {"cpu": "AMD EPYC", "family": "25", "model": "1", "vector": "AVX2", "cores": 2}
    record = preset_record(tmp_path / "reports/metrics/regularized.json") | {"machine": zen3}
    (presets / "mlp-long.json").write_text(json.dumps(record))
    report.main([*cnn_run, "--presets_dir", str(presets)])
    text = (tmp_path / "reports/summary.md").read_text()
    assert "Ran in 20.6 min on 2026-12-03 on AMD EPYC (family 25, model 1; AVX2; 2 cores) (code aaaaaaa," in text
    # the calibration and per-class tables hold this run's models only
    assert "regularized (preset" not in text.split("## Calibration", 1)[1]


def test_no_presets_directory_means_no_preset_rows_and_a_bad_record_is_named(tmp_path, cnn_run):
    report.main([*cnn_run, "--presets_dir", str(tmp_path / "absent")])
    assert "Longer recipes" not in (tmp_path / "reports/summary.md").read_text()
    presets = tmp_path / "reports/presets"
    presets.mkdir()
    (presets / "broken.json").write_text(json.dumps({"preset": "broken", "metrics": {}}))
    with pytest.raises(PipelineError, match=r"broken\.json: not a record of `fashion-mlp preset` \(missing descr"):
        report.main([*cnn_run, "--presets_dir", str(presets)])
    (presets / "broken.json").write_text("{garbled")
    with pytest.raises(PipelineError, match=r"broken\.json: cannot read the preset record"):
        report.main([*cnn_run, "--presets_dir", str(presets)])


def test_presets_with_predictions_are_paired_with_each_other_and_with_the_run_models_they_lengthen():
    """...on the same test images only: a run on fewer images pairs none of them and still writes its summary."""
    from fashion_mlp.summary import presets as preset_summary

    actual = np.arange(10).repeat(10)  # 100 test images, 10 a class
    tuned = actual.copy()
    tuned[:20] = (actual[:20] + 1) % 10  # 80 right
    long = actual.copy()
    long[:10] = (actual[:10] + 1) % 10  # 90 right: 10 that tuned gets wrong, none the other way
    records = [
        {"preset": "mlp-long", "model": "tuned", "predicted": "".join(map(str, long))},
        {"preset": "mlp-distilled", "model": "student", "predicted": "".join(map(str, actual))},
        {"preset": "cnn-long", "model": "cnn"},  # recorded before records kept predictions
    ]
    run = {"tuned": tuned == actual, "cnn": actual == actual}
    pairs = preset_summary.preset_pairs(records, run, actual)
    by_names = {(p["a"], p["b"]): p for p in pairs}
    assert set(by_names) == {
        ("tuned (preset mlp-long)", "student (preset mlp-distilled)"),
        ("tuned (preset mlp-long)", "tuned"),
        ("student (preset mlp-distilled)", "tuned"),
    }  # cnn-long has no predictions, so neither it nor cnn is tested
    pair = by_names[("tuned (preset mlp-long)", "tuned")]
    assert (pair["only_a_correct"], pair["only_b_correct"], pair["n"]) == (10, 0, 100)
    assert by_names[("student (preset mlp-distilled)", "tuned")]["better"] == "student (preset mlp-distilled)"
    section = "\n".join(preset_summary.preset_pairs_section(pairs, records))
    assert "### The presets, paired" in section and "cnn (preset cnn-long) recorded no predictions" in section
    assert "| tuned (preset mlp-long) | tuned | 10 | 0 | +0.1000 |" in section
    assert preset_summary.preset_pairs(records[2:], {"tuned": tuned == actual}, actual) == []
    # With cnn-long's predictions, cnn joins; cnn against tuned, two run models, is the run's own section's test.
    records[2]["predicted"] = "".join(map(str, actual))
    pairs = preset_summary.preset_pairs(records, run, actual)
    assert len(pairs) == 9 and ("tuned", "cnn") not in {(p["a"], p["b"]) for p in pairs}
    assert {(p["a"], p["b"]) for p in pairs if "preset" not in p["b"]} >= {("cnn (preset cnn-long)", "cnn")}
    del records[2]["predicted"]
    # A run on fewer test images (prepare.limit_test) cannot pair the records: they are left out, and said so.
    assert preset_summary.preset_pairs(records, {"tuned": tuned[:50] == actual[:50]}, actual[:50]) == []
    smaller = [dict(records[0], predicted=records[0]["predicted"][:50]), records[1]]
    pairs = preset_summary.preset_pairs(smaller, {"tuned": tuned[:50] == actual[:50]}, actual[:50])
    assert {(p["a"], p["b"]) for p in pairs} == {("tuned (preset mlp-long)", "tuned")}
    section = "\n".join(preset_summary.preset_pairs_section(pairs, smaller))
    assert "student (preset mlp-distilled) was scored on another number of test images than this run's" in section
