"""A model's answers on photo-like versions of test images: how far `predict` and the served model can be
trusted on pictures that are not Fashion-MNIST frames.

Each variant turns a 28x28 test image (uint8, a light garment on black) into the bytes of a picture a
user might send; images.load brings it back into the model's frame, as `predict` and the server do.
Agreement is the share of images whose variant gets the class the original frame gets; accuracy, the
share of variants classified correctly. The images are a stratified, seeded sample of the test split,
which is measured here, never chosen on.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

from fashion_mlp.images import load


def _save(image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _image(pixels: np.ndarray):
    from PIL import Image

    return Image.fromarray(pixels)


def png(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """The frame itself as a PNG: the round trip, which must agree on every image."""
    return _save(_image(pixels))


def light_background(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """A dark garment on white, as on a product page."""
    return _save(_image(255 - pixels))


def large(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """Ten times larger (280 x 280, bicubic), as a photo's resolution."""
    from PIL import Image

    return _save(_image(pixels).resize((280, 280), Image.Resampling.BICUBIC))


def rgb_tinted(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """In colour: the garment tinted, the background a dark blue."""
    ink, background = np.array([240.0, 200.0, 150.0]), np.array([10.0, 20.0, 45.0])
    share = pixels[..., None] / 255.0
    return _save(_image(np.round(background * (1 - share) + ink * share).astype(np.uint8)))


def off_centre(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """In a black frame three times its size, at a random place away from the centre."""
    canvas = np.zeros((84, 84), dtype=np.uint8)
    top, left = rng.integers(0, 57, size=2)
    canvas[top : top + 28, left : left + 28] = pixels
    return _save(_image(canvas))


def jpeg(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """Four times larger and saved as a JPEG of quality 75, with its artefacts."""
    from PIL import Image

    return _save(_image(pixels).resize((112, 112), Image.Resampling.BICUBIC), "JPEG", quality=75)


def rotated(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """Turned by 8 degrees, one way or the other, as a hand-held photo is."""
    from PIL import Image

    angle = float(rng.choice([-8.0, 8.0]))
    return _save(_image(pixels).resize((112, 112), Image.Resampling.BICUBIC).rotate(angle, Image.Resampling.BICUBIC))


def phone_photo(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """All of it: 10x larger, dark ink on light, noisy, tinted paper, off-centre in a bigger frame, RGB, JPEG."""
    from PIL import Image

    side = 280
    darkness = np.asarray(_image(pixels).resize((side, side), Image.Resampling.BICUBIC), np.float64) / 255
    height, width = rng.integers(side + 60, side + 240, size=2)
    top, left = rng.integers(5, height - side - 5), rng.integers(5, width - side - 5)
    paper = np.array([236.0, 231.0, 222.0]) + rng.normal(0, 3, size=(height, width, 3))
    ink = np.array([25.0, 35.0, 70.0])
    window = paper[top : top + side, left : left + side]
    paper[top : top + side, left : left + side] = window * (1 - darkness[..., None]) + ink * darkness[..., None]
    return _save(Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8), "RGB"), "JPEG", quality=90)


VARIANTS: dict[str, Callable[[np.ndarray, np.random.Generator], bytes]] = {
    "PNG of the frame (round trip)": png,
    "light background": light_background,
    "10x larger": large,
    "RGB, tinted": rgb_tinted,
    "off-centre in a larger frame": off_centre,
    "JPEG, quality 75": jpeg,
    "rotated 8 degrees": rotated,
    "phone photo (all of the above)": phone_photo,
}


def measure(predict: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """Agreement with the original frames and accuracy, per variant; `predict` maps (n, 28, 28) floats
    to probabilities, `pixels` are uint8 frames. Each variant draws from its own seeded generator."""
    from fashion_mlp.images import scale

    original = predict(scale(pixels)).argmax(axis=1)
    result = {"images": len(pixels), "seed": seed, "original_accuracy": float((original == labels).mean())}
    variants = {}
    for index, (name, make) in enumerate(VARIANTS.items()):
        rng = np.random.default_rng([seed, index])
        frames = np.stack([load(make(p, rng), name=f"{name} {i}") for i, p in enumerate(pixels)])
        classes = predict(frames).argmax(axis=1)
        variants[name] = {
            "agreement": float((classes == original).mean()),
            "accuracy": float((classes == labels).mean()),
        }
    return result | {"variants": variants}
