"""How a model is fitted, whatever its kind: the learning-rate schedule, the optimizer and loss, augmentation."""

from __future__ import annotations

import keras
import numpy as np

from fashion_mlp.data import ALIGNMENT, IMAGE_SHAPE, NUM_CLASSES


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


def as_tensor(array):
    """`array` as a TensorFlow tensor sharing its memory (DLPack), where TensorFlow allows it: C order,
    aligned to data.ALIGNMENT bytes (data.load_arrays' arrays are). Anything else is returned as it is,
    and Keras copies it at the start of `fit` as before. The values, and so the results, are the same."""
    import tensorflow as tf

    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous or array.ctypes.data % ALIGNMENT:
        return array
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def built_before_tracing(x, y) -> keras.callbacks.Callback:
    """A callback that creates the optimizer's, metrics' and loss's variables as training begins.

    Keras otherwise creates them inside the first trace of its training step, and TensorFlow
    then traces the step again without them: 0.5 s of a two-epoch trial here. The variables,
    and so the results, are the same. Keras has no public call for it (`_symbolic_build` is what
    its own distributed `fit` calls); `x` and `y` give the shapes and dtypes of one batch.
    """

    class BuiltBeforeTracing(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            build = getattr(self.model, "_symbolic_build", None)
            if build is not None:  # a Keras without it traces twice, as before: slower, the same results
                first = tuple(a[:1] for a in x) if isinstance(x, tuple) else x[:1]  # (images, rows): a table's
                build(data_batch=(first, y[:1]))

    return BuiltBeforeTracing()


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
