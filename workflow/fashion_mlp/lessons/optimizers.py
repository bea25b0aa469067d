"""Lesson `optimizers`: SGD, SGD with momentum, RMSprop and Adam on the tutorial's net, side by side.

The same initial weights and the same batch order for all four (Keras, one epoch per `fit` on arrays
permuted by a seeded generator), so only the update rule differs. Plain SGD and momentum take the
same learning rate; RMSprop and Adam, which scale each weight's step by its recent gradients, take
theirs. The claim is decided on the validation split: momentum ahead of plain SGD after the first
epoch, and Adam at least level (within a tolerance) with the better of momentum and RMSprop.
"""

from __future__ import annotations

import numpy as np

TITLE = "Optimizers side by side"
KERAS = True  # the stage seeds TensorFlow first
DATA = True  # a subset of the training split, and its validation images
CLAIM = (
    "The optimizer turns gradients into weight updates; Adam combines the benefits of momentum and RMSprop "
    "and adapts each weight's step size as it goes."
)
NAMES = ("SGD", "momentum", "RMSprop", "Adam")


def optimizer(name: str, options: dict):
    import keras

    if name == "SGD":
        return keras.optimizers.SGD(learning_rate=options["sgd_learning_rate"])
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate=options["sgd_learning_rate"], momentum=options["momentum"])
    if name == "RMSprop":
        return keras.optimizers.RMSprop(learning_rate=options["adaptive_learning_rate"])
    return keras.optimizers.Adam(learning_rate=options["adaptive_learning_rate"])


def run(options: dict, train: dict, seed: int) -> dict:
    import keras

    from fashion_mlp.lessons.backprop import init_params, keras_net

    x, y, x_val, y_val = train["x"], train["y"], train["x_val"], train["y_val"]
    start = init_params(np.random.default_rng(seed))
    orders = [np.random.default_rng(seed + epoch).permutation(len(x)) for epoch in range(options["epochs"])]
    curves = {}
    for name in NAMES:
        model = keras_net(start, options["dropout"])
        model.compile(
            optimizer=optimizer(name, options), loss="sparse_categorical_crossentropy", steps_per_execution=64
        )
        accuracies = []
        for order in orders:
            model.fit(x[order], y[order], batch_size=options["batch_size"], epochs=1, shuffle=False, verbose=0)
            accuracies.append(float(np.mean(model.predict(x_val, verbose=0).argmax(axis=1) == y_val)))
        curves[name] = accuracies
        del model
        keras.backend.clear_session(free_memory=True)  # four nets in one process: stay within 1 GB
    first = {name: curve[0] for name, curve in curves.items()}
    best_parent = max(first["momentum"], first["RMSprop"])
    tolerance = options["tolerance"]
    passed = {
        "momentum is ahead of plain SGD after the first epoch": first["momentum"] > first["SGD"],
        f"Adam is within {tolerance} of the better of momentum and RMSprop after the first epoch": first["Adam"]
        >= best_parent - tolerance,
    }
    last = {name: curve[-1] for name, curve in curves.items()}
    shown = [
        f"From the same weights and batches, after one epoch on {len(x):,} training images the validation accuracy "
        "is " + ", ".join(f"{first[n]:.4f} with {n}" for n in NAMES) + "; after "
        f"{options['epochs']}: " + ", ".join(f"{last[n]:.4f} with {n}" for n in NAMES) + ".",
        "Momentum carries a running sum of past steps, so it moves further along a consistent slope than plain SGD "
        "at the same learning rate; RMSprop divides each weight's step by the root of its recent squared gradients; "
        "Adam does both, with a bias correction for its first steps.",
    ]
    return {
        "figures": {"first_epoch": first, "last_epoch": last},
        "passed": passed,
        "holds": all(passed.values()),
        "curves": curves,
        "images": len(x),
        "shown": shown,
    }


def plot(record: dict, path) -> None:
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, curve in record["curves"].items():
        ax.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="The tutorial's net, four optimizers")
    ax.set_xticks(range(1, len(next(iter(record["curves"].values()))) + 1))
    ax.legend()
    save_figure(fig, path)
