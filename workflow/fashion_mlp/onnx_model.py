"""A model's ONNX export, and the runner that predicts with it through ONNX Runtime, without TensorFlow.

`register` exports the models it registers (Keras 3's `model.export(format="onnx")`, through
tf2onnx) and logs the file beside the .keras one; `predict` and the served pyfunc then load ONNX
Runtime (a quarter of a second) instead of TensorFlow (about 5 s). The export is checked against
the Keras model before it is logged: the same class and probabilities within PARITY_ATOL.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fashion_mlp import PipelineError
from fashion_mlp.data import IMAGE_SHAPE

PARITY_ATOL = 1e-5  # the largest difference in any probability between the Keras model and its export
ONNX_ARTIFACT = "onnx_model"  # its name among a logged pyfunc's artifacts, beside "keras_model"


def export(model, path: str | os.PathLike) -> Path:
    """Write `model` as ONNX to `path`, with a batch dimension of any size."""
    model.predict_on_batch(np.zeros((1, *IMAGE_SHAPE), dtype=np.float32))  # export needs a called model
    model.export(str(path), format="onnx", verbose=False)
    return Path(path)


class OnnxModel:
    """An ONNX file as the pipeline runs models: `predict_on_batch(images)` gives class probabilities,
    so `inference.probabilities` treats it as it treats a Keras model."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own classes, not one base
            raise PipelineError(f"{path}: cannot load this ONNX model ({exc})") from None
        self.input = self.session.get_inputs()[0].name

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.asarray(x, dtype=np.float32)})[0]


def parity(model, onnx_model: OnnxModel, x: np.ndarray) -> dict:
    """How far the export's answers on `x` are from the Keras model's: the largest probability
    difference and the share of images given the same class."""
    from fashion_mlp.inference import probabilities

    expected, got = probabilities(model, x), probabilities(onnx_model, x)
    return {
        "images": len(x),
        "max_abs_difference": float(np.abs(expected - got).max()),
        "same_class": float(np.mean(expected.argmax(axis=1) == got.argmax(axis=1))),
    }


def check_parity(model, onnx_model: OnnxModel, x: np.ndarray, where: str) -> dict:
    """parity(), or an error naming `where` when the export answers differently."""
    found = parity(model, onnx_model, x)
    if found["same_class"] < 1.0 or found["max_abs_difference"] > PARITY_ATOL:
        raise PipelineError(
            f"{where}: the ONNX export answers differently from the Keras model on {found['images']} images "
            f"(largest probability difference {found['max_abs_difference']:.2e}, allowed {PARITY_ATOL:.0e}; "
            f"same class on {found['same_class']:.2%})"
        )
    return found


def probe_images(n: int = 256, seed: int = 0) -> np.ndarray:
    """Fixed images for register's parity check (it reads no data): uniform noise and sparse strokes in [0, 1]."""
    rng = np.random.default_rng(seed)
    noise = rng.random((n // 2, *IMAGE_SHAPE), dtype=np.float32)
    strokes = (rng.random((n - n // 2, *IMAGE_SHAPE)) < 0.2).astype(np.float32) * rng.random((1, *IMAGE_SHAPE))
    return np.concatenate([noise, strokes.astype(np.float32)])
