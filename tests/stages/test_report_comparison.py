"""The summary's comparison of every model (fashion_mlp.summary): the winning kind, the best MLP, one table of
models and published anchors, the timing report, and the recorded preset runs (fashion-mlp preset) with
their paired tests. check_comparison(repo) is for the end-to-end runs of both engines.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_report import PUBLISHED, anchor_row_end, anchor_row_start
from test_report_statistics import with_uncertainty

from conftest import assert_png
from fashion_mlp import PipelineError
from fashion_mlp.stages import report
from fashion_mlp.summary import champion as champion_text
from fashion_mlp.summary import models_table

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
        paths[-1].write_text(json.dumps(with_uncertainty(m, m["accuracy"] - 0.006, m["accuracy"] + 0.006, 1.3)))
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
