"""The XOR lesson (fashion_mlp.lessons.xor): what one linear threshold unit can and cannot separate."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_mlp.lessons import xor


def test_xor_data():
    x, y = xor.xor_data()
    assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert y.tolist() == [0, 1, 1, 0]


def test_no_line_separates_xor_but_every_three_points_are():
    x, y = xor.xor_data()
    proof = xor.linear_separability_proof(x, y)
    assert proof["all_points_separable"] is False
    assert proof["best_achievable_accuracy"] == 0.75
    subsets = proof["subsets_of_size_n_minus_1"]
    assert sorted(tuple(s["points"]) for s in subsets) == [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
    for s in subsets:  # each certificate really separates its three points
        assert s["separable"]
        idx = s["points"]
        decision = xor.perceptron_decision(s["w"], s["b"], x[idx])
        assert np.array_equal(decision > 0, y[idx] == 1), s


def test_random_lines_never_beat_three_quarters():
    """An independent check of the LP: 200,000 random lines get at most 3 of the 4 XOR points right."""
    x, y = xor.xor_data()
    rng = np.random.default_rng(0)
    w = rng.normal(size=(200_000, 2))
    b = rng.normal(size=200_000)
    predictions = (w @ x.T.astype(float) + b[:, None]) > 0
    accuracy = (predictions == (y == 1)).mean(axis=1)
    assert accuracy.max() == 0.75


@pytest.mark.parametrize("labels, best", [([0, 0, 0, 1], 1.0), ([0, 1, 1, 1], 1.0), ([1, 0, 0, 1], 0.75)])
def test_proof_tells_separable_labellings_apart(labels, best):
    """AND and OR are linearly separable; XNOR, like XOR, is not."""
    x, _ = xor.xor_data()
    proof = xor.linear_separability_proof(x, np.array(labels))
    assert proof["best_achievable_accuracy"] == best
    assert proof["all_points_separable"] is (best == 1.0)


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_trained_perceptron_stays_below_the_ceiling(seed):
    x, y = xor.xor_data()
    result = xor.train_perceptron(x, y, seed)
    assert result["accuracy"] <= 0.75
    decision = xor.perceptron_decision(result["weights"], result["bias"], x)
    assert result["predictions"] == (decision > 0).astype(int).tolist()
    assert result == xor.train_perceptron(x, y, seed)  # seeded: the same every time
