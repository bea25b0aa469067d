"""Fashion-MNIST's files and formats: the IDX parser, the pinned checksums and npz I/O."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from fashion_mlp import PipelineError
from fashion_mlp.io import atomic_output

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (28, 28)

# The four canonical files and the SHA-256 of their *decompressed* bytes.
# Mirrors recompress the archives (Debian did), so the .gz bytes differ between
# them while the IDX payload is the same.
RAW_FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


class DataError(PipelineError):
    """A data file is missing, corrupt or inconsistent; the message names the file."""


def gunzip(path: str | os.PathLike) -> bytes:
    """Decompress a .gz file, turning gzip's low-level errors into a DataError naming it."""
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file or truncated ({exc})") from None


def sha256_gunzipped(path: str | os.PathLike) -> str:
    return hashlib.sha256(gunzip(path)).hexdigest()


def parse_idx(raw: bytes, expected_magic: int, name: str) -> np.ndarray:
    """Parse IDX bytes (big-endian header, then unsigned bytes) after checking magic and size."""
    if len(raw) < 4:
        raise DataError(f"{name}: {len(raw)} bytes is too short for an IDX header")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise DataError(f"{name}: bad IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(shape)  # Python ints: a corrupt header cannot overflow
    if len(raw) != expected:
        raise DataError(f"{name}: IDX header says shape {shape} ({expected} bytes) but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_split(
    raw_dir: str | os.PathLike, split: str, expected_count: int | None = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split's images (N, 28, 28) and labels (N,) as uint8 and check they agree.

    `expected_count` defaults to the canonical size of the split; None skips that check.
    """
    images_name, labels_name, canonical_count = SPLIT_FILES[split]
    if expected_count == -1:
        expected_count = canonical_count
    images_path = Path(raw_dir) / images_name
    labels_path = Path(raw_dir) / labels_name
    images = parse_idx(gunzip(images_path), IMAGES_MAGIC, str(images_path))
    labels = parse_idx(gunzip(labels_path), LABELS_MAGIC, str(labels_path))
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{images_path}: images are {images.shape[1:]}, expected {IMAGE_SHAPE}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if expected_count is not None and len(images) != expected_count:
        raise DataError(f"{images_path}: {len(images)} images, expected {expected_count} for the {split} split")
    if labels.size and labels.max() >= NUM_CLASSES:
        bad = int(labels.max())
        raise DataError(f"{labels_path}: label {bad} is outside 0-{NUM_CLASSES - 1}")
    return images, labels


def save_arrays(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays to an uncompressed .npz atomically (fast to load, no pickles)."""
    with atomic_output(path) as tmp:
        np.savez(tmp, **arrays)


def load_arrays(path: str | os.PathLike, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Load every array of an .npz, or only `keys` (the others are never read); pickled objects are refused.

    Each array starts on an ALIGNMENT boundary (read_aligned), so `fit` can use it without a copy."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            missing = [key for key in keys or () if key not in members]
            if missing:
                raise DataError(f"{path}: no array {', '.join(missing)} (it holds {', '.join(members)})")
            out = {}
            for key in keys or members:
                with archive.open(members[key]) as member:
                    out[key] = read_aligned(member, members[key])
            return out
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; run the prepare stage first") from None
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz of plain arrays ({exc})") from None


ALIGNMENT = 64  # bytes: TensorFlow takes an array's memory as a tensor's only at this alignment
READ_CHUNK = 1 << 20  # bytes read at a time: no second copy of a whole array in memory


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-order array whose memory starts on an ALIGNMENT boundary, so that
    fitting.as_tensor can share it with TensorFlow rather than copy it."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    raw = np.empty(size + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + size].view(dtype).reshape(shape)


def read_aligned(member, name: str) -> np.ndarray:
    """The .npy array in the open file `member`, in memory aligned to ALIGNMENT bytes.

    np.load's large arrays start 16 bytes into a page, so Keras copies them into a tensor at the start
    of every `fit`: 1.9 s for the training split, at this machine's price for fresh memory
    (docs/speed.md). NumPy has no aligned load, so this reads the header with numpy.lib.format's
    readers and the data into an aligned buffer; fitting.as_tensor then shares it with TensorFlow.
    """
    from numpy.lib import format as npy

    version = npy.read_magic(member)
    read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
    shape, fortran_order, dtype = read_header(member)
    if dtype.hasobject:
        raise ValueError(f"{name} holds pickled Python objects, which are not loaded")
    size = math.prod(shape) * dtype.itemsize
    buffer = aligned_empty((size,), np.uint8)
    filled = 0
    while filled < size:
        chunk = member.read(min(READ_CHUNK, size - filled))
        if not chunk:
            raise ValueError(f"{name} ends after {filled} of its {size} bytes")
        buffer[filled : filled + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        filled += len(chunk)
    array = buffer.view(dtype)
    return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded subset of size n with the class proportions of `labels`, in original order."""
    from sklearn.model_selection import train_test_split

    if n >= len(labels):
        return np.arange(len(labels))
    keep, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    return np.sort(keep)
