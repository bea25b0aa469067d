"""The model card (stages/card.py, summary/model_card.py) and the robustness it measures (metrics/robustness.py).

Fast: every photo-like variant decodes back into the model's frame, the measurement is seeded, and the
card quotes its records. check_model_card(repo) is for the end-to-end runs of both engines.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.images import scale
from fashion_mlp.metrics import robustness
from fashion_mlp.metrics.columns import interval_cell
from fashion_mlp.stages import card
from fashion_mlp.summary import model_card


def garments(n: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Light rectangles of a few shapes on black, one shape per class: Fashion-MNIST-like frames."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    frames = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        height, width = 8 + 2 * (label % 5), 6 + 3 * (label // 5) + label % 3
        top, left = (28 - height) // 2, (28 - width) // 2
        frames[i, top : top + height, left : left + width] = rng.integers(150, 255)
    return frames, labels


def by_shape(x: np.ndarray) -> np.ndarray:
    """A stand-in model: the class of the nearest of the ten shapes, by the lit area's size."""
    area = (x.reshape(len(x), -1) > 0.3).mean(axis=1) * 784
    sizes = np.array([(8 + 2 * (c % 5)) * (6 + 3 * (c // 5) + c % 3) for c in range(10)])
    probs = np.full((len(x), 10), 0.01, dtype=np.float32)
    probs[np.arange(len(x)), np.abs(area[:, None] - sizes[None, :]).argmin(axis=1)] = 0.91
    return probs


@pytest.mark.parametrize("name", list(robustness.VARIANTS))
def test_every_variant_is_a_picture_the_preprocessing_brings_back_into_the_frame(name):
    from fashion_mlp.images import load

    frames, _ = garments(3)
    for i, pixels in enumerate(frames):
        back = load(robustness.VARIANTS[name](pixels, np.random.default_rng(i)), name=name)
        assert back.shape == (28, 28) and back.dtype == np.float32 and 0.0 <= back.min() <= back.max() <= 1.0
        assert back.max() > 0.5, f"{name}: the garment was lost"


def test_the_round_trip_agrees_everywhere_and_the_measurement_is_seeded():
    frames, labels = garments(20)

    def measured(seed: int) -> tuple[dict, list[np.ndarray]]:
        """The figures, and every batch of frames the model was shown (the original, then one per variant)."""
        shown = []

        def predict(x):
            shown.append(x.copy())
            return by_shape(x)

        return robustness.measure(predict, frames, labels, seed=seed), shown

    first, pictures = measured(3)
    assert first["variants"]["PNG of the frame (round trip)"] == {"agreement": 1.0, "accuracy": 1.0}
    assert first["original_accuracy"] == float((by_shape(scale(frames)).argmax(axis=1) == labels).mean()) == 1.0
    for figures in first["variants"].values():
        assert 0.0 <= figures["agreement"] <= 1.0 and 0.0 <= figures["accuracy"] <= 1.0
    again, same_pictures = measured(3)
    assert again == first and len(same_pictures) == len(pictures) == 1 + len(robustness.VARIANTS)
    assert all(np.array_equal(a, b) for a, b in zip(pictures, same_pictures, strict=True))
    _, other_pictures = measured(4)
    assert not all(np.array_equal(a, b) for a, b in zip(pictures, other_pictures, strict=True))  # the seed draws


def test_the_most_frequent_mistakes_come_from_the_predictions_file(tmp_path):
    path = tmp_path / "m.csv"
    rows = [("Shirt", "T-shirt/top")] * 3 + [("Coat", "Pullover")] * 2 + [("Bag", "Bag")] * 5 + [("Dress", "Coat")] * 2
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([("actual", "predicted"), *rows])
    assert card.confusions(path) == [("Shirt", "T-shirt/top", 3), ("Coat", "Pullover", 2), ("Dress", "Coat", 2)]


def record(metrics: dict) -> dict:
    return {
        "model": "cnn",
        "aliases": ["champion"],
        "kind": "cnn",
        "registered_model": "fashion-mnist-classifier",
        "reason": "Chosen for its highest validation accuracy (0.9240) among cnn, tuned",
        "metrics": metrics,
        "explain": {
            "shap": {
                "randomization": {
                    "spearman_abs_on_garment": 0.41,
                    "noise_reference": {"spearman_abs_on_garment": 0.38},
                    "judged_on": "spearman_abs_on_garment",
                    "verdict": "passes",
                },
                "deletion_area": 0.264,
                "insertion_area": 0.71,
                "faithfulness_verdict": "does not beat brightest",
            },
            "lrp": None,
            "deletion": {"random_area": 0.416, "random_garment_area": 0.35, "brightest_area": 0.25},
            "insertion": {"random_area": 0.2, "random_garment_area": 0.3, "brightest_area": 0.5},
        },
        "confusions": [("Shirt", "T-shirt/top", 120)],
        "robustness": {
            "images": 30,
            "seed": 42,
            "original_accuracy": 0.9,
            "variants": {"JPEG": {"agreement": 0.95, "accuracy": 0.88}},
        },
        "data_stats": {"seed": 42, "counts": {"train": 54000, "val": 6000, "test": 10000}},
        "train_sha256": "a" * 64,
        "test_sha256": "b" * 64,
        "block": {"kind": "cnn", "conv": [16, 32]},
        "block_source": "params.yaml, train.cnn",
        "model_sha256": "c" * 64,
    }


def synthetic_metrics() -> dict:
    per_class = {
        name: {"precision": 0.9, "recall": 0.8 + i / 100, "f1": 0.85, "support": 1000}
        for i, name in enumerate(CLASS_NAMES)
    }
    per_class["Shirt"]["f1"] = 0.71
    return {
        "accuracy": 0.9109,
        "macro_f1": 0.9108,
        "val_accuracy": 0.924,
        "params": 108810,
        "epochs_run": 8,
        "kept_epoch": 8,
        "per_class": per_class,
        "confidence_intervals": {
            "accuracy": {"low": 0.9055, "high": 0.9165},
            "macro_f1": {"low": 0.9054, "high": 0.916},
        },
        "calibration": {"temperature": 1.137, "ece": 0.014, "ece_scaled": 0.0066, "bins": 15},
    }


def test_the_card_quotes_its_records_and_says_what_lrp_did_not_cover():
    text = model_card.render(record(synthetic_metrics()))
    assert text.startswith("# Model card: cnn (`fashion-mnist-classifier@champion`)")
    for part in ("Accuracy **0.9109** (95 % CI 0.9055–0.9165)", "macro F1 0.9108", "108,810 parameters",
                 "| Shirt | 0.900 | 0.860 | 0.710 | 1,000 |", "T = 1.137", "| JPEG | 0.950 | 0.8800 |",
                 "| LRP | not run for this kind | |", "Weakest class: Shirt (F1 0.710).",
                 "| SHAP (DeepExplainer) | 0.41 against 0.38: passes | 0.264 |",
                 "Most frequent mistake: Shirt taken for T-shirt/top (120 test images)", "a" * 64,
                 "Out of scope"):  # fmt: skip
        assert part in text, part
    assert "version" not in text.split("do not edit by hand.")[1].split("## In the registry")[0].lower().replace(
        "the registry's copy (the version's description) adds its version number", ""
    )


def check_model_card(repo: Path) -> None:
    """For the end-to-end runs: reports/model_card.md describes the champion and quotes its metrics file
    exactly; its robustness figures are the JSON's; the registry version carries it as its description."""
    import mlflow

    champion = json.loads((repo / "reports/champion.json").read_text())
    text = (repo / "reports/model_card.md").read_text()
    measured = json.loads((repo / "reports/robustness.json").read_text())
    models = [champion["champion"]] + [
        champion["best_mlp"]["model"]
        for _ in [0]
        if champion["best_mlp"] and champion["best_mlp"]["model"] != champion["champion"]
    ]
    assert sorted(measured) == sorted(models)
    for model in models:
        m = json.loads((repo / f"reports/metrics/{model}.json").read_text())
        assert f"# Model card: {model} (" in text
        assert f"Accuracy **{m['accuracy']:.4f}** (95 % CI {interval_cell(m, 'accuracy')})" in text
        for name in CLASS_NAMES:
            c = m["per_class"][name]
            assert f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} |" in text
        png = measured[model]["variants"]["PNG of the frame (round trip)"]
        assert png["agreement"] == 1.0, "the round trip changed a class"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    version = client.get_model_version_by_alias(champion["registered_model"], "champion")
    assert version.description.startswith(f"# Model card: {champion['champion']} (")
    assert f"## In the registry\n\nVersion {version.version} of" in version.description
