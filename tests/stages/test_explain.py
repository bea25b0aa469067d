"""The `explain` stage: LRP's epsilon rule, SHAP additivity, bad input, the summary's section and the CLI.

Fast tier: tiny nets with seeded random weights (tiny_nets.py), never trained. The slow tests make a whole
report, or run the CLI twice on tiny files (same bytes; a bad model writes nothing).
check_explain_outputs(repo) is for the end-to-end runs of both engines. The sanity checks' own tests are in
test_sanity_checks.py, the gradient methods' in test_gradient_methods.py.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
from tiny_nets import OPTS, images, tiny_mlp

from conftest import CLI, PNG_MAGIC, assert_png, clean_env, no_temporaries
from fashion_mlp.attribution import checks, gradients, lrp, methods, model_report
from fashion_mlp.stages import explain
from fashion_mlp.summary.explanations import summary_section

# The deletion CSV's columns: the deletion curves, then the insertion ones (dvc.yaml's plot reads them).
COLUMNS = [*explain.DELETION_COLUMNS, *(f"insertion_{key}" for key in explain.DELETION_COLUMNS)]


def test_lrp_logits_are_the_models_pre_softmax_scores():
    model, x = tiny_mlp(), images(5)
    scores = lrp.logits(model, x)
    softmax = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, model.predict(x, verbose=0), atol=1e-5)


def test_lrp_conserves_relevance_and_equals_gradient_times_input_without_biases():
    model, x = tiny_mlp(zero_bias=True), images(6)
    targets = np.arange(6) % 10
    relevance, top = lrp.relevance(model, x, targets, epsilon=0.0)
    np.testing.assert_allclose(relevance.reshape(6, -1).sum(axis=1), top, atol=1e-5)
    # Gradient x input by hand, in float64: W1 diag(relu'(z1)) diag(bn scale) W2[:, c].
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    w1, w2 = (layer.kernel.numpy().astype(np.float64) for layer in dense)
    scale, shift = lrp.batchnorm_affine(model.layers[2])
    assert np.all(shift == 0)
    flat = x.reshape(6, -1).astype(np.float64)
    active = (flat @ w1) > 0
    grads = np.stack([w1 @ (active[i] * scale * w2[:, targets[i]]) for i in range(6)])
    np.testing.assert_allclose(relevance.reshape(6, -1), grads * flat, atol=1e-6)


def test_lrp_with_biases_loses_relevance_to_them():
    model, x = tiny_mlp(zero_bias=False), images(6)
    result = methods.lrp_attributions(model, x, np.zeros(6, dtype=int), lrp.Rules(epsilon=0.01))
    summary = methods.conservation_summary(result["relevance_out"], result["relevance_in"])
    assert summary["max_abs_gap"] > 1e-4  # the biases absorb some: the report states how much


def test_lrp_refuses_a_layer_it_does_not_cover():
    model = keras.Sequential([keras.Input(shape=(28, 28, 1)), keras.layers.AveragePooling2D(2), keras.layers.Flatten()])
    with pytest.raises(lrp.UnsupportedLayer, match="AveragePooling2D"):
        lrp.layer_steps(model)


def test_shap_additivity_holds():
    model = tiny_mlp()
    x, targets = images(4), np.array([3, 3, 7, 3])  # two classes: two explainers, each on its own images
    result = methods.shap_attributions(model, images(10, seed=2), x, targets)
    assert result["values"].shape == x.shape
    assert result["additivity_gaps"].max() < 1e-4


def test_reused_shap_explainers_give_shap_attributions_values_bit_for_bit_for_every_model():
    """The layer randomization's SHAP reuses one DeepExplainer per class across models of one architecture
    (their weights copied in): the same values as explainers built afresh for each model, in any order."""
    model, background = tiny_mlp(seed=3), images(10, seed=2)
    x, targets = images(6), np.array([3, 3, 7, 3, 0, 7])
    others = [checks.randomized_copy(model, seed=1), tiny_mlp(seed=5)]
    reused = methods.ShapExplainers(model, background)
    for variant in [*others, model, others[0]]:
        expected = methods.shap_attributions(variant, background, x, targets)["values"]
        np.testing.assert_array_equal(reused.values(variant, x, targets), expected)
    assert set(reused.explainers) == {0, 3, 7}  # one per class, built once


# --- bad input ------------------------------------------------------------------------------


def test_a_file_that_is_not_a_keras_model_is_refused_by_name(tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_text("not a model")
    with pytest.raises(explain.ExplainError, match=r"broken\.keras: not a Keras model"):
        explain.load_model_checked(bad)
    with pytest.raises(explain.ExplainError, match=r"missing\.keras: model file not found"):
        explain.load_model_checked(tmp_path / "missing.keras")


def test_a_model_whose_input_is_not_784_is_refused_by_name(tmp_path):
    path = tmp_path / "small.keras"
    tiny_mlp(input_shape=(10,)).save(path)
    with pytest.raises(explain.ExplainError, match=r"small.keras: the model's input shape is \(None, 10\)"):
        explain.load_model_checked(path)


@pytest.mark.parametrize(
    ("x", "message"),
    [(np.zeros((0, 28, 28)), "is empty"), (np.zeros((5, 27, 28)), r"shape \(27, 28\)"), (np.zeros(5), r"shape \(\)")],
)
def test_an_empty_or_misshapen_background_sample_is_refused_by_name(tmp_path, x, message):
    path = tmp_path / "train.npz"
    np.savez(path, x_train=x, y_train=np.zeros(len(x), dtype=np.uint8))
    with pytest.raises(explain.ExplainError, match=f"train.npz \\(x_train\\).*{message}"):
        explain.load_split(path, "train")


def test_an_npz_without_the_split_is_refused_by_name(tmp_path):
    path = tmp_path / "test.npz"
    np.savez(path, x_val=np.zeros((2, 28, 28)))
    with pytest.raises(explain.ExplainError, match=r"test\.npz: has no x_test and y_test"):
        explain.load_split(path, "test")


def test_every_map_of_a_figure_shares_one_scale(monkeypatch, tmp_path):
    """Both methods explain the logit: one symmetric scale per figure, whichever method is ten times larger."""
    from fashion_mlp.attribution import figures

    used = []
    real = figures.overlay
    monkeypatch.setattr(figures, "overlay", lambda ax, image, attribution, limit: used.append(limit) or real(
        ax, image, attribution, limit))  # fmt: skip
    x, labels = images(4), np.array([0, 1, 0, 1])
    maps = {"shap": images(4, seed=2) - 0.5, "lrp": 10 * (images(4, seed=3) - 0.5)}
    expected = figures.symmetric_limit(np.stack([maps["shap"], maps["lrp"]]))
    figures.plot_examples(x, labels, labels, np.ones(4), maps, tmp_path / "examples.png", "t")
    assert len(used) == 8 and set(used) == {expected}, used
    used.clear()
    figures.plot_class_maps(x, labels, maps, tmp_path / "classes.png", "t")
    means = [maps[k][labels == c].mean(axis=0) for k in ("shap", "lrp") for c in (0, 1)]
    assert len(used) == 4 and used == pytest.approx([figures.symmetric_limit(np.stack(means))] * 4), used
    assert_png(tmp_path / "examples.png", panels=(3, 4))


# --- the summary's section -----------------------------------------------------------------


def report_json(model: str = "baseline") -> dict:
    check = {"spearman": 0.05, "spearman_abs": 0.7, "spearman_abs_on_garment": 0.3}
    check |= {"judged_on": "spearman_abs_on_garment", "noise_reference": {"spearman_abs_on_garment": 0.25}}
    check |= {"reference": "x·noise"}
    return {
        "model": model,
        "shap": {
            "additivity_max_abs_gap": 4e-6,
            "randomization": check | {"verdict": "FAILS"},
            **{"deletion_area": 0.08, "insertion_area": 0.9, "faithfulness_verdict": "beats every control"},
        },
        "lrp": {
            "conservation": {"mean_relevance_out": 9.9, "mean_relevance_in": 9.3},
            "randomization": check | {"spearman_abs_on_garment": 0.2, "verdict": "passes"},
            **{"deletion_area": 0.03, "insertion_area": 0.4, "faithfulness_verdict": "does not beat brightest"},
        },
        "deletion": {"random_area": 0.7, "random_garment_area": 0.5, "brightest_area": 0.2},
        "insertion": {"random_area": 0.1, "random_garment_area": 0.2, "brightest_area": 0.6},
        "reference_methods": {
            "gradient": {
                "label": "Gradient",
                "randomization": check | {"reference": "noise", "verdict": "passes"},
                **{"deletion_area": 0.3, "insertion_area": 0.5, "faithfulness_verdict": "does not beat brightest"},
            }
        },
    }


def test_summary_section_shows_the_checks_and_links_the_figures(tmp_path):
    (tmp_path / "baseline_explain_classes.png").write_bytes(PNG_MAGIC)
    lines = summary_section([report_json()], tmp_path, tmp_path)
    text = "\n".join(lines)
    assert "## Explanations" in text
    row = "| baseline | 4.0e-06 | 9.90 → 9.30 | 0.30 against 0.25 (FAILS) | 0.20 against 0.25 (passes) |"
    assert row + " 0.080 / 0.030 (0.700 / 0.500 / 0.200) | 0.900 / 0.400 (0.100 / 0.200 / 0.600) |" in text
    assert "| beats every control / does not beat brightest |" in text
    assert "| baseline | Gradient | 0.30 (noise: 0.25) | passes | n/a | n/a | 0.300 / 0.500 | does not beat" in text
    assert "| baseline | SHAP | 0.30 (x·noise: 0.25) | FAILS | n/a | n/a | 0.080 / 0.900 | beats every control |" in (
        text
    )
    assert "[Per-class maps](baseline_explain_classes.png)" in text
    assert "Examples" not in text.split("- **baseline**")[1]  # a missing figure is not linked


@pytest.mark.slow  # a whole explain report, every method in the cascade, and its figures: 9 s
def test_a_kind_lrp_does_not_cover_gets_shap_alone_everywhere(tmp_path):
    """The kinds' registry says whether LRP covers a kind (models/kinds.py); without it, explain leaves
    LRP out of the numbers, the figures, the deletion CSV (an empty column, so every model's CSV
    has the plots' fields) and the summary, and keeps everything else."""
    from fashion_mlp.attribution import figures

    model = tiny_mlp(seed=4)
    x = images(40, seed=5)
    y = np.arange(40) % 10
    every = {"cascade_methods": ["shap", "lrp", *gradients.REFERENCE_METHODS]}  # lrp left out: not this kind's
    result = model_report.explain_model(model, x[:20], x, y, OPTS | every, seed=0, lrp=False)
    report = result["report"]
    assert report["lrp"] is None
    assert report["shap"]["deletion_area"] == pytest.approx(result["deletion"][2]["shap"], rel=1e-5)  # the figure's
    assert set(result["sample"][2]) == {"shap"}
    assert set(result["deletion"][1]) == set(result["insertion"][1]) == {"shap", *checks.CONTROLS}
    figures.plot_class_maps(*result["sample"], tmp_path / "classes.png", "no lrp")
    figures.plot_examples(*result["examples"], tmp_path / "examples.png", "no lrp")
    figures.plot_deletion(result["deletion"], result["insertion"], tmp_path / "deletion.png", "no lrp")
    shown = report["images"]["examples_correct"] + report["images"]["examples_mistakes"]
    assert shown >= 2
    assert_png(tmp_path / "classes.png", panels=(1, 10))  # SHAP's row only: a panel per class
    assert_png(tmp_path / "examples.png", panels=(2, shown))  # the images, SHAP's maps
    assert_png(tmp_path / "deletion.png", panels=(1, 2))  # deletion, insertion
    figures.plot_cascade(result["cascade"][0], tmp_path / "cascade.png", "no lrp")
    figures.plot_randomized(*result["cascade"][1:], tmp_path / "randomized.png", "no lrp")
    assert "lrp" not in result["cascade"][0]["cascading"]
    assert_png(tmp_path / "cascade.png", panels=(1, 2))
    assert_png(tmp_path / "randomized.png", panels=(6, None))  # SHAP and the five reference methods
    explain.write_deletion_csv(tmp_path / "deletion.csv", *result["deletion"][:2], result["insertion"][1])
    rows = list(csv.DictReader((tmp_path / "deletion.csv").open()))
    assert list(rows[0]) == ["fraction", *COLUMNS]
    assert {row["lrp"] for row in rows} == {row["insertion_lrp"] for row in rows} == {""}
    assert not any(key.startswith("explain_lrp") for key in explain.metrics_of({"model": "m", **report}))
    row = next(line for line in summary_section([{"model": "m", **report}], tmp_path, tmp_path) if "| m |" in line)
    assert "n/a (kind not covered)" in row and row.count("n/a") == 5


# --- the CLI, twice: same bytes; bad input writes nothing ------------------------------------


def run_cli(workdir: Path, model_path: Path, out: str) -> subprocess.CompletedProcess:
    args = [
        *" ".join(
            f"--{key} {' '.join(map(str, v)) if isinstance(v := value, list) else v}" for key, value in OPTS.items()
        ).split(),
        *("--seed", "3", "--threads", "1", "--experiment", "explain-test", "--model", "tiny"),
        *("--model_path", str(model_path), "--train_data", "train.npz", "--test_data", "test.npz"),
        *("--json_out", f"{out}/tiny.json", "--deletion_out", f"{out}/tiny_deletion.csv"),
        *("--classes_png", f"{out}/classes.png", "--examples_png", f"{out}/examples.png"),
        *("--deletion_png", f"{out}/deletion.png", "--cascade_png", f"{out}/cascade.png"),
        *("--randomized_png", f"{out}/randomized.png"),
    ]
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}")
    command = [str(CLI), "explain", *args]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_gives_the_same_bytes_twice_and_writes_nothing_for_a_bad_model(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 40)):
        np.savez(
            tmp_path / f"{split}.npz",
            **{f"x_{split}": rng.random((n, 28, 28)).astype(np.float32), f"y_{split}": np.arange(n) % 10},
        )
    tiny_mlp().save(tmp_path / "tiny.keras")
    for out in ("a", "b"):
        result = run_cli(tmp_path, tmp_path / "tiny.keras", out)
        assert result.returncode == 0, result.stderr[-3000:]
    for name in ("tiny.json", "tiny_deletion.csv", "classes.png", "examples.png", "deletion.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    report = json.loads((tmp_path / "a" / "tiny.json").read_text())
    assert report["shap"]["additivity_max_abs_gap"] < 1e-4
    shown = report["images"]["examples_correct"] + report["images"]["examples_mistakes"]
    assert_png(tmp_path / "a" / "classes.png", panels=(2, 10))  # SHAP, LRP; a panel per class
    assert_png(tmp_path / "a" / "examples.png", panels=(3, shown))
    assert_png(tmp_path / "a" / "deletion.png", panels=(1, 2))
    (tmp_path / "bad.keras").write_text("not a model")
    result = run_cli(tmp_path, tmp_path / "bad.keras", "c")
    assert result.returncode != 0
    assert "bad.keras: not a Keras model" in result.stderr
    assert not (tmp_path / "c").exists()


# --- for the end-to-end runs of both engines -------------------------------------------------


def check_explain_outputs(repo: Path) -> None:
    """What `explain` must leave in a finished run of either engine (called by the e2e tests)."""
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    steps = params["explain"]["deletion_steps"]
    for model in [*params["train"], "tuned"]:
        report = json.loads((repo / "reports" / "explain" / f"{model}.json").read_text())
        assert report["model"] == model
        assert report["shap"]["additivity_max_abs_gap"] < 1e-3, model
        for method in ("shap", "lrp"):
            check = report[method]["randomization"]
            assert -1.0 <= check["spearman_abs"] <= 1.0, (model, method)
            # the verdict is the one its own figures call for: FAILS when its interval is above the noise maps'
            # by more than the margin (without the margin, a Zen 3's smoke run landed in between and failed here)
            key = check["judged_on"]
            above = check["interval"][key][0] > check["noise_reference_interval"][key][1] + check["margin"]
            assert check["verdict"] == ("FAILS" if above else "passes"), model
            assert 0.0 <= report[method]["deletion_area"] <= 1.0, model
        assert report["lrp"]["conservation"]["mean_relevance_out"] != 0
        with open(repo / "reports" / "deletion" / f"{model}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == ["fraction", *COLUMNS]
        assert len(rows) == steps + 1
        assert all(0.0 <= float(row[key]) <= 1.0 for row in rows for key in COLUMNS)
        figures = repo / "reports" / "figures"
        shown = report["images"]["examples_correct"] + report["images"]["examples_mistakes"]
        assert_png(figures / f"{model}_explain_classes.png", panels=(2, 10))  # SHAP, LRP; a panel per class
        assert_png(figures / f"{model}_explain_examples.png", panels=(3, shown))  # the images, SHAP, LRP
        assert_png(figures / f"{model}_explain_deletion.png", panels=(1, 2))
        assert_png(figures / f"{model}_explain_cascade.png", panels=(1, 2))  # cascading, independent
        layers = report["cascade"]["layers"]
        assert all(len(steps) == len(layers) for steps in report["cascade"]["cascading"].values()), model
        rows = len(report["cascade"]["cascading"])  # a row per method of explain.cascade_methods
        assert_png(figures / f"{model}_explain_randomized.png", panels=(rows, None))
    assert "## Explanations (SHAP and LRP)" in (repo / "reports" / "summary.md").read_text()
    assert no_temporaries(repo / "reports" / "explain")
