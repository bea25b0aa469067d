"""The tutorial's activation-function lesson: sigmoid, tanh, ReLU and softmax at a few points.

numpy for the values, matplotlib for the figure; `fashion-mlp demos` writes the
table (CSV and a Markdown snippet for the report) and the figure.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fashion_mlp.figures import pyplot, save_figure
from fashion_mlp.io import atomic_output

ACTIVATIONS = ("sigmoid", "tanh", "relu", "softmax")


def sigmoid(z) -> np.ndarray:
    """1 / (1 + e^-z), computed without overflow for large |z|."""
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    exp_z = np.exp(z[~positive])
    out[~positive] = exp_z / (1.0 + exp_z)
    return out


def tanh(z) -> np.ndarray:
    """(e^z - e^-z) / (e^z + e^-z), in (-1, 1)."""
    return np.tanh(np.asarray(z, dtype=float))


def relu(z) -> np.ndarray:
    """max(0, z)."""
    return np.maximum(0.0, np.asarray(z, dtype=float))


def softmax(z) -> np.ndarray:
    """e^z_i / sum_j e^z_j over the whole vector (shifted by its maximum, so it cannot overflow)."""
    z = np.asarray(z, dtype=float)
    exp_z = np.exp(z - z.max())
    return exp_z / exp_z.sum()


def activation_table(points) -> list[dict]:
    """One row per point: z and its sigmoid, tanh, ReLU and softmax (softmax over all the points)."""
    z = np.asarray(points, dtype=float)
    columns = {"sigmoid": sigmoid(z), "tanh": tanh(z), "relu": relu(z), "softmax": softmax(z)}
    return [{"z": float(value), **{name: float(columns[name][i]) for name in ACTIVATIONS}} for i, value in enumerate(z)]


def display_number(value: float, digits: int = 4) -> str:
    """Short display form: `digits` significant digits, no trailing zeros, no "-0"."""
    text = f"{value:.{digits}g}"
    return "0" if text == "-0" else text


def activation_markdown(table: list[dict]) -> str:
    """The table as a Markdown snippet (no heading) for the report to include."""
    lines = [
        "| z | sigmoid(z) | tanh(z) | ReLU(z) | softmax(z) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        lines.append(
            f"| {display_number(row['z'], 6)} | " + " | ".join(display_number(row[name]) for name in ACTIVATIONS) + " |"
        )
    total = sum(row["softmax"] for row in table)
    lines += [
        "",
        "Values rounded to 4 significant digits; `activations.csv` holds them in full. Softmax is taken over "
        f"the whole column of z values, so its entries add up to {total:.4g}. tanh is the standard "
        "(e^z − e^−z) / (e^z + e^−z); the formula printed in the tutorial, (1 − e^−z) / (1 + e^−z), "
        "is tanh(z/2).",
        "",
    ]
    return "\n".join(lines)


def write_activation_csv(path: Path, table: list[dict]) -> None:
    """The table with every value at full float precision (repr), for machines and diffs."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["z", *ACTIVATIONS])
        writer.writerows([repr(row["z"]), *(repr(row[name]) for name in ACTIVATIONS)] for row in table)


def plot_activations(points, path: Path, span: float = 6.0) -> None:
    """Sigmoid, tanh and ReLU curves (the table's points marked) and softmax of the points as bars."""
    plt = pyplot()
    points = np.asarray(points, dtype=float)
    reach = max(span, float(np.abs(points).max()) + 1.0)
    z = np.linspace(-reach, reach, 481)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    curves = (
        ("Sigmoid: 1 / (1 + e^(−z)), range (0, 1)", sigmoid, "sigmoid(z)", "tab:blue"),
        ("Tanh: range (−1, 1), centred on 0", tanh, "tanh(z)", "tab:orange"),
        ("ReLU: max(0, z), range [0, ∞)", relu, "ReLU(z)", "tab:green"),
    )
    # Three curves on the first three axes; the fourth is softmax's bars.
    for ax, (title, func, ylabel, colour) in zip(axes.flat, curves, strict=False):
        ax.plot(z, func(z), color=colour, linewidth=2)
        ax.scatter(points, func(points), color="black", zorder=3, s=25, label="table points")
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.axvline(0, color="gray", linewidth=0.8)
        ax.set(title=title, xlabel="z", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    ax = axes.flat[3]
    probabilities = softmax(points)
    bars = ax.bar([display_number(p, 6) for p in points], probabilities, color="tab:purple")
    ax.bar_label(bars, labels=[display_number(p, 3) for p in probabilities], padding=2, fontsize=8)
    ax.set(
        title=f"Softmax of the points (sum = {probabilities.sum():.3g})",
        xlabel="z (logit)",
        ylabel="softmax(z)",
        ylim=(0, 1.1),
    )
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Activation functions")
    fig.tight_layout()
    save_figure(fig, path)
