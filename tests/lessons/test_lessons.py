"""The tutorial's claims as lessons (fashion_mlp.lessons, `fashion-mlp lesson <name>`): each check fails
when its claim fails. Broken on purpose: the backward pass, Adam's update, the perceptron rule, a net
too narrow to approximate."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from conftest import CLI, REPO, SUBPROCESS_TIMEOUT, assert_png, clean_env
from fashion_mlp import PipelineError
from fashion_mlp.config import cli_flags, load_params
from fashion_mlp.lessons import (
    backprop,
    deep_net,
    initialization,
    learned_features,
    optimizers,
    perceptron,
    universal_approximation,
    vanishing_gradients,
)
from fashion_mlp.lessons.catalogue import LESSONS
from fashion_mlp.stages import lesson as lesson_stage

PARAMS_PATH = REPO / "params.yaml"
RNG = np.random.default_rng(0)
X = RNG.random((8, 784)) * (RNG.random((8, 784)) > 0.5)  # half the pixels dark, like Fashion-MNIST's borders
Y = RNG.integers(0, 10, size=8)


# --- backprop ---------------------------------------------------------------------------


def test_the_backward_pass_agrees_with_finite_differences() -> None:
    errors = backprop.gradient_check(X, Y, np.random.default_rng(1), entries=20, rate=0.2)
    assert set(errors) == set(backprop.NAMES)
    assert max(errors.values()) <= backprop.LIMITS["gradient_check_max_rel_error"], errors


@pytest.mark.parametrize(
    "fault",
    ["no ReLU mask", "no dropout mask", "sum instead of mean"],
)
def test_a_broken_backward_pass_fails_the_gradient_check(monkeypatch, fault: str) -> None:
    right = backprop.backward

    def broken(p, cache, y):
        if fault == "no ReLU mask":
            cache = dict(cache, z1=np.abs(cache["z1"]) + 1)  # every unit "active"
        elif fault == "no dropout mask":
            cache = dict(cache, keep=None)
        grads = right(p, cache, y)
        return {k: v * len(y) for k, v in grads.items()} if fault == "sum instead of mean" else grads

    monkeypatch.setattr(backprop, "backward", broken)
    errors = backprop.gradient_check(X, Y, np.random.default_rng(1), entries=20, rate=0.2)
    assert max(errors.values()) > 100 * backprop.LIMITS["gradient_check_max_rel_error"], (fault, errors)


def test_hand_written_optimizers_do_what_their_formulas_say() -> None:
    p, g = {"w": np.array([1.0, -2.0])}, {"w": np.array([0.5, -0.5])}
    backprop.sgd_step(p, g, lr=0.1)
    np.testing.assert_allclose(p["w"], [0.95, -1.95])
    state: dict = {}
    backprop.momentum_step(p, g, state, lr=0.1)
    backprop.momentum_step(p, g, state, lr=0.1)  # v = 0.9 * (-0.05) - 0.05 = -0.095
    np.testing.assert_allclose(p["w"], [0.95 - 0.05 - 0.095, -1.95 + 0.05 + 0.095])
    q, state = {"w": np.array([0.0])}, {}
    backprop.adam_step(q, {"w": np.array([3.0])}, state, lr=0.01)
    assert q["w"][0] == pytest.approx(-0.01, rel=1e-5)  # Adam's first step: lr against the gradient's sign


@pytest.mark.slow
def test_tensorflow_agrees_and_a_broken_adam_is_caught(monkeypatch) -> None:
    import keras

    keras.utils.set_random_seed(0)  # TensorFlow may be initialized already in this worker: no thread settings
    x, y = X.astype(np.float32), Y
    figures = backprop.tensorflow_checks(x, y, np.random.default_rng(2), rate=0.2, lr=0.001)
    for key in ("tf_max_abs_diff", "adam_max_abs_diff", "momentum_max_abs_diff"):
        assert figures[key] <= backprop.LIMITS[key], figures

    def no_bias_correction(p, grads, state, lr, b1=0.9, b2=0.999, eps=1e-7):
        for k in p:
            m = state[f"m_{k}"] = b1 * state.get(f"m_{k}", 0.0) + (1 - b1) * grads[k]
            v = state[f"v_{k}"] = b2 * state.get(f"v_{k}", 0.0) + (1 - b2) * grads[k] ** 2
            p[k] -= (lr * m / (np.sqrt(v) + eps)).astype(p[k].dtype)

    monkeypatch.setattr(backprop, "adam_step", no_bias_correction)
    broken = backprop.tensorflow_checks(x, y, np.random.default_rng(2), rate=0.2, lr=0.001)
    assert broken["adam_max_abs_diff"] > 10 * backprop.LIMITS["adam_max_abs_diff"], broken


# --- perceptron -------------------------------------------------------------------------


def test_the_rule_converges_on_and_and_cycles_on_xor() -> None:
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    on_and = perceptron.perceptron_rule(x, perceptron.AND_Y, max_epochs=100)
    assert on_and["converged"] and on_and["mistakes"][-1] == 0
    w, b = np.array(on_and["w"]), on_and["b"]
    assert list((x @ w + b > 0).astype(int)) == list(perceptron.AND_Y)
    on_xor = perceptron.perceptron_rule(x, np.array([0, 1, 1, 0]), max_epochs=100)
    assert not on_xor["converged"] and on_xor["cycle"] is not None and min(on_xor["mistakes"]) > 0


def test_the_perceptron_lesson_holds_and_fails_when_its_net_cannot_learn() -> None:
    options = load_params(PARAMS_PATH)["lessons"]["perceptron"]
    record = perceptron.run(options, None, seed=42)
    assert record["holds"] and all(record["passed"].values()), record["passed"]
    assert record["figures"]["and_converged"] and not record["figures"]["xor_converged"]
    untrained = perceptron.run(dict(options, xor_steps=1, xor_restarts=1), None, seed=42)
    assert not untrained["holds"]
    hidden_check = "XOR: a line separates the trained hidden layer's outputs"
    assert untrained["passed"] == {**record["passed"], hidden_check: False}


# --- universal approximation ------------------------------------------------------------


def test_error_falls_with_width_and_a_narrow_net_fails_the_tolerance() -> None:
    options = {"widths": [1, 4, 16], "points": 60, "max_iter": 2000, "restarts": 1, "tolerance": 0.05}
    record = universal_approximation.run(options, None, seed=0)
    errors = record["figures"]["rms_error"]
    assert errors[0] > 5 * errors[-1] and record["holds"], errors
    narrow = universal_approximation.run(dict(options, widths=[1, 2]), None, seed=0)
    assert not narrow["holds"] and not narrow["passed"]["the widest net's RMS error is below 0.05"]


def test_restarts_keep_the_best_training_fit_and_a_rise_within_the_tolerance_is_no_failure(monkeypatch) -> None:
    options = {"widths": [2, 8], "points": 40, "max_iter": 300, "restarts": 3, "tolerance": 0.05}
    fitted = []
    real_fit = universal_approximation.fit

    def recording_fit(width, x, y, opts, seed):
        net = real_fit(width, x, y, opts, seed)
        fitted.append((width, seed, net.loss_))
        return net

    monkeypatch.setattr(universal_approximation, "fit", recording_fit)
    record = universal_approximation.run(options, None, seed=7)
    assert [(w, s) for w, s, _ in fitted] == [(2, 7), (2, 8), (2, 9), (8, 7), (8, 8), (8, 9)]
    monkeypatch.setattr(universal_approximation, "fit", real_fit)
    for width, error in zip(options["widths"], record["figures"]["rms_error"], strict=True):
        best_seed = min((loss, s) for w, s, loss in fitted if w == width)[1]
        alone = universal_approximation.run(dict(options, widths=[width], restarts=1), None, seed=best_seed)
        assert alone["figures"]["rms_error"] == [error]  # the kept fit is the lowest training loss's
    # Within the tolerance a rise is the optimizer's luck, not a failure; above it, it is.
    assert universal_approximation.falls([0.3, 0.01, 0.015], tolerance=0.05)
    assert not universal_approximation.falls([0.3, 0.01, 0.06], tolerance=0.05)
    assert not universal_approximation.falls([0.3, 0.4, 0.01], tolerance=0.05)
    assert universal_approximation.falls([0.3, 0.31, 0.01], tolerance=0.05)  # within 5 %


# --- deep nets: vanishing gradients, initialization -------------------------------------------

SMALL = np.random.default_rng(3)
DEEP_TRAIN = {"x": SMALL.random((300, 784)) * (SMALL.random((300, 784)) > 0.5), "y": SMALL.integers(0, 10, 300)}


@pytest.mark.parametrize("activation", sorted(deep_net.ACTIVATIONS))
def test_the_deep_backward_pass_agrees_with_finite_differences(activation: str) -> None:
    rng = np.random.default_rng(4)
    x, y = rng.random((5, 6)), rng.integers(0, 3, 5)
    layers = deep_net.init([6, 5, 4, 3], "glorot", rng)
    grads = deep_net.backward(layers, deep_net.forward(layers, x, activation), y, activation)
    eps = 1e-6
    for i, layer in enumerate(layers):
        for index in [(0, 0), (1, 2), (2, 1)]:
            saved = layer["W"][index]
            layer["W"][index] = saved + eps
            up = deep_net.loss(deep_net.forward(layers, x, activation), y)
            layer["W"][index] = saved - eps
            down = deep_net.loss(deep_net.forward(layers, x, activation), y)
            layer["W"][index] = saved
            assert (up - down) / (2 * eps) == pytest.approx(grads[i]["W"][index], rel=1e-5, abs=1e-9), (activation, i)


VG = {"depth": 8, "width": 16, "probe_images": 64, "steps": 20, "batch_size": 32, "learning_rate": 0.05}
VG |= {"vanishing_below": 1e-3, "healthy_above": 0.1}


def test_the_sigmoid_gradient_vanishes_and_relu_s_does_not() -> None:
    record = vanishing_gradients.run(VG, DEEP_TRAIN, seed=0)
    ratios = record["figures"]["ratio_at_init"]
    assert record["holds"] and ratios["sigmoid"] < 1e-3 < 0.1 < ratios["relu"], ratios


def test_the_vanishing_check_fails_if_the_sigmoid_net_were_a_relu_net(monkeypatch) -> None:
    monkeypatch.setattr(deep_net, "ACTIVATIONS", dict(deep_net.ACTIVATIONS, sigmoid=deep_net.ACTIVATIONS["relu"]))
    monkeypatch.setattr(vanishing_gradients, "SETUPS", {"sigmoid": "he", "tanh": "glorot", "relu": "he"})
    record = vanishing_gradients.run(VG, DEEP_TRAIN, seed=0)
    assert not record["holds"] and not record["passed"]["sigmoid: first / last layer below 0.001 at init"]


INIT = {"depth": 8, "width": 16, "probe_images": 64, "steps": 10, "batch_size": 32, "learning_rate": 0.05}
INIT |= {"fading_below": 0.01, "steady_between": [0.3, 3.0]}


def test_zeros_never_break_symmetry_small_fades_and_he_keeps_the_spread() -> None:
    record = initialization.run(INIT, DEEP_TRAIN, seed=0)
    assert record["holds"], record["passed"]
    assert record["figures"]["unit_spread_after_training"]["zeros"] == 0.0
    assert record["figures"]["last_over_first_spread"]["small"] < 1e-3


def test_the_symmetry_check_catches_an_initializer_that_is_not_zeros(monkeypatch) -> None:
    monkeypatch.setattr(deep_net, "INITIALIZERS", dict(deep_net.INITIALIZERS, zeros=lambda n_in, n_out: 0.01))
    record = initialization.run(INIT, DEEP_TRAIN, seed=0)
    assert not record["passed"]["zeros: the hidden units are still copies after training"]


# --- optimizers -----------------------------------------------------------------------------


@pytest.mark.slow
def test_momentum_beats_plain_sgd_and_the_check_fails_without_it(monkeypatch) -> None:
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(5)
    train = {"x": rng.random((600, 784)), "y": rng.integers(0, 10, 600)}
    train["x"][np.arange(600), train["y"] * 70] = 3.0  # a learnable signal: one bright pixel per class
    train |= {"x_val": train["x"][:200], "y_val": train["y"][:200]}
    options = {"images": 600, "epochs": 1, "batch_size": 32, "dropout": 0.2, "sgd_learning_rate": 0.01}
    options |= {"momentum": 0.9, "adaptive_learning_rate": 0.001, "tolerance": 0.05}
    record = optimizers.run(options, train, seed=0)
    assert record["passed"]["momentum is ahead of plain SGD after the first epoch"], record["curves"]
    no_momentum = optimizers.run(dict(options, momentum=0.0), train, seed=0)  # momentum 0 is plain SGD
    assert no_momentum["curves"]["momentum"] == no_momentum["curves"]["SGD"]
    assert not no_momentum["holds"]


# --- learned features ---------------------------------------------------------------------


def saved_model(path, kernel: np.ndarray) -> dict:
    """A .keras file as Keras writes one (config.json and HDF5 weights), holding only a first-layer kernel."""
    import io
    import zipfile

    import h5py

    conv = kernel.ndim == 4
    names = ["InputLayer", "Reshape", "Conv2D", "Flatten", "Dense"] if conv else ["InputLayer", "Flatten", "Dense"]
    layers = [{"class_name": c, "config": {"name": c.lower()}} for c in names]
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as weights:
        weights[f"layers/{'conv2d' if conv else 'dense'}/vars/0"] = kernel
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"config": {"layers": layers}}))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def smooth_units(units: int, rng) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(rng.normal(size=(28, 28)), 2).ravel() for _ in range(units)], axis=1)


def local_units(units: int) -> np.ndarray:
    """Edge detectors: a Sobel derivative in one 3x3 patch of each unit, zeros elsewhere."""
    kernel = np.zeros((units, 28, 28))
    for unit in range(units):
        row, column = 3 + 2 * (unit % 10), 3 + (unit * 7) % 20
        sobel = learned_features.SOBEL
        kernel[unit, row : row + 3, column : column + 3] = sobel.T if unit % 2 else sobel
    return kernel.reshape(units, -1).T


LF = {"window": 7, "edge_share": 0.5, "structure_above": 0.1, "local_share": 0.5, "units_shown": 4}
STRUCTURE = "every MLP's first-layer units are pictures with structure (median neighbour correlation ≥ 0.1)"
LOCAL = "an MLP's first-layer units are local, like edge detectors (≥ 0.5 of a unit's weight in one 7x7 window)"


def test_the_measures_tell_noise_patterns_and_edges_apart() -> None:
    rng = np.random.default_rng(6)
    noise, smooth = rng.normal(size=(784, 20)), smooth_units(20, rng)
    assert np.abs(learned_features.neighbour_correlation(noise)).max() < 0.15
    assert learned_features.neighbour_correlation(smooth).min() > 0.7
    np.testing.assert_allclose(learned_features.window_share(local_units(6), 7), 1.0)
    assert learned_features.window_share(noise, 7).max() < 0.2
    sobel = np.stack([learned_features.SOBEL, learned_features.SOBEL.T, -learned_features.SOBEL])
    np.testing.assert_allclose(learned_features.gradient_share(sobel), 1.0)
    np.testing.assert_allclose(learned_features.gradient_share(np.ones((1, 3, 3))), 0.0, atol=1e-12)


def test_the_lesson_reads_saved_models_and_each_check_can_go_either_way(tmp_path) -> None:
    rng = np.random.default_rng(7)
    filters = np.stack([learned_features.SOBEL] * 3 + [rng.normal(size=(3, 3)) for _ in range(5)], axis=-1)
    models = {
        "patterns": saved_model(tmp_path / "patterns.keras", smooth_units(32, rng)),
        "cnn": saved_model(tmp_path / "cnn.keras", filters[:, :, None, :]),
    }
    record = learned_features.run(LF, models, seed=0)
    assert record["passed"] == {STRUCTURE: True, LOCAL: False} and not record["holds"]
    assert record["figures"]["cnn"]["edge_filters"] >= 3 and record["figures"]["cnn"]["filters"] == 8
    assert abs(record["figures"]["random"]["neighbour_correlation"]) < 0.05  # Glorot-drawn weights
    edges = {"edges": saved_model(tmp_path / "edges.keras", local_units(32))}
    assert learned_features.run(LF, edges, seed=0)["passed"][LOCAL]  # local detectors pass the locality check
    noise = {"noise": saved_model(tmp_path / "noise.keras", rng.normal(size=(784, 32)))}
    assert not learned_features.run(LF, noise, seed=0)["passed"][STRUCTURE]  # untrained weights fail it
    path = tmp_path / "lesson.png"
    learned_features.plot(record, path)
    assert_png(path, panels=(None, None))


# --- the command --------------------------------------------------------------------------


def test_every_lesson_of_the_catalogue_has_its_parts_and_a_params_entry() -> None:
    params = load_params(PARAMS_PATH)
    assert [*params["lessons"], *params["model_lessons"]] == list(LESSONS)
    assert all(getattr(LESSONS[name], "MODELS", False) for name in params["model_lessons"])
    for name, module in LESSONS.items():
        assert module.TITLE and module.CLAIM and callable(module.run) and callable(module.plot), name
        assert isinstance(module.KERAS, bool) and isinstance(module.DATA, bool), name


def test_an_unknown_lesson_is_refused_by_name() -> None:
    with pytest.raises(PipelineError, match=r"one of backprop, vanishing_gradients, .*; got 'nope'"):
        lesson_stage.main(["nope"])


@pytest.mark.slow
def test_the_command_writes_the_record_and_figure_and_logs_them(tmp_path) -> None:
    """A lesson that reads no data, end to end: its flags come from params.yaml as the engines render them."""
    from mlflow import MlflowClient

    flags = cli_flags(load_params(PARAMS_PATH)["lessons"]["universal_approximation"]).split()
    out, figure = tmp_path / "lessons/universal_approximation.json", tmp_path / "lesson.png"
    data = tmp_path / "train.npz"
    np.savez(data, x_train=np.zeros((1, 28, 28)))  # the run's tags hash it; this lesson reads no data
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["universal_approximation", *flags, "--seed", "42", "--threads", "1", "--experiment", "t"]
    args += ["--data", str(data), "--json_out", str(out), "--figure_out", str(figure)]
    result = subprocess.run(
        [str(CLI), "lesson", *args],
        env=clean_env(MLFLOW_TRACKING_URI=store),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert record["lesson"] == "universal_approximation" and record["holds"] is True
    assert record["claim"] == universal_approximation.CLAIM and record["seed"] == 42
    assert_png(figure, panels=(1, 2))
    (run,) = MlflowClient(store).search_runs([MlflowClient(store).get_experiment_by_name("t").experiment_id])
    assert run.info.run_name == "lesson-universal_approximation" and run.data.metrics["holds"] == 1.0
    assert run.data.tags["lesson"] == "universal_approximation" and run.data.tags["reads_data"] == "false"
    logged = {a.path for a in MlflowClient(store).list_artifacts(run.info.run_id, "lesson")}
    assert logged == {"lesson/universal_approximation.json", "lesson/lesson.png"}
