"""The train command's flags read back into a params block exactly as DVC and Snakemake render it, and the
epoch whose weights a training keeps (with early stopping, the best by its monitor; without, the last).
"""

from __future__ import annotations

import argparse
import shlex

from fashion_mlp.models.training import kept_epoch
from fashion_mlp.stages.train import build_parser, model_params


def _args(*extra: str) -> argparse.Namespace:
    base = shlex.split(
        "--model m --hidden 256 128 --activation relu --dropout 0.0 0.3 --l2 0.0 --learning_rate 0.001 "
        "--lr_schedule constant --lr_decay_rate 1.0 --batch_size 32 --epochs 2 --early_stopping_patience None "
        "--early_stopping_monitor val_loss --steps_per_execution 8 --seed 1 --experiment e --data d.npz "
        "--model_out m.keras --history_out h.csv"
    )
    return build_parser().parse_args(base + list(extra))


def test_model_params_round_trip_dvc_rendering():
    """What cli_flags/DVC render for a params block parses back to the same block."""
    params = model_params(_args("--batchnorm", "False", "True"))
    assert params == {
        "hidden": [256, 128],
        "activation": "relu",
        "dropout": [0.0, 0.3],
        "l2": 0.0,
        "batchnorm": [False, True],
        "learning_rate": 0.001,
        "lr_schedule": "constant",
        "lr_decay_rate": 1.0,
        "batch_size": 32,
        "epochs": 2,
        "early_stopping_patience": None,
        "early_stopping_monitor": "val_loss",
        "steps_per_execution": 8,
    }


def test_model_params_batchnorm_bare_flag_and_absent():
    assert model_params(_args("--batchnorm"))["batchnorm"] is True  # DVC renders true as a bare flag
    assert model_params(_args())["batchnorm"] is False  # and leaves false out


def test_kept_epoch():
    rows = [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.3}, {"epoch": 3, "val_loss": 0.4}]
    assert kept_epoch(rows, None)["epoch"] == 3
    assert kept_epoch(rows, 1)["epoch"] == 2


def test_kept_epoch_follows_the_early_stopping_monitor():
    from fashion_mlp.models.training import kept_epoch

    rows = [
        {"epoch": 1, "val_loss": 0.40, "val_accuracy": 0.85},
        {"epoch": 2, "val_loss": 0.30, "val_accuracy": 0.88},  # lowest val_loss
        {"epoch": 3, "val_loss": 0.35, "val_accuracy": 0.90},  # highest val_accuracy
        {"epoch": 4, "val_loss": 0.38, "val_accuracy": 0.89},
    ]
    assert kept_epoch(rows, None)["epoch"] == 4  # no early stopping: the last weights
    assert kept_epoch(rows, 2, "val_loss")["epoch"] == 2
    assert kept_epoch(rows, 2, "val_accuracy")["epoch"] == 3
