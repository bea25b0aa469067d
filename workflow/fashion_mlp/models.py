"""The MLP and its training set-up, built from one params.yaml `train.<model>` block."""

from __future__ import annotations

import json
import os
import zipfile

import keras

from fashion_mlp.config import per_layer
from fashion_mlp.data import IMAGE_SHAPE, NUM_CLASSES
from fashion_mlp.io import atomic_output

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip member can carry


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


def compile_model(model: keras.Model, learning_rate, steps_per_execution: int = 1) -> keras.Model:
    # Keywords only: compile's third positional argument is loss_weights in Keras 3.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


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
