"""Lesson `regularization_strength`: the L2 penalty's strength, on 2-D toy sets and on the tutorial's net.

First scikit-learn's example "Varying regularization in Multi-layer Perceptron": MLPClassifier (L-BFGS,
seeded, the example's two hidden layers of 10 by default) over a range of `alpha` on its three toy sets,
standardized and split 60/40 as there. A stronger penalty must give smaller weights and a smoother
decision function: the steepest slope of the predicted probability over the plotted plane must fall.
Then the tutorial's net (Keras, the same initial weights for every strength) on a small subset of the
training split, with an L2 penalty of growing strength on both kernels: the train-validation gap must
shrink, and the strongest penalty must lower both accuracies (it underfits).
"""

from __future__ import annotations

import itertools

import numpy as np

TITLE = "The strength of L2 regularization"
KERAS = True  # the stage seeds TensorFlow first
DATA = True  # a subset of the training split, and its validation images
CLAIM = (
    "L2 regularization adds a penalty on the size of the weights to the loss; it discourages large weights and so "
    "keeps the network from overfitting. scikit-learn's alpha is the strength of that penalty."
)
STEP = 0.02  # the example's mesh step, in standardized units


def toy_sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's example's three sets, generated as there."""
    from sklearn.datasets import make_circles, make_classification, make_moons

    x, y = make_classification(n_features=2, n_redundant=0, n_informative=2, random_state=0, n_clusters_per_class=1)
    x += 2 * np.random.RandomState(2).uniform(size=x.shape)
    return {
        "moons": make_moons(noise=0.3, random_state=0),
        "circles": make_circles(noise=0.2, factor=0.5, random_state=1),
        "linearly separable": (x, y),
    }


def falls(values: list[float]) -> bool:
    """Never rises from one strength to the next, and ends below where it started."""
    floor = 1e-4 * values[0]  # a net flattened to zero weights ends at 1e-6 or 0, by L-BFGS' rounding, not alpha
    return all(b <= a + floor for a, b in itertools.pairwise(values)) and values[-1] < values[0]


def toy(options: dict, seed: int) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    settings = {"hidden_layer_sizes": options["toy_hidden"], "solver": "lbfgs", "max_iter": options["toy_max_iter"]}
    out = {key: {} for key in ("norm", "slope", "held_out", "panels")}
    for name, (x, y) in toy_sets().items():
        x = StandardScaler().fit_transform(x)
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.4, random_state=42)
        xx, yy = np.meshgrid(*(np.arange(x[:, i].min() - 0.5, x[:, i].max() + 0.5, STEP) for i in (0, 1)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a weak penalty may use every iteration
            nets = [MLPClassifier(alpha=a, random_state=seed, **settings).fit(x_tr, y_tr) for a in options["alphas"]]
        probs = [net.predict_proba(np.c_[xx.ravel(), yy.ravel()])[:, 1].reshape(xx.shape) for net in nets]
        out["slope"][name] = [round(float(np.hypot(*np.gradient(p, STEP)).max()), 6) for p in probs]
        out["norm"][name] = [round(float(sum((w**2).sum() for w in net.coefs_)), 6) for net in nets]
        out["held_out"][name] = [round(float(net.score(x_te, y_te)), 4) for net in nets]
        split = {"x": x_tr, "y": y_tr, "x_te": x_te, "y_te": y_te, "xs": xx[0, ::4], "ys": yy[::4, 0]}
        out["panels"][name] = {k: v.round(4).tolist() for k, v in split.items()}
        out["panels"][name]["surfaces"] = [p[::4, ::4].round(3).tolist() for p in probs]  # coarser: enough to draw
    return out


def tutorial_net(start: dict, dropout: float, l2: float, learning_rate: float):
    """The tutorial's net from the weights `start`, an L2 penalty of strength `l2` on both kernels, compiled."""
    import keras

    from fashion_mlp.lessons.backprop import keras_net

    model = keras_net(start, dropout)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense) and l2:
            layer.kernel.regularizer = keras.regularizers.L2(l2)  # what kernel_regularizer= would have set
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", steps_per_execution=64)
    return model


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """In inference mode (dropout off), in one eager call: `predict` would trace a function per net."""
    return float(np.mean(np.asarray(model(x, training=False)).argmax(axis=1) == y))


def fashion(options: dict, train: dict, seed: int) -> dict:
    import keras

    from fashion_mlp.lessons.backprop import init_params

    start = init_params(np.random.default_rng(seed))
    out = {"train_accuracy": [], "validation_accuracy": [], "gap": [], "kernel_norm": []}
    for strength in options["l2"]:
        model = tutorial_net(start, options["dropout"], strength, options["learning_rate"])
        # Keras shuffles each epoch from the seeded TensorFlow: the same batches in every rerun.
        model.fit(train["x"], train["y"], batch_size=options["batch_size"], epochs=options["epochs"], verbose=0)
        fit, val = accuracy(model, train["x"], train["y"]), accuracy(model, train["x_val"], train["y_val"])
        out["train_accuracy"].append(fit)
        out["validation_accuracy"].append(val)
        out["gap"].append(round(fit - val, 6))
        out["kernel_norm"].append(round(float(sum((w**2).sum() for w in model.get_weights()[::2])), 3))
        del model
        keras.backend.clear_session(free_memory=True)
    return out


def run(options: dict, train: dict, seed: int) -> dict:
    shapes, net = toy(options, seed), fashion(options, train, seed)
    gap, fit, val = net["gap"], net["train_accuracy"], net["validation_accuracy"]
    tolerance, share, drop = options["step_tolerance"], options["gap_shrinks_to"], options["too_much_drop"]
    steady = all(b <= a + tolerance for a, b in itertools.pairwise(gap))
    passed = {
        "on every toy set the weights' squared norm falls as alpha grows": all(map(falls, shapes["norm"].values())),
        "on every toy set the steepest slope of the predicted probability falls as alpha grows (a smoother "
        "boundary)": all(map(falls, shapes["slope"].values())),
        f"on Fashion-MNIST the train-validation gap never widens by more than {tolerance} as L2 grows": steady,
        f"the strongest L2 leaves less than {share} of the unregularized gap": gap[-1] < share * gap[0],
        f"the strongest L2 lowers both accuracies by at least {drop}": min(fit[0] - fit[-1], val[0] - val[-1]) >= drop,
    }
    best, l2, alphas = int(np.argmax(val)), options["l2"], options["alphas"]
    verdict = f"The best validation accuracy comes with L2 {l2[best]:g}, {val[best] - val[0]:+.4f} over none"
    verdict = verdict if best else "No L2 strength raises validation accuracy above the net without it"
    shown = [
        f"On scikit-learn's three toy sets, raising alpha from {alphas[0]:g} to {alphas[-1]:g} shrinks the weights' "
        "squared norm (" + "; ".join(f"{k} {v[0]:.1f} to {v[-1]:.2f}" for k, v in shapes["norm"].items()) + ") and "
        "the steepest slope of the predicted probability ("
        + "; ".join(f"{k} {v[0]:.2f} to {v[-1]:.2f}" for k, v in shapes["slope"].items())
        + "): the boundary loses its bends. Too strong a penalty underfits: held-out accuracy at the strongest alpha "
        "is " + "; ".join(f"{v[-1]:.2f} on {k} (best {max(v):.2f})" for k, v in shapes["held_out"].items()) + ".",
        f"The tutorial's net on {len(train['x']):,} training images for {options['epochs']} epochs, training and "
        "validation accuracy: "
        + "; ".join(
            f"{f:.4f} and {v:.4f} with L2 {s:g} (gap {g:.4f})" for s, f, v, g in zip(l2, fit, val, gap, strict=True)
        )
        + ".",
        f"{verdict}; the strongest L2 costs {fit[0] - fit[-1]:.4f} of training and {val[0] - val[-1]:.4f} of "
        "validation accuracy.",
    ]
    figures = {"alphas": options["alphas"], "toy_weight_norm": shapes["norm"], "toy_steepest_slope": shapes["slope"]}
    figures |= {"toy_held_out_accuracy": shapes["held_out"], "l2": l2} | net
    record = {"figures": figures, "passed": passed, "holds": all(passed.values()), "images": len(train["x"])}
    return record | {"shown": shown, "_panels": shapes["panels"]}  # "_": the figure's only, not in the JSON


def plot(record: dict, path) -> None:
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    figures, panels = record["figures"], record["_panels"]
    alphas, held_out = figures["alphas"], figures["toy_held_out_accuracy"]
    fig = plt.figure(figsize=(2.4 * len(alphas), 2.4 * len(panels) + 3.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.4 * len(panels), 3.4])
    axes = top.subplots(len(panels), len(alphas), squeeze=False)
    for row, (name, panel) in zip(axes, panels.items(), strict=True):
        for ax, alpha, surface, score in zip(row, alphas, panel["surfaces"], held_out[name], strict=True):
            ax.contourf(panel["xs"], panel["ys"], surface, levels=np.linspace(0, 1, 11), cmap="RdBu")
            for key, shade in (("", 1.0), ("_te", 0.4)):
                ax.scatter(*np.array(panel[f"x{key}"]).T, c=panel[f"y{key}"], cmap="bwr_r", vmin=0, vmax=1, s=12,
                           edgecolors="black", linewidths=0.5, alpha=shade)  # fmt: skip
            ax.set(xticks=[], yticks=[])
            ax.set_title(f"alpha {alpha:g}: held out {score:.2f}", fontsize="small")
        row[0].set_ylabel(name)
    top.suptitle("MLPClassifier (L-BFGS) on scikit-learn's toy sets: P(blue class); held-out points faint")
    left, right = bottom.subplots(1, 2, width_ratios=[3, 2])
    l2 = [f"{s:g}" for s in figures["l2"]]
    left.plot(l2, figures["train_accuracy"], marker="o", label="its training images")
    left.plot(l2, figures["validation_accuracy"], marker="o", label="validation images")
    left.set(xlabel="L2 strength on both kernels", ylabel="accuracy")
    left.set_title(f"The tutorial's net on {record['images']:,} Fashion-MNIST images")
    left.legend()
    for name, norms in figures["toy_weight_norm"].items():
        right.plot(alphas, norms, marker="o", label=name)
    right.set(xscale="log", xlabel="alpha", ylabel="squared norm of the weights", title="Toy sets: the weights shrink")
    right.legend(fontsize="small")
    save_figure(fig, path)
