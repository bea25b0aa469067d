"""explain's data-randomization test (attribution/data_randomization.py): a copy of the architecture trained
on permuted labels, its maps compared with the trained model's beside the layer randomizations.

Tiny seeded MLPs (tests/attribution/tiny_nets.py) on 40 random images: one or two epochs in the fast tier; the
test that they memorize the permuted labels trains 25, twice (slow).
"""

from __future__ import annotations

import numpy as np
import pytest
from tiny_nets import OPTS, images, tiny_mlp

from fashion_mlp.attribution import cascade, data_randomization, model_report


def test_permuted_labels_keep_the_class_counts_but_not_the_pairing_and_are_seeded():
    labels = np.arange(200) % 10
    shuffled = data_randomization.permuted_labels(labels, seed=3)
    assert np.array_equal(np.bincount(shuffled), np.bincount(labels))
    assert (shuffled == labels).mean() < 0.3
    assert np.array_equal(shuffled, data_randomization.permuted_labels(labels, seed=3))
    assert not np.array_equal(shuffled, data_randomization.permuted_labels(labels, seed=4))


@pytest.mark.slow  # trains 25 epochs twice, a few seconds
def test_the_model_learns_the_permuted_labels_not_the_true_ones_and_is_seeded(monkeypatch):
    """Given steps enough it memorizes the permuted labels of 40 pictures; the true ones stay at chance.
    Batches of 8 give it five steps an epoch (explain's 128 would give one)."""
    monkeypatch.setattr(data_randomization, "BATCH", 8)
    x, labels = images(40, seed=5), np.arange(40) % 10
    model = tiny_mlp(seed=1)
    permuted, memorized = data_randomization.permuted_label_model(model, x, labels, epochs=25, seed=2)
    predicted = permuted.predict_on_batch(x).argmax(axis=1)
    assert memorized >= 0.8, memorized
    assert (predicted == data_randomization.permuted_labels(labels, 2)).mean() == memorized
    assert (predicted == labels).mean() <= 0.3
    again, _ = data_randomization.permuted_label_model(model, x, labels, epochs=25, seed=2)
    for a, b in zip(permuted.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    first = [w.copy() for w in model.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(first, model.get_weights(), strict=True))  # the model untouched


def test_the_cascade_compares_the_permuted_label_model_and_maps_blind_to_weights_stay_alike():
    model, x = tiny_mlp(seed=4), images(20, seed=9)
    permuted, _ = data_randomization.permuted_label_model(model, x, np.arange(20) % 10, epochs=2, seed=0)

    def blind(_model):  # a "method" that ignores the model: |x| itself
        return {"input": np.abs(x)}

    report = cascade.cascade(model, blind, x, seed=0, permuted=permuted)["report"]
    assert report["permuted_labels"]["input"]["mean"] == 1.0  # the same map: no sensitivity to the labels
    assert "permuted_labels" not in cascade.cascade(model, blind, x, seed=0)["report"]


@pytest.mark.slow  # a whole explain report twice, one of them training on permuted labels: 10 s
def test_explain_reports_the_data_randomization_only_when_asked():
    model = tiny_mlp(seed=6)
    x_test, y_test = images(20, seed=3), np.arange(20) % 10
    training = (images(40, seed=8), np.arange(40) % 10)
    background = images(20, seed=7)
    opts = OPTS | {"cascade_methods": ["gradient", "lrp"], "smoothgrad_samples": 1, "ig_steps": 1}
    report = model_report.explain_model(model, background, x_test, y_test, opts, 0, True, training)["report"]
    part = report["data_randomization"]
    assert part["images"] == 40 and part["epochs"] == OPTS["data_randomization_epochs"]
    assert 0 <= part["accuracy_on_permuted_labels"] <= 1 and 0 <= part["test_accuracy"] <= 1
    assert set(report["cascade"]["permuted_labels"]) == {"gradient", "lrp"}
    off = opts | {"data_randomization_epochs": 0}
    report = model_report.explain_model(model, background, x_test, y_test, off, 0, True, training)["report"]
    assert report["data_randomization"] is None and "permuted_labels" not in report["cascade"]
