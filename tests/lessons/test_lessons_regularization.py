"""The lessons `regularization_strength` and `small_data` on synthetic data: their checks hold where the claim
holds and fail when it is broken on purpose (alpha ignored, L2 ignored, the remedies left out)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_png
from fashion_mlp.lessons import regularization_strength, small_data
from fashion_mlp.lessons.regularization_strength import falls

TOY = {"alphas": [0.1, 1.0, 10.0], "toy_hidden": [10, 10], "toy_max_iter": 500}


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten faint class prototypes under noise: 100 images are memorized long before the classes are learned."""
    prototypes = np.random.default_rng(99).random((10, 784))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    return (0.15 * prototypes[y] + 0.85 * rng.random((n, 784))).astype(np.float32), y


def data(n: int) -> dict[str, np.ndarray]:
    (x, y), (x_val, y_val) = synthetic(n, 1), synthetic(500, 2)
    return {"x": x, "y": y, "x_val": x_val, "y_val": y_val}


def test_falls_needs_a_real_fall_and_forgives_l_bfgs_leftovers_only() -> None:
    assert falls([3.0, 1.0, 0.0]) and falls([5.0, 0.0, 1e-6])  # both flattened to zero: no rise
    assert not falls([3.0, 3.0, 3.0]) and not falls([3.0, 4.0, 1.0]) and not falls([3.0, 0.0, 0.1])


def test_a_stronger_alpha_shrinks_the_weights_and_smooths_the_boundary() -> None:
    shapes = regularization_strength.toy(TOY, seed=0)
    assert set(shapes["norm"]) == {"moons", "circles", "linearly separable"}
    assert all(map(falls, shapes["norm"].values())), shapes["norm"]
    assert all(map(falls, shapes["slope"].values())), shapes["slope"]


def test_the_toy_checks_fail_when_alpha_is_ignored(monkeypatch) -> None:
    import sklearn.neural_network

    real = sklearn.neural_network.MLPClassifier
    monkeypatch.setattr(sklearn.neural_network, "MLPClassifier", lambda alpha, **kw: real(alpha=1e-4, **kw))
    shapes = regularization_strength.toy(TOY, seed=0)
    assert not any(map(falls, shapes["norm"].values())), shapes["norm"]
    assert not any(map(falls, shapes["slope"].values())), shapes["slope"]


@pytest.mark.slow
def test_l2_narrows_the_gap_and_the_checks_fail_when_l2_is_ignored(monkeypatch, tmp_path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    options = {"alphas": [0.1, 10.0], "toy_hidden": [10], "toy_max_iter": 200, "epochs": 8, "batch_size": 32}
    options |= {"learning_rate": 0.001, "dropout": 0.2, "l2": [0.0, 1.0]}  # 1.0: strong enough to matter in 8 epochs
    options |= {"step_tolerance": 0.01, "gap_shrinks_to": 0.5, "too_much_drop": 0.02}
    train = data(300)
    record = regularization_strength.run(options, train, seed=0)
    assert record["holds"], (record["passed"], record["figures"]["gap"])
    regularization_strength.plot(record, tmp_path / "lesson.png")
    assert_png(tmp_path / "lesson.png")
    right = regularization_strength.tutorial_net
    monkeypatch.setattr(
        regularization_strength, "tutorial_net", lambda start, rate, l2, lr: right(start, rate, 0.0, lr)
    )
    ignored = regularization_strength.run(options, train, seed=0)
    assert not ignored["passed"]["the strongest L2 leaves less than 0.5 of the unregularized gap"], ignored["figures"]
    assert not ignored["passed"]["the strongest L2 lowers both accuracies by at least 0.02"]


@pytest.mark.slow
def test_a_small_set_overfits_and_the_check_fails_without_the_remedies(monkeypatch, tmp_path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    options = {"small_images": 100, "epochs": 15, "large_epochs": 5, "batch_size": 32, "learning_rate": 0.001}
    options |= {"dropout": 0.2, "l2": 1.0, "patience": 3, "monitor_images": 200, "larger_by": 0.05, "narrower_by": 0.03}
    train, trained, measure = data(300), {}, small_data.measure

    def once(arrays, start, options, remedies, epochs):  # the same net on the same images: trained once
        key = (len(arrays[0]), remedies, epochs)
        trained[key] = trained.get(key) or measure(arrays, start, options, remedies, epochs)
        return trained[key]

    monkeypatch.setattr(small_data, "measure", once)
    record = small_data.run(options, train, seed=0)
    assert record["holds"], (record["passed"], record["figures"]["runs"])
    small_data.plot(record, tmp_path / "lesson.png")
    assert_png(tmp_path / "lesson.png")
    monkeypatch.setattr(small_data, "ALL", small_data.PLAIN)  # no remedies: "regularized" is the plain net
    bare = small_data.run(options, train, seed=0)
    assert list(bare["passed"].values()) == [True, False], bare["figures"]["runs"]
