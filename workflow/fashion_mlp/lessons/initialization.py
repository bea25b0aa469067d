"""Lesson `initialization`: what the first weights do to a deep ReLU MLP before it learns anything.

Zeros, a small fixed spread, Glorot and He (NumPy, `deep_net`): the spread of each hidden layer's
activations on a batch of training images at initialization, and, for zeros, whether the hidden units
ever differ after some SGD steps. A unit's incoming weights are its identity: if every unit of a layer
starts the same, each gets the same gradient, and they stay copies of one another.
"""

from __future__ import annotations

import numpy as np

from fashion_mlp.lessons import deep_net

TITLE = "Weight initialization"
KERAS = False  # NumPy only
DATA = True  # a subset of the training split
CLAIM = (
    "How the weights start decides whether a deep network can learn: all zeros never break the symmetry "
    "between units, too small makes the signal fade layer by layer, and Glorot's and He's scalings keep it "
    "steady (He's for ReLU)."
)
SCHEMES = ("zeros", "small", "glorot", "he")


def unit_spread(layers: list[dict]) -> float:
    """The largest difference between two units' incoming weights, over the hidden layers: 0 means copies."""
    return float(max(np.abs(layer["W"] - layer["W"][:, :1]).max() for layer in layers[:-1]))


def run(options: dict, train: dict, seed: int) -> dict:
    x, y = train["x"].astype(np.float64), train["y"]
    probe = x[: options["probe_images"]]
    widths = [x.shape[1], *[options["width"]] * options["depth"], 10]
    spreads, symmetry = {}, {}
    for scheme in SCHEMES:
        rng = np.random.default_rng(seed)
        layers = deep_net.init(widths, scheme, rng)
        cache = deep_net.forward(layers, probe, "relu")
        spreads[scheme] = [float(a.std()) for a in cache["acts"][1:]]
        deep_net.train(layers, x, y, "relu", options["steps"], options["batch_size"], options["learning_rate"], rng)
        symmetry[scheme] = unit_spread(layers)
    fade = {k: v[-1] / v[0] if v[0] else 0.0 for k, v in spreads.items()}
    low, high = options["steady_between"]
    passed = {
        "zeros: the hidden units are still copies after training": symmetry["zeros"] == 0.0,
        "He: the units differ after training": symmetry["he"] > 0.0,
        f"small: the last layer's spread is below {options['fading_below']} of the first's": fade["small"]
        < options["fading_below"],
        f"He: the last layer's spread is within {low}-{high} of the first's": low <= fade["he"] <= high,
    }
    shown = [
        f"In a {options['depth']}-hidden-layer ReLU MLP of {options['width']} units, the spread (standard deviation) "
        f"of the last hidden layer's activations is {fade['he']:.2f} of the first's with He's initialization, "
        f"{fade['glorot']:.2g} with Glorot's (made for tanh: ReLU halves the variance at each layer) and "
        f"{fade['small']:.1e} with weights of spread 0.01.",
        f"Started from zeros, every hidden unit is still an exact copy of the others after {options['steps']} SGD "
        "steps (and here they never moved at all: a ReLU at 0 passes no gradient); from He's start they differ.",
    ]
    return {
        "figures": {"last_over_first_spread": fade, "unit_spread_after_training": symmetry},
        "passed": passed,
        "holds": all(passed.values()),
        "spreads": spreads,
        "shown": shown,
    }


def plot(record: dict, path) -> None:
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for scheme, spread in record["spreads"].items():
        values = [max(v, 1e-30) for v in spread]  # zeros: log scale has no 0
        ax.plot(range(1, len(values) + 1), values, marker="o", label=scheme)
    ax.set(yscale="log", xlabel="hidden layer (1 = nearest the input)", ylabel="spread of the activations")
    ax.set(title="ReLU activations at initialization, by initializer")
    ax.legend()
    save_figure(fig, path)
