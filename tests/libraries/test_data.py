"""IDX parsing and npz I/O (fashion_mlp.data) on small synthetic files."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import pytest

from fashion_mlp import PipelineError
from fashion_mlp.data import (
    CLASS_NAMES,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    NUM_CLASSES,
    SPLIT_FILES,
    DataError,
    gunzip,
    load_arrays,
    parse_idx,
    read_split,
    save_arrays,
    sha256_gunzipped,
)

# --- helpers ---------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Serialise a uint8 array as IDX: big-endian magic, one u32 per dimension, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_gz(path: Path, payload: bytes) -> Path:
    with gzip.open(path, "wb") as fh:
        fh.write(payload)
    return path


def make_split(directory: Path, split: str, images: np.ndarray, labels: np.ndarray) -> tuple[Path, Path]:
    images_name, labels_name, _ = SPLIT_FILES[split]
    return (write_gz(directory / images_name, idx_bytes(images)), write_gz(directory / labels_name, idx_bytes(labels)))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def small_split(tmp_path, rng):
    """A 12-image train split whose pixels and labels we know exactly."""
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 9], dtype=np.uint8)
    images_path, labels_path = make_split(tmp_path, "train", images, labels)
    return tmp_path, images, labels, images_path, labels_path


# --- good files ------------------------------------------------------------------------


def test_constants_describe_fashion_mnist():
    assert NUM_CLASSES == 10 == len(CLASS_NAMES) == len(set(CLASS_NAMES))
    assert CLASS_NAMES[0] == "T-shirt/top" and CLASS_NAMES[9] == "Ankle boot"
    assert SPLIT_FILES["train"][2] == 60_000 and SPLIT_FILES["test"][2] == 10_000


def test_read_split_parses_images_and_labels(small_split):
    raw_dir, images, labels, _, _ = small_split
    x, y = read_split(raw_dir, "train", expected_count=None)
    assert x.shape == (12, 28, 28) and x.dtype == np.uint8
    assert y.shape == (12,) and y.dtype == np.uint8
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_read_split_accepts_matching_expected_count(small_split):
    raw_dir, _images, *_ = small_split
    x, y = read_split(raw_dir, "train", expected_count=12)
    assert len(x) == len(y) == 12


def test_read_split_test_split_uses_t10k_files(tmp_path, rng):
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([9, 8, 7, 6, 5], dtype=np.uint8)
    make_split(tmp_path, "test", images, labels)
    x, y = read_split(tmp_path, "test", expected_count=None)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_read_split_default_expects_canonical_count(small_split):
    raw_dir, _, _, images_path, _ = small_split
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train")  # default: the canonical 60,000
    message = str(info.value)
    assert str(images_path) in message
    assert "60000" in message and "12" in message


def test_parse_idx_reads_header_shape():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    parsed = parse_idx(idx_bytes(array), IMAGES_MAGIC, "x")
    np.testing.assert_array_equal(parsed, array)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(idx_bytes(labels), LABELS_MAGIC, "y"), labels)


def test_sha256_gunzipped_hashes_decompressed_bytes(tmp_path):
    import hashlib

    payload = b"fashion" * 100
    path = write_gz(tmp_path / "a.gz", payload)
    assert sha256_gunzipped(path) == hashlib.sha256(payload).hexdigest()
    assert gunzip(path) == payload


# --- bad files: each raises DataError naming the file ------------------------------------


def test_bad_magic_number_names_file(small_split):
    raw_dir, images, _, images_path, _ = small_split
    write_gz(images_path, idx_bytes(images, magic=0x00000804))
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train", expected_count=None)
    assert str(images_path) in str(info.value)
    assert "magic" in str(info.value)


def test_labels_file_with_images_magic_is_rejected(small_split):
    raw_dir, _, labels, _, labels_path = small_split
    write_gz(labels_path, idx_bytes(labels, magic=IMAGES_MAGIC))
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train", expected_count=None)
    assert str(labels_path) in str(info.value)


def test_truncated_payload_names_file(small_split):
    raw_dir, images, _, images_path, _ = small_split
    full = idx_bytes(images)
    write_gz(images_path, full[:-100])  # header promises 12*28*28 bytes; 100 are missing
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train", expected_count=None)
    message = str(info.value)
    assert str(images_path) in message
    assert str(len(full) - 100) in message and str(len(full)) in message


def test_trailing_bytes_are_rejected(small_split):
    raw_dir, images, _, images_path, _ = small_split
    write_gz(images_path, idx_bytes(images) + b"\0" * 7)
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train", expected_count=None)
    assert str(images_path) in str(info.value)


def test_truncated_header_names_file(small_split):
    raw_dir, _, _, _, labels_path = small_split
    write_gz(labels_path, struct.pack(">I", LABELS_MAGIC) + b"\0\0")  # dimension field cut short
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train", expected_count=None)
    assert str(labels_path) in str(info.value)


def test_too_short_for_header_names_file(small_split):
    raw_dir, _, _, _, labels_path = small_split
    write_gz(labels_path, b"\0\0")
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train", expected_count=None)
    assert str(labels_path) in str(info.value)


def test_not_gzip_names_file(small_split):
    raw_dir, images, _, images_path, _ = small_split
    images_path.write_bytes(idx_bytes(images))  # plain IDX, not gzipped
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train", expected_count=None)
    assert str(images_path) in str(info.value)
    assert "gzip" in str(info.value)


def test_truncated_gzip_stream_names_file(small_split):
    raw_dir, _, _, images_path, _ = small_split
    data = images_path.read_bytes()
    images_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train", expected_count=None)
    assert str(images_path) in str(info.value)


def test_corrupt_gzip_body_names_file(small_split):
    raw_dir, _, _, _, labels_path = small_split
    data = bytearray(labels_path.read_bytes())
    # Keep the 10-byte gzip header, scramble the deflate stream and the CRC trailer.
    for i in range(10, len(data)):
        data[i] ^= 0xA5
    labels_path.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train", expected_count=None)
    assert str(labels_path) in str(info.value)


def test_missing_file_names_file(small_split):
    raw_dir, _, _, _, labels_path = small_split
    labels_path.unlink()
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train", expected_count=None)
    assert str(labels_path) in str(info.value)
    assert "not found" in str(info.value)


def test_label_outside_range_names_labels_file(small_split):
    raw_dir, _, labels, _, labels_path = small_split
    bad = labels.copy()
    bad[3] = 10
    write_gz(labels_path, idx_bytes(bad))
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train", expected_count=None)
    message = str(info.value)
    assert str(labels_path) in message
    assert "10" in message and "0-9" in message


def test_label_255_is_rejected(small_split):
    raw_dir, _, labels, _, labels_path = small_split
    bad = labels.copy()
    bad[-1] = 255
    write_gz(labels_path, idx_bytes(bad))
    with pytest.raises(DataError, match="255"):
        read_split(raw_dir, "train", expected_count=None)


def test_count_mismatch_names_both_files(small_split):
    raw_dir, _, labels, images_path, labels_path = small_split
    write_gz(labels_path, idx_bytes(labels[:11]))
    with pytest.raises(DataError) as info:
        read_split(raw_dir, "train", expected_count=None)
    message = str(info.value)
    assert str(images_path) in message and str(labels_path) in message
    assert "12" in message and "11" in message


def test_wrong_image_shape_names_file(tmp_path, rng):
    images = rng.integers(0, 256, size=(4, 28, 27), dtype=np.uint8)
    labels = np.zeros(4, dtype=np.uint8)
    images_path, _ = make_split(tmp_path, "train", images, labels)
    with pytest.raises(DataError) as info:
        read_split(tmp_path, "train", expected_count=None)
    assert str(images_path) in str(info.value)


def test_absurd_header_dimensions_raise_data_error():
    raw = struct.pack(">4I", IMAGES_MAGIC, 2**32 - 1, 2**32 - 1, 2**32 - 1) + b"x" * 10
    with pytest.raises(DataError, match=r"some.gz"):
        parse_idx(raw, IMAGES_MAGIC, "some.gz")


def test_overflowing_header_dimensions_raise_data_error():
    raw = struct.pack(">4I", IMAGES_MAGIC, 2**31, 2**31, 4)  # header only; 2**64 bytes promised
    with pytest.raises(DataError, match=r"some.gz"):
        parse_idx(raw, IMAGES_MAGIC, "some.gz")


def test_data_error_is_a_pipeline_error():
    # The CLI turns PipelineError into a one-line message instead of a traceback.
    assert issubclass(DataError, PipelineError)


# --- npz I/O ---------------------------------------------------------------------------


def test_save_and_load_arrays_round_trip(tmp_path, rng):
    arrays = {"x_train": rng.random((3, 28, 28), dtype=np.float32), "y_train": np.array([1, 2, 3], dtype=np.uint8)}
    path = tmp_path / "train.npz"
    save_arrays(path, **arrays)
    loaded = load_arrays(path)
    assert set(loaded) == set(arrays)
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)
    # atomic: nothing but the target remains
    assert [p.name for p in tmp_path.iterdir()] == ["train.npz"]


def test_load_arrays_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    # np.load(allow_pickle=False) refuses object arrays (currently as numpy's ValueError).
    with pytest.raises((ValueError, DataError)) as info:
        load_arrays(path)
    assert "pickle" in str(info.value).lower()


def test_load_arrays_names_missing_file(tmp_path):
    path = tmp_path / "nope" / "train.npz"
    with pytest.raises(DataError) as info:
        load_arrays(path)
    assert str(path) in str(info.value)
    assert "prepare" in str(info.value)


def test_load_arrays_reads_each_array_aligned_and_equal_to_np_load(tmp_path):
    """Aligned for TensorFlow to share (fitting.as_tensor), with np.load's values, dtypes and shapes,
    C- and Fortran-ordered alike."""
    from fashion_mlp.data import ALIGNMENT, load_arrays

    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.random((7, 28, 28), dtype=np.float32),
        "y": rng.integers(0, 10, 7).astype(np.uint8),
        "f": np.asfortranarray(rng.random((5, 3))),
        "empty": np.zeros((0, 784), np.float32),
    }
    np.savez(tmp_path / "a.npz", **arrays)
    loaded = load_arrays(tmp_path / "a.npz")
    for key, want in arrays.items():
        assert loaded[key].dtype == want.dtype and loaded[key].shape == want.shape, key
        np.testing.assert_array_equal(loaded[key], want)
    assert loaded["x"].ctypes.data % ALIGNMENT == 0 and loaded["x"].flags.c_contiguous


def test_a_cut_npz_member_is_refused_by_name(tmp_path):
    import zipfile

    from fashion_mlp.data import DataError, load_arrays

    np.savez(tmp_path / "a.npz", x=np.ones((100, 784), np.float32))
    with zipfile.ZipFile(tmp_path / "a.npz") as whole:
        data = whole.read("x.npy")
    with zipfile.ZipFile(tmp_path / "cut.npz", "w") as cut:
        cut.writestr("x.npy", data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.npz.*x\.npy ends after"):
        load_arrays(tmp_path / "cut.npz")


def test_as_tensor_shares_an_aligned_array_and_leaves_others_to_keras():
    import tensorflow as tf

    from fashion_mlp.data import ALIGNMENT, read_aligned
    from fashion_mlp.models.fitting import as_tensor

    buffer = io.BytesIO()
    np.save(buffer, np.arange(12, dtype=np.float32).reshape(3, 4))
    buffer.seek(0)
    aligned = read_aligned(buffer, "x.npy")
    tensor = as_tensor(aligned)
    assert isinstance(tensor, tf.Tensor)
    aligned[0, 0] = 99.0  # the same memory: the tensor sees it
    assert float(tensor[0, 0]) == 99.0
    misaligned = np.frombuffer(bytes(4 * 13 + ALIGNMENT), dtype=np.uint8)[1 : 1 + 48].view(np.float32)
    assert as_tensor(misaligned) is misaligned
