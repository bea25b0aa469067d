"""Lesson `universal_approximation`: one hidden layer, wider and wider, fitting a 1-D function.

A regression: one input, one hidden layer of tanh units, one linear output neuron, squared error.
scikit-learn's MLPRegressor (L-BFGS, seeded) fits each width on points of a wiggly function; the
error is measured on a fine grid between them. Each width is fitted from `restarts` seeds and the
fit with the lowest training loss is kept (L-BFGS on a non-convex loss ends where its start leads).
The claim holds when the error falls as the width grows, until it is within the params' tolerance,
and the widest net's error is below that tolerance. Below the tolerance the fits are as close as
wanted, and which of two such fits is closer is the optimizer's luck: it differed between CPUs.
"""

from __future__ import annotations

import itertools

import numpy as np

TITLE = "A universal approximator"
KERAS = False  # the stage seeds TensorFlow first
DATA = False  # it reads the training split
CLAIM = (
    "An MLP with one hidden layer can approximate any continuous function as closely as wanted, given enough "
    "hidden units; for regression, the output layer is a single neuron with no activation."
)


def target(x: np.ndarray) -> np.ndarray:
    """A smooth function no single unit fits: two bumps of different widths on a slope."""
    return np.sin(2 * x) + 0.5 * np.cos(5 * x) + 0.2 * x


def fit(width: int, x: np.ndarray, y: np.ndarray, options: dict, seed: int):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    net = MLPRegressor(
        hidden_layer_sizes=(width,),
        activation="tanh",
        solver="lbfgs",
        alpha=0.0,
        max_iter=options["max_iter"],
        tol=0.0,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # L-BFGS stops at max_iter: expected
        return net.fit(x[:, None], y)


def falls(errors: list[float], tolerance: float) -> bool:
    """Each width's error is at most the narrower one's (5 %: optimizer noise), or within the tolerance."""
    return all(later <= earlier * 1.05 or later < tolerance for earlier, later in itertools.pairwise(errors))


def run(options: dict, train: dict | None, seed: int) -> dict:
    x = np.linspace(-np.pi, np.pi, options["points"])
    grid = np.linspace(-np.pi, np.pi, 10 * options["points"] + 1)  # between and beyond the training points
    truth = target(grid)
    errors, fits = [], {}
    tolerance = options["tolerance"]
    for width in options["widths"]:
        starts = [fit(width, x, target(x), options, seed + start) for start in range(options["restarts"])]
        predicted = min(starts, key=lambda net: net.loss_).predict(grid[:, None])  # chosen on the training points
        errors.append(float(np.sqrt(np.mean((predicted - truth) ** 2))))
        fits[str(width)] = predicted[::10].round(6).tolist()
    passed = {
        "the error falls as the width grows, until it is within the tolerance": falls(errors, tolerance),
        f"the widest net's RMS error is below {tolerance}": errors[-1] < tolerance,
    }
    spread = float(truth.max() - truth.min())
    shown = [
        f"Fitted on {options['points']} points of sin(2x) + 0.5 cos(5x) + 0.2x over [-π, π] (a range of "
        f"{spread:.2f}), the RMS error on a ten times finer grid falls from {errors[0]:.3f} with "
        f"{options['widths'][0]} hidden unit(s) to {errors[-1]:.4f} with {options['widths'][-1]} (the best "
        f"training fit of {options['restarts']} starts each).",
        "One tanh unit gives one smooth step; a weighted sum of many shifted steps can follow any continuous curve, "
        "which is what the theorem says. It says nothing of how many units or how much data a fit needs.",
    ]
    return {
        "figures": {"widths": options["widths"], "rms_error": errors, "range": spread},
        "passed": passed,
        "holds": all(passed.values()),
        "fits": {"x": grid[::10].round(6).tolist(), "truth": truth[::10].round(6).tolist(), **fits},
        "shown": shown,
    }


def plot(record: dict, path) -> None:
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    fits = record["fits"]
    left.plot(fits["x"], fits["truth"], color="black", linewidth=3, label="the function")
    widths = record["figures"]["widths"]
    for width in sorted({widths[0], widths[len(widths) // 2], widths[-1]}):
        left.plot(fits["x"], fits[str(width)], label=f"{width} hidden unit(s)")
    left.set(xlabel="x", ylabel="y", title="One hidden layer, one linear output")
    left.legend(fontsize="small")
    right.plot(widths, record["figures"]["rms_error"], marker="o")
    right.set(xscale="log", yscale="log", xlabel="hidden units", ylabel="RMS error", title="Error against width")
    right.set_xticks(widths, [str(w) for w in widths])
    save_figure(fig, path)
