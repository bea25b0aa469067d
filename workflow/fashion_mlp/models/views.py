"""Fixed views of the pictures (flips × pixel shifts) and a teacher's table of logits over them.

With `teacher.views`, a student does not call its teacher in its training step: before training,
the teacher scores every training image in every view once (`teacher_table`), and each step the
student sees each image in a random view with that view's row of the table (`TableDistiller` in
models/distillation.py). The same (image, view) always gets the same target, as in consistent
teaching, and a step costs no teacher pass, so the student can train for hundreds of epochs.

A view is (flipped, dy, dx): the picture flipped left to right if asked, then moved dy pixels down
and dx right, zeros (the background) filling in. `apply_view` (NumPy, for the table) and
`apply_views` (TensorFlow, per image in a batch) are the same map; tests/models/test_distillation.py checks it.

With `warp`, the table has every view twice: as above, and warped, each picture moved by its own smooth
random field (Simard, Steinkraus and Platt 2003's elastic distortion, by scipy.ndimage). A warp is no
map TensorFlow can redo per step, so `stored_views` keeps every view's pictures (uint8, 28 × 28 bytes
each) and the step looks its picture up as it does the logits. They are made in aligned memory that
TensorFlow then shares: `tf.constant` held three copies at its peak (4.6 GB for 36 views of the
training split), and kept one besides NumPy's until it was freed.
"""

from __future__ import annotations

import numpy as np

from fashion_mlp.data import NUM_CLASSES, aligned_empty

View = tuple[bool, int, int]


def views(shift: int, flip: bool) -> list[View]:
    """Every (flipped, dy, dx) with |dy|, |dx| <= shift, the unchanged picture among them."""
    span = range(-shift, shift + 1)
    return [(f, dy, dx) for f in ((False, True) if flip else (False,)) for dy in span for dx in span]


def apply_view(images: np.ndarray, view: View) -> np.ndarray:
    """`images` (n, height, width) in one view."""
    flipped, dy, dx = view
    source = images[:, :, ::-1] if flipped else images
    out = np.zeros_like(source)
    height, width = source.shape[1:]
    out[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = source[
        :, max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)
    ]
    return out


def apply_views(images, chosen, all_views: list[View]):
    """Each image of a batch (b, height, width) in its own view, `chosen` (b,) indexing `all_views`."""
    import tensorflow as tf

    flips, dys, dxs = (tf.constant(column) for column in zip(*all_views, strict=True))
    shift = int(max(max(abs(dy), abs(dx)) for _, dy, dx in all_views))
    flipped = tf.gather(flips, chosen)[:, None, None]
    images = tf.where(flipped, tf.reverse(images, axis=[2]), images)
    padded = tf.pad(images, [[0, 0], [shift, shift], [shift, shift]])
    height, width = images.shape[1], images.shape[2]
    # Output pixel (y, x) is padded pixel (y + shift - dy, x + shift - dx).
    rows = tf.range(height)[None, :] + (shift - tf.gather(dys, chosen))[:, None]
    columns = tf.range(width)[None, :] + (shift - tf.gather(dxs, chosen))[:, None]
    moved = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(moved, columns, axis=2, batch_dims=1)


def teacher_table(logits, images: np.ndarray, all_views: list[View], batch: int = 2000) -> np.ndarray:
    """`logits(batch)` (NumPy in, NumPy scores out) of every image in every view: (views, images, classes) float32.

    Views are made a batch at a time, so no view of the whole training split is ever held."""
    table = np.zeros((len(all_views), len(images), NUM_CLASSES), np.float32)
    for i, view in enumerate(all_views):
        for start in range(0, len(images), batch):
            table[i, start : start + batch] = logits(apply_view(images[start : start + batch], view))
    return table


def warp(images: np.ndarray, pixels: float, smoothness: float, rng: np.random.Generator) -> np.ndarray:
    """`images` (n, height, width), each moved by its own random displacement field: uniform noise
    smoothed by a Gaussian of `smoothness` pixels, scaled so that a pixel moves `pixels` on average
    (root mean square over the batch), then sampled bilinearly, zeros (the background) filling in."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    n, height, width = images.shape
    fields = [
        gaussian_filter(rng.uniform(-1, 1, images.shape), (0, smoothness, smoothness), mode="constant") for _ in "yx"
    ]
    scale = pixels / np.sqrt(np.mean(fields[0] ** 2 + fields[1] ** 2))
    rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    which = np.broadcast_to(np.arange(n)[:, None, None], images.shape)
    where = [which, rows + fields[0] * scale, columns + fields[1] * scale]
    return map_coordinates(images, where, order=1, mode="constant", cval=0.0).astype(images.dtype)


def stored_views(
    logits, images: np.ndarray, all_views: list[View], warping: dict, mirror: bool, seed: int, batch: int = 2000
):
    """The pictures and the teacher's logits of every view, then of every view warped (`warping`: its
    pixels and smoothness): ((2 views, images, height, width) uint8, (2 views, images, classes) float32).

    The pictures are kept as the bytes they came from (pixel * 255); a warped one is rounded to them.
    With `mirror`, a warped view's logits are averaged with its flipped picture's, as `mirrored` does
    for the plain views. The warps are drawn batch by batch from `seed`, so the same seed gives the same table."""
    rng = np.random.default_rng(seed)
    count = len(all_views)
    pictures = aligned_empty((2 * count, *images.shape), np.uint8)  # every row is written below
    table = np.zeros((2 * count, len(images), NUM_CLASSES), np.float32)
    for i, view in enumerate(all_views):
        for start in range(0, len(images), batch):
            seen = apply_view(images[start : start + batch], view)
            warped = warp(seen, warping["pixels"], warping["smoothness"], rng)
            for row, shown in ((i, seen), (count + i, warped)):
                pictures[row, start : start + batch] = np.rint(shown * 255)
                table[row, start : start + batch] = logits(pictures[row, start : start + batch] / np.float32(255))
            if mirror:
                second = logits(pictures[count + i, start : start + batch, :, ::-1] / np.float32(255))
                table[count + i, start : start + batch] = (table[count + i, start : start + batch] + second) / 2
    if mirror:
        table[:count] = mirrored(table[:count], all_views)
    return pictures, table


def mirrored(table: np.ndarray, all_views: list[View]) -> np.ndarray:
    """Each view's logits averaged with its mirror image's: the flipped picture as a second opinion.

    The mirror of view (f, dy, dx) is (not f, dy, -dx), another row of a table with flips."""
    index = {view: i for i, view in enumerate(all_views)}
    try:
        mirror = [index[(not f, dy, -dx)] for f, dy, dx in all_views]
    except KeyError:
        raise ValueError("teacher.views.mirror needs teacher.views.flip: the table has no flipped views") from None
    return (table + table[mirror]) / 2
