"""The data-randomization test of Adebayo et al. (*Sanity checks for saliency maps*, NeurIPS 2018, section 3.2).

The same architecture, freshly initialized, is trained for a few epochs on training images whose labels
are randomly permuted: a model that has seen the pictures but no true relation between a picture and its
class. A method whose maps explain what the model learned about the classes should map it differently
from the trained model; one whose maps stay alike shows the input, or the architecture, more than the
training. cascade.py compares its maps with the trained ones beside the layer randomizations.
Only training images are used, never validation or test labels.
"""

from __future__ import annotations

import numpy as np

from fashion_mlp import inference

BATCH = 128
LEARNING_RATE = 1e-3


def permuted_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """`labels` in a seeded random order: the class counts stay, the pairing with the pictures is gone."""
    return np.random.default_rng(seed).permutation(np.asarray(labels))


def permuted_label_model(model, images: np.ndarray, labels: np.ndarray, epochs: int, seed: int):
    """A fresh copy of `model`'s architecture trained `epochs` epochs (Adam, cross-entropy) on `images` with
    permuted `labels`. Returns (the model, its accuracy on the permuted labels it was trained on: how much it
    memorized)."""
    import keras

    keras.utils.set_random_seed(seed)
    clone = keras.models.clone_model(model)
    clone.build(model.input_shape)
    clone.compile(
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    shuffled = permuted_labels(labels, seed)
    images = images.reshape((-1, *model.input_shape[1:]))
    clone.fit(images, shuffled, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0)
    predicted = inference.probabilities(clone, images).argmax(axis=1)
    return clone, float((predicted == shuffled).mean())
