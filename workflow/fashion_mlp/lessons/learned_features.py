"""Lesson `learned_features`: what the trained models' first layers look for, against "edges and textures".

An MLP's first-layer unit weighs all 784 pixels: its weights are a 28x28 picture. A CNN's first filter
weighs a 3x3 patch. Both are read from the saved .keras files (their weights file, no TensorFlow) and
measured against weights drawn as Keras initializes them (Glorot uniform, seeded):
- structure: the correlation of each weight with its right and lower neighbour (random: about 0);
- locality: the share of a unit's squared weights inside its best window (random: window / 784);
- edges: the share of a filter's squared weights along the two Sobel derivatives (random: about 2/9).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

TITLE = "What the first layer learned"
KERAS = False  # the stage seeds TensorFlow first
DATA = False  # it reads the training split
MODELS = True  # it reads the trained models: its block is under model_lessons:, its job runs after train
CLAIM = (
    "MLPs learn their features directly from the pixels, detecting edges, textures and patterns without "
    "hand-made features."
)
SIDE = 28
SOBEL = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
RANDOM_FILTERS = 10_000  # random 3x3 filters of the reference share


def first_kernel(path: Path) -> tuple[np.ndarray, str]:
    """The kernel of the first Dense or Conv2D layer of a saved .keras file (a zip of config and HDF5 weights),
    and the model's kind (models/kinds.py), both from one read of the file."""
    import h5py

    from fashion_mlp.models import kinds

    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        kind = kinds.of_layers(kinds.layer_classes(config), str(path)).name
        layers = config["config"]["layers"]
        name = next(layer["config"]["name"] for layer in layers if layer["class_name"] in ("Dense", "Conv2D"))
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
            return np.asarray(weights[f"layers/{name}/vars/0"], dtype=np.float64), kind


def glorot(shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))  # keras.initializers.GlorotUniform
    return rng.uniform(-limit, limit, shape)


def neighbour_correlation(kernel: np.ndarray) -> np.ndarray:
    """Per unit (a column of the 784 x units kernel): Pearson's r of each weight with its right and lower one."""
    pictures = kernel.T.reshape(-1, SIDE, SIDE)
    left = np.concatenate(
        [pictures[:, :, :-1].reshape(len(pictures), -1), pictures[:, :-1].reshape(len(pictures), -1)], 1
    )
    right = np.concatenate(
        [pictures[:, :, 1:].reshape(len(pictures), -1), pictures[:, 1:].reshape(len(pictures), -1)], 1
    )
    return np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(left, right, strict=True)])


def window_share(kernel: np.ndarray, window: int) -> np.ndarray:
    """Per unit: the largest share of its squared weights inside one window x window square of the picture."""
    energy = kernel.T.reshape(-1, SIDE, SIDE) ** 2
    sums = sliding_window_view(energy, (window, window), axis=(1, 2)).sum(axis=(-1, -2))
    return sums.reshape(len(energy), -1).max(axis=1) / energy.reshape(len(energy), -1).sum(axis=1)


def gradient_share(filters: np.ndarray) -> np.ndarray:
    """Per 3x3 filter: the share of its squared weights in the span of the two (orthogonal) Sobel derivatives."""
    basis = np.stack([SOBEL.ravel(), SOBEL.T.ravel()]) / np.linalg.norm(SOBEL)
    flat = filters.reshape(len(filters), -1)
    return ((flat @ basis.T) ** 2).sum(axis=1) / (flat**2).sum(axis=1)


def measure_mlp(kernel: np.ndarray, window: int, shown: int) -> dict:
    order = np.argsort(-(kernel**2).sum(axis=0), kind="stable")[:shown]  # the strongest units are drawn
    return {
        "neighbour_correlation": round(float(np.median(neighbour_correlation(kernel))), 4),
        "window_share": round(float(np.median(window_share(kernel, window))), 4),
        "_pictures": kernel[:, order].T.reshape(-1, SIDE, SIDE),
    }


def measure_cnn(kernel: np.ndarray, edge_share: float) -> dict:
    filters = np.moveaxis(kernel[:, :, 0, :], -1, 0)  # the first conv reads one (grey) channel
    shares = gradient_share(filters)
    order = np.argsort(-shares, kind="stable")
    return {
        "edge_filters": int(np.sum(shares >= edge_share)),
        "filters": len(filters),
        "_pictures": filters[order],
        "_shares": shares[order],
    }


def run(options: dict, models: dict[str, Path], seed: int) -> dict:
    from scipy.stats import binomtest

    rng = np.random.default_rng(seed)
    window, edge = options["window"], options["edge_share"]
    mlps, cnns = {}, {}
    for name, path in models.items():
        kernel, kind = first_kernel(path)
        if kind == "cnn":
            cnns[name] = measure_cnn(kernel, edge)
        else:
            mlps[name] = measure_mlp(kernel, window, options["units_shown"])
    random_mlp = measure_mlp(glorot((SIDE * SIDE, 128), SIDE * SIDE, 128, rng), window, options["units_shown"])
    random_filters = gradient_share(glorot((RANDOM_FILTERS, 3, 3), 9, 9 * 16, rng))
    random_edge = round(float(np.mean(random_filters >= edge)), 4)
    for cnn in cnns.values():  # is the share of edge-like filters above random filters' share?
        cnn["p_value"] = round(float(binomtest(cnn["edge_filters"], cnn["filters"], random_edge, "greater").pvalue), 4)
    public = {"random": {k: v for k, v in random_mlp.items() if not k.startswith("_")}}
    public |= {name: {k: v for k, v in m.items() if not k.startswith("_")} for name, m in {**mlps, **cnns}.items()}
    structure, local = options["structure_above"], options["local_share"]
    passed = {
        f"every MLP's first-layer units are pictures with structure (median neighbour correlation ≥ {structure})": all(
            m["neighbour_correlation"] >= structure for m in mlps.values()
        ),
        f"an MLP's first-layer units are local, like edge detectors (≥ {local} of a unit's weight in one "
        f"{window}x{window} window)": all(m["window_share"] >= local for m in mlps.values()),
    }
    return {
        "figures": public | {"random_filters": {"edge_share": random_edge}},
        "passed": passed,
        "holds": all(passed.values()),
        "shown": shown_sentences(public, random_edge, window),
        "_pictures": {"random init": random_mlp["_pictures"]} | {n: m["_pictures"] for n, m in mlps.items()},
        "_filters": {n: (c["_pictures"], c["_shares"]) for n, c in cnns.items()},
    }


def shown_sentences(figures: dict, random_edge: float, window: int) -> list[str]:
    mlps = {n: f for n, f in figures.items() if "window_share" in f and n != "random"}
    cnns = {n: f for n, f in figures.items() if "filters" in f}
    rand = figures["random"]
    shown = [
        "The MLPs' first-layer units are smooth pictures, not noise: each weight correlates with its neighbour "
        "(median "
        + ", ".join(f"{f['neighbour_correlation']:.2f} in {n}" for n, f in mlps.items())
        + f"; {rand['neighbour_correlation']:.2f} for random weights), so they were learned from the pixels.",
        f"But they are whole-picture patterns, not edge detectors: a unit's best {window}x{window} window holds "
        + ", ".join(f"{f['window_share']:.0%} in {n}" for n, f in mlps.items())
        + f" of its weight ({rand['window_share']:.0%} for random weights). The strongest weigh whole regions: "
        "the frame and corners, which only wide garments reach, against garment-shaped areas inside. Textures "
        "(repeated local patterns) are not measured here.",
    ]
    if cnns:
        counts = ", ".join(
            f"{f['edge_filters']} of {n}'s {f['filters']} filters (binomial p = {f['p_value']:.2f})"
            for n, f in cnns.items()
        )
        shown.append(
            f"Local edge detectors are what a CNN's first filters can be: {counts} lie mostly along a Sobel "
            f"derivative, against {random_edge:.0%} of random 3x3 filters; after a short training, even there "
            "edges are a minority. The claim holds for patterns learned from pixels; an MLP's first layer does "
            "not detect edges."
        )
    return shown


def plot(record: dict, path) -> None:
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    rows = {**record["_pictures"], **{n: f[0] for n, f in record["_filters"].items()}}
    columns = max(len(p) for p in rows.values())
    fig, axes = plt.subplots(len(rows), columns, figsize=(columns * 0.9, len(rows) * 1.05), squeeze=False)
    for axes_row, (name, pictures) in zip(axes, rows.items(), strict=True):
        # One symmetric scale per row, so a row's units compare; clipped at the 99th percentile of |weight|,
        # or the few large weights on rarely lit border pixels would wash the rest out.
        limit = float(np.percentile(np.abs(pictures), 99))
        for column, ax in enumerate(axes_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if column >= len(pictures):
                ax.set_visible(False)
                continue
            image = ax.imshow(pictures[column], cmap="RdBu_r", vmin=-limit, vmax=limit)
            if name in record["_filters"]:
                ax.set_title(f"{record['_filters'][name][1][column]:.2f}", fontsize=7)
        axes_row[0].set_ylabel(name, fontsize=8)
        fig.colorbar(image, ax=list(axes_row), fraction=0.015, pad=0.01)
    fig.suptitle(
        "First-layer weights: MLP units (28x28, the strongest), CNN filters (3x3, by Sobel share, in titles); "
        "colour clipped at a row's 99th percentile of |weight|",
        fontsize=9,
    )
    save_figure(fig, path)
