"""The champion as an MLflow pyfunc that takes pictures or pixel arrays: what `mlflow models serve` answers with.

Input: a DataFrame with a column `image` of image bytes (PNG, JPEG... any size or mode; over REST
base64-encoded, e.g. {"dataframe_split": {"columns": ["image"], "data": [["iVBOR..."]]}}), or a
column `pixels` of Fashion-MNIST frames already in the model's frame (784 numbers or 28x28 nested
lists: whole numbers are uint8 pixels 0-255, scaled by images.scale as `prepare` scales; any other
numbers are floats in [0, 1]). A picture goes through fashion_mlp.images (the preprocessing of
`predict`); an array goes to the model as it is. Both columns are optional in the signature; a row
uses the one it fills.
Output: one row per input row: `class` (the top class name), `probability` (its probability), one
column per class name with its probability, and `error`: null, or for a row that could not be read
a message naming the row and the problem (its other columns null). The request answers 200 when at
least one row was read; when none was, 400 with the rows' messages. MLflow's own parser answers 400
to a malformed payload (bad JSON, wrong shape, an `image` that is not base64) before the model runs.

The model is logged as MLflow "models from code": the logged file only builds ImageClassifier from
this package, which the model carries as code (code_paths), so loading a version unpickles nothing
and what it serves does not change when the checkout does. Beside the .keras file it carries the
model's ONNX export (onnx_model.py), checked against it when logged; a version that has one answers
through ONNX Runtime and never imports TensorFlow, an older one through Keras.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from numbers import Number
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.images import SIDE, ImageError, load, scale
from fashion_mlp.inference import probabilities
from fashion_mlp.onnx_model import ONNX_ARTIFACT

INPUT_COLUMN = "image"
PIXELS_COLUMN = "pixels"
ERROR_COLUMN = "error"
MAX_REPORTED = 10  # row errors quoted in a 400's message; the rest are counted

# The file MLflow logs as the model and runs when it loads it, instead of unpickling an object:
# it takes ImageClassifier from the package shipped in the model (code_paths), not from a checkout.
MODEL_CODE = '''"""The champion's pyfunc as MLflow "models from code": fashion_mlp.serving, shipped beside it."""

import mlflow

from fashion_mlp.serving import ImageClassifier

mlflow.models.set_model(ImageClassifier())
'''
MODEL_FILE = "image_model.py"

BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]{16,}")


def missing(value) -> bool:
    """An empty cell: None, or the NaN pandas puts where a row lacks the column."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def flat(value):
    """The leaves of nested lists or arrays, as the client wrote them (np.asarray would turn 1 into '1')."""
    if isinstance(value, list | tuple | np.ndarray):
        for item in value:
            yield from flat(item)
    else:
        yield value


def where(index: tuple[int, ...]) -> str:
    """A position as the client indexes its JSON: [k] in 784 numbers, [i][j] in 28x28 lists."""
    return "".join(f"[{i}]" for i in index)


def pixel_frame(value, name: str) -> np.ndarray:
    """784 numbers or 28x28 -> (28, 28) float32 in the model's frame; an ImageError naming the row and value.

    Whole numbers (an integer dtype: JSON numbers without a decimal point) are uint8 pixels and go
    through images.scale, bit for bit what `prepare` gives; any other numbers must be floats in [0, 1].
    """
    expected = f"expected {SIDE * SIDE} numbers or {SIDE}x{SIDE} nested lists"
    if isinstance(value, str | bytes | bytearray | dict) or np.isscalar(value):
        raise ImageError(f"{name}: pixels: {expected}, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nested lists
        raise ImageError(f"{name}: pixels: {expected}, got nested lists of unequal lengths") from None
    if array.dtype.kind not in "uif":  # text, null or booleans among the numbers, or integers beyond 64 bits
        bad = [v for v in flat(value) if isinstance(v, bool) or not isinstance(v, Number)][:1]
        problem = f"expected numbers, got {bad[0]!r}" if bad else "numbers too large for 64 bits"
        raise ImageError(f"{name}: pixels: {problem}")
    if array.shape not in ((SIDE * SIDE,), (SIDE, SIDE)):
        raise ImageError(f"{name}: pixels: {expected}, got shape {array.shape}")
    if array.dtype.kind in "ui":
        outside = (array < 0) | (array > 255)
        if outside.any():
            index = np.unravel_index(int(np.argmax(outside)), array.shape)
            bad = array[index].item()
            raise ImageError(
                f"{name}: pixels: {bad} at {where(index)} is outside 0-255 (whole numbers are uint8 pixels)"
            )
        return scale(array.reshape(SIDE, SIDE).astype(np.uint8))
    with np.errstate(invalid="ignore"):
        outside = ~((array >= 0) & (array <= 1))  # NaN fails both comparisons
    if outside.any():
        index = np.unravel_index(int(np.argmax(outside)), array.shape)
        raise ImageError(
            f"{name}: pixels: {array[index].item()!r} at {where(index)} is outside [0, 1] "
            "(numbers with a decimal point are floats in [0, 1]; send uint8 pixels as whole numbers)"
        )
    return array.reshape(SIDE, SIDE).astype(np.float32)


def picture(value, name: str) -> np.ndarray:
    """Image bytes -> (28, 28) float32 through fashion_mlp.images; an ImageError naming the row."""
    if isinstance(value, str):  # a client that skipped the signature's base64 decoding
        raise ImageError(f"{name}: expected image bytes, got text")
    if not isinstance(value, bytes | bytearray):
        raise ImageError(f"{name}: expected image bytes, got {type(value).__name__}")
    try:
        return load(bytes(value), name=name)
    except ImageError as exc:
        if BASE64_TEXT.fullmatch(value):  # the `inputs`/`instances` formats do not decode binary columns
            raise ImageError(
                f"{exc} - these bytes look like base64 text: send images in dataframe_split or dataframe_records"
            ) from None
        raise


def decode_rows(model_input) -> tuple[np.ndarray, list[str | None]]:
    """The input rows -> (the readable ones as (n, 28, 28) float32, in order; per row None or its error).

    Only a frame without either column fails as a whole (an ImageError): there is no row to answer.
    """
    if not isinstance(model_input, pd.DataFrame):
        raise ImageError(f"expected a DataFrame with a column {INPUT_COLUMN!r} or {PIXELS_COLUMN!r}")
    columns = [c for c in (INPUT_COLUMN, PIXELS_COLUMN) if c in model_input.columns]
    if not columns:
        raise ImageError(
            f"expected a column {INPUT_COLUMN!r} (image bytes, base64 over REST) or {PIXELS_COLUMN!r} "
            f"({SIDE * SIDE} numbers or {SIDE}x{SIDE} nested lists); other columns are ignored"
        )
    images = model_input[INPUT_COLUMN].tolist() if INPUT_COLUMN in columns else [None] * len(model_input)
    arrays = model_input[PIXELS_COLUMN].tolist() if PIXELS_COLUMN in columns else [None] * len(model_input)
    good, errors = [], []
    for row, (image, pixels) in enumerate(zip(images, arrays, strict=True)):
        name = f"row {row}"
        try:
            if not missing(image) and not missing(pixels):
                raise ImageError(f"{name}: both {INPUT_COLUMN!r} and {PIXELS_COLUMN!r} given; send one")
            if missing(image) and missing(pixels):
                raise ImageError(f"{name}: neither {INPUT_COLUMN!r} nor {PIXELS_COLUMN!r} given")
            good.append(picture(image, name) if missing(pixels) else pixel_frame(pixels, name))
            errors.append(None)
        except ImageError as exc:
            errors.append(str(exc))
    return (np.stack(good) if good else np.zeros((0, SIDE, SIDE), dtype=np.float32)), errors


def answer(probs: np.ndarray, errors: list[str | None] | None = None) -> pd.DataFrame:
    """The response frame: per row the top class, its probability, every class's probability and `error`.

    `probs` holds the rows without an error, in order. A row with an error gets its message and None
    elsewhere (not NaN: the scoring server would write a bare NaN, which JSON does not allow).
    Built in one go from a dict: DataFrame.insert costs about 0.1 ms a column, a served picture 4 ms.
    """
    errors = [None] * len(probs) if errors is None else errors
    top = probs.argmax(axis=1)
    probs = probs.astype(np.float64)
    columns = {"class": [CLASS_NAMES[i] for i in top], "probability": probs[np.arange(len(probs)), top]}
    columns |= {name: probs[:, i] for i, name in enumerate(CLASS_NAMES)}
    if len(probs) == len(errors):
        return pd.DataFrame(columns | {ERROR_COLUMN: errors})
    good = [row for row, error in enumerate(errors) if error is None]
    spread = {}
    for name, values in columns.items():
        spread[name] = [None] * len(errors)
        for row, value in zip(good, np.asarray(values).tolist(), strict=True):
            spread[name][row] = value
    return pd.DataFrame(spread | {ERROR_COLUMN: errors}, dtype=object)


def refusal(errors: list[str | None]) -> str:
    """The 400's message when no row was read: the rows' errors, the first MAX_REPORTED of them."""
    shown = [e for e in errors if e is not None]
    more = len(shown) - MAX_REPORTED
    return "no row could be read: " + "; ".join(shown[:MAX_REPORTED]) + (f"; and {more} more rows" if more > 0 else "")


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Pictures or pixel arrays in; per row class names and probabilities, or an error, out."""

    def load_context(self, context) -> None:
        if ONNX_ARTIFACT in context.artifacts:
            from fashion_mlp.onnx_model import OnnxModel

            self.model = OnnxModel(context.artifacts[ONNX_ARTIFACT])
            return
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        keras.config.disable_interactive_logging()
        self.model = keras.saving.load_model(context.artifacts["keras_model"], safe_mode=True)

    # pd.DataFrame hints: MLflow infers no signature from them and uses signature() below. A
    # signature inferred from type hints would make the scoring server take only {"inputs": ...},
    # unparsed: dataframe_split/records and the base64 decoding of `image` would be gone.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        try:
            x, errors = decode_rows(model_input)
        except ImageError as exc:
            # INVALID_PARAMETER_VALUE: the scoring server answers 400 with this message.
            raise mlflow.exceptions.MlflowException.invalid_parameter_value(str(exc)) from None
        if errors and len(x) == 0:
            raise mlflow.exceptions.MlflowException.invalid_parameter_value(refusal(errors))
        return answer(probabilities(self.model, x), errors)


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    # `pixels` is Any: MLflow's Array(double) refuses whole numbers above 1 (uint8 pixels) and
    # Array(long) refuses floats, each for the whole request; pixel_frame checks every row instead.
    inputs = [ColSpec("binary", INPUT_COLUMN, required=False), ColSpec(AnyType(), PIXELS_COLUMN, required=False)]
    outputs = [ColSpec("string", "class", required=False), ColSpec("double", "probability", required=False)]
    outputs += [ColSpec("double", name, required=False) for name in CLASS_NAMES]
    outputs += [ColSpec("string", ERROR_COLUMN, required=False)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def example_png() -> bytes:
    """A fixed 28x28 PNG (a light trouser-like shape on black): the model's input example."""
    import io

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
        f"onnxruntime=={version('onnxruntime')}",
    ]


def log_model(keras_path: str | Path, name: str = "image_model"):
    """Log the .keras file and its checked ONNX export as an image pyfunc into the active run (or none);
    return MLflow's ModelInfo."""
    import keras

    from fashion_mlp import onnx_model

    keras.config.disable_interactive_logging()  # MLflow checks the input example with a predict
    with tempfile.TemporaryDirectory() as tmp:
        model = keras.saving.load_model(keras_path, safe_mode=True)
        onnx_path = onnx_model.export(model, Path(tmp) / "model.onnx")
        onnx_model.check_parity(model, onnx_model.OnnxModel(onnx_path), onnx_model.probe_images(), str(keras_path))
        code = Path(tmp) / "fashion_mlp"
        shutil.copytree(Path(__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        model_file = Path(tmp) / MODEL_FILE
        model_file.write_text(MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(model_file),
            artifacts={"keras_model": str(keras_path), ONNX_ARTIFACT: str(onnx_path)},
            code_paths=[str(code)],
            signature=signature(),
            input_example=pd.DataFrame({INPUT_COLUMN: [example_png()]}),
            pip_requirements=pip_requirements(),
        )
