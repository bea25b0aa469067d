"""The reference for the speed benchmark: the tutorial's baseline as a plain Keras script.

It does the work of the project's `train` stage the way a notebook would: import
TensorFlow, load the prepared arrays, build the model, `fit` with Keras'
defaults (one batch per call, every core), save the model. It seeds Keras and
turns on op determinism only so its results can be compared with the project's.

    python benchmarks/plain_keras.py --data data/prepared/train.npz --epochs 10 --model_out /tmp/plain.keras

Prints one JSON line: the epoch times and validation accuracies.
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--model_out", required=True)
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    with np.load(args.data) as data:
        x_train, y_train, x_val, y_val = (data[k] for k in ("x_train", "y_train", "x_val", "y_val"))

    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[timer],
        verbose=2,
    )
    model.save(args.model_out)
    print(json.dumps({"epoch_seconds": timer.seconds, "val_accuracy": history.history["val_accuracy"]}))


if __name__ == "__main__":
    main()
