"""The MLP and its training set-up, built from one params.yaml `train.<model>` block."""

from __future__ import annotations

import keras

from fashion_mlp.config import per_layer
from fashion_mlp.data import IMAGE_SHAPE, NUM_CLASSES


def build_mlp(hidden: list[int], activation: str = "relu", dropout=0.0, l2=0.0, batchnorm=False,
              name: str = "mlp") -> keras.Sequential:
    """Flatten -> [Dense(width, activation, L2) -> BatchNorm? -> Dropout?] per width -> Dense(10, softmax).

    `dropout`, `l2` and `batchnorm` take one value for all hidden layers or a list with one per layer.
    """
    n = len(hidden)
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=IMAGE_SHAPE, name="image"))
    model.add(keras.layers.Flatten())
    for width, rate, penalty, norm in zip(hidden, per_layer(dropout, n, "dropout"),
                                         per_layer(l2, n, "l2"), per_layer(batchnorm, n, "batchnorm")):
        regularizer = keras.regularizers.L2(penalty) if penalty else None
        model.add(keras.layers.Dense(width, activation=activation, kernel_regularizer=regularizer))
        if norm:
            model.add(keras.layers.BatchNormalization())
        if rate:
            model.add(keras.layers.Dropout(rate))
    model.add(keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"))
    return model


def learning_rate_schedule(learning_rate: float, lr_schedule: str, lr_decay_rate: float,
                           steps_per_epoch: int, epochs: int):
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
