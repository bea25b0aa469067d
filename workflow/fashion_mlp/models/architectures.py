"""The architectures of the model kinds (kinds.py), each built from one params.yaml `train.<model>` block."""

from __future__ import annotations

import keras

from fashion_mlp.config import per_layer
from fashion_mlp.data import IMAGE_SHAPE, NUM_CLASSES


def mlp_from_block(block: dict, name: str) -> keras.Sequential:
    """kind mlp: the block's hidden layers, dropout, L2 and batch norm."""
    return build_mlp(block["hidden"], block["activation"], block["dropout"], block["l2"], block["batchnorm"], name=name)


def cnn_from_block(block: dict, name: str) -> keras.Sequential:
    """kind cnn: the block's conv blocks, then its dense layers."""
    return build_cnn(
        block["conv"],
        block["kernel"],
        block["padding"],
        block["dense"],
        block["activation"],
        block["dropout"],
        block["batchnorm"],
        name=name,
    )


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
