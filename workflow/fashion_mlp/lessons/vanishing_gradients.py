"""Lesson `vanishing_gradients`: how much gradient reaches the first layer of a deep MLP, by activation.

A net of `depth` hidden layers of `width` units (NumPy, `deep_net`), with sigmoid, tanh and ReLU, each
with its usual initialization (Glorot for sigmoid and tanh, He for ReLU). The norm of each hidden layer's
kernel gradient on a batch of training images, at initialization and after some SGD steps; the claim is
decided by the ratio of the first layer's norm to the last hidden layer's.
"""

from __future__ import annotations

import numpy as np

from fashion_mlp.lessons import deep_net

TITLE = "Vanishing gradients"
KERAS = False  # NumPy only
DATA = True  # a subset of the training split
CLAIM = (
    "In a deep network the sigmoid suffers from vanishing gradients: the gradient shrinks layer by layer on "
    "its way back, so the first layers hardly learn; ReLU mitigates it."
)
SETUPS = {"sigmoid": "glorot", "tanh": "glorot", "relu": "he"}  # each activation with its usual initialization


def run(options: dict, train: dict, seed: int) -> dict:
    x, y = train["x"].astype(np.float64), train["y"]
    probe = slice(0, options["probe_images"])
    widths = [x.shape[1], *[options["width"]] * options["depth"], 10]
    norms, ratios, losses = {}, {}, {}
    for activation, scheme in SETUPS.items():
        rng = np.random.default_rng(seed)
        layers = deep_net.init(widths, scheme, rng)
        before = deep_net.gradient_norms(layers, x[probe], y[probe], activation)
        steps = deep_net.train(
            layers, x, y, activation, options["steps"], options["batch_size"], options["learning_rate"], rng
        )
        after = deep_net.gradient_norms(layers, x[probe], y[probe], activation)
        norms[activation] = {"at_init": before, "trained": after}
        ratios[activation] = {"at_init": before[0] / before[-1], "trained": after[0] / after[-1]}
        losses[activation] = {"first": float(np.mean(steps[:20])), "last": float(np.mean(steps[-20:]))}
    passed = {
        f"sigmoid: first / last layer below {options['vanishing_below']} at init": ratios["sigmoid"]["at_init"]
        < options["vanishing_below"],
        f"ReLU: first / last layer above {options['healthy_above']} at init": ratios["relu"]["at_init"]
        > options["healthy_above"],
    }
    shown = [
        f"In a {options['depth']}-hidden-layer MLP of {options['width']} units, the gradient that reaches the first "
        f"layer is {ratios['sigmoid']['at_init']:.1e} times the last hidden layer's with sigmoid, "
        f"{ratios['tanh']['at_init']:.2g} times with tanh and {ratios['relu']['at_init']:.2g} times with ReLU "
        "(at initialization, each with its usual initializer).",
        f"After {options['steps']} SGD steps the sigmoid net's loss went from {losses['sigmoid']['first']:.2f} to "
        f"{losses['sigmoid']['last']:.2f}, the ReLU net's from {losses['relu']['first']:.2f} to "
        f"{losses['relu']['last']:.2f}: the sigmoid's derivative is at most 1/4, so ten layers multiply the "
        "gradient by at most 4^-10 on its way back, while ReLU's is 1 wherever a unit is active.",
    ]
    return {
        "figures": {"ratio_at_init": {k: v["at_init"] for k, v in ratios.items()}, "ratios": ratios, "losses": losses},
        "passed": passed,
        "holds": all(passed.values()),
        "norms": norms,
        "shown": shown,
    }


def plot(record: dict, path) -> None:
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, when, title in zip(axes, ("at_init", "trained"), ("At initialization", "After training"), strict=True):
        for activation, norms in record["norms"].items():
            ax.plot(range(1, len(norms[when]) + 1), norms[when], marker="o", label=activation)
        ax.set(yscale="log", xlabel="hidden layer (1 = nearest the input)", title=title)
    axes[0].set_ylabel("gradient norm of the layer's kernel")
    axes[0].legend()
    save_figure(fig, path)
