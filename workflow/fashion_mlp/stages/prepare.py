"""Stage `prepare`: parse the IDX files, scale once to [0, 1] and carve a stratified validation split.

Outputs two files so that the DAG itself keeps the test set away from
training: `train.npz` (x_train, y_train, x_val, y_val) is all that `train`
reads, and `test.npz` (x_test, y_test) is read only by `evaluate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fashion_mlp.config import add_section_flags, section_from_args, validate_section
from fashion_mlp.data import CLASS_NAMES, NUM_CLASSES, RAW_FILES, read_split, save_arrays, stratified_indices
from fashion_mlp.images import scale  # shared with predict and the served model: one scaling
from fashion_mlp.io import write_json
from fashion_mlp.stages.common import add_flags


def split_train_val(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, stratified, seeded index sets (train, val) covering all of `labels`."""
    from sklearn.model_selection import train_test_split

    train_idx, val_idx = train_test_split(
        np.arange(len(labels)), test_size=val_fraction, stratify=labels, random_state=seed
    )
    return np.sort(train_idx), np.sort(val_idx)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    return {name: int(c) for name, c in zip(CLASS_NAMES, counts, strict=True)}


def prepare(
    raw_dir: Path, val_fraction: float, limit_train: int | None, limit_test: int | None, seed: int
) -> tuple[dict, dict, dict]:
    """Return (train arrays, test arrays, stats) from the raw IDX files."""
    x_pool, y_pool = read_split(raw_dir, "train")
    x_test, y_test = read_split(raw_dir, "test")
    if limit_train is not None:
        keep = stratified_indices(y_pool, limit_train, seed)
        x_pool, y_pool = x_pool[keep], y_pool[keep]
    if limit_test is not None:
        keep = stratified_indices(y_test, limit_test, seed)
        x_test, y_test = x_test[keep], y_test[keep]
    train_idx, val_idx = split_train_val(y_pool, val_fraction, seed)
    train = {
        "x_train": scale(x_pool[train_idx]),
        "y_train": y_pool[train_idx],
        "x_val": scale(x_pool[val_idx]),
        "y_val": y_pool[val_idx],
    }
    test = {"x_test": scale(x_test), "y_test": y_test}
    stats = {
        "seed": seed,
        "val_fraction": val_fraction,
        "limit_train": limit_train,
        "limit_test": limit_test,
        "counts": {
            "train": len(train_idx),
            "val": len(val_idx),
            "test": len(y_test),
        },
        "per_class": {
            "train": class_counts(train["y_train"]),
            "val": class_counts(train["y_val"]),
            "test": class_counts(y_test),
        },
        "raw_sha256": dict(RAW_FILES),
    }
    return train, test, stats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp prepare", description=__doc__.splitlines()[0])
    add_section_flags(parser, "prepare")
    add_flags(parser, "seed")
    parser.add_argument("--raw_dir", type=Path, required=True)
    parser.add_argument("--train_out", type=Path, required=True, help="npz with x/y_train and x/y_val")
    parser.add_argument("--test_out", type=Path, required=True, help="npz with x/y_test")
    parser.add_argument("--stats_out", type=Path, required=True, help="JSON with counts per class and split")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    validate_section("prepare", section_from_args(args, "prepare"))
    train, test, stats = prepare(args.raw_dir, args.val_fraction, args.limit_train, args.limit_test, args.seed)
    save_arrays(args.train_out, **train)
    save_arrays(args.test_out, **test)
    write_json(args.stats_out, stats)
    print(f"prepare: {stats['counts']}")


if __name__ == "__main__":
    main()
