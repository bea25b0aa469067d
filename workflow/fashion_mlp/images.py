"""Pixels in the model's frame: the one scaling function, and any picture -> a Fashion-MNIST-style image.

`scale` is the only place that turns uint8 pixels into the model's floats: `prepare` calls it on
the IDX images, `predict` and the served model on pictures, so the two can never drift apart.

`to_fashion_mnist` repeats what Zalando did to make Fashion-MNIST from product photos, for any
image Pillow reads (any size; RGB, RGBA, grayscale, palette, 16-bit...):

1. apply the EXIF orientation (phone photos), take the first frame, put transparency on white;
2. convert to grayscale (Pillow's ITU-R 601-2 luma);
3. invert when the background is light: Fashion-MNIST is a light object on black. The background
   is the median of the outermost ring of pixels;
4. trim the background: keep the box of pixels brighter than the background by more than 5 % of
   the range (Zalando's threshold), so an off-centre object is found where it is;
5. stretch the levels: the background to 0, the object's brightest pixel to 255 (as in
   Fashion-MNIST, whose images peak at 254-255);
6. resize the box's longest edge to 28 (Lanczos), pad the other to 28 with black, centred.

An image that is already 28x28 is only taken through steps 1-3 and its background to 0: it is
already in Fashion-MNIST's frame, and re-trimming would shift a Fashion-MNIST image by a pixel.
Pillow refuses images above its decompression-bomb limit (Image.MAX_IMAGE_PIXELS, about 89
million pixels) before decoding them. Every error is an ImageError that names the file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from fashion_mlp import PipelineError

SIDE = 28
TRIM_THRESHOLD = 0.05 * 255  # Zalando's trimming distance: 5 % of the intensity range
BOMB_NOTE = "the limit is {:,} pixels, Pillow's protection against decompression bombs"


class ImageError(PipelineError):
    """A picture cannot be read or converted; the message names it."""


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]. The only place in the project that scales pixels."""
    if images.dtype != np.uint8:
        raise TypeError(f"expected raw uint8 pixels, got {images.dtype}: were they scaled already?")
    return images.astype(np.float32) / np.float32(255.0)


def open_image(source: str | os.PathLike | bytes, name: str | None = None):
    """Decode a file or its bytes fully into a Pillow image; errors name `name` (default: the path)."""
    from PIL import Image, UnidentifiedImageError

    name = name or (str(source) if not isinstance(source, bytes | bytearray) else "image")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        if isinstance(source, bytes | bytearray):
            if not source:
                raise ImageError(f"{name}: empty (0 bytes), not an image")
            stream = io.BytesIO(source)
        else:
            if Path(source).is_dir():
                raise ImageError(f"{name}: is a directory, not an image")
            if Path(source).stat().st_size == 0:
                raise ImageError(f"{name}: empty file (0 bytes), not an image")
            stream = open(source, "rb")  # noqa: SIM115 - closed below, after the full decode
        with stream:
            image = Image.open(stream)
            width, height = image.size
            # Image.open refuses more than twice the limit; between once and twice it only warns.
            if limit and width * height > limit:
                raise ImageError(f"{name}: image too large ({width}x{height} pixels; {BOMB_NOTE.format(limit)})")
            image.load()  # decode now, so a truncated file fails here and not later
        return image
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image too large ({exc}; {BOMB_NOTE.format(limit or 0)})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read (unknown or unsupported format)") from None
    except FileNotFoundError:
        raise ImageError(f"{name}: file not found") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's decoders raise all of these
        raise ImageError(f"{name}: truncated or corrupt image ({exc})") from None


def grayscale(image) -> np.ndarray:
    """Any Pillow image -> uint8 luma, (height, width); transparency composited on white."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)  # first frame of an animation; EXIF orientation applied
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float64)  # 16/32-bit: stretch the values it uses to 0-255
        low, high = float(pixels.min()), float(pixels.max())
        return np.round((pixels - low) * (255.0 / (high - low) if high > low else 0.0)).astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if image.mode not in ("L", "RGB", "RGBA", "P", "1", "CMYK", "YCbCr"):
        image = image.convert("RGB")  # LAB, HSV...: no direct conversion to L
    return np.asarray(image.convert("L"), dtype=np.uint8)


def border_level(pixels: np.ndarray) -> float:
    """The background's gray level: the median of the outermost ring of pixels."""
    ring = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    return float(np.median(ring))


def levels(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """Stretch [low, high] to [0, 255], clipping: the background goes to black, the peak to white."""
    if low <= 0 and high >= 255:
        return pixels
    if high <= low:
        return np.zeros_like(pixels)
    stretched = (pixels.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.round(stretched), 0, 255).astype(np.uint8)


def to_fashion_mnist(image) -> np.ndarray:
    """A decoded Pillow image -> (28, 28) uint8, a light object on black as in Fashion-MNIST."""
    from PIL import Image

    pixels = grayscale(image)
    if border_level(pixels) > 127.5:
        pixels = 255 - pixels
    background = border_level(pixels)
    if pixels.shape == (SIDE, SIDE):
        return levels(pixels, background, 255)
    rows = np.flatnonzero((pixels > background + TRIM_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((pixels > background + TRIM_THRESHOLD).any(axis=0))
    if not len(rows):  # a blank picture
        return np.zeros((SIDE, SIDE), dtype=np.uint8)
    pixels = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    # Fashion-MNIST's objects peak at 254-255 (99 % of them): stretch the object's range likewise.
    pixels = levels(pixels, background, float(pixels.max()))
    height, width = pixels.shape
    factor = SIDE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resized = Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("L", (SIDE, SIDE), 0)
    # The odd pixel of padding goes left and top, as in Fashion-MNIST.
    canvas.paste(resized, ((SIDE - size[0] + 1) // 2, (SIDE - size[1] + 1) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def load(source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """A file or its bytes -> (28, 28) float32 in [0, 1], exactly as `prepare` scales its images."""
    image = open_image(source, name)
    try:
        return scale(to_fashion_mnist(image))
    except ImageError:
        raise
    except (OSError, ValueError) as exc:  # a mode Pillow cannot convert, say
        raise ImageError(f"{name or source}: cannot convert to grayscale ({exc})") from None
