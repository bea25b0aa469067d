"""Split and scaling properties of fashion_mlp.stages.prepare."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DEBIAN_DATA, require_debian_data
from fashion_mlp.config import optional_int
from fashion_mlp.data import CLASS_NAMES, NUM_CLASSES, RAW_FILES, read_split, stratified_indices
from fashion_mlp.stages.prepare import class_counts, prepare, scale, split_train_val


@pytest.fixture
def needs_real_data():
    require_debian_data()


@pytest.fixture
def labels() -> np.ndarray:
    """975 shuffled labels with unequal class sizes (50..145), so stratification shows."""
    sizes = [50 + 10 * k + (k % 2) * 5 for k in range(NUM_CLASSES)]
    y = np.concatenate([np.full(n, k, dtype=np.uint8) for k, n in enumerate(sizes)])
    return np.random.default_rng(7).permutation(y)


# --- split_train_val -------------------------------------------------------------------


def test_split_is_stratified(labels):
    train_idx, val_idx = split_train_val(labels, 0.2, seed=42)
    total = np.bincount(labels, minlength=NUM_CLASSES)
    val_counts = np.bincount(labels[val_idx], minlength=NUM_CLASSES)
    train_counts = np.bincount(labels[train_idx], minlength=NUM_CLASSES)
    expected = total * 0.2
    assert np.all(np.abs(val_counts - expected) <= 1), (val_counts, expected)
    assert np.all(np.abs(train_counts - (total - expected)) <= 1)


def test_split_is_disjoint_and_covers_everything(labels):
    train_idx, val_idx = split_train_val(labels, 0.1, seed=0)
    assert len(np.intersect1d(train_idx, val_idx)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(len(labels)))
    assert len(labels) == 975
    assert len(val_idx) == 98  # ceil(0.1 * 975), sklearn's rounding for test_size
    # sorted, so arrays keep their original order
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(val_idx) > 0)


def test_split_is_deterministic_per_seed(labels):
    a_train, a_val = split_train_val(labels, 0.1, seed=42)
    b_train, b_val = split_train_val(labels, 0.1, seed=42)
    _c_train, c_val = split_train_val(labels, 0.1, seed=43)
    np.testing.assert_array_equal(a_train, b_train)
    np.testing.assert_array_equal(a_val, b_val)
    assert not np.array_equal(a_val, c_val)
    assert len(a_val) == len(c_val)


# --- stratified_indices ----------------------------------------------------------------


def test_stratified_indices_keep_class_proportions(labels):
    keep = stratified_indices(labels, 300, seed=1)
    assert len(keep) == 300 == len(np.unique(keep))
    assert np.all(np.diff(keep) > 0)  # original order
    total = np.bincount(labels, minlength=NUM_CLASSES)
    counts = np.bincount(labels[keep], minlength=NUM_CLASSES)
    assert np.all(np.abs(counts - total * 300 / len(labels)) <= 1), counts


def test_stratified_indices_seeded(labels):
    np.testing.assert_array_equal(stratified_indices(labels, 200, 5), stratified_indices(labels, 200, 5))
    assert not np.array_equal(stratified_indices(labels, 200, 5), stratified_indices(labels, 200, 6))


def test_stratified_indices_limit_at_or_above_size_keeps_all(labels):
    np.testing.assert_array_equal(stratified_indices(labels, len(labels), 0), np.arange(len(labels)))
    np.testing.assert_array_equal(stratified_indices(labels, 10 * len(labels), 0), np.arange(len(labels)))


# --- scale -----------------------------------------------------------------------------


def test_scale_maps_uint8_to_unit_float32():
    images = np.array([[0, 1, 128], [254, 255, 51]], dtype=np.uint8)
    scaled = scale(images)
    assert scaled.dtype == np.float32
    assert scaled.min() == 0.0
    assert scaled.max() == 1.0  # exactly, not 0.99999994
    np.testing.assert_allclose(scaled, images / 255.0, rtol=1e-6)
    assert images.dtype == np.uint8  # input untouched


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_scale_refuses_anything_but_uint8(dtype):
    images = np.array([[0, 255]], dtype=np.uint8)
    with pytest.raises(TypeError, match="scaled already"):
        scale(images.astype(dtype))


def test_scale_twice_is_refused():
    with pytest.raises(TypeError):
        scale(scale(np.full((2, 2), 255, dtype=np.uint8)))


# --- small helpers ---------------------------------------------------------------------


def test_class_counts_names_every_class():
    counts = class_counts(np.array([0, 0, 9, 3], dtype=np.uint8))
    assert list(counts) == list(CLASS_NAMES)
    assert counts["T-shirt/top"] == 2 and counts["Ankle boot"] == 1 and counts["Dress"] == 1
    assert sum(counts.values()) == 4
    assert all(type(v) is int for v in counts.values())


@pytest.mark.parametrize("text, value", [("None", None), ("null", None), ("", None), ("2000", 2000)])
def test_optional_int(text, value):
    assert optional_int(text) == value


# --- prepare() on the real raw files ----------------------------------------------------


@pytest.fixture(scope="module")
def real_prepared():
    train, test, stats = prepare(raw_dir=DEBIAN_DATA, val_fraction=0.1, limit_train=2000, limit_test=500, seed=42)
    x_test_full, y_test_full = read_split(DEBIAN_DATA, "test")
    x_train_full, y_train_full = read_split(DEBIAN_DATA, "train")
    return train, test, stats, (x_train_full, y_train_full), (x_test_full, y_test_full)


def _row_keys(images: np.ndarray) -> list[bytes]:
    return [img.tobytes() for img in images]


@pytest.mark.usefixtures("needs_real_data")
def test_prepare_counts_and_stats_add_up(real_prepared):
    train, test, stats, _, _ = real_prepared
    assert set(train) == {"x_train", "y_train", "x_val", "y_val"}
    assert set(test) == {"x_test", "y_test"}
    assert len(train["x_train"]) == len(train["y_train"]) == stats["counts"]["train"] == 1800
    assert len(train["x_val"]) == len(train["y_val"]) == stats["counts"]["val"] == 200
    assert len(test["x_test"]) == len(test["y_test"]) == stats["counts"]["test"] == 500
    assert stats["counts"]["train"] + stats["counts"]["val"] == 2000
    for split, y in (("train", train["y_train"]), ("val", train["y_val"]), ("test", test["y_test"])):
        assert sum(stats["per_class"][split].values()) == stats["counts"][split]
        assert stats["per_class"][split] == class_counts(y)
    assert stats["raw_sha256"] == RAW_FILES
    assert stats["seed"] == 42 and stats["limit_train"] == 2000 and stats["limit_test"] == 500
    # balanced data, stratified subsets: 180/20/50 per class (±1)
    for split, per in (("train", 180), ("val", 20), ("test", 50)):
        assert all(abs(n - per) <= 1 for n in stats["per_class"][split].values()), (split, stats["per_class"][split])


@pytest.mark.usefixtures("needs_real_data")
def test_prepare_scales_once_to_unit_range(real_prepared):
    train, test, _, _, _ = real_prepared
    for x in (train["x_train"], train["x_val"], test["x_test"]):
        assert x.dtype == np.float32
        assert x.shape[1:] == (28, 28)
        assert x.min() >= 0.0 and x.max() == 1.0
    for y in (train["y_train"], train["y_val"], test["y_test"]):
        assert y.dtype == np.uint8 and y.max() < NUM_CLASSES


@pytest.mark.usefixtures("needs_real_data")
def test_test_arrays_are_an_untouched_subset_of_the_real_test_set(real_prepared):
    _, test, _, _, (x_full, y_full) = real_prepared
    # Undo the scaling: each prepared test image must be, pixel for pixel, a real test image.
    restored = np.rint(test["x_test"] * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(restored.astype(np.float32) / np.float32(255.0), test["x_test"])
    index = {}
    for i, key in enumerate(_row_keys(x_full)):
        index.setdefault(key, []).append(i)
    positions = []
    for img, label in zip(restored, test["y_test"], strict=True):
        matches = [i for i in index.get(img.tobytes(), []) if y_full[i] == label]
        assert matches, "a prepared test image is not in the real test set"
        positions.append(matches[0])
    assert len(set(positions)) == len(positions)
    assert positions == sorted(positions)  # original order kept


@pytest.mark.usefixtures("needs_real_data")
def test_no_test_image_appears_in_train_or_val(real_prepared):
    train, test, _, (x_train_full, _), _ = real_prepared
    test_keys = set(_row_keys(np.rint(test["x_test"] * 255).astype(np.uint8)))
    train_keys = _row_keys(np.rint(train["x_train"] * 255).astype(np.uint8))
    val_keys = _row_keys(np.rint(train["x_val"] * 255).astype(np.uint8))
    assert test_keys.isdisjoint(train_keys)
    assert test_keys.isdisjoint(val_keys)
    assert set(train_keys).isdisjoint(val_keys)
    # train and val come from the real training pool
    pool = set(_row_keys(x_train_full))
    assert set(train_keys) <= pool and set(val_keys) <= pool


@pytest.mark.usefixtures("needs_real_data")
def test_prepare_is_deterministic(real_prepared):
    train, test, _, _, _ = real_prepared
    again, again_test, _ = prepare(raw_dir=DEBIAN_DATA, val_fraction=0.1, limit_train=2000, limit_test=500, seed=42)
    for key in train:
        np.testing.assert_array_equal(train[key], again[key])
    for key in test:
        np.testing.assert_array_equal(test[key], again_test[key])
