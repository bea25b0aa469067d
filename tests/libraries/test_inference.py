"""inference.py: class probabilities in bounded batches, in order, the same as model.predict."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_mlp import inference


class Recorder:
    """A stand-in model: each image's 'probabilities' are its index, and every batch size is kept."""

    def __init__(self):
        self.batches: list[int] = []

    def predict_on_batch(self, x):
        self.batches.append(len(x))
        return np.repeat(x[:, :1, 0], 10, axis=1)


def test_images_go_through_in_order_in_batches_of_at_most_batch():
    model = Recorder()
    x = np.arange(2500, dtype=np.float32)[:, None, None] * np.ones((1, 28, 28), dtype=np.float32)
    out = inference.probabilities(model, x)
    assert model.batches == [1024, 1024, 452]
    assert out.shape == (2500, 10) and np.array_equal(out[:, 3], np.arange(2500))
    small = Recorder()
    assert inference.probabilities(small, x[:5], batch=2).shape == (5, 10) and small.batches == [2, 2, 1]


def test_no_images_give_an_empty_table_without_calling_the_model():
    model = Recorder()
    out = inference.probabilities(model, np.zeros((0, 28, 28), dtype=np.float32))
    assert out.shape == (0, 10) and model.batches == []


@pytest.mark.slow
def test_the_same_floats_as_model_predict_whatever_steps_per_execution(models):
    """model.predict runs steps_per_execution batches a call (the memory this avoids); the floats agree."""
    rng = np.random.default_rng(0)
    x = rng.random((600, 28, 28), dtype=np.float32)
    model = models.build_cnn([4], padding="same", dense=[8], batchnorm=True)
    models.compile_model(model, 0.001, steps_per_execution=4)
    expected = model.predict(x, batch_size=128, verbose=0)
    assert np.array_equal(inference.probabilities(model, x, batch=128), expected)
