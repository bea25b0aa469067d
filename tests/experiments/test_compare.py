"""`fashion-mlp compare` (fashion_mlp.experiments: compare, revisions; metrics.paired): two runs, image by image.

The statistics are checked against scikit-learn, `report`'s McNemar and Holm, and a simulation of
known truth. The command runs on a tiny real git + DVC repository whose one stage writes per-image
predictions from params (no TensorFlow), so a real `dvc exp run -S` is compared with HEAD in seconds;
tests/engines/test_e2e_dvc.py compares the smoke run's queued experiments.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import accuracy_score, f1_score

from conftest import run
from fashion_mlp import PipelineError
from fashion_mlp.experiments import compare as compare_stage
from fashion_mlp.metrics import paired, stats
from fashion_mlp.metrics.stats import holm, mcnemar_exact, pairwise_mcnemar

RNG = np.random.default_rng(7)


# --- statistics ---------------------------------------------------------------------


def test_scores_by_matrix_sums_equal_scikit_learn_also_with_a_class_never_seen() -> None:
    y_true = RNG.integers(0, 9, size=500)  # class 9 never occurs and is never predicted
    y_pred = np.where(RNG.random(500) < 0.3, RNG.integers(0, 9, size=500), y_true)
    weights = RNG.integers(0, 4, size=(3, 500))
    got = stats.scores(stats.confusion_counts(y_true, y_pred, weights))
    for i, w in enumerate(weights):
        assert got["accuracy"][i] == pytest.approx(accuracy_score(y_true, y_pred, sample_weight=w))
        expected = f1_score(y_true, y_pred, labels=range(10), average="macro", zero_division=0, sample_weight=w)
        assert got["macro_f1"][i] == pytest.approx(expected)
        per_class = f1_score(y_true, y_pred, labels=range(10), average=None, zero_division=0, sample_weight=w)
        np.testing.assert_allclose(got["per_class_f1"][i], per_class)


def synthetic_pair(n: int, accuracy_a: float, accuracy_b: float, rng) -> tuple:
    """Two classifiers that err on largely the same images, and B's true advantage in accuracy."""
    y_true = rng.integers(0, 10, size=n)
    hardness = rng.random(n)
    wrong_a, wrong_b = hardness < 1 - accuracy_a, hardness + rng.normal(0, 0.05, n) < 1 - accuracy_b
    pred_a, pred_b = (np.where(w, (y_true + 1) % 10, y_true) for w in (wrong_a, wrong_b))
    return y_true, pred_a, pred_b


def test_the_paired_interval_covers_the_true_difference_about_95_times_in_100() -> None:
    """Draw 200 test sets from one population with a known difference in accuracy (B − A = +0.02)."""
    rng = np.random.default_rng(0)
    population = synthetic_pair(200_000, 0.85, 0.87, rng)
    truth = np.mean(population[2] == population[0]) - np.mean(population[1] == population[0])
    covered, widths = 0, []
    for seed in range(200):
        pick = rng.integers(0, len(population[0]), size=2000)
        y_true, pred_a, pred_b = (v[pick] for v in population)
        ci = paired.paired_bootstrap(y_true, pred_a, pred_b, resamples=400, seed=seed)["accuracy"]
        covered += ci["low"] <= truth <= ci["high"]
        widths.append(ci["high"] - ci["low"])
    assert 0.90 <= covered / 200 <= 0.99, covered
    # Pairing pays: much narrower than an interval that treats the runs as independent samples.
    unpaired = 2 * 1.96 * np.sqrt((0.85 * 0.15 + 0.87 * 0.13) / 2000)
    assert np.median(widths) < 0.6 * unpaired, (np.median(widths), unpaired)


def test_identical_predictions_give_p_1_a_zero_interval_and_no_significant_difference() -> None:
    y_true, pred_a, _ = synthetic_pair(1000, 0.9, 0.9, RNG)
    (row,) = paired.compare_models({"m": (y_true, pred_a, pred_a.copy())}, resamples=200, seed=1)
    assert row["p_value"] == row["p_holm"] == 1.0 and row["only_a_correct"] == row["only_b_correct"] == 0
    assert row["accuracy"]["interval"] == {"low": 0.0, "high": 0.0}
    assert row["verdict"] == "no significant difference at 0.05"


def test_mcnemar_and_holm_agree_with_the_reports_tests_and_the_verdict_follows_the_adjusted_p() -> None:
    y_true, pred_a, pred_b = synthetic_pair(3000, 0.86, 0.89, RNG)
    _, pred_c, pred_d = synthetic_pair(3000, 0.88, 0.875, np.random.default_rng(3))
    sides = {"better": (y_true, pred_a, pred_b), "worse": (y_true, pred_b, pred_a), "tie": (y_true, pred_c, pred_d)}
    rows = paired.compare_models(sides, resamples=200, seed=1)
    for row, (truth, a, b) in zip(rows, sides.values(), strict=True):
        # report's test of the pair of models (a, b) is this model's test between the two runs.
        (pair,) = pairwise_mcnemar({"A": a == truth, "B": b == truth})
        assert (row["only_a_correct"], row["only_b_correct"], row["p_value"]) == (
            pair["only_a_correct"], pair["only_b_correct"], pair["p_value"],
        )  # fmt: skip
        assert row == row | mcnemar_exact(a == truth, b == truth)
    assert [r["p_holm"] for r in rows] == holm([r["p_value"] for r in rows])
    assert [r["verdict"] for r in rows] == ["better", "worse", "no significant difference at 0.05"]
    assert rows[0]["p_holm"] < 0.05 < rows[2]["p_holm"]
    assert rows[0]["accuracy"]["interval"]["low"] > 0 > rows[1]["accuracy"]["interval"]["high"]


def test_params_diff_and_the_keys_each_model_reads() -> None:
    a = {"seed": 1, "train": {"m": {"epochs": 2, "hidden": [8]}, "n": {"epochs": 2}}, "tune": {"max_epochs": 3}}
    b = {"seed": 1, "train": {"m": {"epochs": 3, "hidden": [8]}, "n": {"epochs": 2}}, "tune": {"max_epochs": 3}}
    b["prepare"] = {"val_fraction": 0.2}
    diff = compare_stage.params_diff(a, b)
    assert diff == {"prepare.val_fraction": {"a": None, "b": 0.2}, "train.m.epochs": {"a": 2, "b": 3}}
    assert compare_stage.model_keys("m", diff) == ["prepare.val_fraction", "train.m.epochs"]
    assert compare_stage.model_keys("n", diff) == ["prepare.val_fraction"]
    assert compare_stage.model_keys("tuned", diff) == ["prepare.val_fraction"]


# --- the command on a real git + DVC repository ---------------------------------------

MAKE = '''\
"""Writes per-image predictions of every train: entry: image i is wrong when (i * 37) % 100 < errors."""
import csv, os, yaml
from fashion_mlp.data import CLASS_NAMES

params = yaml.safe_load(open("params.yaml"))
for split, folder, n in (("test", "reports/predictions", 400), ("validation", "reports/val_predictions", 200)):
    os.makedirs(folder, exist_ok=True)
    for model, spec in params["train"].items():
        errors = spec["errors"] + (params["shift"] if split == "test" else 0)
        with open(f"{folder}/{model}.csv", "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["actual", "predicted"])
            for i in range(n):
                true = (i + params["offset"]) % 10
                wrong = (i * 37) % 100 < errors
                out.writerow([CLASS_NAMES[true], CLASS_NAMES[(true + wrong) % 10]])
'''
STAGE = """\
stages:
  predict:
    cmd: python make.py
    deps: [make.py]
    params: [train, shift, offset]
    outs: [reports/predictions, reports/val_predictions]
"""


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    """A git + DVC repository: its first commit has no outputs, its second (HEAD) the run's."""
    repo = tmp_path / "tiny"
    repo.mkdir()
    (repo / "make.py").write_text(MAKE)
    (repo / "dvc.yaml").write_text(STAGE)
    params = {"seed": 3, "offset": 0, "shift": 0, "train": {"a": {"errors": 10}, "b": {"errors": 20}}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "code"]):
        run(cmd, repo)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "the run"], repo)
    return repo


def compare_json(repo: Path, *args: str) -> dict:
    return json.loads(run(["fashion-mlp", "compare", *args, "--json", "-"], repo).stdout)


@pytest.mark.slow
def test_an_experiment_against_head_names_the_changed_model_and_leaves_the_other_at_p_1(tiny_repo: Path) -> None:
    repo = tiny_repo
    run(["dvc", "exp", "run", "-n", "more-errors", "-S", "train.a.errors=30"], repo)
    result = compare_json(repo, "HEAD", "more-errors")
    a, b = result["models"]
    assert result["b"].startswith("more-errors (") and result["split"] == "test" and result["images"] == 400
    assert (a["model"], a["only_a_correct"], a["only_b_correct"]) == ("a", 80, 0)  # 20 % more of 400 wrong
    assert a["accuracy"]["difference"] == pytest.approx(-0.2) and a["verdict"] == "worse"
    assert a["p_holm"] < 1e-20 and a["params_changed"] == ["train.a.errors"]
    assert (b["model"], b["p_value"], b["verdict"]) == ("b", 1.0, "no significant difference at 0.05")
    assert b["params_changed"] == [] and result["params_diff"] == {"train.a.errors": {"a": 10, "b": 30}}

    # `dvc exp run` leaves the experiment's results in the workspace: the defaults compare it with HEAD.
    text = run(["fashion-mlp", "compare"], repo).stdout
    assert "A = HEAD (" in text and "B = workspace" in text
    row_a = next(line for line in text.splitlines() if line.startswith("a "))
    assert "0.9000 → 0.7000" in row_a and "B worse" in row_a and f"({a['p_holm']:.1e})" in row_a, text
    row_b = next(line for line in text.splitlines() if line.startswith("b "))
    assert "1.000 (1.000)" in row_b and "no significant difference" in row_b and row_b.endswith("none"), text

    md = repo / "pr.md"
    run(["fashion-mlp", "compare", "HEAD", "more-errors", "--md", str(md)], repo)
    page = md.read_text()
    assert "| `train.a.errors` | 10 | 30 |" in page
    assert "<summary>a: F1 per class</summary>" in page and "<summary>b:" not in page  # b: nothing differs
    assert "selection on the test set" in page


@pytest.mark.slow
def test_the_validation_split_models_on_one_side_and_other_images(tiny_repo: Path) -> None:
    repo = tiny_repo
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("shift: 0", "shift: 5"))
    run(["dvc", "repro"], repo)
    # shift moves only test predictions: validation sees no change, test does.
    assert compare_json(repo, "--split", "validation")["models"][0]["p_value"] == 1.0
    assert compare_json(repo)["models"][0]["only_a_correct"] == 20

    edit = yaml.safe_load((repo / "params.yaml").read_text())
    edit["train"]["c"] = {"errors": 1}
    (repo / "params.yaml").write_text(yaml.safe_dump(edit))
    run(["dvc", "repro"], repo)
    result = compare_json(repo)
    assert [r["model"] for r in result["models"]] == ["a", "b"] and result["only_b"] == ["c"]
    assert "Only in B: c." in run(["fashion-mlp", "compare"], repo).stdout

    edit["offset"] = 1  # other true classes: the runs cannot be paired
    (repo / "params.yaml").write_text(yaml.safe_dump(edit))
    run(["dvc", "repro"], repo)
    failed = run(["fashion-mlp", "compare"], repo, check=False)
    assert failed.returncode != 0 and "a: the test images of HEAD" in failed.stderr, failed.stderr
    assert "cannot be compared image by image" in failed.stderr


@pytest.mark.slow
def test_a_revision_without_outputs_or_cache_is_an_error_naming_the_revision_and_file(tiny_repo: Path) -> None:
    repo = tiny_repo
    failed = run(["fashion-mlp", "compare", "HEAD~1", "HEAD"], repo, check=False)
    assert failed.returncode != 0
    assert "error: HEAD~1 (" in failed.stderr and "has no reports/predictions/a.csv" in failed.stderr, failed.stderr

    failed = run(["fashion-mlp", "compare", "no-such-rev"], repo, check=False)
    assert "revision 'no-such-rev': not a git revision or DVC experiment" in failed.stderr, failed.stderr

    for path in (repo / "reports/predictions").iterdir():
        path.unlink()  # the workspace's copies gone: only the cache could serve HEAD
    run(["rm", "-rf", ".dvc/cache"], repo)
    failed = run(["fashion-mlp", "compare", "HEAD", "HEAD"], repo, check=False)
    assert "reports/predictions/a.csv is not in the DVC cache" in failed.stderr, failed.stderr
    assert "dvc pull" in failed.stderr


def test_a_bad_split_is_refused_by_name() -> None:
    with pytest.raises(PipelineError, match="split 'train': choose one of test, validation"):
        from fashion_mlp.experiments.revisions import read_side

        read_side(None, "train")


def test_markdown_shows_no_per_class_table_for_an_unchanged_model() -> None:
    y_true, pred_a, pred_b = synthetic_pair(500, 0.8, 0.9, RNG)
    rows = paired.compare_models({"x": (y_true, pred_a, pred_b), "y": (y_true, pred_a, pred_a)}, 100, 0)
    for row in rows:
        row["params_changed"] = []
    result = {
        "a": "A", "b": "B", "split": "validation", "images": 500, "resamples": 100, "seed": 0, "alpha": 0.05,
        "models": rows, "params_diff": {}, "only_a": ["old"], "only_b": [],
    }  # fmt: skip
    page = compare_stage.render_markdown(result)
    assert "<summary>x: F1 per class</summary>" in page and "<summary>y:" not in page
    assert "Only in A: old." in page and "selection on the test set" not in page  # validation: for choosing
    assert "Params that differ" not in page
    header = next(line for line in page.splitlines() if line.startswith("| Model"))
    assert header.count("|") == len(compare_stage.HEADERS) + 1
