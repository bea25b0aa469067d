"""The figures of `explain`: per-class mean maps, individual explanations, deletion curves and layer randomization.

Attributions are signed, drawn on a diverging colormap centred on 0 (red: evidence for the
class, blue: against) over the image in grey. Both methods explain the logit, so one symmetric
scale serves a whole figure, with a colorbar beside each row of maps: a map can be read against
any other of the figure. Saved with figures.save_figure (Agg, atomic), so the same arrays give the
same bytes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from fashion_mlp.attribution.checks import CONTROLS, METHODS
from fashion_mlp.data import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES
from fashion_mlp.figures import pyplot, save_figure

CMAP = "RdBu_r"


def present_methods(attributions: dict) -> list[tuple[str, str]]:
    """The methods with maps, in METHODS' order (LRP is absent for a kind it does not cover)."""
    return [(key, label) for key, label in METHODS if key in attributions]


def symmetric_limit(values: np.ndarray) -> float:
    """The colour scale's half-range: the 99th percentile of |values|, so one hot pixel cannot wash out the rest."""
    limit = float(np.percentile(np.abs(values), 99)) if values.size else 0.0
    return limit if limit > 0 else 1.0


def overlay(ax, image: np.ndarray, attribution: np.ndarray, limit: float):
    """The image in grey, the attribution over it (transparent enough to see the garment)."""
    ax.imshow(image.reshape(IMAGE_SHAPE), cmap="gray_r", vmin=0, vmax=1)
    shown = ax.imshow(attribution.reshape(IMAGE_SHAPE), cmap=CMAP, vmin=-limit, vmax=limit, alpha=0.75)
    ax.set_xticks([])
    ax.set_yticks([])
    return shown


def plot_class_maps(
    images: np.ndarray, labels: np.ndarray, attributions: dict[str, np.ndarray], path: Path, title: str
) -> None:
    """One row per method, one panel per class: the mean attribution for that class's logit over its
    explained test images, over the class's mean image. A class with no explained image stays blank."""
    plt = pyplot()
    methods = present_methods(attributions)
    fig, axes = plt.subplots(len(methods), NUM_CLASSES, figsize=(1.9 * NUM_CLASSES + 1.2, 2.3 * len(methods)))
    axes = np.asarray(axes).reshape(len(methods), NUM_CLASSES)
    present = [cls for cls in range(NUM_CLASSES) if (labels == cls).any()]
    means = {key: np.zeros((NUM_CLASSES, *IMAGE_SHAPE)) for key, _ in methods}
    for key, _ in methods:
        for cls in present:
            means[key][cls] = attributions[key][labels == cls].mean(axis=0).reshape(IMAGE_SHAPE)
    limit = symmetric_limit(np.stack([means[key][present] for key, _ in methods])) if present else 1.0
    for row, (key, label) in enumerate(methods):
        shown = None
        for cls in range(NUM_CLASSES):
            ax = axes[row, cls]
            ax.axis("off")
            if cls in present:
                shown = overlay(ax, images[labels == cls].mean(axis=0), means[key][cls], limit)
                ax.axis("on")
                n = int((labels == cls).sum())
                ax.set_title(f"{CLASS_NAMES[cls]}\n(n = {n})" if row == 0 else CLASS_NAMES[cls], fontsize=8)
        axes[row, 0].set_ylabel(label, fontsize=9)
        if shown is not None:
            fig.colorbar(shown, ax=list(axes[row]), fraction=0.015, pad=0.01, label="mean attribution (logit)")
    fig.suptitle(
        f"{title}: mean attribution per class (red: for the class, blue: against), over its mean image; "
        "one scale for the figure"
    )
    save_figure(fig, path)


def plot_examples(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    attributions: dict[str, np.ndarray],
    path: Path,
    title: str,
) -> None:
    """One column per image: the image, then each method's map for the predicted class.
    Mistakes are titled in red; every map shares the figure's symmetric scale."""
    plt = pyplot()
    n = len(images)
    methods = present_methods(attributions)
    fig, axes = plt.subplots(1 + len(methods), max(n, 1), figsize=(1.9 * max(n, 1), 2.2 * (1 + len(methods))))
    axes = np.asarray(axes).reshape(1 + len(methods), max(n, 1))
    for ax in axes.flat:
        ax.axis("off")
    limit = symmetric_limit(np.stack([attributions[key][:n] for key, _ in methods])) if n else 1.0
    shown = None
    for i in range(n):
        ok = predicted[i] == labels[i]
        ax = axes[0, i]
        ax.imshow(images[i].reshape(IMAGE_SHAPE), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(
            f"true: {CLASS_NAMES[labels[i]]}\npredicted: {CLASS_NAMES[predicted[i]]}\n(p = {confidence[i]:.2f})",
            fontsize=7,
            color="black" if ok else "red",
        )
        for row, (key, _) in enumerate(methods, start=1):
            shown = overlay(axes[row, i], images[i], attributions[key][i], limit)
            axes[row, i].axis("on")
    for row, (_, label) in enumerate(methods, start=1):
        axes[row, 0].set_ylabel(label, fontsize=8)
        if n:  # in an axes of its own: the panels keep their places, in line with the images above them
            box = axes[row, -1].get_position()
            cax = fig.add_axes((box.x1 + 0.01, box.y0, 0.008, box.height))
            fig.colorbar(shown, cax=cax, label="attribution (logit)")
    fig.suptitle(
        f"{title}: correct predictions, then the most confident mistakes (red); maps explain the predicted class"
    )
    save_figure(fig, path)


def plot_deletion(deletion: tuple, insertion: tuple, path: Path, title) -> None:
    """Accuracy as pixels are deleted, and as they are put back on an empty canvas, per ordering.

    Each of `deletion` and `insertion` is (fractions, curves, areas); the controls are dashed.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    styles = {
        "shap": ("tab:red", "-"),
        "lrp": ("tab:blue", "-"),
        "random": ("gray", "--"),
        "random_garment": ("black", "--"),
        "brightest": ("tab:olive", ":"),
    }
    names = dict(METHODS) | CONTROLS
    panels = (
        (deletion, "deleted (set to 0)", "deletion: lower area = more faithful"),
        (insertion, "inserted on an empty canvas", "insertion: higher area = more faithful"),
    )
    for ax, ((fractions, curves, areas), verb, heading) in zip(axes, panels, strict=True):
        for key, values in curves.items():
            color, style = styles[key]
            label = f"{names[key]}: area {areas[key]:.3f}"
            ax.plot(fractions, values, style, color=color, marker="o", markersize=3, label=label)
        ax.set(xlabel=f"Share of pixels {verb}, highest score first", ylim=(0, 1.02), title=heading)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("Accuracy on the explained test images")
    fig.suptitle(f"{title}: the methods' pixel orders against three controls (dashed and dotted)")
    save_figure(fig, path)


def method_labels(keys) -> dict[str, str]:
    """Every method's label: SHAP's and LRP's, then the reference methods'."""
    from fashion_mlp.attribution.gradients import REFERENCE_METHODS

    labels = dict(METHODS) | {key: label for key, (label, _) in REFERENCE_METHODS.items()}
    return {key: labels[key] for key in keys}


PERMUTED_AT = 2.5  # the permuted-label point's distance from the last cascading step: its label clear of the next


def plot_cascade(report: dict, path: Path, title) -> None:
    """ρ of each method's |maps| on the garment against the trained model's, as layers are re-initialized:
    cascading from the top (ending beside the level of two random initializations and, when run, the model
    trained on permuted labels) and one layer at a time."""
    plt = pyplot()
    layers, labels = report["layers"], method_labels(report["cascading"])
    permuted = "permuted_labels" in report
    colors = dict(zip(labels, plt.get_cmap("tab10").colors, strict=False))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    steps = np.arange(len(layers) + 1)
    for key, label in labels.items():
        means = [1.0] + [step["mean"] for step in report["cascading"][key]]
        left.plot(steps, means, marker="o", color=colors[key], label=label)
        inits = report["two_random_inits"][key]["mean"]
        left.plot([steps[-1], steps[-1] + 1], [means[-1], inits], linestyle=":", color=colors[key], marker="x")
        if permuted:  # the data randomization: trained on permuted labels, against the trained maps
            left.plot(steps[-1] + PERMUTED_AT, report["permuted_labels"][key]["mean"], color=colors[key], marker="D")
        right.plot(steps[1:], [step["mean"] for step in report["independent"][key]], marker="o", color=colors[key])
    # Numbered ticks, the layers named in the axis label: long layer names side by side would overlap.
    top_down = ", ".join(f"{k} {name}" for k, name in enumerate(reversed(layers), start=1))
    extra = ["two random\ninits", "permuted\nlabels"][: 1 + permuted]
    left.set_xticks([*steps, *(steps[-1] + np.array([1, PERMUTED_AT])[: len(extra)])])
    left.set_xticklabels(["trained", *map(str, steps[1:]), *extra], fontsize=8)
    left.set_xlabel(textwrap.fill(f"top layers re-initialized: {top_down}", 70), fontsize=7)
    right.set_xticks(steps[1:])
    right.set_xticklabels(map(str, steps[1:]), fontsize=8)
    right.set_xlabel(textwrap.fill(", ".join(f"{k} {n}" for k, n in enumerate(layers, start=1)), 70), fontsize=7)
    left.set(ylabel=f"Spearman ρ of |maps| on the garment, {report['images']} images", ylim=(-0.1, 1.05),
             title="Cascading: layers re-initialized from the top")  # fmt: skip
    right.set(title="Independent: one layer re-initialized")
    for ax in (left, right):
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.grid(alpha=0.3)
    left.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{title}: how much of each map survives re-initialized weights")
    save_figure(fig, path)


def plot_randomized(image: np.ndarray, label: int, maps_by_step: dict, path: Path, title) -> None:
    """One explained image: every method's map on the trained model, then after each cascading step.

    The methods have different units, so each map is divided by its own 99th percentile of |value|:
    one symmetric scale, [-1, 1], serves the figure, and a map's pattern can be compared across steps.
    """
    plt = pyplot()
    steps = list(maps_by_step)
    labels = method_labels(maps_by_step["trained"])
    fig, axes = plt.subplots(len(labels), len(steps), figsize=(1.7 * len(steps) + 1.5, 1.7 * len(labels) + 0.6))
    axes = np.asarray(axes).reshape(len(labels), len(steps))
    shown = None
    for row, (key, name) in enumerate(labels.items()):
        for col, step in enumerate(steps):
            values = maps_by_step[step][key][0]
            shown = overlay(axes[row, col], image[0], values / symmetric_limit(values), 1.0)
            if row == 0:
                axes[row, col].set_title(step if step == "trained" else f"{step} random", fontsize=8)
        axes[row, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=0.3, bottom=0.1)
    cax = fig.add_axes((0.4, 0.03, 0.4, 0.012))  # its own axes, below the rows: the rows stay apart
    fig.colorbar(shown, cax=cax, orientation="horizontal", label="attribution / its 99th percentile of |value|")
    fig.suptitle(f"{title}: a {CLASS_NAMES[int(label[0])]}, explained as the top layers are re-initialized")
    save_figure(fig, path)
