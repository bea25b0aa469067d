"""The summary's statistics (issue 12): the bootstrap intervals in the table, McNemar's paired tests and what
the summary may call better, and the calibration section. check_uncertainty(repo) is for the end-to-end runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_png, no_temporaries
from fashion_mlp import PipelineError
from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.metrics.stats import pairwise_mcnemar
from fashion_mlp.stages import evaluate, report
from fashion_mlp.summary import calibration_table, comparison_figure, models_table, significance


def with_uncertainty(m: dict, low: float, high: float, temperature: float) -> dict:
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
        metrics.append(with_uncertainty(m, m["accuracy"] - 0.02, m["accuracy"] + 0.02, 1.2))
        metrics[-1]["confidence_intervals"]["macro_f1"] = {"low": m["macro_f1"] - 0.02, "high": m["macro_f1"] + 0.02}
        paths.append(tmp_path / "predictions" / f"{name}.csv")
        _write_predictions(paths[-1], actual, pred)
    return metrics, paths


def test_model_table_shows_the_intervals(two_models):
    models = [with_uncertainty(two_models[0], 0.8757, 0.8883, 1.3), two_models[1]]
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
    models = [with_uncertainty(two_models[0], 0.87, 0.89, 1.3456), two_models[1]]
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
    with_ci = [with_uncertainty(two_models[0], 0.8757, 0.8883, 1.3), with_uncertainty(two_models[1], 0.88, 0.89, 1.3)]
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
