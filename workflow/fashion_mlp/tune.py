"""Stage `tune`: KerasTuner Hyperband over params.yaml's tune.space, then retrain the best as `tuned`.

Trials are scored by val_accuracy on the validation split; the test set is
not an input of this stage. The search is one MLflow run with every trial as
a nested child run; the final retrain (cosine decay, early stopping on the
validation split) is a run of its own, tagged with the search's run id, and
`evaluate` scores it like every other model.
"""

from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import json
import shutil
import time
from pathlib import Path

from fashion_mlp.config import optional_int, parse_bool, validate_section
from fashion_mlp.io import atomic_output, write_json
from fashion_mlp.runtime import default_threads

HP_COLUMNS = ("layers", "units", "dropout", "l2", "learning_rate", "batchnorm")


def space_from_args(args: argparse.Namespace) -> dict:
    """tune.space as params.yaml spells it."""
    return {
        "layers": getattr(args, "space.layers"),
        "units": getattr(args, "space.units"),
        "dropout": getattr(args, "space.dropout"),
        "l2": getattr(args, "space.l2"),
        "learning_rate": getattr(args, "space.learning_rate"),
        "batchnorm": getattr(args, "space.batchnorm"),
    }


def hypermodel(space: dict, steps_per_execution: int):
    """A KerasTuner build function drawing one MLP from `space`."""
    from fashion_mlp.models import build_mlp, compile_model

    def build(hp):
        layers = hp.Int("layers", *space["layers"])
        low, high, step = space["units"]
        hidden = [hp.Int(f"units_{i}", low, high, step=step) for i in range(layers)]
        low, high, step = space["dropout"]
        dropout = hp.Float("dropout", low, high, step=step)
        l2 = hp.Choice("l2", space["l2"])
        learning_rate = hp.Float("learning_rate", *space["learning_rate"], sampling="log")
        batchnorm = hp.Choice("batchnorm", space["batchnorm"])
        model = build_mlp(hidden, "relu", dropout, l2, bool(batchnorm), name="trial")
        return compile_model(model, learning_rate, steps_per_execution)

    return build


def tracked_hyperband_class(base_tags: dict[str, str]):
    """Hyperband whose every trial is a nested MLflow run with its params, epochs and bracket tags.

    `base_tags` (data hash, git commit, ...) go on every trial run too, so each can be traced alone.
    """
    import keras
    import keras_tuner as kt
    import mlflow

    from fashion_mlp import tracking

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            tracking.with_retry(mlflow.log_metrics, {k: float(v) for k, v in (logs or {}).items()},
                                step=epoch + 1)

    class TrackedHyperband(kt.Hyperband):
        def run_trial(self, trial, *args, **kwargs):
            values = trial.hyperparameters.values
            tags = base_tags | {
                "trial_id": trial.trial_id,
                "bracket": str(values.get("tuner/bracket")),
                "round": str(values.get("tuner/round")),
                "stage": "tune",
                "model": "trial",
            }
            with tracking.with_retry(mlflow.start_run, run_name=f"trial-{trial.trial_id}", nested=True,
                                     tags=tags):
                tracking.with_retry(mlflow.log_params, active_hparams(values))
                kwargs["callbacks"] = [*kwargs.get("callbacks", []), EpochLogger()]
                return super().run_trial(trial, *args, **kwargs)  # KerasTuner clears the session first

    return TrackedHyperband


def active_hparams(values: dict) -> dict:
    """The trial's hyperparameters, without Hyperband's bookkeeping or unused layer widths."""
    layers = values["layers"]
    active = {k: v for k, v in values.items()
              if not k.startswith("tuner/") and not (k.startswith("units_") and int(k.split("_")[1]) >= layers)}
    return active | {"batchnorm": bool(values["batchnorm"])}  # hp.Choice stores booleans as 0/1


def trial_rows(oracle) -> list[dict]:
    rows = []
    for trial in oracle.trials.values():
        values = trial.hyperparameters.values
        layers = values["layers"]
        rows.append({
            "trial_id": trial.trial_id,
            "status": str(trial.status),
            "val_accuracy": trial.score,
            "epochs": values.get("tuner/epochs"),
            "bracket": values.get("tuner/bracket"),
            "round": values.get("tuner/round"),
            "layers": layers,
            "units": " ".join(str(values[f"units_{i}"]) for i in range(layers)),
            "dropout": values["dropout"],
            "l2": values["l2"],
            "learning_rate": values["learning_rate"],
            "batchnorm": bool(values["batchnorm"]),
        })
    return sorted(rows, key=lambda r: r["trial_id"])


def write_trials(path: Path, rows: list[dict]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_trials(rows: list[dict], path: Path) -> None:
    """val_accuracy against each searched hyperparameter, one panel each, coloured by epochs trained."""
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    done = [r for r in rows if r["val_accuracy"] is not None]
    panels = (("learning_rate", "Learning rate", "log"), ("units", "Width of the first layer", "linear"),
              ("layers", "Hidden layers", "linear"), ("dropout", "Dropout", "linear"),
              ("l2", "L2 penalty (0, then log)", "symlog"), ("batchnorm", "BatchNorm (0 = off, 1 = on)", "linear"))
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), sharey=True, constrained_layout=True)
    for ax, (key, label, scale) in zip(axes.flat, panels):
        # units is "512 256" (the first layer is plotted); batchnorm a bool
        xs = [float(r[key].split()[0]) if isinstance(r[key], str) else float(r[key]) for r in done]
        points = ax.scatter(xs, [r["val_accuracy"] for r in done], c=[r["epochs"] for r in done],
                            cmap="viridis", s=30, edgecolor="k", linewidth=0.3)
        if scale == "symlog":
            ax.set_xscale("symlog", linthresh=1e-5)
        elif scale == "log":
            ax.set_xscale("log")
        if key in ("layers", "batchnorm"):
            ax.set_xticks(sorted(set(xs)))
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("Validation accuracy")
    fig.colorbar(points, ax=axes, label="Epochs trained (Hyperband budget)")
    fig.suptitle(f"Hyperband: validation accuracy of {len(done)} trials against each hyperparameter")
    save_figure(fig, path, dpi=100)


def search_subset(x, y, limit: int | None, seed: int):
    """The trials' training data: all of it, or a stratified, seeded subset of `limit` images."""
    from fashion_mlp.prepare import stratified_indices

    if limit is None:
        return x, y
    keep = stratified_indices(y, limit, seed)
    return x[keep], y[keep]


def best_block(values: dict, args: argparse.Namespace) -> dict:
    """The best trial as a train.<model> block of params.yaml, with the final-retrain settings."""
    return {
        "hidden": [int(values[f"units_{i}"]) for i in range(values["layers"])],
        "activation": "relu",
        "dropout": float(values["dropout"]),
        "l2": float(values["l2"]),
        "batchnorm": bool(values["batchnorm"]),
        "learning_rate": float(values["learning_rate"]),
        "lr_schedule": args.final_lr_schedule,
        "lr_decay_rate": args.final_lr_decay_rate,
        "batch_size": args.batch_size,
        "epochs": args.final_epochs,
        "early_stopping_patience": args.final_early_stopping_patience,
        "early_stopping_monitor": args.final_early_stopping_monitor,
        "steps_per_execution": args.steps_per_execution,
    }


def settings_key(args: argparse.Namespace) -> str:
    """A short hash of everything that defines the search, naming its working directory."""
    keyed = {k: v for k, v in sorted(vars(args).items()) if not k.endswith(("_out", "threads"))}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp tune", description=__doc__.splitlines()[0])
    # tune.* (see params.yaml)
    parser.add_argument("--max_epochs", type=int, required=True)
    parser.add_argument("--factor", type=int, required=True)
    parser.add_argument("--hyperband_iterations", type=int, required=True)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--steps_per_execution", type=int, required=True)
    parser.add_argument("--final_epochs", type=int, required=True)
    parser.add_argument("--final_lr_schedule", required=True)
    parser.add_argument("--final_lr_decay_rate", type=float, required=True)
    parser.add_argument("--final_early_stopping_patience", type=int, required=True)
    parser.add_argument("--final_early_stopping_monitor", required=True)
    parser.add_argument("--search_limit_train", type=optional_int, required=True)
    parser.add_argument("--space.layers", type=int, nargs=2, required=True, metavar=("MIN", "MAX"))
    parser.add_argument("--space.units", type=int, nargs=3, required=True, metavar=("MIN", "MAX", "STEP"))
    parser.add_argument("--space.dropout", type=float, nargs=3, required=True, metavar=("MIN", "MAX", "STEP"))
    parser.add_argument("--space.l2", type=float, nargs="+", required=True)
    parser.add_argument("--space.learning_rate", type=float, nargs=2, required=True, metavar=("MIN", "MAX"))
    parser.add_argument("--space.batchnorm", type=parse_bool, nargs="+", required=True)
    # pipeline-wide
    parser.add_argument("--seed", type=int, required=True, help="seed")
    parser.add_argument("--experiment", required=True, help="mlflow.experiment")
    parser.add_argument("--data", type=Path, required=True, help="train.npz from prepare")
    parser.add_argument("--work_dir", type=Path, required=True,
                        help="parent of the tuner's directory, which is named by a hash of the settings")
    parser.add_argument("--trials_out", type=Path, required=True)
    parser.add_argument("--best_out", type=Path, required=True, help="best_hparams.json")
    parser.add_argument("--figure_out", type=Path, required=True)
    parser.add_argument("--model_out", type=Path, required=True)
    parser.add_argument("--history_out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None)
    return parser


def tune_params(args: argparse.Namespace) -> dict:
    names = ("max_epochs", "factor", "hyperband_iterations", "batch_size", "steps_per_execution", "final_epochs",
             "final_lr_schedule", "final_lr_decay_rate", "final_early_stopping_patience",
             "final_early_stopping_monitor", "search_limit_train")
    return {**{n: getattr(args, n) for n in names}, "space": space_from_args(args)}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    params = tune_params(args)
    validate_section("tune", params)
    threads = args.threads or default_threads()

    from fashion_mlp.runtime import configure_tensorflow

    configure_tensorflow(threads, args.seed)

    import keras
    import mlflow

    from fashion_mlp import tracking
    from fashion_mlp.config import flatten
    from fashion_mlp.data import load_arrays
    from fashion_mlp.train import train_and_log

    data = load_arrays(args.data)
    tracking.init(args.experiment)
    # KerasTuner runs a full garbage collection before every trial, and each walked all of
    # TensorFlow's and MLflow's objects (0.5 s a trial). Those live as long as the process:
    # freezing them leaves each collection only the trials' own objects.
    gc.freeze()
    tuner_dir = args.work_dir / settings_key(args)
    tags = tracking.base_tags("tune", args.data)
    tuner = tracked_hyperband_class(tags)(
        hypermodel(params["space"], args.steps_per_execution),
        objective="val_accuracy",
        max_epochs=args.max_epochs,
        factor=args.factor,
        hyperband_iterations=args.hyperband_iterations,
        seed=args.seed,
        directory=str(tuner_dir.parent),
        project_name=tuner_dir.name,
        overwrite=True,  # never resume trials of another search silently
    )
    with tracking.with_retry(mlflow.start_run, run_name="tune", tags=tags | {"model": "hyperband-search"}) as parent:
        tracking.with_retry(mlflow.log_params, flatten({**params, "seed": args.seed, "threads": threads}))
        started = time.perf_counter()
        x_search, y_search = search_subset(data["x_train"], data["y_train"], args.search_limit_train, args.seed)
        tuner.search(x_search, y_search, validation_data=(data["x_val"], data["y_val"]),
                     batch_size=args.batch_size, verbose=2)
        search_seconds = time.perf_counter() - started
        rows = trial_rows(tuner.oracle)
        best_trial = tuner.oracle.get_best_trials(1)[0]
        block = best_block(best_trial.hyperparameters.values, args)
        tracking.with_retry(mlflow.log_metrics, {"search_seconds": search_seconds, "trials": len(rows),
                                                 "best_trial_val_accuracy": best_trial.score})
        tracking.with_retry(mlflow.set_tag, "best_trial_id", best_trial.trial_id)
        parent_id = parent.info.run_id
    best = {"trial_id": best_trial.trial_id, "val_accuracy": best_trial.score,
            "hyperparameters": active_hparams(best_trial.hyperparameters.values)}
    search_images = len(y_search)
    # Free the search's models, caches and data subset before the retrain: they set the peak memory.
    del tuner, best_trial, x_search, y_search
    keras.backend.clear_session(free_memory=True)

    write_trials(args.trials_out, rows)
    plot_trials(rows, args.figure_out)
    print(f"tune: {len(rows)} trials in {search_seconds:.0f} s; best trial {best['trial_id']} "
          f"val_accuracy {best['val_accuracy']:.4f}: {block}")
    kept = train_and_log("tuned", block, data, args.data, args.seed, threads, args.model_out, args.history_out,
                         tags={"tune_run_id": parent_id})
    write_json(args.best_out, {
        "train_block": block,
        "best_trial": best,
        "search": {"trials": len(rows), "seconds": round(search_seconds, 1), "train_images": int(search_images),
                   "val_images": int(len(data["y_val"])), "max_epochs": args.max_epochs,
                   "factor": args.factor, "hyperband_iterations": args.hyperband_iterations},
        "retrain": {"kept_epoch": int(kept["epoch"]), "val_accuracy": kept["val_accuracy"]},
    })
    shutil.rmtree(tuner_dir, ignore_errors=True)  # checkpoints of every trial: large, and not needed again


if __name__ == "__main__":
    main()
