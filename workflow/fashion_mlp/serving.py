"""The champion as an MLflow pyfunc that takes pictures: what `mlflow models serve` answers with.

Input: a DataFrame with one column `image` of image bytes (PNG, JPEG... any size or mode); over
REST the bytes go base64-encoded, e.g. {"dataframe_split": {"columns": ["image"], "data": [["iVBOR..."]]}}.
Each picture goes through fashion_mlp.images (the same preprocessing and scaling as `predict` and
`prepare`), then through the Keras model that the pyfunc carries as an artifact.
Output: one row per picture: `class` (the top class name), `probability` (its probability) and
one column per class name with its probability.
A bad picture (not an image, empty, corrupt, too large) fails the request with HTTP 400 and a
message naming its row; MLflow's own parser answers 400 to a payload of the wrong shape.

The model carries this package as code (code_paths), so what a version serves does not change
when the checkout does.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np

from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.images import ImageError, load
from fashion_mlp.inference import probabilities

INPUT_COLUMN = "image"


def answer(probs: np.ndarray):
    """The response frame: top class, its probability, and every class's probability."""
    import pandas as pd

    top = probs.argmax(axis=1)
    frame = pd.DataFrame(probs.astype(np.float64), columns=list(CLASS_NAMES))
    frame.insert(0, "probability", probs[np.arange(len(probs)), top].astype(np.float64))
    frame.insert(0, "class", [CLASS_NAMES[i] for i in top])
    return frame


def decode_rows(model_input) -> np.ndarray:
    """The `image` column -> (n, 28, 28) float32; a bad row raises ImageError naming it."""
    import pandas as pd

    if not isinstance(model_input, pd.DataFrame) or INPUT_COLUMN not in model_input.columns:
        raise ImageError(f"expected a DataFrame with a column {INPUT_COLUMN!r} of image bytes (base64 over REST)")
    arrays = []
    for row, value in enumerate(model_input[INPUT_COLUMN]):
        if isinstance(value, str):  # a client that skipped the signature's base64 decoding
            raise ImageError(f"row {row}: expected image bytes, got text")
        if not isinstance(value, bytes | bytearray):
            raise ImageError(f"row {row}: expected image bytes, got {type(value).__name__}")
        arrays.append(load(bytes(value), name=f"row {row}"))
    return np.stack(arrays) if arrays else np.zeros((0, 28, 28), dtype=np.float32)


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Pictures in, class names and probabilities out."""

    def load_context(self, context) -> None:
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        keras.config.disable_interactive_logging()
        self.model = keras.saving.load_model(context.artifacts["keras_model"], safe_mode=True)

    def predict(self, context, model_input, params=None):
        try:
            x = decode_rows(model_input)
        except ImageError as exc:
            # INVALID_PARAMETER_VALUE: the scoring server answers 400 with this message.
            raise mlflow.exceptions.MlflowException.invalid_parameter_value(str(exc)) from None
        return answer(probabilities(self.model, x))


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [ColSpec("string", "class"), ColSpec("double", "probability")]
    outputs += [ColSpec("double", name) for name in CLASS_NAMES]
    return ModelSignature(inputs=Schema([ColSpec("binary", INPUT_COLUMN)]), outputs=Schema(outputs))


def example_png() -> bytes:
    """A fixed 28x28 PNG (a light trouser-like shape on black): the model's input example."""
    from PIL import Image

    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[2:26, 9:19] = 200
    pixels[12:26, 13:15] = 0
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    import keras
    import PIL
    import tensorflow as tf

    return [
        f"mlflow=={mlflow.__version__}",
        f"tensorflow-cpu=={tf.__version__}",
        f"keras=={keras.__version__}",
        f"pillow=={PIL.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={version('pandas')}",
    ]


def log_model(keras_path: str | Path, name: str = "image_model"):
    """Log the .keras file as an image pyfunc into the active run (or none); return MLflow's ModelInfo."""
    import keras
    import pandas as pd

    keras.config.disable_interactive_logging()  # MLflow checks the input example with a predict
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "fashion_mlp"
        shutil.copytree(Path(__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=ImageClassifier(),
            artifacts={"keras_model": str(keras_path)},
            code_paths=[str(code)],
            signature=signature(),
            input_example=pd.DataFrame({INPUT_COLUMN: [example_png()]}),
            pip_requirements=pip_requirements(),
        )
