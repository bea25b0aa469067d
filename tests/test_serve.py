"""The champion over REST (fashion_mlp.serving): image pyfunc, phone-photo robustness, a real server.

Fast: the pyfunc's decoding and answer frame. Slow: a small MLP fitted in seconds on real data
(honest accuracy, cheap), the phone-photo agreement on it, and one `mlflow models serve` of the
registered champion on a free loopback port.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import BIN, DEBIAN_DATA, clean_env, free_ports
from fashion_mlp.data import CLASS_NAMES, read_split
from fashion_mlp.images import load, scale
from test_images import bomb_png, fashion_like

PHONE_IMAGES = 400
BATCH_IMAGES = 48


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class Ones:
    """A stand-in Keras model: every image's probabilities are [0.1] * 10 except class (sum % 10)."""

    def predict_on_batch(self, x):
        probs = np.full((len(x), 10), 0.05, dtype=np.float32)
        probs[np.arange(len(x)), (x.reshape(len(x), -1).sum(axis=1) * 255).round().astype(int) % 10] = 0.55
        return probs


def test_the_pyfunc_answers_class_names_and_probabilities():
    import pandas as pd

    from fashion_mlp.serving import ImageClassifier, signature

    model = ImageClassifier()
    model.model = Ones()
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[3:25, 10:18] = 7  # sum 7 * 176 = 1232 -> class 2
    frame = model.predict(None, pd.DataFrame({"image": [png(pixels)]}))
    assert list(frame.columns) == ["class", "probability", *CLASS_NAMES]
    assert frame.loc[0, "class"] == "Pullover" and frame.loc[0, "probability"] == pytest.approx(0.55)
    assert [spec.name for spec in signature().outputs.inputs] == list(frame.columns)


@pytest.mark.parametrize(
    "value, message",
    [
        (b"", "row 1: empty"),
        (png(fashion_like())[:200], "row 1: truncated or corrupt"),
        ("aGVsbG8=", "row 1: expected image bytes"),
    ],
    ids=["empty", "truncated", "text"],
)
def test_a_bad_row_is_a_400_naming_it(value, message):
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from fashion_mlp.serving import ImageClassifier

    model = ImageClassifier()
    model.model = Ones()
    with pytest.raises(MlflowException, match=message) as caught:
        model.predict(None, pd.DataFrame({"image": [png(np.zeros((28, 28), np.uint8)), value]}))
    assert caught.value.get_http_status_code() == 400


# --- slow: a real model, phone photos, a real server --------------------------------------


@pytest.fixture(scope="module")
def data():
    if not DEBIAN_DATA.is_dir():
        pytest.skip(f"{DEBIAN_DATA} missing: apt-get install dataset-fashion-mnist (make test does)")
    x_train, y_train = read_split(DEBIAN_DATA, "train")
    x_test, _ = read_split(DEBIAN_DATA, "test")
    return x_train[:12000], y_train[:12000], x_test[:PHONE_IMAGES]


@pytest.fixture(scope="module")
def small_model(data, tmp_path_factory) -> Path:
    """An MLP fitted for 3 epochs on 12,000 real images (a few seconds): about 85 % accurate."""
    import keras

    from fashion_mlp.models.architectures import build_mlp
    from fashion_mlp.models.fitting import compile_model
    from fashion_mlp.models.saving import save_model

    x_train, y_train, _ = data
    keras.utils.set_random_seed(0)
    model = compile_model(build_mlp([128]), 1e-3)
    model.fit(scale(x_train), y_train, epochs=3, batch_size=128, verbose=0)
    path = tmp_path_factory.mktemp("model") / "small.keras"
    save_model(model, path)
    return path


def evaluate_classes(model_path: Path, x: np.ndarray) -> np.ndarray:
    """What `evaluate` computes for scaled test arrays (its main(): load, predict, argmax)."""
    import keras

    model = keras.saving.load_model(model_path, safe_mode=True)
    return model.predict(x, batch_size=1024, verbose=0).argmax(axis=1)


def phone_photo(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """The picture as a phone would take it: 10x larger, dark on a light, noisy, tinted background,
    off-centre in a bigger frame, RGB, saved as JPEG."""
    side = 280
    darkness = np.asarray(Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC), np.float64) / 255
    height, width = rng.integers(side + 60, side + 240, size=2)
    top, left = rng.integers(5, height - side - 5), rng.integers(5, width - side - 5)
    paper = np.array([236.0, 231.0, 222.0]) + rng.normal(0, 3, size=(height, width, 3))
    ink = np.array([25.0, 35.0, 70.0])
    window = paper[top : top + side, left : left + side]
    paper[top : top + side, left : left + side] = window * (1 - darkness[..., None]) + ink * darkness[..., None]
    buffer = io.BytesIO()
    Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8), "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def phone_agreement(model_path: Path, x: np.ndarray, seed: int = 0) -> float:
    """Share of images whose phone-photo version gets the class the original gets."""
    rng = np.random.default_rng(seed)
    photos = np.stack([load(phone_photo(pixels, rng), name=f"photo {i}") for i, pixels in enumerate(x)])
    return float((evaluate_classes(model_path, photos) == evaluate_classes(model_path, scale(x))).mean())


@pytest.mark.slow
def test_phone_photos_get_the_same_class(data, small_model):
    _, _, x_test = data
    assert phone_agreement(small_model, x_test) >= 0.95


def post(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def payload(images: list[bytes]) -> bytes:
    rows = [[base64.b64encode(data).decode()] for data in images]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()


def register_champion(store: Path, model_path: Path) -> None:
    """What the pipeline does, on a throw-away store: a train run tagged with the model's hash, then register."""
    import mlflow

    from fashion_mlp import tracking
    from fashion_mlp.io import sha256_file, write_json
    from fashion_mlp.stages import register

    tracking.init("serve-test")
    with mlflow.start_run(run_name="small", tags={"model_sha256": sha256_file(model_path)}):
        pass
    metrics = store / "small.json"
    write_json(metrics, {"model": "small", "val_accuracy": 0.85, "accuracy": 0.84})
    register.main(
        [
            "--experiment", "serve-test", "--registered_model", "fashion-mnist-classifier",
            "--metrics", str(metrics), "--models_dir", str(model_path.parent), "--out", str(store / "champion.json"),
        ]
    )  # fmt: skip


@pytest.mark.slow
def test_the_served_champion_answers_pictures_and_refuses_bad_payloads(data, small_model, tmp_path, monkeypatch):
    _, _, x_test = data
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # a non-default store keeps its artifacts in ./mlruns
    register_champion(tmp_path, small_model)
    assert "run" not in (tmp_path / "champion.json").read_text()  # no run ids or versions

    (port,) = free_ports()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", "models:/fashion-mnist-classifier@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        # PATH: `mlflow models serve` runs `uvicorn` from the virtualenv
        cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=uri, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    assert response.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    pytest.fail(f"mlflow models serve did not start:\n{server.stdout.read().decode()[-4000:]}")
                time.sleep(0.5)

        batch = x_test[:BATCH_IMAGES]
        expected = [CLASS_NAMES[i] for i in evaluate_classes(small_model, scale(batch))]
        status, answer = post(port, payload([png(pixels) for pixels in batch]))
        assert status == 200, answer
        assert [row["class"] for row in answer["predictions"]] == expected
        assert all(abs(sum(row[name] for name in CLASS_NAMES) - 1) < 1e-4 for row in answer["predictions"])

        good = png(batch[0])
        bad = {
            "not an image": (payload([good, b"hello, world"]), "row 1: not an image"),
            "empty body": (b"", "valid JSON"),
            "corrupt PNG": (payload([good[:80]]), "row 0: truncated or corrupt"),
            "huge image": (payload([bomb_png(30_000, 30_000)]), "row 0: image too large"),
            "wrong JSON shape": (b'{"images": [1, 2]}', "dataframe_split"),
            "wrong column": (json.dumps({"dataframe_split": {"columns": ["pixels"], "data": [[1]]}}).encode(), "image"),
        }
        for case, (body, message) in bad.items():
            status, answer = post(port, body)
            assert 400 <= status < 500, (case, status, answer)
            assert message in answer.get("message", ""), (case, answer)

        status, answer = post(port, payload([png(pixels) for pixels in batch[:5]]))
        assert status == 200 and [row["class"] for row in answer["predictions"]] == expected[:5]
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
