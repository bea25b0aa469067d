"""Bad data and bad params stop a stage's command with a one-line error naming the file or key, before it
writes anything; a later good mirror is used when one fails.

Real commands in real processes, on copies of the real raw files: truncated, corrupt and mislabelled
downloads, unreachable and short mirrors, out-of-range params, and a model of no known kind.
"""

from __future__ import annotations

import gzip
import http.server
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from conftest import DEBIAN_DATA, REPO, cli, require_debian_data
from fashion_mlp.config import cli_flags
from fashion_mlp.data import RAW_FILES, sha256_gunzipped
from fashion_mlp.stages.download import download_all

TIMEOUT = 120


def assert_clear_error(result: subprocess.CompletedProcess, command: str, *needles: str) -> None:
    """A failed stage: exit status 1 and one `fashion-mlp CMD: error:` message naming what is wrong."""
    assert result.returncode == 1, result.stderr
    assert f"fashion-mlp {command}: error: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


# --- bad data: a clear error naming the file, nothing partial left -------------------------


def gz(payload: bytes) -> bytes:
    return gzip.compress(payload, compresslevel=1, mtime=0)


@pytest.fixture(scope="module")
def raw_copy(tmp_path_factory) -> Path:
    """The four real archives, copied once for the data-failure cases."""
    require_debian_data()
    directory = tmp_path_factory.mktemp("raw")
    for name in RAW_FILES:
        shutil.copyfile(DEBIAN_DATA / name, directory / name)
    return directory


def corrupt_labels(payload: bytes, case: str) -> bytes:
    """The train labels IDX file, broken in one way."""
    if case == "bad-magic":
        return struct.pack(">I", 0x00000803) + payload[4:]
    if case == "label-out-of-range":
        return payload[:8] + bytes([10]) + payload[9:]
    if case == "count-mismatch":  # one label fewer than there are images
        return payload[:4] + struct.pack(">I", 59_999) + payload[8:-1]
    raise ValueError(case)


@pytest.mark.parametrize(
    "case, needles",
    [
        ("bad-magic", ["train-labels-idx1-ubyte.gz", "bad IDX magic number 0x00000803, expected 0x00000801"]),
        ("label-out-of-range", ["train-labels-idx1-ubyte.gz", "label 10 is outside 0-9"]),
        ("count-mismatch", ["train-images-idx3-ubyte.gz has 60000 images", "train-labels-idx1-ubyte.gz has 59999"]),
        ("truncated-archive", ["train-images-idx3-ubyte.gz", "not a valid gzip file or truncated"]),
    ],
)
def test_prepare_stops_on_bad_data_with_the_file_named_and_writes_nothing(tmp_path, raw_copy, case, needles):
    raw = tmp_path / "raw"
    shutil.copytree(raw_copy, raw)
    if case == "truncated-archive":
        images = raw / "train-images-idx3-ubyte.gz"
        images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    else:
        labels = raw / "train-labels-idx1-ubyte.gz"
        labels.write_bytes(gz(corrupt_labels(gzip.decompress(labels.read_bytes()), case)))
    out = tmp_path / "prepared"
    result = cli(
        [
            "prepare",
            "--val_fraction",
            "0.1",
            "--limit_train",
            "1000",
            "--limit_test",
            "100",
            "--seed",
            "42",
            "--raw_dir",
            str(raw),
            "--train_out",
            str(out / "train.npz"),
            "--test_out",
            str(out / "test.npz"),
            "--stats_out",
            str(out / "stats.json"),
        ],
        tmp_path,
    )
    assert_clear_error(result, "prepare", *needles)
    assert not out.exists() or list(out.iterdir()) == [], "a failed prepare wrote something"


def test_download_skips_truncated_and_unreachable_mirrors_then_uses_a_good_one(tmp_path, raw_copy):
    truncated = tmp_path / "truncated-mirror"
    truncated.mkdir()
    for name in RAW_FILES:
        data = (raw_copy / name).read_bytes()
        (truncated / name).write_bytes(data[: len(data) // 3])
    unreachable = closed_port_url()
    out = tmp_path / "data" / "raw"
    result = cli(
        ["download", "--mirrors", str(truncated), unreachable, str(raw_copy), "--timeout", "5", "--out_dir", str(out)],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for name, sha256 in RAW_FILES.items():
        assert sha256_gunzipped(out / name) == sha256
        assert f"{(truncated / name).as_uri()}: " in result.stderr and "truncated" in result.stderr
        assert f"download: {name} <- {(raw_copy / name).as_uri()}" in result.stderr
    assert "unreachable" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(RAW_FILES), "nothing but the four verified files"


def test_download_with_every_mirror_failing_names_file_and_mirrors_and_leaves_nothing(tmp_path, raw_copy):
    truncated = tmp_path / "truncated-mirror"
    truncated.mkdir()
    first = next(iter(RAW_FILES))
    (truncated / first).write_bytes((raw_copy / first).read_bytes()[:1000])
    unreachable = closed_port_url()
    out = tmp_path / "data" / "raw"
    result = cli(
        ["download", "--mirrors", unreachable, str(truncated), "--timeout", "5", "--out_dir", str(out)], tmp_path
    )
    assert_clear_error(
        result,
        "download",
        f"no mirror served a verified {first}",
        unreachable.rstrip("/"),
        (truncated / first).as_uri(),
        "unreachable",
        "truncated",
    )
    assert list(out.iterdir()) == [], "no partial or unverified file in data/raw"


class ShortBodyHandler(http.server.BaseHTTPRequestHandler):
    """Promises the whole file in Content-Length, sends half of it, then hangs up."""

    def do_GET(self):
        body = (self.server.directory / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format, *args):
        pass


@pytest.fixture
def short_body_mirror(raw_copy, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ShortBodyHandler)
    server.daemon_threads = True
    server.directory = raw_copy
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_download_cut_short_by_an_http_mirror_falls_back_and_leaves_no_partial_file(
    tmp_path, raw_copy, short_body_mirror, capsys
):
    first = "train-labels-idx1-ubyte.gz"
    out = tmp_path / "raw"
    sources = download_all([short_body_mirror, str(raw_copy)], out, 5.0, files={first: RAW_FILES[first]})
    assert sources == {first: (raw_copy / first).as_uri()}
    err = capsys.readouterr().err
    size = (raw_copy / first).stat().st_size
    cut = f"{first}: {short_body_mirror}{first}: received {size // 2} of {size} bytes; trying the next mirror"
    assert cut in err, err
    assert sorted(p.name for p in out.iterdir()) == [first]
    assert sha256_gunzipped(out / first) == RAW_FILES[first]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/"


# --- bad params: each stage's command refuses them before doing anything --------------------


def test_train_command_rejects_a_bad_value_before_writing_or_tracking(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    flags = cli_flags(dict(params["train"]["baseline"], dropout=1.5)).split()
    result = cli(
        [
            "train",
            "--model",
            "baseline",
            *flags,
            "--seed",
            "42",
            "--experiment",
            "exp",
            "--data",
            str(tmp_path / "train.npz"),
            "--model_out",
            str(tmp_path / "m.keras"),
            "--history_out",
            str(tmp_path / "h.csv"),
        ],
        tmp_path,
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert_clear_error(result, "train", "train.baseline: 'train.dropout' = 1.5", "a number in [0, 1)")
    assert list(tmp_path.iterdir()) == [], "no model, history or MLflow store"


@pytest.mark.slow
def test_explain_refuses_a_model_of_no_known_kind_naming_its_file_and_writes_nothing(tmp_path, keras):
    """A saved model with a layer LRP does not cover (LayerNormalization), whose layers match no kind of the
    registry: `fashion-mlp explain` fails naming the file and the kinds, before any JSON, CSV, PNG, temporary
    or MLflow store is written."""
    import numpy as np

    model = keras.Sequential(
        [keras.Input(shape=(28, 28)), keras.layers.Flatten(), keras.layers.LayerNormalization(),
         keras.layers.Dense(10, activation="softmax")]
    )  # fmt: skip
    path = tmp_path / "models" / "layernorm.keras"
    path.parent.mkdir()
    model.save(path)
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 40)):
        x, y = rng.random((n, 28, 28)).astype(np.float32), np.arange(n) % 10
        np.savez(tmp_path / f"{split}.npz", **{f"x_{split}": x, f"y_{split}": y})
    inputs = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))

    section = yaml.safe_load((REPO / "params.yaml").read_text())["explain"]
    out = tmp_path / "reports"
    result = cli(
        [
            "explain", *cli_flags(section).split(), "--seed", "3", "--threads", "1", "--experiment", "explain-test",
            "--model", "layernorm", "--model_path", str(path), "--train_data", str(tmp_path / "train.npz"),
            "--test_data", str(tmp_path / "test.npz"), "--json_out", str(out / "explain" / "layernorm.json"),
            "--deletion_out", str(out / "deletion" / "layernorm.csv"),
            "--classes_png", str(out / "figures" / "classes.png"),
            "--examples_png", str(out / "figures" / "examples.png"),
            "--deletion_png", str(out / "figures" / "deletion.png"),
            "--cascade_png", str(out / "figures" / "cascade.png"),
            "--randomized_png", str(out / "figures" / "randomized.png"),
        ],
        tmp_path,
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )  # fmt: skip
    assert_clear_error(
        result,
        "explain",
        f"{path}: its layers (Dense, Flatten, InputLayer, LayerNormalization) match no model kind; the kinds are mlp: ",
        "; cnn: Conv2D among ",
    )
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == inputs, "explain wrote something"
