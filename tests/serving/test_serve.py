"""The champion over REST (fashion_mlp.serving): phone photos, a real server, a reload, a Docker build context.

All slow; the pyfunc's decoding and per-row errors, with a stand-in model, are in test_serve_pyfunc.py.
A small MLP fitted in seconds on real data (honest accuracy, cheap) gives the phone-photo agreement; the
same MLP, registered as champion in a throw-away store by `register`, is served by the real `make serve`
on a free loopback port (every payload of docs/serving.md, bad ones with their status and message),
reloaded in a fresh process that refuses pickles, and turned into a Docker build context by `make dockerfile`.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from champion_rest import classes, error_of, payload, post, register_champion, served, split
from test_images import bomb_png
from test_safety import assert_refused_elsewhere
from test_serve_pyfunc import png

from conftest import BIN, DEBIAN_DATA, REPO, SUBPROCESS_TIMEOUT, clean_env, require_debian_data
from fashion_mlp.data import CLASS_NAMES, read_split
from fashion_mlp.images import load, scale
from fashion_mlp.metrics.robustness import phone_photo  # the model card measures the same pictures

PHONE_IMAGES = 400
BATCH_IMAGES = 48
REGISTERED_MODEL = yaml.safe_load((REPO / "params.yaml").read_text())["mlflow"]["registered_model"]
CHAMPION = f"models:/{REGISTERED_MODEL}@champion"


# --- slow: a real model, phone photos, a real server --------------------------------------


@pytest.fixture(scope="module")
def data():
    require_debian_data()
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


def phone_agreement(model_path: Path, x: np.ndarray, seed: int = 0) -> float:
    """Share of images whose phone-photo version gets the class the original gets."""
    rng = np.random.default_rng(seed)
    photos = np.stack([load(phone_photo(pixels, rng), name=f"photo {i}") for i, pixels in enumerate(x)])
    return float((evaluate_classes(model_path, photos) == evaluate_classes(model_path, scale(x))).mean())


@pytest.mark.slow
def test_phone_photos_get_the_same_class(data, small_model):
    _, _, x_test = data
    assert phone_agreement(small_model, x_test) >= 0.95


@pytest.fixture(scope="module")
def champion_store(small_model, tmp_path_factory) -> tuple[Path, str]:
    """A throw-away MLflow store whose champion is the small model, registered by `register` as the pipeline
    registers: (its folder, its tracking URI)."""
    store = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(store)  # a non-default store keeps its artifacts in ./mlruns
        register_champion(store, small_model)
    assert "run" not in (store / "champion.json").read_text()  # no run ids or versions
    return store, uri


@pytest.mark.slow
def test_the_served_champion_answers_each_row_and_refuses_bad_payloads(data, small_model, champion_store):
    """The real `make serve`: docs/serving.md's payloads, each bad one with its documented status and message."""
    _, _, x_test = data
    batch = x_test[:BATCH_IMAGES]
    expected = [CLASS_NAMES[i] for i in evaluate_classes(small_model, scale(batch))]
    _, uri = champion_store
    with served(uri) as port:
        status, answer = post(port, payload([png(pixels) for pixels in batch]))
        assert status == 200, answer
        assert classes(answer) == expected
        assert all(row["error"] is None for row in answer["predictions"])
        assert all(abs(sum(row[name] for name in CLASS_NAMES) - 1) < 1e-4 for row in answer["predictions"])
        # SERVE_HOST's default: loopback only (docs/serving.md), so no other address of this machine answers.
        assert_refused_elsewhere(port)

        # The same frames as arrays, in each JSON format and both number types: the PNGs' classes.
        arrays = {
            "uint8 28x28, dataframe_split": split("pixels", [pixels.tolist() for pixels in batch]),
            "uint8 784, dataframe_records": json.dumps(
                {"dataframe_records": [{"pixels": pixels.ravel().tolist()} for pixels in batch]}
            ).encode(),
            "floats 28x28, inputs": json.dumps({"inputs": {"pixels": [(pixels / 255).tolist() for pixels in batch]}}),
            "floats 784, instances": json.dumps(
                {"instances": [{"pixels": (pixels.ravel() / 255).tolist()} for pixels in batch]}
            ),
        }
        for case, body in arrays.items():
            status, answer = post(port, body.encode() if isinstance(body, str) else body)
            assert status == 200, (case, answer)
            assert classes(answer) == expected, case

        # docs/serving.md's table, row by row. A mixed batch of pictures: 200, each good row its answer,
        # each bad row its error and nulls.
        good = png(batch[0])
        bomb_note = "; the limit is 89,478,485 pixels, Pillow's protection against decompression bombs)"
        status, answer = post(
            port, payload([good, b"hello, world", png(batch[1]), good[:80], bomb_png(30_000, 30_000)])
        )
        assert status == 200, answer
        rows = answer["predictions"]
        assert classes(answer) == [expected[0], None, expected[1], None, None]
        assert rows[1]["error"] == "row 1: not an image Pillow can read (unknown or unsupported format)"
        assert rows[3]["error"] == "row 3: truncated or corrupt image (image file is truncated)"
        assert rows[4]["error"].startswith("row 4: image too large (") and rows[4]["error"].endswith(bomb_note)
        assert all(rows[i][key] is None for i in (1, 3, 4) for key in ("probability", *CLASS_NAMES))
        assert rows[0]["error"] is None and rows[2]["error"] is None

        # A mixed batch of arrays: every documented array error, each in its row, the good rows answered.
        floats = "(numbers with a decimal point are floats in [0, 1]; send uint8 pixels as whole numbers)"
        shape = "expected 784 numbers or 28x28 nested lists, got"
        bad_arrays = [
            ([300] + [0] * 783, "300 at [0] is outside 0-255 (whole numbers are uint8 pixels)"),
            ([-1] + [0] * 783, "-1 at [0] is outside 0-255 (whole numbers are uint8 pixels)"),
            ([0.5] * 783 + [float("nan")], f"nan at [783] is outside [0, 1] {floats}"),  # json.dumps writes NaN,
            ([0.5] * 783 + [float("inf")], f"inf at [783] is outside [0, 1] {floats}"),  # Infinity: MLflow reads both
            ([1.5] * 784, f"1.5 at [0] is outside [0, 1] {floats}"),
            ([[0] * 28] * 27, f"{shape} shape (27, 28)"),
            ([0] * 783, f"{shape} shape (783,)"),
            ([[0] * 28] * 27 + [[0] * 27], f"{shape} nested lists of unequal lengths"),
            (7, f"{shape} int"),
            ([0] * 783 + ["a"], "expected numbers, got 'a'"),
            ([0] * 783 + [None], "expected numbers, got None"),
            ([True] * 784, "expected numbers, got True"),
        ]
        status, answer = post(
            port, split("pixels", [batch[0].tolist(), *(v for v, _ in bad_arrays), batch[1].tolist()])
        )
        assert status == 200, answer
        assert [row["error"] for row in answer["predictions"]] == [
            None,
            *(f"row {i}: pixels: {message}" for i, (_, message) in enumerate(bad_arrays, start=1)),
            None,
        ]
        assert classes(answer) == [expected[0], *[None] * len(bad_arrays), expected[1]]

        # The per-row errors below the table: an empty image, both columns in a row, neither (a null pixels row;
        # a null image is refused by MLflow's parser in the dataframe formats: the 400 below).
        b64 = base64.b64encode(good).decode()
        pixels = batch[1].tolist()
        for body, errors in [
            (split("image", [b64, "", b64]), [None, "row 1: empty (0 bytes), not an image", None]),
            (
                json.dumps({"dataframe_split": {"columns": ["image", "pixels"], "data": [[b64, pixels], [b64, None]]}}),
                ["row 0: both 'image' and 'pixels' given; send one", None],
            ),
            (split("pixels", [pixels, None]), [None, "row 1: neither 'image' nor 'pixels' given"]),
        ]:
            status, answer = post(port, body.encode() if isinstance(body, str) else body)
            assert status == 200, answer
            assert [row["error"] for row in answer["predictions"]] == errors
            assert [name is None for name in classes(answer)] == [error is not None for error in errors]

        # Every documented 400, with its message; then the server still answers.
        predict_failed = "Failed to predict data '"  # MLflow's prefix of a 400 raised by the model
        bad = {
            "no readable row": (
                payload([b"hello, world", good[:80]]),
                [
                    predict_failed,
                    "no row could be read: row 0: not an image Pillow can read (unknown or unsupported format); "
                    "row 1: truncated or corrupt image (image file is truncated)",
                ],
            ),
            "a huge image alone": (
                payload([bomb_png(30_000, 30_000)]),
                [predict_failed, "no row could be read: row 0: image too large (", bomb_note],
            ),
            "no readable array": (
                split("pixels", [[1.5] * 784]),
                [predict_failed, f"no row could be read: row 0: pixels: 1.5 at [0] is outside [0, 1] {floats}"],
            ),
            "empty body": (b"", ["Invalid input. Ensure that input is a valid JSON formatted string"]),
            "not base64": (
                split("image", ["not base64!"]),
                ["Failed to convert column image", "Invalid base64-encoded string"],
            ),
            "wrong JSON shape": (
                b'{"images": [1, 2]}',
                ["The input must be a JSON dictionary with exactly one of the input fields {"],
            ),
            "neither column": (
                split("picture", [1]),
                [
                    predict_failed,
                    "expected a column 'image' (image bytes, base64 over REST) or 'pixels' (784 numbers or 28x28 "
                    "nested lists); other columns are ignored",
                ],
            ),
            # Pictures in the inputs and instances formats reach the model still base64-encoded: the error says so.
            **{
                f"a picture in the {name} format": (
                    json.dumps(body).encode(),
                    [
                        predict_failed,
                        "no row could be read: row 0: not an image Pillow can read (unknown or unsupported format) - "
                        "these bytes look like base64 text: send images in dataframe_split or dataframe_records",
                    ],
                )
                for name, body in (
                    ("inputs", {"inputs": {"image": [b64]}}),
                    ("instances", {"instances": [{"image": b64}]}),
                )
            },
            "a null image in dataframe_split": (
                split("image", [b64, None]),
                ["Failed to convert column image", "encoding without a string argument"],
            ),
            "pictures and arrays in one dataframe_records request": (
                json.dumps({"dataframe_records": [{"image": b64}, {"pixels": batch[1].tolist()}]}).encode(),
                ["Failed to convert column image", "encoding without a string argument"],
            ),
        }
        errors = {}
        for case, (body, messages) in bad.items():
            status, answer = post(port, body)
            assert status == 400, (case, status, answer)
            errors[case] = error_of(answer)
            for message in messages:
                assert message in errors[case], (case, message, answer)
        # MLflow prints the formats as a Python set: their order follows the server's hash seed.
        listed = errors["wrong JSON shape"].split("input fields ", 1)[1]
        assert ast.literal_eval(listed[: listed.index("}") + 1]) == {
            "instances", "dataframe_split", "dataframe_records", "inputs"
        }  # fmt: skip

        status, answer = post(port, payload([png(pixels) for pixels in batch[:5]]))
        assert status == 200 and classes(answer) == expected[:5]


RELOAD = """
import json, sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import yaml

local = Path(mlflow.artifacts.download_artifacts(artifact_uri=sys.argv[1], dst_path=sys.argv[2]))
model = mlflow.pyfunc.load_model(str(local))
import fashion_mlp

frames = np.load(sys.argv[3], allow_pickle=False)
pngs = [Path(path).read_bytes() for path in sys.argv[4:]]
print(json.dumps({
    "files": sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()),
    "pyfunc": yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"],
    "package": fashion_mlp.__file__,
    "pixels": model.predict(pd.DataFrame({"pixels": list(frames)}))["class"].tolist(),
    "images": model.predict(pd.DataFrame({"image": pngs}))["class"].tolist(),
}))
"""


@pytest.mark.slow
def test_the_registered_champion_is_code_not_a_pickle_and_reloads(data, small_model, champion_store, tmp_path):
    """Loaded in a fresh process that refuses pickles, from the package the version ships, not the checkout's."""
    from fashion_mlp.serving import MODEL_FILE

    _, _, x_test = data
    frames = x_test[:8]
    np.save(tmp_path / "frames.npy", frames)
    paths = []
    for i, pixels in enumerate(frames):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(png(pixels))
    _, uri = champion_store
    arguments = [CHAMPION, str(tmp_path / "model"), str(tmp_path / "frames.npy"), *map(str, paths)]
    result = subprocess.run(
        [str(BIN / "python"), "-c", RELOAD, *arguments],
        cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=uri, MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false"),
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert MODEL_FILE in found["files"] and "code/fashion_mlp/serving.py" in found["files"]
    assert f"artifacts/{small_model.name}" in found["files"]
    assert not [name for name in found["files"] if name.endswith((".pkl", ".pickle"))], found["files"]
    assert found["pyfunc"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert "python_model" not in found["pyfunc"] and found["pyfunc"]["model_code_path"].endswith(MODEL_FILE)
    assert found["package"] == str(tmp_path / "model/code/fashion_mlp/__init__.py")
    expected = [CLASS_NAMES[i] for i in evaluate_classes(small_model, scale(frames))]
    assert found["pixels"] == expected and found["images"] == expected


@pytest.mark.slow
def test_make_dockerfile_writes_the_champions_build_context_offline(small_model, champion_store, tmp_path):
    """`make dockerfile` on the store's champion, with every proxy pointing nowhere: only files are written."""
    import platform

    import mlflow

    from fashion_mlp.io import sha256_file
    from fashion_mlp.serving import MODEL_FILE, pip_requirements

    _, uri = champion_store
    out = tmp_path / "docker"
    nowhere = "http://127.0.0.1:9"
    env = clean_env(MLFLOW_TRACKING_URI=uri, HTTP_PROXY=nowhere, HTTPS_PROXY=nowhere, http_proxy=nowhere,
                    https_proxy=nowhere, PIP_NO_INDEX="1")  # fmt: skip
    # -o install: the virtualenv running the tests is the one to use, as it is
    command = ["make", "-o", "install", "dockerfile", f"DOCKER_DIR={out}", f"VENV={os.path.relpath(BIN.parent, REPO)}"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    dockerfile = (out / "Dockerfile").read_text()
    model = out / "model_dir"
    assert f"FROM python:{platform.python_version()}-slim" in dockerfile
    assert f"RUN pip install mlflow=={mlflow.__version__}" in dockerfile
    assert "COPY model_dir /opt/ml/model" in dockerfile and "C._serve('local')" in dockerfile
    assert sha256_file(model / "artifacts" / small_model.name) == sha256_file(small_model)
    assert (model / MODEL_FILE).is_file() and (model / "code/fashion_mlp/serving.py").is_file()
    assert not list(model.rglob("*.pkl"))
    # What the image pins: exactly the model's requirements, each to the version that logged it.
    pins = (model / "requirements.txt").read_text().split()
    assert pins == pip_requirements()
    assert all("==" in pin for pin in pins)

    # A second run replaces the context rather than adding to it.
    (model / "artifacts" / "stale.keras").write_bytes(b"old")
    assert subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=SUBPROCESS_TIMEOUT).returncode == 0
    assert not (model / "artifacts" / "stale.keras").exists()
