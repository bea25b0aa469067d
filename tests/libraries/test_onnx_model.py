"""onnx_model.py: the ONNX export answers as the Keras model does on all 10,000 test images, for each
kind; a bad export is refused by name; predict runs an export without importing TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from test_model_kinds import TINY_CNN, TRAINING

from conftest import DEBIAN_DATA, REPO, require_debian_data
from fashion_mlp import PipelineError

TINY_MLP = {"hidden": [64, 32], "activation": "relu", "dropout": 0.2, "l2": 0.0, "batchnorm": True, **TRAINING}


@pytest.fixture(scope="module")
def test_images():
    """The real test split, scaled as `prepare` scales it."""
    require_debian_data()
    from fashion_mlp.data import read_split
    from fashion_mlp.images import scale

    images, _ = read_split(DEBIAN_DATA, "test")
    return scale(images)


def with_moving_statistics(keras, model, seed: int):
    """Random weights and BatchNorm statistics, so the export has to carry every kind of weight."""
    rng = np.random.default_rng(seed)
    weights = []
    for weight in model.weights:
        value = rng.normal(0, 0.2, weight.shape).astype("float32")
        if "moving_variance" in weight.path or "gamma" in weight.path:
            value = np.abs(value) + 0.5
        weights.append(value)
    model.set_weights(weights)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("block", [TINY_MLP, TINY_CNN], ids=["mlp", "cnn"])
def test_the_export_answers_as_keras_on_every_test_image(keras, models, tmp_path, test_images, block):
    from fashion_mlp import onnx_model

    keras.utils.set_random_seed(0)
    model = with_moving_statistics(keras, models.build_model(block, name="m"), seed=1)
    exported = onnx_model.OnnxModel(onnx_model.export(model, tmp_path / "m.onnx"))
    found = onnx_model.check_parity(model, exported, test_images, "m")
    assert found["images"] == 10_000 and found["same_class"] == 1.0
    assert found["max_abs_difference"] <= onnx_model.PARITY_ATOL


def test_an_export_that_answers_differently_is_refused_by_name(keras, models, tmp_path):
    from fashion_mlp import onnx_model

    keras.utils.set_random_seed(0)
    model = models.build_model(TINY_MLP, name="m")
    exported = onnx_model.OnnxModel(onnx_model.export(model, tmp_path / "m.onnx"))
    images = onnx_model.probe_images(32)
    assert onnx_model.check_parity(model, exported, images, "m.keras")["max_abs_difference"] <= 1e-5
    model.set_weights([w * 1.5 for w in model.get_weights()])  # the Keras model moves on; its export does not
    with pytest.raises(PipelineError, match=r"m\.keras: the ONNX export answers differently .* on 32 images"):
        onnx_model.check_parity(model, exported, images, "m.keras")
    with pytest.raises(PipelineError, match=r"nope\.onnx: cannot load this ONNX model"):
        onnx_model.OnnxModel(tmp_path / "nope.onnx")


def test_predict_runs_an_export_without_importing_tensorflow(keras, models, tmp_path):
    from PIL import Image

    from fashion_mlp import onnx_model

    keras.utils.set_random_seed(0)
    path = onnx_model.export(models.build_model(TINY_MLP, name="m"), tmp_path / "m.onnx")
    Image.fromarray(np.full((28, 28), 200, dtype=np.uint8)).save(tmp_path / "a.png")
    code = (
        "import sys\n"
        "from fashion_mlp.stages import predict\n"
        f"predict.main([{str(tmp_path / 'a.png')!r}, '--model', {str(path)!r}, '--json'])\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "False False" and '"predictions"' in out
