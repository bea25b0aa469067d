"""`fashion-mlp predict`: pictures in, the classes evaluate's code gives for the same arrays out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DEBIAN_DATA, require_debian_data
from fashion_mlp import PipelineError
from fashion_mlp.data import CLASS_NAMES, read_split
from fashion_mlp.images import scale
from fashion_mlp.stages import predict

N = 64


@pytest.fixture(scope="module")
def real_images() -> tuple[np.ndarray, np.ndarray]:
    """The first N real test images (uint8) and labels."""
    require_debian_data()
    x, y = read_split(DEBIAN_DATA, "test")
    return x[:N], y[:N]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained, seeded MLP saved as .keras: the round trip needs the same floats, not accuracy."""
    import keras

    from fashion_mlp.models.architectures import build_mlp
    from fashion_mlp.models.saving import save_model

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(build_mlp([16]), path)
    return path


def evaluate_probabilities(model_path: Path, x: np.ndarray) -> np.ndarray:
    """What `evaluate` computes for scaled test arrays (its main(): load, predict; argmax for the class)."""
    import keras

    model = keras.saving.load_model(model_path, safe_mode=True)
    return model.predict(x, batch_size=1024, verbose=0)


def test_round_trip_through_png_gives_evaluates_classes(tmp_path, real_images, tiny_model, capsys):
    x, _ = real_images
    for i, pixels in enumerate(x):
        Image.fromarray(pixels).save(tmp_path / f"{i:03d}.png")
    predict.main([str(tmp_path), "--model", str(tiny_model), "--json", "--top", "10"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(tmp_path / f"{i:03d}.png") for i in range(N)]
    expected = evaluate_probabilities(tiny_model, scale(x))
    got = [CLASS_NAMES.index(line["predictions"][0]["class"]) for line in lines]
    assert got == expected.argmax(axis=1).tolist()
    assert len(set(got)) > 1  # the untrained model tells these images apart: a lost picture would show
    answered = [{p["class"]: p["probability"] for p in line["predictions"]} for line in lines]
    assert all(len(a) == 10 for a in answered)
    np.testing.assert_allclose([[a[name] for name in CLASS_NAMES] for a in answered], expected, atol=1e-6)


def test_bad_files_are_named_the_others_answered_and_the_exit_is_non_zero(tmp_path, real_images, tiny_model, capsys):
    x, _ = real_images
    Image.fromarray(x[0]).save(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:100])
    (tmp_path / "README.txt").write_text("not a picture either, and not an image suffix: skipped")
    with pytest.raises(PipelineError, match="4 of 5 pictures failed"):
        predict.main([str(tmp_path), str(tmp_path / "missing.jpg"), "--model", str(tiny_model)])
    out, err = capsys.readouterr()
    assert "good.png" in out and "README" not in out + err
    for name, problem in [
        ("empty.png", "empty file"),
        ("notes.png", "not an image"),
        ("cut.png", "truncated or corrupt"),
        ("missing.jpg", "file not found"),
    ]:
        assert f"error: {tmp_path / name}: {problem}" in err
    assert out.splitlines()[0].startswith("file")  # the table's header


def test_json_lines_carry_the_errors_too(tmp_path, tiny_model, capsys):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(PipelineError, match="1 of 1"):
        predict.main([str(tmp_path / "empty.png"), "--model", str(tiny_model), "--json"])
    (line,) = capsys.readouterr().out.splitlines()
    path = tmp_path / "empty.png"
    assert json.loads(line) == {"file": str(path), "error": f"{path}: empty file (0 bytes), not an image"}


def test_inputs_expand_directories_globs_and_files_once_each(tmp_path):
    for name in ("b.png", "a.JPG", "c.txt", "sub/d.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    args = [str(tmp_path), str(tmp_path / "*.png"), str(tmp_path / "c.txt"), str(tmp_path / "z*.gif")]
    pairs = list(predict.expand(args))
    assert pairs == [
        (str(tmp_path / "a.JPG"), None),
        (str(tmp_path / "b.png"), None),
        (str(tmp_path / "c.txt"), None),  # named explicitly: tried whatever its suffix
        (str(tmp_path / "z*.gif"), f"{tmp_path / 'z*.gif'}: no file matches this pattern"),
    ]
    assert list(predict.expand([str(tmp_path / "sub" / "*")])) == [(str(tmp_path / "sub" / "d.png"), None)]


def test_top_must_be_between_1_and_10(capsys):
    with pytest.raises(SystemExit):
        predict.main(["x.png", "--top", "11"])
    assert "--top must be between 1 and 10" in capsys.readouterr().err


def test_the_champion_is_the_default_model():
    assert predict.default_model() == "models:/fashion-mnist-classifier@champion"


def check_champion_predicts(repo: Path, pictures: Path, n: int = 20) -> None:
    """For an end-to-end run (after `register`): `fashion-mlp predict` with its default model, the
    registered champion, gives the classes that `evaluate` wrote for the first n test images."""
    import csv
    import subprocess

    from conftest import CLI, engine_env
    from fashion_mlp.data import load_arrays
    from fashion_mlp.io import read_json

    champion = read_json(repo / "reports/champion.json")["champion"]
    with open(repo / f"reports/predictions/{champion}.csv", newline="") as fh:
        expected = [row["predicted"] for row in csv.DictReader(fh)][:n]
    x = load_arrays(repo / "data/prepared/test.npz")["x_test"][:n]
    pictures.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(np.round(x * 255).astype(np.uint8)):  # prepare's scaling, undone exactly
        Image.fromarray(pixels).save(pictures / f"{i:03d}.png")
    result = subprocess.run(
        [str(CLI), "predict", str(pictures), "--json", "--top", "1"],
        cwd=repo, env=engine_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    got = [json.loads(line)["predictions"][0]["class"] for line in result.stdout.splitlines()]
    assert got == expected
