"""The summary's "Hyperparameter search" section, from tune's best_hparams.json."""

from __future__ import annotations

import os
from pathlib import Path


def tuning_section(tuning: dict, figures_dir: Path, summary_dir: Path) -> list[str]:
    search, best, block = tuning["search"], tuning["best_trial"], tuning["train_block"]
    figure = Path(os.path.relpath(figures_dir / "tuning_trials.png", summary_dir)).as_posix()
    hparams = ", ".join(f"{k} = {v}" for k, v in best["hyperparameters"].items())
    return [
        "## Hyperparameter search (KerasTuner Hyperband)",
        "",
        f"{search['trials']} trials (max_epochs {search['max_epochs']}, "
        f"factor {search['factor']}, {search['hyperband_iterations']} iteration(s)). Trials trained on "
        f"{search['train_images']:,} training images and were scored by accuracy on the "
        f"{search['val_images']:,} validation images. Every trial is a nested MLflow run under the `tune` run.",
        "",
        f"Best trial (draw {best['draw']}, round {best['round']}): validation accuracy "
        f"{best['val_accuracy']:.4f} with {hparams}.",
        f"It was retrained as `tuned` (hidden {block['hidden']}, {block['lr_schedule']} schedule, up to "
        f"{block['epochs']} epochs, early stopping on the validation split) and kept epoch "
        f"{tuning['retrain']['kept_epoch']} (validation accuracy {tuning['retrain']['val_accuracy']:.4f}).",
        "",
        f"![Validation accuracy of every trial]({figure})",
        "",
    ]
