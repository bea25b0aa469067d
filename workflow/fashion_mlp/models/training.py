"""Training one model, shared by `train` and `tune`'s retrain: fit, keep the validated epoch, save, log.

Expects TensorFlow configured (runtime.configure_tensorflow) and MLflow pointed at its store
(tracking.init). Reads nothing but the arrays it is given: the test split never reaches it.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from fashion_mlp.config import flatten
from fashion_mlp.io import atomic_output, sha256_file, write_json
from fashion_mlp.profiling import marks

# `kept` is 1 on the epoch whose weights were saved (early stopping restores the best), else 0.
# Wall times are not columns: a rerun would change the file. Each row's `epoch_seconds` goes to
# MLflow and to the untracked timings file instead (TIMINGS_DIR).
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "kept")
TIMINGS_DIR = Path("reports/timings")  # gitignored and no DVC out: wall times, which differ on every run


def make_history_callback(on_epoch=None):
    """A Keras callback collecting HISTORY_COLUMNS per epoch; `on_epoch(row)` sees each row."""
    import keras

    class EpochHistory(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows: list[dict] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()
            # The rate the epoch starts with; a schedule lowers it step by step.
            self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {
                "epoch": epoch + 1,
                **{k: float(logs[k]) for k in HISTORY_COLUMNS[1:5]},
                "learning_rate": self._lr,
                "epoch_seconds": time.perf_counter() - self._start,
                "kept": 0,
            }
            self.rows.append(row)
            if on_epoch is not None:
                on_epoch(row)

    return EpochHistory()


def fit(model, data: dict, params: dict, callbacks: list, seed: int = 0, teacher=None):
    """Compile with the configured schedule and fit; the validation split drives early stopping.

    The optional levers of a block (absent: off, and the model and its file are as without them):
    `label_smoothing` trains on one-hot targets, `ema` keeps a moving average of the weights (the
    one validated, early-stopped on and saved), and `augment` fits a wrapper that sends each
    training batch through seeded random layers before `model`; `model` itself, the one saved,
    never holds them (see fitting.augmenter). With `teacher` (a loaded model; the block's `teacher`
    says how), the model learns from the teacher's outputs on the same augmented batches as well as
    from the labels (models/distillation.py); with `teacher.views`, from a table of the teacher's
    outputs over fixed views of the training images, built first (models/views.py).
    """
    import keras
    import numpy as np

    from fashion_mlp.models.fitting import (
        as_tensor,
        augmenter,
        built_before_tracing,
        compile_model,
        learning_rate_schedule,
        one_hot,
    )

    steps_per_epoch = -(-len(data["y_train"]) // params["batch_size"])
    schedule = learning_rate_schedule(
        params["learning_rate"], params["lr_schedule"], params["lr_decay_rate"], steps_per_epoch, params["epochs"]
    )
    smoothing = params.get("label_smoothing", 0.0)
    ema = params.get("ema")
    compile_model(model, schedule, params["steps_per_execution"], smoothing, ema_momentum=ema)
    trainer = model
    augment = params.get("augment") or {}
    layers = augmenter(augment.get("shift", 0), augment.get("flip", False), seed)
    how = params.get("teacher") or {}
    if teacher is not None and how.get("views"):
        from fashion_mlp.models.distillation import table_distiller

        trainer = table_distiller(model, teacher, data["x_train"], how, smoothing, seed + 2)
        marks.mark(marks.TABLE_BUILT)
        trainer.compile(optimizer=model.optimizer, steps_per_execution=params["steps_per_execution"])
        smoothing = 0.0  # the distiller takes integer labels and smooths them itself
    elif teacher is not None:
        from fashion_mlp.models.distillation import Distiller

        trainer = Distiller(
            model,
            teacher,
            how["temperature"],
            how["alpha"],
            augment=layers,
            smoothing=smoothing,
            mixup=how.get("mixup", 0.0),
            seed=seed + 2,  # the augmenter's layers take seed and seed + 1
        )
        trainer.compile(optimizer=model.optimizer, steps_per_execution=params["steps_per_execution"])
        smoothing = 0.0  # the distiller takes integer labels and smooths them itself
    elif layers is not None:
        trainer = keras.Sequential([layers, model], name=f"{model.name}_training")
        # The same optimizer object: the saved `model` keeps the state it was trained with.
        compile_model(trainer, schedule, params["steps_per_execution"], smoothing, optimizer=model.optimizer)
    y_train, y_val = data["y_train"], data["y_val"]
    if smoothing:
        y_train, y_val = one_hot(y_train), one_hot(y_val)
    if ema is not None:
        # First, so that validation, early stopping and the restored weights all see the averaged weights.
        callbacks = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True), *callbacks]
    if params["early_stopping_patience"] is not None:
        callbacks = [
            *callbacks,
            keras.callbacks.EarlyStopping(
                monitor=params["early_stopping_monitor"],
                patience=params["early_stopping_patience"],
                restore_best_weights=True,
            ),
        ]
    x_train, y_train, x_val, y_val = (as_tensor(a) for a in (data["x_train"], y_train, data["x_val"], y_val))
    if how.get("views"):  # a TableDistiller looks each image's row of the table up by its number
        x_train = (x_train, as_tensor(np.arange(len(data["y_train"]), dtype=np.int32)))
    callbacks = [built_before_tracing(x_train, y_train), *callbacks]
    return trainer.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        batch_size=params["batch_size"],
        epochs=params["epochs"],
        callbacks=callbacks,
        verbose=2,
    )


def kept_epoch(rows: list[dict], early_stopping_patience: int | None, monitor: str = "val_loss") -> dict:
    """The history row whose weights were saved: early stopping restores the best epoch of `monitor`
    (the first lowest val_loss, or the first highest val_accuracy)."""
    if early_stopping_patience is None:
        return rows[-1]
    if monitor == "val_accuracy":
        return max(rows, key=lambda r: r["val_accuracy"])
    return min(rows, key=lambda r: r["val_loss"])


def write_history(path: Path, rows: list[dict]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def train_and_log(
    name: str,
    params: dict,
    data: dict,
    data_path: Path,
    seed: int,
    threads: int,
    model_out: Path,
    history_out: Path,
    tags: dict | None = None,
    timings_dir: Path | None = None,
    teacher=None,
) -> dict:
    """Build, fit and save one model in its own MLflow run; return the kept epoch's history row.

    Expects TensorFlow configured and tracking.init() done. The `train` stage calls it for a
    params.yaml block (with `teacher`, the loaded teacher of a distill: entry), `tune` for the
    retrain of the best hyperparameters.
    """
    import keras
    import mlflow

    from fashion_mlp import tracking
    from fashion_mlp.models import kinds
    from fashion_mlp.models.saving import save_model

    # Seeded here, not only at start-up: in `tune --workers 1` this process has run the whole
    # search before, and the retrain must not depend on what the search drew.
    keras.utils.set_random_seed(seed)
    model = kinds.build(params, name)
    marks.mark(marks.BUILT)
    kind = {"model": name, "model_kind": kinds.of_block(params).name}  # the report names the winning kind
    run_tags = tracking.base_tags("train", data_path) | kind | (tags or {})
    with tracking.with_retry(mlflow.start_run, run_name=name, tags=run_tags) as run:
        splits = {"train": (data["x_train"], data["y_train"]), "validation": (data["x_val"], data["y_val"])}
        tracking.log_datasets(data_path, splits, run_tags["data_sha256"])
        tracking.with_retry(
            mlflow.log_params,
            flatten(
                {
                    **params,
                    "model": name,
                    "seed": seed,
                    "threads": threads,
                    "n_train": len(data["y_train"]),
                    "n_val": len(data["y_val"]),
                    "n_params": model.count_params(),
                }
            ),
        )

        marks.mark(marks.RUN_STARTED)

        def log_epoch(row: dict) -> None:
            metrics = {k: v for k, v in row.items() if k not in ("epoch", "kept")}
            tracking.with_retry(mlflow.log_metrics, metrics, step=row["epoch"])

        history = make_history_callback(on_epoch=log_epoch)
        started = time.perf_counter()
        fit(model, data, params, [history, marks.epoch_marks()], seed=seed, teacher=teacher)
        fit_seconds = time.perf_counter() - started

        kept = kept_epoch(history.rows, params["early_stopping_patience"], params["early_stopping_monitor"])
        kept["kept"] = 1
        save_model(model, model_out)
        write_history(history_out, history.rows)
        marks.mark(marks.SAVED)

        epoch_seconds = [row["epoch_seconds"] for row in history.rows]
        times = {
            "fit_seconds": fit_seconds,
            "train_seconds": sum(epoch_seconds),
            "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        }
        tracking.with_retry(
            mlflow.log_metrics,
            {
                **times,
                "epochs_run": len(history.rows),
                "kept_epoch": kept["epoch"],
                "final_val_loss": kept["val_loss"],
                "final_val_accuracy": kept["val_accuracy"],
            },
        )
        if timings_dir is not None:
            write_json(
                timings_dir / f"{name}.json",
                {
                    "model": name,
                    **{k: round(v, 3) for k, v in times.items()},
                    "epochs_run": len(history.rows),
                    "epoch_seconds": [round(s, 3) for s in epoch_seconds],
                    "mlflow_run_id": run.info.run_id,
                },
            )
        _log_model(model, data["x_val"][:5])
        mlflow.log_artifact(str(history_out), artifact_path="history")
        # evaluate finds this run again through the saved model's hash.
        tracking.with_retry(mlflow.set_tag, "model_sha256", sha256_file(model_out))
        marks.mark(marks.LOGGED)
        print(
            f"train: {name}: {len(history.rows)} epochs in {fit_seconds:.1f} s, "
            f"kept epoch {kept['epoch']} with val_accuracy {kept['val_accuracy']:.4f}; MLflow run {run.info.run_id}"
        )
    return kept


def _log_model(model, example) -> None:
    import keras
    import mlflow
    import tensorflow as tf
    from mlflow.models import infer_signature

    keras.config.disable_interactive_logging()  # MLflow's own predict calls draw progress bars
    signature = infer_signature(example, model.predict(example, verbose=0))
    # mlflow.tensorflow handles Keras 3 models; mlflow.keras.log_model (3.17) fails
    # when given an input example because it writes it before creating its folder.
    mlflow.tensorflow.log_model(
        model,
        name="model",
        signature=signature,
        input_example=example,
        # Pinned requirements skip MLflow's slow import-tracing of the model.
        pip_requirements=[f"tensorflow-cpu=={tf.__version__}", f"keras=={keras.__version__}"],
    )
