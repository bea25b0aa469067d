"""Expected calibration error, temperature scaling and the reliability diagram (fashion_mlp.metrics.calibration)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from conftest import assert_png, no_temporaries
from fashion_mlp.metrics import calibration


def sample_labels(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row, drawn from that row's class probabilities."""
    u = rng.random(len(probabilities))[:, None]
    return np.minimum((u > np.cumsum(probabilities, axis=1)).sum(axis=1), probabilities.shape[1] - 1)


def synthetic_logits(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits z and labels drawn from softmax(z / temperature): the model is right once divided by `temperature`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, (n, 10))
    return z, sample_labels(softmax(z / temperature, axis=1), rng)


def test_ece_of_a_perfectly_calibrated_predictor_is_near_zero():
    z, y = synthetic_logits(20_000, 1.0, seed=0)
    ece = calibration.expected_calibration_error(softmax(z, axis=1), y, bins=15)
    assert ece < 0.02  # sampling noise only


def test_ece_of_an_over_confident_predictor_is_not():
    z, y = synthetic_logits(20_000, 2.5, seed=0)  # the truth is softmax(z / 2.5); softmax(z) claims too much
    ece = calibration.expected_calibration_error(softmax(z, axis=1), y, bins=15)
    assert ece > 0.1


def test_ece_on_a_hand_made_example():
    # two images at confidence 0.9 (one right), two at 0.6 (both right): |0.5 - 0.9| / 2 + |1.0 - 0.6| / 2 = 0.4
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 0, 0, 1])
    assert calibration.expected_calibration_error(probabilities, y, bins=10) == pytest.approx(0.4)
    # one bin: |accuracy - mean confidence| = |0.75 - 0.75|
    assert calibration.expected_calibration_error(probabilities, y, bins=1) == pytest.approx(0.0)


def test_reliability_bins_are_equal_width_and_closed_on_the_right():
    probabilities = np.array([[1 / 15, 0.0], [1.0, 0.0], [0.5, 0.5], [0.07, 0.0]])
    table = calibration.reliability_bins(probabilities, np.array([0, 0, 1, 0]), 15)
    assert table["edges"] == pytest.approx(np.linspace(0, 1, 16))
    assert table["count"].sum() == 4
    assert table["count"][0] == 1  # 1/15 is the right edge of the first bin
    assert table["count"][1] == 1  # 0.07 is just above it
    assert table["count"][7] == 1  # 0.5 lies in (7/15, 8/15]
    assert table["count"][14] == 1  # 1.0 is in the last bin
    assert table["accuracy"][7] == 0.0  # the tie goes to class 0 (argmax), label 1


def test_temperature_scaling_recovers_a_known_temperature():
    z, y = synthetic_logits(20_000, 2.0, seed=1)
    assert calibration.fit_temperature(z, y) == pytest.approx(2.0, rel=0.05)
    z, y = synthetic_logits(20_000, 0.5, seed=2)  # an under-confident model is sharpened
    assert calibration.fit_temperature(z, y) == pytest.approx(0.5, rel=0.05)


def test_log_probabilities_stand_in_for_the_logits():
    """softmax(log p / T) = softmax(z / T): fitting on the model's output is fitting on its logits."""
    z, y = synthetic_logits(5000, 1.5, seed=3)
    from_probabilities = calibration.log_probabilities(softmax(z, axis=1).astype(np.float32))
    direct = calibration.fit_temperature(z, y)
    assert calibration.fit_temperature(from_probabilities, y) == pytest.approx(direct, rel=1e-4)
    assert calibration.fit_temperature(log_softmax(z, axis=1), y) == pytest.approx(direct)
    zeros = calibration.log_probabilities(np.array([[1.0, 0.0]], dtype=np.float32))
    assert np.isfinite(zeros).all()  # float32 underflow does not give -inf


def test_calibrate_fits_on_validation_and_measures_on_test():
    """The temperature is the validation split's: test labels drawn at another temperature do not move it."""
    val_z, y_val = synthetic_logits(10_000, 2.0, seed=4)
    test_z, y_test = synthetic_logits(10_000, 3.0, seed=5)
    result = calibration.calibrate(softmax(val_z, axis=1), y_val, softmax(test_z, axis=1), y_test, bins=15)
    assert result["temperature"] == pytest.approx(2.0, rel=0.05)
    assert result["temperature"] == pytest.approx(calibration.fit_temperature(val_z, y_val), rel=1e-4)
    assert result["fitted_on"] == "validation" and result["val_images"] == 10_000 and result["bins"] == 15
    assert result["ece_scaled"] < result["ece"] and result["nll_scaled"] < result["nll"]
    assert json.loads(json.dumps(result)) == result


def test_scaling_never_changes_a_prediction():
    z, _ = synthetic_logits(1000, 1.0, seed=6)
    for temperature in (0.3, 1.0, 4.0):
        scaled = calibration.scaled_probabilities(z, temperature)
        assert (scaled.argmax(axis=1) == z.argmax(axis=1)).all()
        assert scaled.sum(axis=1) == pytest.approx(np.ones(1000))


def test_nll_is_computed_as_the_metrics_loss():
    from sklearn.metrics import log_loss

    from fashion_mlp.stages.evaluate import compute_metrics

    z, y = synthetic_logits(500, 1.0, seed=7)
    z[0] = [60.0] + [0.0] * 9  # a confident mistake unless its label is 0: clipped like `loss` clips it
    y[0] = 1
    expected = log_loss(y, softmax(z / 2.0, axis=1).astype(np.float32), labels=range(10))
    assert calibration.nll(z, y, 2.0) == pytest.approx(expected)
    p = softmax(z, axis=1).astype(np.float32)
    at_one = calibration.nll(calibration.log_probabilities(p), y)
    assert at_one == pytest.approx(compute_metrics(y, p)["loss"], rel=1e-5)


def test_fit_temperature_refuses_mismatched_labels():
    with pytest.raises(ValueError, match="as many labels"):
        calibration.fit_temperature(np.zeros((3, 10)), np.zeros(2, int))


def test_plot_reliability_writes_png(tmp_path):
    val_z, y_val = synthetic_logits(2000, 2.0, seed=8)
    test_z, y_test = synthetic_logits(1000, 2.0, seed=9)
    test_p = softmax(test_z, axis=1).astype(np.float32)
    result = calibration.calibrate(softmax(val_z, axis=1), y_val, test_p, y_test, bins=15)
    path = tmp_path / "figures" / "m_reliability.png"
    calibration.plot_reliability(test_p, y_test, result, path, "m: reliability")
    assert_png(path, panels=(2, 1))  # the diagram above, the histogram of confidences below
    assert no_temporaries(path.parent)
