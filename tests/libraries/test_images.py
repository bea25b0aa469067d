"""Pictures -> Fashion-MNIST frame (fashion_mlp.images): modes, sizes, inversion, centring, bad files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_mlp import images
from fashion_mlp.images import ImageError
from fashion_mlp.stages import prepare


def fashion_like(seed: int = 0) -> np.ndarray:
    """A 28x28 uint8 'garment': a light, textured blob touching top and bottom, on black."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[:, 6:22] = rng.integers(60, 256, size=(28, 16))
    return pixels


def encode(pixels: np.ndarray, mode: str = "L", fmt: str = "PNG", **convert) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode, **convert).save(buffer, format=fmt)
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels: a few hundred bytes that Pillow must refuse."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_prepare_scales_with_the_shared_function():
    assert prepare.scale is images.scale
    pixels = fashion_like()
    assert np.array_equal(images.scale(pixels), pixels.astype(np.float32) / np.float32(255.0))


@pytest.mark.parametrize(
    "mode, convert",
    [("L", {}), ("RGB", {}), ("RGBA", {}), ("LA", {}), ("P", {"palette": Image.Palette.ADAPTIVE, "colors": 256})],
)
def test_a_fashion_mnist_image_comes_back_unchanged_whatever_its_mode(mode, convert):
    pixels = fashion_like()
    assert np.array_equal(images.load(encode(pixels, mode, **convert)), images.scale(pixels))


def test_a_light_background_is_inverted():
    pixels = fashion_like()
    assert np.array_equal(images.load(encode(255 - pixels)), images.scale(pixels))


def test_a_large_off_centre_photo_is_trimmed_resized_and_centred():
    pixels = fashion_like()
    big = np.kron(255 - pixels, np.ones((10, 10), dtype=np.uint8))  # 280x280, dark object on white
    canvas = np.full((600, 500), 255, dtype=np.uint8)
    canvas[20:300, 200:480] = big  # top right
    out = images.to_fashion_mnist(Image.fromarray(canvas).convert("RGB"))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - pixels).mean() < 10  # the same picture, up to resampling


def test_aspect_ratio_is_kept_and_the_object_centred():
    bar = np.zeros((40, 200), dtype=np.uint8)
    bar[10:30, 50:150] = 255  # a 100x20 bar: 5:1
    out = images.to_fashion_mnist(Image.fromarray(bar))
    rows = np.flatnonzero(out.max(axis=1) > 127)
    cols = np.flatnonzero(out.max(axis=0) > 127)
    assert (cols[0], cols[-1]) == (0, 27)
    assert len(rows) in (5, 6) and abs((rows[0] + rows[-1]) / 2 - 13.5) <= 0.5


def test_a_gray_background_becomes_black():
    pixels = np.full((50, 50), 200, dtype=np.uint8)
    pixels[10:40, 20:30] = 20  # dark object on light gray
    out = images.to_fashion_mnist(Image.fromarray(pixels))
    assert out[:, 0].max() == 0 and out[:, -1].max() == 0  # the padding; the object spans the rows
    assert out.max() == 255  # inverted (background 55, object 235), then stretched


def test_a_transparent_background_counts_as_white():
    rgba = np.zeros((60, 60, 4), dtype=np.uint8)  # fully transparent...
    rgba[10:50, 20:40] = (30, 30, 30, 255)  # ...around an opaque dark object
    out = images.load(encode(rgba, "RGBA"))
    assert out[:, 0].max() == 0 and out[14, 14] > 0.8


def test_sixteen_bit_and_jpeg_pictures_are_read():
    wide = np.kron(fashion_like(), np.ones((2, 2), dtype=np.uint8))
    out = images.load(_png16(wide.astype(np.uint16) * 257))
    assert out.shape == (28, 28)
    assert np.abs(out - images.load(encode(wide))).max() < 1e-6  # 16-bit read as its 8-bit twin
    assert images.load(encode(fashion_like(), "RGB", fmt="JPEG")).shape == (28, 28)


def _png16(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # uint16: mode I;16
    return buffer.getvalue()


def test_a_blank_picture_gives_a_black_image():
    assert images.load(encode(np.full((40, 30), 255, dtype=np.uint8))).max() == 0.0


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"hello, not a picture\n", "not an image Pillow can read"),
        (encode(fashion_like())[:60], "truncated or corrupt"),
        (bomb_png(30_000, 30_000), "image too large"),  # 900 M pixels: Pillow refuses before decoding
    ],
    ids=["zero-byte", "not-an-image", "truncated", "bomb"],
)
def test_bad_files_raise_an_error_naming_them(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as caught:
        images.load(path)
    assert str(caught.value).startswith(f"{path}: ")
    with pytest.raises(ImageError, match=f"^upload 3: .*{message}"):
        images.load(content, name="upload 3")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_between_once_and_twice_the_bomb_limit_is_refused_too(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # Pillow only warns up to twice its limit
    with pytest.raises(ImageError, match=r"photo\.png: image too large \(50x50 pixels"):
        images.load(encode(np.zeros((50, 50), dtype=np.uint8)), name="photo.png")


def test_missing_files_and_directories_are_named(tmp_path: Path):
    with pytest.raises(ImageError, match=r"nope\.png: file not found"):
        images.load(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a directory"):
        images.load(tmp_path)
