"""The tutorial's XOR lesson: what one linear unit cannot learn, and a one-hidden-layer MLP that can.

A linear threshold unit (a single-layer perceptron) gets at most three of the
four points right, which is shown exactly with a linear-programming
feasibility check and illustrated by training scikit-learn's Perceptron; a
Keras MLP with one hidden layer then classifies all four. Pure functions
first, then the figures; `fashion-mlp demos` runs them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from fashion_mlp.figures import pyplot, save_figure

# The XOR truth table: inputs and the label "exactly one input is 1".
XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
XOR_Y = np.array([0, 1, 1, 0], dtype=np.int64)
XOR_ACTIVATION = "tanh"  # hidden activation of the XOR MLP
PLOT_RANGE = (-0.5, 1.5)  # decision-boundary plots cover this square


def xor_data() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR points (float32, shape (4, 2)) and their labels 0, 1, 1, 0."""
    return XOR_X.copy(), XOR_Y.copy()


# --- XOR: what one linear threshold unit can and cannot do -------------------------------------


def separating_hyperplane(x: np.ndarray, y: np.ndarray) -> tuple[list[float], float] | None:
    """(w, b) with w·x + b >= 1 on every label-1 point and <= -1 on every label-0 point, or None.

    A threshold unit "w·x + b > 0 means class 1" labels a finite set of points
    correctly exactly when such a margin-1 solution exists (scale any strict
    separator up), so this linear program decides linear separability. Solved
    with scipy's HiGHS as a pure feasibility problem (zero objective).
    """
    from scipy.optimize import linprog

    signs = np.where(np.asarray(y) == 1, 1.0, -1.0)
    points = np.asarray(x, dtype=float)
    # s_i (w·x_i + b) >= 1  <=>  -s_i [x_i, 1] · [w, b] <= -1
    a_ub = -signs[:, None] * np.hstack([points, np.ones((len(points), 1))])
    result = linprog(
        c=np.zeros(points.shape[1] + 1),
        A_ub=a_ub,
        b_ub=-np.ones(len(points)),
        bounds=[(None, None)] * (points.shape[1] + 1),
        method="highs",
    )
    if result.status == 2:  # infeasible
        return None
    if result.status != 0:
        raise RuntimeError(f"linprog could not decide separability: {result.message}")
    w, b = result.x[:-1], result.x[-1]
    return [float(v) for v in w], float(b)


def linear_separability_proof(x: np.ndarray, y: np.ndarray) -> dict:
    """The best accuracy any linear threshold unit can reach on (x, y), with the evidence.

    Tries subsets from largest to smallest: the best accuracy is k/n for the
    largest k such that some k points (with their labels) are separable. For
    XOR: the four points are not separable, every three of them are, so 3/4.
    Exhaustive, so meant for a handful of points.
    """
    n = len(y)
    subsets = []
    for subset in itertools.combinations(range(n), n - 1):
        plane = separating_hyperplane(x[list(subset)], y[list(subset)])
        subsets.append(
            {
                "points": list(subset),
                "separable": plane is not None,
                "w": None if plane is None else [round(v, 6) + 0.0 for v in plane[0]],  # no -0.0
                "b": None if plane is None else round(plane[1], 6) + 0.0,
            }
        )
    if separating_hyperplane(x, y) is not None:
        best_k = n
    elif any(s["separable"] for s in subsets):
        best_k = n - 1
    else:  # smaller subsets: not reached for XOR
        best_k = next(
            k
            for k in range(n - 2, 0, -1)
            if any(
                separating_hyperplane(x[list(c)], y[list(c)]) is not None for c in itertools.combinations(range(n), k)
            )
        )
    return {
        "all_points_separable": best_k == n,
        "subsets_of_size_n_minus_1": subsets,
        "best_achievable_accuracy": best_k / n,
    }


def train_perceptron(x: np.ndarray, y: np.ndarray, seed: int, max_iter: int = 1000) -> dict:
    """Fit scikit-learn's Perceptron (one linear threshold unit); return its weights and predictions.

    On XOR the perceptron rule never converges; it stops after `max_iter`
    passes wherever it is, so its accuracy is at most the proof's 0.75.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Perceptron

    model = Perceptron(max_iter=max_iter, tol=None, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    predictions = model.predict(x)
    return {
        "weights": [float(v) for v in model.coef_[0]],
        "bias": float(model.intercept_[0]),
        "predictions": [int(p) for p in predictions],
        "accuracy": float(np.mean(predictions == y)),
    }


def perceptron_decision(weights: list[float], bias: float, points: np.ndarray) -> np.ndarray:
    """w·x + b for each row of `points` (positive: class 1)."""
    return np.asarray(points, dtype=float) @ np.asarray(weights, dtype=float) + bias


# --- XOR: a one-hidden-layer MLP (Keras) -------------------------------------------------------


def build_xor_mlp(hidden: int, learning_rate: float):
    """Input(2) -> Dense(hidden, tanh) -> Dense(1, sigmoid), compiled with Adam and binary cross-entropy."""
    import keras

    model = keras.Sequential(name="xor_mlp")
    model.add(keras.Input(shape=(2,), name="x"))
    model.add(keras.layers.Dense(hidden, activation=XOR_ACTIVATION, name="hidden"))
    model.add(keras.layers.Dense(1, activation="sigmoid", name="probability"))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        steps_per_execution=100,
    )
    return model


def train_xor_mlp(x: np.ndarray, y: np.ndarray, hidden: int, epochs: int, learning_rate: float):
    """Train the XOR MLP full-batch for `epochs` gradient steps; return (model, final loss).

    Expects configure_tensorflow() to have run. Every epoch is one Adam step on
    all four points. They are fed as a single Keras epoch over the points
    repeated `epochs` times in order (batch 4, no shuffling), which gives the
    same steps while paying Keras' per-epoch overhead (tens of ms) only once.
    """
    model = build_xor_mlp(hidden, learning_rate)
    x_rep = np.tile(np.asarray(x, dtype=np.float32), (epochs, 1))
    y_rep = np.tile(np.asarray(y, dtype=np.float32), epochs)
    model.fit(x_rep, y_rep, batch_size=len(y), epochs=1, shuffle=False, verbose=0)
    loss = float(
        model.evaluate(np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32), batch_size=len(y), verbose=0)
    )
    return model, loss


def mlp_probabilities(model, points: np.ndarray) -> np.ndarray:
    """P(class 1) for each row of `points`."""
    return model.predict(np.asarray(points, dtype=np.float32), batch_size=8192, verbose=0).reshape(-1)


def xor_summary(
    x: np.ndarray,
    y: np.ndarray,
    proof: dict,
    perceptron: dict,
    probabilities: np.ndarray,
    mlp_loss: float,
    hidden: int,
    epochs: int,
    learning_rate: float,
    seed: int,
) -> dict:
    """Everything the XOR lesson found, as plain JSON types."""
    predictions = (np.asarray(probabilities) > 0.5).astype(int)
    mlp_accuracy = float(np.mean(predictions == y))
    return {
        "seed": seed,
        "xor_hidden": hidden,
        "xor_epochs": epochs,
        "xor_learning_rate": learning_rate,
        "xor_activation": XOR_ACTIVATION,
        "perceptron_best_accuracy": proof["best_achievable_accuracy"],
        "perceptron_accuracy": perceptron["accuracy"],
        "mlp_accuracy": mlp_accuracy,
        "mlp_solved": mlp_accuracy == 1.0,
        "points": [
            {
                "x": [int(v) for v in point],
                "label": int(label),
                "perceptron_prediction": p_pred,
                "mlp_probability": round(float(prob), 6),
                "mlp_prediction": int(m_pred),
            }
            for point, label, p_pred, prob, m_pred in zip(
                x, y, perceptron["predictions"], probabilities, predictions, strict=True
            )
        ],
        "linear_separability": proof,
        "perceptron": {
            "model": "sklearn.linear_model.Perceptron",
            "weights": perceptron["weights"],
            "bias": perceptron["bias"],
        },
        "mlp": {
            "layers": f"Dense({hidden}, {XOR_ACTIVATION}) -> Dense(1, sigmoid)",
            "optimizer": f"Adam(learning_rate={learning_rate})",
            "full_batch_steps": epochs,
            "final_loss": round(mlp_loss, 6),
        },
    }


# --- figures ------------------------------------------------------------------------------------

CLASS_COLOURS = ("tab:red", "tab:blue")  # class 0, class 1 (the tutorial's colours)


def _draw_points(ax, x: np.ndarray, y: np.ndarray) -> None:
    for label in (0, 1):
        chosen = y == label
        ax.scatter(
            x[chosen, 0],
            x[chosen, 1],
            s=140,
            c=CLASS_COLOURS[label],
            edgecolors="black",
            linewidths=1.2,
            zorder=3,
            label=f"class {label}",
        )
    ax.set(xlim=PLOT_RANGE, ylim=PLOT_RANGE, xlabel="$x_1$", ylabel="$x_2$", aspect="equal")


def plot_xor_points(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    _draw_points(ax, x, y)
    for point, label in zip(x, y, strict=True):
        ax.annotate(
            f"({point[0]:g}, {point[1]:g}) → {label}",
            point,
            textcoords="offset points",
            xytext=(0, 13),
            ha="center",
            fontsize=9,
        )
    ax.grid(alpha=0.3)
    ax.legend(loc="center")
    ax.set_title("XOR: label 1 when exactly one input is 1")
    save_figure(fig, path)


def plot_xor_boundaries(
    x: np.ndarray,
    y: np.ndarray,
    perceptron_field,
    mlp_field,
    titles: tuple[str, str],
    path: Path,
    best_line: tuple[list[float], float] | None = None,
    resolution: int = 201,
) -> None:
    """Two panels: each model's predicted class over the square, its boundary, and the four points.

    `perceptron_field(points)` returns w·x + b (boundary at 0); `mlp_field(points)`
    returns P(class 1) (boundary at 0.5). `best_line` (w, b), if given, is drawn
    dashed in the perceptron's panel: a line that gets three points right.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    plt = pyplot()
    axis = np.linspace(*PLOT_RANGE, resolution)
    g1, g2 = np.meshgrid(axis, axis)
    grid = np.column_stack([g1.ravel(), g2.ravel()])
    regions = ListedColormap(["#f4c7c3", "#c6dbef"])  # light red: class 0, light blue: class 1
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 5))
    for ax, field, threshold, title in zip(axes, (perceptron_field, mlp_field), (0.0, 0.5), titles, strict=True):
        values = np.asarray(field(grid), dtype=float).reshape(g1.shape)
        ax.contourf(g1, g2, (values > threshold).astype(float), levels=[-0.5, 0.5, 1.5], cmap=regions)
        handles = []
        if values.min() < threshold < values.max():
            ax.contour(g1, g2, values, levels=[threshold], colors="black", linewidths=1.5)
            handles.append(Line2D([], [], color="black", linewidth=1.5, label="decision boundary"))
        else:
            only = int(values.min() > threshold)
            ax.text(
                0.5,
                0.04,
                f"no boundary in view: every point → class {only}",
                ha="center",
                transform=ax.transAxes,
                fontsize=9,
                bbox={"facecolor": "white", "alpha": 0.8},
            )
        _draw_points(ax, x, y)
        if ax is axes[0] and best_line is not None:
            best = perceptron_decision(best_line[0], best_line[1], grid).reshape(g1.shape)
            ax.contour(g1, g2, best, levels=[0.0], colors="dimgray", linewidths=1.5, linestyles="--")
            handles.append(
                Line2D(
                    [], [], color="dimgray", linewidth=1.5, linestyle="--", label="a best possible line (3 of 4 right)"
                )
            )
        point_handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=point_handles + handles, loc="upper center", fontsize=8, framealpha=0.9)
        ax.set_title(title, fontsize=10)
    fig.subplots_adjust(wspace=0.3)
    fig.suptitle("XOR: predicted class (shaded red = 0, blue = 1) and decision boundary")
    save_figure(fig, path)
