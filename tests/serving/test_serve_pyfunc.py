"""The champion's pyfunc (fashion_mlp.serving) without a model: pictures and arrays decoded as prepare
scales them, an error per bad row (null in the JSON answer, a 400 when no row is read), and the model file's code.

A stand-in replaces the Keras model. tests/serving/test_serve.py serves a real one.
"""

from __future__ import annotations

import ast
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from test_images import fashion_like

from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.images import scale


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class Ones:
    """A stand-in Keras model: every image's probabilities are [0.05] * 10 except class (sum % 10), 0.55."""

    def predict_on_batch(self, x):
        probs = np.full((len(x), 10), 0.05, dtype=np.float32)
        probs[np.arange(len(x)), (x.reshape(len(x), -1).sum(axis=1) * 255).round().astype(int) % 10] = 0.55
        return probs


def classifier():
    from fashion_mlp.serving import ImageClassifier

    model = ImageClassifier()
    model.model = Ones()
    return model


def pullover() -> np.ndarray:
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[3:25, 10:18] = 7  # sum 7 * 176 = 1232 -> class 2
    return pixels


def test_the_pyfunc_answers_class_names_and_probabilities():
    import pandas as pd

    from fashion_mlp.serving import signature

    frame = classifier().predict(None, pd.DataFrame({"image": [png(pullover())]}))
    assert list(frame.columns) == ["class", "probability", *CLASS_NAMES, "error"]
    assert frame.loc[0, "class"] == "Pullover" and frame.loc[0, "probability"] == pytest.approx(0.55)
    assert frame.loc[0, "error"] is None
    assert [spec.name for spec in signature().outputs.inputs] == list(frame.columns)


def test_the_signature_takes_pictures_or_arrays_and_infers_nothing_from_type_hints():
    from mlflow.types.schema import AnyType, DataType

    from fashion_mlp.serving import ImageClassifier, signature

    inputs = {spec.name: spec for spec in signature().inputs.inputs}
    assert inputs["image"].type == DataType.binary and isinstance(inputs["pixels"].type, AnyType)
    assert not any(spec.required for spec in inputs.values())
    # A pd.DataFrame hint gives MLflow no schema: the explicit signature stays, and with it dataframe_split.
    assert ImageClassifier().predict_type_hints.input.__name__ == "DataFrame"


@pytest.mark.parametrize(
    "value, message",
    [
        (b"", "row 1: empty"),
        (png(fashion_like())[:200], "row 1: truncated or corrupt"),
        (b"hello, world", "row 1: not an image Pillow can read"),
        ("aGVsbG8=", "row 1: expected image bytes, got text"),
        (base64.b64encode(png(fashion_like())), "these bytes look like base64 text"),
    ],
    ids=["empty", "truncated", "not an image", "text", "base64 bytes"],
)
def test_a_bad_row_gets_its_error_and_the_others_their_answers(value, message):
    import pandas as pd

    frame = classifier().predict(None, pd.DataFrame({"image": [png(pullover()), value, png(pullover())]}))
    assert frame["class"].tolist() == ["Pullover", None, "Pullover"]
    assert frame.loc[0, "error"] is None and frame.loc[2, "error"] is None
    assert message in frame.loc[1, "error"]
    assert frame.loc[1, ["probability", *CLASS_NAMES]].isna().all()


def test_a_bad_row_is_null_not_nan_in_the_json_answer():
    """The scoring server writes the frame with json.dump: NaN would come out as a bare NaN, not JSON."""
    import pandas as pd
    from mlflow.pyfunc.scoring_server import predictions_to_json

    frame = classifier().predict(None, pd.DataFrame({"image": [png(pullover()), b"bad"]}))
    out = io.StringIO()
    predictions_to_json(frame, out)

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON answer")

    rows = json.loads(out.getvalue(), parse_constant=refuse)["predictions"]
    assert rows[0]["class"] == "Pullover" and rows[0]["error"] is None
    assert rows[1] == {**dict.fromkeys(["class", "probability", *CLASS_NAMES]), "error": rows[1]["error"]}


def test_a_request_where_no_row_is_read_is_a_400_naming_each_row():
    import pandas as pd
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as caught:
        classifier().predict(None, pd.DataFrame({"image": [b"", b"hello"], "pixels": [None, None]}))
    assert caught.value.get_http_status_code() == 400
    assert "no row could be read: row 0: empty" in caught.value.message
    assert "row 1: not an image" in caught.value.message
    with pytest.raises(MlflowException, match=r"row 9: .*; and 3 more rows$"):
        classifier().predict(None, pd.DataFrame({"image": [b"x"] * 13}))


def test_a_frame_without_either_column_is_a_400():
    import pandas as pd
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=r"expected a column 'image'.* or 'pixels'") as caught:
        classifier().predict(None, pd.DataFrame({"picture": [1]}))
    assert caught.value.get_http_status_code() == 400


def test_arrays_are_scaled_exactly_as_prepare_scales():
    from fashion_mlp.serving import pixel_frame

    pixels = fashion_like(1)
    expected = scale(pixels)
    for value in (pixels, pixels.tolist(), pixels.ravel().tolist(), pixels.astype(np.int64)):
        assert np.array_equal(pixel_frame(value, "row 0"), expected)  # bit for bit
        assert pixel_frame(value, "row 0").dtype == np.float32
    floats = (pixels / 255.0).tolist()
    assert np.allclose(pixel_frame(floats, "row 0"), expected, atol=1e-7)
    # Whole numbers are uint8 pixels, even all 0 and 1; a decimal point makes them floats in [0, 1].
    assert pixel_frame([1] * 784, "row 0").max() == np.float32(1 / 255)
    assert pixel_frame([1.0] * 784, "row 0").max() == 1.0


def test_pictures_and_arrays_mix_row_by_row_in_python():
    import pandas as pd

    frame = classifier().predict(
        None, pd.DataFrame({"image": [png(pullover()), None, None], "pixels": [None, pullover(), None]})
    )
    assert frame["class"].tolist() == ["Pullover", "Pullover", None]
    assert frame.loc[2, "error"] == "row 2: neither 'image' nor 'pixels' given"


@pytest.mark.parametrize(
    "value, message",
    [
        pytest.param(
            [0] * 783, "row 0: pixels: expected 784 numbers or 28x28 nested lists, got shape (783,)", id="783"
        ),
        pytest.param([[0] * 28] * 27, "got shape (27, 28)", id="27x28"),
        pytest.param([[0] * 28] * 27 + [[0] * 27], "got nested lists of unequal lengths", id="ragged"),
        pytest.param(7, "expected 784 numbers or 28x28 nested lists, got int", id="scalar"),
        pytest.param("0" * 784, "got str", id="text"),
        pytest.param([0] * 783 + ["a"], "row 0: pixels: expected numbers, got 'a'", id="a string"),
        pytest.param([0] * 783 + [None], "expected numbers, got None", id="a null"),
        pytest.param([True] * 784, "expected numbers, got True", id="booleans"),
        pytest.param([0] * 783 + [256], "row 0: pixels: 256 at [783] is outside 0-255", id="256"),
        pytest.param([[0] * 28] * 27 + [[0] * 27 + [-1]], "-1 at [27][27] is outside 0-255", id="-1"),
        pytest.param([0.5] * 783 + [float("nan")], "row 0: pixels: nan at [783] is outside [0, 1]", id="NaN"),
        pytest.param([0.5] * 783 + [float("inf")], "inf at [783] is outside [0, 1]", id="inf"),
        pytest.param(
            [0.0] * 783 + [255.0],
            "255.0 at [783] is outside [0, 1] (numbers with a decimal point are floats",
            id="255.0",
        ),
        pytest.param(np.zeros((28, 28, 1), np.uint8), "got shape (28, 28, 1)", id="28x28x1"),
    ],
)
def test_a_bad_array_is_that_rows_error(value, message):
    import pandas as pd

    frame = classifier().predict(None, pd.DataFrame({"pixels": [value, pullover().tolist()]}))
    assert message in frame.loc[0, "error"], frame.loc[0, "error"]
    assert frame["class"].tolist() == [None, "Pullover"]


def test_the_logged_model_file_builds_the_classifier_and_unpickles_nothing():
    """What MLflow logs as the model: a file it runs, taking the class from the package shipped beside it."""

    from fashion_mlp.serving import MODEL_CODE

    tree = ast.parse(MODEL_CODE)
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert {getattr(node, "module", None) for node in imports} == {None, "fashion_mlp.serving"}
    assert "set_model(ImageClassifier())" in MODEL_CODE and "pickle" not in MODEL_CODE.lower()
