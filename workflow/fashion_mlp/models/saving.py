"""Saving a model as a .keras file whose bytes depend on the model alone."""

from __future__ import annotations

import json
import os
import zipfile
from typing import TYPE_CHECKING

from fashion_mlp.io import atomic_output

if TYPE_CHECKING:
    import keras

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip member can carry


def save_model(model: keras.Model, path: str | os.PathLike) -> None:
    """Save `model` as a .keras file, atomically, whose bytes depend on the model alone.

    Keras 3 has no option for this, and its archive differs from save to save in three ways,
    undone here: metadata.json holds the save time (`date_saved`, dropped); config.json names
    objects shared between layers by their memory address (`shared_object_id`, renumbered
    1, 2, ... in order of appearance, which keeps the sharing); and the zip members carry
    dates (all set to one fixed date, with fixed permissions, in name order, stored
    uncompressed as Keras stores them). The weights (model.weights.h5) hold no time and are
    kept as written. So the same weights give the same file, and DVC's hash of a model
    changes only when the model does.
    """
    with atomic_output(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        metadata = json.loads(members["metadata.json"])
        metadata.pop("date_saved", None)
        members["metadata.json"] = json.dumps(metadata).encode()
        members["config.json"] = json.dumps(_renumber_shared_objects(json.loads(members["config.json"]))).encode()
        with zipfile.ZipFile(tmp, "w") as archive:
            for name in sorted(members):
                info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
                info.create_system = 3  # Unix, on every platform
                info.external_attr = 0o644 << 16
                archive.writestr(info, members[name], compress_type=zipfile.ZIP_STORED)


def _renumber_shared_objects(config, numbers: dict | None = None):
    """`config` with every `shared_object_id` (an id() in the saving process) replaced by 1, 2, ...
    in order of first appearance; equal ids stay equal, so the loader shares the same objects."""
    numbers = {} if numbers is None else numbers
    if isinstance(config, dict):
        return {
            key: numbers.setdefault(value, len(numbers) + 1)
            if key == "shared_object_id"
            else _renumber_shared_objects(value, numbers)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_renumber_shared_objects(value, numbers) for value in config]
    return config
