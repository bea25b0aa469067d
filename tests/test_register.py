"""Choosing the champion (fashion_mlp.register): by validation accuracy, never by test accuracy."""

from __future__ import annotations

import pytest

from fashion_mlp import register


@pytest.mark.parametrize(
    "scores, winner",
    [
        ({"baseline": 0.89, "regularized": 0.91, "tuned": 0.905}, "regularized"),
        ({"baseline": 0.90, "regularized": 0.90, "tuned": 0.89}, "baseline"),  # ties: first listed
    ],
)
def test_champion_is_the_best_validation_accuracy(scores, winner):
    # Test accuracy is deliberately the reverse order: it must not matter.
    candidates = {m: {"val_accuracy": v, "accuracy": 1 - v} for m, v in scores.items()}
    assert register.choose(candidates) == winner
