"""The flags several stages share, declared once: `add_flags(parser, "seed", "threads", ...)`.

Each stage's own section of params.yaml comes from the schema (config.add_section_flags); these are
the pipeline-wide values and the model a per-model stage works on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fashion_mlp.config import load_params, model_names

FLAGS = {
    "seed": {"type": int, "required": True, "help": "params.yaml seed: every random choice the stage makes"},
    "threads": {
        "type": int,
        "default": 1,
        "help": "TensorFlow threads (default: %(default)s, as both engines run the stages): a model's sums, "
        "and so the last digits of what it outputs, can depend on the count",
    },
    "experiment": {"required": True, "help": "params.yaml mlflow.experiment: the MLflow experiment runs go to"},
    "model": {"required": True, "help": "the model's name: its entry under train: in params.yaml, or tuned"},
    "params": {
        "type": Path,
        "help": "params.yaml: its train: entries and tuned are the models to read from the folders given "
        "(a leftover file of a removed entry is not read); without it, every file in them",
    },
}


def add_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the shared flags `names` (keys of FLAGS), in a group of their own."""
    group = parser.add_argument_group("pipeline-wide")
    for name in names:
        group.add_argument(f"--{name}", **FLAGS[name])


def models_to_read(args: argparse.Namespace) -> list[str] | None:
    """The models named by `--params` (train's entries, then tuned), or None: every file of the folders."""
    return model_names(load_params(args.params)) if args.params else None
