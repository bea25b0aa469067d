"""Class probabilities from a Keras model: the one way `evaluate`, `explain`, `predict` and the
served champion run a model over images."""

from __future__ import annotations

import numpy as np

from fashion_mlp.data import NUM_CLASSES

# Images per call. model.predict runs steps_per_execution batches in one call: 16 x 1,024 images
# took evaluate of the cnn-long preset's padded CNN to 2.1 GB. predict_on_batch runs one batch,
# without predict's per-call tf.data set-up (tens of ms, most of a served picture's latency), and
# gives model.predict's floats bit for bit.
BATCH = 1024


def probabilities(model, x: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """Class probabilities of `x`, (n, 28, 28) images scaled as `prepare` scales them."""
    if len(x) == 0:
        return np.zeros((0, NUM_CLASSES), dtype=np.float32)
    return np.concatenate([np.asarray(model.predict_on_batch(x[i : i + batch])) for i in range(0, len(x), batch)])
