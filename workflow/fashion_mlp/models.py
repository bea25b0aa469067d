"""The models (an MLP or a small CNN) and their training set-up, built from one params.yaml `train.<model>` block."""

from __future__ import annotations

import json
import os
import zipfile

import keras

from fashion_mlp.config import per_layer
from fashion_mlp.data import IMAGE_SHAPE, NUM_CLASSES
from fashion_mlp.io import atomic_output

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip member can carry
MODEL_KINDS = ("mlp", "cnn")


def build_model(params: dict, name: str = "mlp") -> keras.Sequential:
    """The model a `train.<model>` block describes: `kind` mlp (the default when absent) or cnn."""
    kind = params.get("kind", "mlp")
    if kind == "mlp":
        return build_mlp(
            params["hidden"], params["activation"], params["dropout"], params["l2"], params["batchnorm"], name=name
        )
    if kind == "cnn":
        return build_cnn(
            params["conv"],
            params["kernel"],
            params["padding"],
            params["dense"],
            params["activation"],
            params["dropout"],
            params["batchnorm"],
            name=name,
        )
    raise ValueError(f"unknown model kind {kind!r}; use one of {', '.join(MODEL_KINDS)}")


def build_mlp(
    hidden: list[int], activation: str = "relu", dropout=0.0, l2=0.0, batchnorm=False, name: str = "mlp"
) -> keras.Sequential:
    """Flatten -> [Dense(width, activation, L2) -> BatchNorm? -> Dropout?] per width -> Dense(10, softmax).

    `dropout`, `l2` and `batchnorm` take one value for all hidden layers or a list with one per layer.
    """
    n = len(hidden)
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=IMAGE_SHAPE, name="image"))
    model.add(keras.layers.Flatten())
    for width, rate, penalty, norm in zip(
        hidden,
        per_layer(dropout, n, "dropout"),
        per_layer(l2, n, "l2"),
        per_layer(batchnorm, n, "batchnorm"),
        strict=True,
    ):
        regularizer = keras.regularizers.L2(penalty) if penalty else None
        model.add(keras.layers.Dense(width, activation=activation, kernel_regularizer=regularizer))
        if norm:
            model.add(keras.layers.BatchNormalization())
        if rate:
            model.add(keras.layers.Dropout(rate))
    model.add(keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"))
    return model


def build_cnn(
    conv: list[int],
    kernel: int = 3,
    padding: str = "same",
    dense: list[int] = (128,),
    activation: str = "relu",
    dropout=0.0,
    batchnorm=False,
    name: str = "cnn",
) -> keras.Sequential:
    """Reshape to (28, 28, 1) -> [Conv2D(filters, kernel) -> BatchNorm? -> MaxPooling2D(2)] per conv block
    -> Flatten -> [Dense(width, activation) -> Dropout?] per dense layer -> Dense(10, softmax).

    The input is the (28, 28) image every stage feeds, so evaluate, explain and serving need no change.
    `batchnorm` takes one value or one per conv block, `dropout` one value or one per dense layer.
    """
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=IMAGE_SHAPE, name="image"))
    model.add(keras.layers.Reshape((*IMAGE_SHAPE, 1)))
    for filters, norm in zip(conv, per_layer(batchnorm, len(conv), "batchnorm", over="conv"), strict=True):
        model.add(keras.layers.Conv2D(filters, kernel, activation=activation, padding=padding))
        if norm:
            model.add(keras.layers.BatchNormalization())
        model.add(keras.layers.MaxPooling2D(2))
    model.add(keras.layers.Flatten())
    for width, rate in zip(dense, per_layer(dropout, len(dense), "dropout", over="dense"), strict=True):
        model.add(keras.layers.Dense(width, activation=activation))
        if rate:
            model.add(keras.layers.Dropout(rate))
    model.add(keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"))
    return model


def augmenter(shift: int, flip: bool, seed: int) -> keras.Sequential | None:
    """Random shifts of up to `shift` pixels and horizontal flips, seeded; None when both are off.

    Kept out of the saved model on purpose (train wraps it around the model for fitting only):
    the .keras file then holds the inference layers alone, so explain's DeepExplainer and LRP,
    which walk the model's layers, never meet a random layer, and the file predicts exactly
    what the trained model does.
    """
    if not shift and not flip:
        return None
    layers = [keras.Input(shape=IMAGE_SHAPE), keras.layers.Reshape((*IMAGE_SHAPE, 1))]
    if shift:
        factor = shift / IMAGE_SHAPE[0]
        # Nearest-pixel shifts into a black border (the images' background), no blur.
        layers.append(
            keras.layers.RandomTranslation(
                factor, factor, fill_mode="constant", interpolation="nearest", seed=seed, name="shift"
            )
        )
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 1, name="flip"))
    layers.append(keras.layers.Reshape(IMAGE_SHAPE))
    return keras.Sequential(layers, name="augment")


def learning_rate_schedule(
    learning_rate: float, lr_schedule: str, lr_decay_rate: float, steps_per_epoch: int, epochs: int
):
    """A float, or a schedule that changes the rate every step of the run.

    `exponential` multiplies the rate by `lr_decay_rate` once per epoch (smoothly,
    step by step); `cosine` anneals it to zero over `epochs`.
    """
    if lr_schedule == "constant":
        return learning_rate
    if lr_schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=steps_per_epoch, decay_rate=lr_decay_rate
        )
    if lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps_per_epoch * epochs)
    raise ValueError(f"unknown lr_schedule {lr_schedule!r}; use constant, exponential or cosine")


def compile_model(
    model: keras.Model,
    learning_rate,
    steps_per_execution: int = 1,
    label_smoothing: float = 0.0,
    ema_momentum: float | None = None,
    optimizer=None,
) -> keras.Model:
    """Adam and cross-entropy on integer labels; with `label_smoothing`, on one-hot labels (one_hot()).

    Keras 3's SparseCategoricalCrossentropy has no label smoothing; CategoricalCrossentropy has.
    `ema_momentum` turns on Adam's moving average of the weights. `optimizer` (default: a new
    Adam) lets the saved model keep the optimizer a wrapper trained with.
    """
    if optimizer is None and ema_momentum is not None:
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate, use_ema=True, ema_momentum=ema_momentum)
    if label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    else:
        loss = "sparse_categorical_crossentropy"  # as before: unchanged blocks give unchanged files
    # Keywords only: compile's third positional argument is loss_weights in Keras 3.
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate=learning_rate),
        loss=loss,
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def one_hot(labels):
    """Integer labels as float32 one-hot rows: the targets of a label-smoothed loss."""
    import numpy as np

    return np.eye(NUM_CLASSES, dtype=np.float32)[np.asarray(labels)]


def save_model(model: keras.Model, path: str | os.PathLike) -> None:
    """Save `model` as a .keras file, atomically, whose bytes depend on the model alone.

    Keras 3 has no option for this, and its archive differs from save to save in three ways,
    undone here: metadata.json holds the save time (`date_saved`, dropped); config.json names
    objects shared between layers by their memory address (`shared_object_id`, renumbered
    1, 2, ... in order of appearance, which keeps the sharing); and the zip members carry
    dates (all set to one fixed date, with fixed permissions, in name order, stored
    uncompressed as Keras stores them). The weights (model.weights.h5) hold no time and are
    kept as written. So the same weights give the same file, and DVC's hash of a model
    changes only when the model does.
    """
    with atomic_output(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        metadata = json.loads(members["metadata.json"])
        metadata.pop("date_saved", None)
        members["metadata.json"] = json.dumps(metadata).encode()
        members["config.json"] = json.dumps(_renumber_shared_objects(json.loads(members["config.json"]))).encode()
        with zipfile.ZipFile(tmp, "w") as archive:
            for name in sorted(members):
                info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
                info.create_system = 3  # Unix, on every platform
                info.external_attr = 0o644 << 16
                archive.writestr(info, members[name], compress_type=zipfile.ZIP_STORED)


def _renumber_shared_objects(config, numbers: dict | None = None):
    """`config` with every `shared_object_id` (an id() in the saving process) replaced by 1, 2, ...
    in order of first appearance; equal ids stay equal, so the loader shares the same objects."""
    numbers = {} if numbers is None else numbers
    if isinstance(config, dict):
        return {
            key: numbers.setdefault(value, len(numbers) + 1)
            if key == "shared_object_id"
            else _renumber_shared_objects(value, numbers)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_renumber_shared_objects(value, numbers) for value in config]
    return config
