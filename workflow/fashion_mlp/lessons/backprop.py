"""Lesson `backprop`: the tutorial's network trained by hand in NumPy, and checked.

784-128 ReLU, inverted dropout, 10 softmax, sparse categorical cross-entropy: the forward pass, the
loss, the backward pass through each layer by the chain rule, and the updates of plain SGD, SGD with
momentum and Adam, written out. Four checks decide the lesson: finite differences in float64, the
gradients of TensorFlow's GradientTape, one Adam and one momentum step of Keras' own optimizers, and a
few epochs of training against the same net trained by Keras from the same weights and batch order.
By hand on purpose: showing the arithmetic that `model.fit()` hides is the point.
"""

from __future__ import annotations

import numpy as np

TITLE = "Backpropagation by hand"
KERAS = True  # the stage seeds TensorFlow first
DATA = True  # it reads the training split
CLAIM = (
    "Training is a forward pass, a loss, a backward pass that takes the gradient of the loss with respect to "
    "every weight by the chain rule, layer by layer from the output back, and an update of the weights; "
    "Adam combines momentum with RMSprop's per-weight step sizes."
)
LIMITS = {  # what each check must reach for the lesson to hold
    "gradient_check_max_rel_error": 1e-6,
    "tf_max_abs_diff": 1e-5,
    "adam_max_abs_diff": 1e-6,
    "momentum_max_abs_diff": 1e-6,
    "val_accuracy_gap": 0.015,  # "within about a point" of Keras
}
NAMES = ("W1", "b1", "W2", "b2")


# --- the network ----------------------------------------------------------------------


def init_params(rng: np.random.Generator, hidden: int = 128, dtype=np.float32) -> dict[str, np.ndarray]:
    """Glorot-uniform kernels and zero biases, as Keras' Dense starts."""

    def glorot(fan_in: int, fan_out: int) -> np.ndarray:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)

    return {
        "W1": glorot(784, hidden),
        "b1": np.zeros(hidden, dtype),
        "W2": glorot(hidden, 10),
        "b2": np.zeros(10, dtype),
    }


def forward(p: dict, x: np.ndarray, keep: np.ndarray | None = None) -> dict:
    """Every intermediate the backward pass needs. `keep`: dropout's mask, already scaled by 1/(1 - rate)."""
    z1 = x @ p["W1"] + p["b1"]
    h = np.maximum(z1, 0)
    dropped = h if keep is None else h * keep
    logits = dropped @ p["W2"] + p["b2"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))  # shifted: exp cannot overflow
    return {"x": x, "z1": z1, "dropped": dropped, "keep": keep, "probs": e / e.sum(axis=1, keepdims=True)}


def loss(cache: dict, y: np.ndarray) -> float:
    return float(-np.mean(np.log(cache["probs"][np.arange(len(y)), y])))


def backward(p: dict, cache: dict, y: np.ndarray) -> dict[str, np.ndarray]:
    """The chain rule, from the loss back to the first layer's weights."""
    d_logits = cache["probs"].copy()
    d_logits[np.arange(len(y)), y] -= 1  # softmax and cross-entropy together: p - onehot(y)
    d_logits /= len(y)  # the loss is a mean over the batch
    d_dropped = d_logits @ p["W2"].T
    d_h = d_dropped if cache["keep"] is None else d_dropped * cache["keep"]
    d_z1 = d_h * (cache["z1"] > 0)  # ReLU passes the gradient where it was active
    return {
        "W1": cache["x"].T @ d_z1,
        "b1": d_z1.sum(axis=0),
        "W2": cache["dropped"].T @ d_logits,
        "b2": d_logits.sum(axis=0),
    }


def dropout_mask(rng: np.random.Generator, shape: tuple, rate: float, dtype=np.float32) -> np.ndarray:
    return ((rng.random(shape) >= rate) / (1.0 - rate)).astype(dtype)


# --- the optimizers ---------------------------------------------------------------------


def sgd_step(p: dict, grads: dict, lr: float) -> None:
    for k in p:
        p[k] -= lr * grads[k]


def momentum_step(p: dict, grads: dict, state: dict, lr: float, momentum: float = 0.9) -> None:
    """Velocity v <- momentum * v - lr * g; w <- w + v (Keras' SGD with momentum)."""
    for k in p:
        state[k] = momentum * state.get(k, 0.0) - lr * grads[k]
        p[k] += state[k]


def adam_step(p: dict, grads: dict, state: dict, lr: float, b1=0.9, b2=0.999, eps=1e-7) -> None:
    """Momentum's running mean of gradients (m) and RMSprop's of their squares (v), both bias-corrected.

    Written in the paper's cheaper order (Kingma and Ba 2015, end of section 2), as Keras computes it:
    the two corrections folded into the step size, epsilon added to sqrt(v) uncorrected.
    """
    t = state["t"] = state.get("t", 0) + 1
    step = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
    for k in p:
        m = state[f"m_{k}"] = b1 * state.get(f"m_{k}", 0.0) + (1 - b1) * grads[k]
        v = state[f"v_{k}"] = b2 * state.get(f"v_{k}", 0.0) + (1 - b2) * grads[k] ** 2
        p[k] -= (step * m / (np.sqrt(v) + eps)).astype(p[k].dtype)


# --- the checks -------------------------------------------------------------------------


def gradient_check(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, entries: int, rate: float) -> dict:
    """Largest relative error of the backward pass against central differences, per weight tensor, in float64.

    A fixed dropout mask, so the check covers dropout's backward too. The first layer's entries are drawn
    from pixels that are not zero in the batch (a zero pixel's weights get exactly zero from both).
    """
    p = {k: v.astype(np.float64) for k, v in init_params(rng).items()}
    x = x.astype(np.float64)
    keep = dropout_mask(rng, (len(x), p["b1"].size), rate, np.float64)
    analytic = backward(p, forward(p, x, keep), y)
    lit = np.flatnonzero(np.abs(x).sum(axis=0) > 0)
    eps, worst = 1e-5, {}
    for name in NAMES:
        shape = p[name].shape
        if name == "W1":
            picks = [(int(rng.choice(lit)), int(rng.integers(shape[1]))) for _ in range(entries)]
        else:
            picks = [tuple(int(rng.integers(n)) for n in shape) for _ in range(entries)]
        errors = []
        for index in picks:
            saved = p[name][index]
            p[name][index] = saved + eps
            up = loss(forward(p, x, keep), y)
            p[name][index] = saved - eps
            down = loss(forward(p, x, keep), y)
            p[name][index] = saved
            numeric, exact = (up - down) / (2 * eps), analytic[name][index]
            errors.append(abs(numeric - exact) / max(abs(numeric) + abs(exact), 1e-10))
        worst[name] = float(max(errors))
    return worst


def keras_net(p: dict, rate: float):
    """The same net in Keras, holding the weights `p`."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(p["b1"].size, activation="relu"),
            keras.layers.Dropout(rate),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.set_weights([p["W1"], p["b1"], p["W2"], p["b2"]])
    return model


def tensorflow_checks(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, rate: float, lr: float) -> dict:
    """GradientTape's gradients (dropout off), then one step of Keras' Adam and of its SGD with momentum."""
    import keras
    import tensorflow as tf

    p = init_params(rng)
    model = keras_net(p, rate)
    with tf.GradientTape() as tape:
        value = keras.losses.SparseCategoricalCrossentropy()(y, model(x, training=False))
    tape_grads = [g.numpy() for g in tape.gradient(value, model.trainable_variables)]
    mine = backward(p, forward(p, x), y)
    out = {"tf_max_abs_diff": float(max(np.abs(mine[k] - g).max() for k, g in zip(NAMES, tape_grads, strict=True)))}
    for key, optimizer, step in (
        ("adam_max_abs_diff", keras.optimizers.Adam(learning_rate=lr), adam_step),
        ("momentum_max_abs_diff", keras.optimizers.SGD(learning_rate=lr, momentum=0.9), momentum_step),
    ):
        variables = [tf.Variable(p[k]) for k in NAMES]
        mine_after, state = {k: v.copy() for k, v in p.items()}, {}
        for _ in range(2):  # two steps: the second uses the moments the first left
            optimizer.apply_gradients(zip([tf.constant(mine[k]) for k in NAMES], variables, strict=True))
            step(mine_after, mine, state, lr)
        out[key] = float(max(np.abs(mine_after[k] - v.numpy()).max() for k, v in zip(NAMES, variables, strict=True)))
    return out


def accuracy(p: dict, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(forward(p, x)["probs"].argmax(axis=1) == y))


def train_both(train: dict, rng: np.random.Generator, options: dict) -> dict:
    """The NumPy net (Adam by hand) and the Keras net, from the same weights and the same batch order."""
    import keras

    x, y, x_val, y_val = train["x"], train["y"], train["x_val"], train["y_val"]
    p = init_params(rng)
    model = keras_net(p, options["dropout"])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=options["learning_rate"]),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    curves = {k: [] for k in ("numpy_loss", "numpy_val_accuracy", "keras_loss", "keras_val_accuracy")}
    state, size = {}, options["batch_size"]
    for _ in range(options["epochs"]):
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(x), size):
            batch = order[start : start + size]
            keep = dropout_mask(rng, (len(batch), p["b1"].size), options["dropout"])
            cache = forward(p, x[batch], keep)
            losses.append(loss(cache, y[batch]))
            adam_step(p, backward(p, cache, y[batch]), state, options["learning_rate"])
        history = model.fit(x[order], y[order], batch_size=size, epochs=1, shuffle=False, verbose=0)
        curves["numpy_loss"].append(float(np.mean(losses)))
        curves["numpy_val_accuracy"].append(accuracy(p, x_val, y_val))
        curves["keras_loss"].append(float(history.history["loss"][0]))
        curves["keras_val_accuracy"].append(float(np.mean(model.predict(x_val, verbose=0).argmax(axis=1) == y_val)))
    return curves


# --- the lesson -------------------------------------------------------------------------


def run(options: dict, train: dict, seed: int) -> dict:
    """The lesson's record: the checks' figures against LIMITS, the curves, and what they show."""
    rng = np.random.default_rng(seed)
    x, y = train["x"], train["y"]
    check_x, check_y = x[: options["check_batch"]], y[: options["check_batch"]]
    errors = gradient_check(check_x, check_y, rng, options["check_entries"], options["dropout"])
    figures = {"gradient_check_max_rel_error": max(errors.values())}
    figures |= tensorflow_checks(check_x, check_y, rng, options["dropout"], options["learning_rate"])
    curves = train_both(train, rng, options)
    figures["val_accuracy_gap"] = abs(curves["numpy_val_accuracy"][-1] - curves["keras_val_accuracy"][-1])
    passed = {k: figures[k] <= LIMITS[k] for k in LIMITS}
    worst, tape = figures["gradient_check_max_rel_error"], figures["tf_max_abs_diff"]
    shown = [
        f"The backward pass written out agrees with central finite differences to a relative error of {worst:.1e} at "
        f"most (float64, {options['check_entries']} weights of each of the four tensors, dropout included), and with "
        f"TensorFlow's GradientTape to {tape:.1e}.",
        f"Two steps of Adam written out (moving means of the gradients and of their squares, bias-corrected) match "
        f"Keras' Adam to {figures['adam_max_abs_diff']:.1e}; SGD with momentum matches to "
        f"{figures['momentum_max_abs_diff']:.1e}.",
        f"Trained by hand for {options['epochs']} epochs on {len(x):,} training images, the NumPy net reaches "
        f"{curves['numpy_val_accuracy'][-1]:.4f} validation accuracy; Keras, from the same weights and batches, "
        f"{curves['keras_val_accuracy'][-1]:.4f} (their dropout masks differ).",
    ]
    return {
        "figures": figures,
        "limits": LIMITS,
        "passed": passed,
        "holds": all(passed.values()),
        "gradient_check_by_tensor": errors,
        "curves": curves,
        "images": len(x),
        "shown": shown,
    }


def plot(record: dict, path) -> None:
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    errors = record["gradient_check_by_tensor"]
    left.bar(list(errors), [max(v, 1e-17) for v in errors.values()], color="tab:blue")
    left.axhline(record["limits"]["gradient_check_max_rel_error"], color="tab:red", linestyle="--", label="limit")
    left.set(yscale="log", ylabel="largest relative error", title="Backward pass against finite differences")
    left.legend()
    curves = record["curves"]
    epochs = range(1, len(curves["numpy_val_accuracy"]) + 1)
    right.plot(epochs, curves["numpy_val_accuracy"], marker="o", label="NumPy, by hand")
    right.plot(epochs, curves["keras_val_accuracy"], marker="s", label="Keras")
    right.set(xlabel="epoch", ylabel="validation accuracy", title="The same net, the same weights and batches")
    right.legend()
    save_figure(fig, path)
