"""Bootstrap intervals, exact McNemar tests and Holm's adjustment (fashion_mlp.metrics.stats), on synthetic labels."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest

from fashion_mlp.metrics import stats


def synthetic_classifier(n: int, accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n labels and predictions that are right with probability `accuracy` (wrong ones shifted by 1..9)."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 10, n)
    wrong = rng.random(n) >= accuracy
    y_pred = np.where(wrong, (y_true + rng.integers(1, 10, n)) % 10, y_true)
    return y_true, y_pred


def test_bootstrap_interval_covers_the_true_accuracy_of_a_synthetic_classifier():
    y_true, y_pred = synthetic_classifier(4000, 0.9, seed=1)
    ci = stats.bootstrap_intervals(y_true, y_pred, resamples=100, seed=7)
    assert ci["accuracy"]["low"] < 0.9 < ci["accuracy"]["high"]
    assert ci["accuracy"]["low"] <= np.mean(y_true == y_pred) <= ci["accuracy"]["high"]
    # about 2 x 1.96 x sqrt(0.9 x 0.1 / 4000) = 0.0186 wide (100 resamples place the percentiles roughly)
    assert 0.7 * 0.0186 < ci["accuracy"]["high"] - ci["accuracy"]["low"] < 1.3 * 0.0186
    assert ci["macro_f1"]["low"] < ci["macro_f1"]["high"]
    assert ci["level"] == 0.95 and ci["resamples"] == 100 and ci["seed"] == 7
    assert json.loads(json.dumps(ci)) == ci


def test_a_resample_of_cell_counts_scores_like_the_resampled_images():
    """Counts over (true, predicted) cells as sample weights = the images repeated that many times."""
    from sklearn.metrics import accuracy_score, f1_score

    y_true, y_pred = synthetic_classifier(300, 0.7, seed=3)
    cells, draws = stats.resample_weights(y_true, y_pred, resamples=3, seed=5)
    assert draws.shape == (3, len(cells)) and (draws.sum(axis=1) == 300).all()
    for weights in draws:
        t, p = np.repeat(cells[:, 0], weights), np.repeat(cells[:, 1], weights)
        assert accuracy_score(cells[:, 0], cells[:, 1], sample_weight=weights) == pytest.approx(accuracy_score(t, p))
        weighted = f1_score(cells[:, 0], cells[:, 1], average="macro", labels=range(10), sample_weight=weights)
        assert weighted == pytest.approx(f1_score(t, p, average="macro", labels=range(10)))


def test_bootstrap_is_seeded():
    y_true, y_pred = synthetic_classifier(500, 0.8, seed=2)
    first = stats.bootstrap_intervals(y_true, y_pred, resamples=30, seed=42)
    assert stats.bootstrap_intervals(y_true, y_pred, resamples=30, seed=42) == first
    assert stats.bootstrap_intervals(y_true, y_pred, resamples=30, seed=43) != first


def test_bootstrap_macro_f1_is_scikit_learns_on_a_perfect_classifier():
    y = np.repeat(np.arange(10), 20)
    ci = stats.bootstrap_intervals(y, y, resamples=5, seed=0)
    assert ci["accuracy"] == {"low": 1.0, "high": 1.0}
    assert ci["macro_f1"] == {"low": 1.0, "high": 1.0}


@pytest.mark.parametrize("case", ["typical", "a class never predicted", "a class absent", "tiny"])
def test_every_bootstrap_scorer_equals_scikit_learns_to_the_last_bit(case):
    """stats.scores scores every resample at once by hand; scikit-learn's scorers, one resample per call,
    are the reference: the same float for every resample, or the committed intervals would move."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = np.random.default_rng(11)
    n = 12 if case == "tiny" else 3000
    y_true = rng.integers(0, 10, n)
    y_pred = np.where(rng.random(n) < 0.8, y_true, rng.integers(0, 10, n))
    if case == "a class never predicted":
        y_pred[y_pred == 3] = 4
    if case == "a class absent":
        y_true[y_true == 7], y_pred[y_pred == 7] = 0, 0
    cells, draws = stats.resample_weights(y_true, y_pred, resamples=50, seed=3)  # 350 floats a case; sklearn is slow
    t, p = cells[:, 0], cells[:, 1]
    labels = list(range(10))
    reference = {
        "accuracy": lambda w: accuracy_score(t, p, sample_weight=w),
        **{
            f"{average}_{name}": lambda w, score=score, average=average: score(
                t, p, labels=labels, average=average, zero_division=0, sample_weight=w
            )
            for name, score in (("f1", f1_score), ("precision", precision_score), ("recall", recall_score))
            for average in ("macro", "weighted")
        },
    }
    scored = stats.scores(stats.confusion_counts(t, p, draws))
    for key in stats.SCORERS:
        np.testing.assert_array_equal(scored[key], [reference[key](w) for w in draws], err_msg=key)


def test_bootstrap_bounds_any_scored_column_and_adding_one_leaves_the_others_unchanged():
    """columns.py marks which columns get an interval; each is scored on the same resamples, so a
    new interval column cannot move the existing ones."""
    from fashion_mlp.metrics.columns import INTERVALS

    assert set(INTERVALS) <= set(stats.SCORERS)
    y_true, y_pred = synthetic_classifier(800, 0.85, seed=3)
    two = stats.bootstrap_intervals(y_true, y_pred, resamples=40, seed=5)
    more = stats.bootstrap_intervals(y_true, y_pred, 40, 5, keys=("accuracy", "macro_f1", "weighted_f1"))
    assert more["accuracy"] == two["accuracy"] and more["macro_f1"] == two["macro_f1"]
    assert more["weighted_f1"]["low"] < more["weighted_f1"]["high"]
    with pytest.raises(ValueError, match=r"no bootstrap scorer for top5; stats\.SCORERS has accuracy"):
        stats.bootstrap_intervals(y_true, y_pred, 10, 0, keys=("top5",))


def test_bootstrap_refuses_mismatched_or_empty_labels():
    with pytest.raises(ValueError, match="equal, non-empty"):
        stats.bootstrap_intervals(np.zeros(3, int), np.zeros(4, int), 10, 0)
    with pytest.raises(ValueError, match="equal, non-empty"):
        stats.bootstrap_intervals(np.zeros(0, int), np.zeros(0, int), 10, 0)


def _table(b: int, c: int, both: int = 50, neither: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of models A and B with the given 2x2 table (b: only A right, c: only B right)."""
    a = [True] * both + [True] * b + [False] * c + [False] * neither
    b_ = [True] * both + [False] * b + [True] * c + [False] * neither
    return np.array(a), np.array(b_)


def test_mcnemar_matches_the_exact_p_value_of_a_hand_made_table():
    # b = 10, c = 2: p = 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096 = 158 / 4096
    result = stats.mcnemar_exact(*_table(10, 2))
    assert result == {"only_a_correct": 10, "only_b_correct": 2, "p_value": pytest.approx(158 / 4096, rel=1e-12)}
    assert result["p_value"] == pytest.approx(0.0385742, abs=1e-7)
    # symmetric, and concordant images do not matter
    assert stats.mcnemar_exact(*_table(2, 10, both=0, neither=0))["p_value"] == pytest.approx(158 / 4096)


def test_mcnemar_exact_against_the_binomial_sum():
    b, c = 7, 1
    n = b + c
    expected = min(1.0, 2 * sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n)  # 2 x 9 / 256
    assert stats.mcnemar_exact(*_table(b, c))["p_value"] == pytest.approx(expected)
    assert stats.mcnemar_exact(*_table(5, 5))["p_value"] == pytest.approx(1.0)


def test_mcnemar_with_no_discordant_images_is_p_one():
    same = np.array([True, False, True])
    assert stats.mcnemar_exact(same, same) == {"only_a_correct": 0, "only_b_correct": 0, "p_value": 1.0}


def test_mcnemar_refuses_different_image_counts():
    with pytest.raises(ValueError, match="same images"):
        stats.mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


def test_holm_adjustment():
    # sorted 0.01, 0.02, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.02), max(0.04, 1 x 0.04)
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.2]) == [0.2]


def test_pairwise_calls_a_model_better_only_where_the_adjusted_p_is_significant():
    both = np.ones(1000, bool)
    strong = both.copy()
    strong[:60] = False  # 60 wrong
    weak = both.copy()
    weak[:160] = False  # 160 wrong, including strong's 60
    close = both.copy()
    close[:55] = False
    close[990:] = False  # 65 wrong: 55 shared with strong, 10 of its own, and 5 strong gets wrong alone
    pairs = stats.pairwise_mcnemar({"weak": weak, "strong": strong, "close": close})
    assert [(p["a"], p["b"]) for p in pairs] == [("weak", "strong"), ("weak", "close"), ("strong", "close")]
    by_pair = {(p["a"], p["b"]): p for p in pairs}
    assert by_pair["weak", "strong"]["only_b_correct"] == 100 and by_pair["weak", "strong"]["better"] == "strong"
    assert by_pair["weak", "close"]["better"] == "close"
    tight = by_pair["strong", "close"]
    assert (tight["only_a_correct"], tight["only_b_correct"]) == (10, 5)
    assert tight["p_value"] > 0.05 and tight["better"] is None
    for p in pairs:
        assert p["p_holm"] >= p["p_value"] and p["n"] == 1000


def test_pairwise_holm_can_withhold_a_verdict_that_one_test_alone_would_give():
    # b = 10, c = 2: p = 0.0386 alone. A third model identical to `a` makes the same table against `b`,
    # so two tests share the smallest p and Holm multiplies it by 3 (0.116).
    a, b = _table(10, 2)
    alone = stats.pairwise_mcnemar({"a": a, "b": b})
    assert alone[0]["better"] == "a"
    three = stats.pairwise_mcnemar({"a": a, "b": b, "c": a.copy()})
    ab = next(p for p in three if (p["a"], p["b"]) == ("a", "b"))
    assert ab["p_value"] == pytest.approx(158 / 4096)
    assert ab["p_holm"] == pytest.approx(3 * 158 / 4096) and ab["better"] is None
    assert all(p["better"] is None for p in three)
