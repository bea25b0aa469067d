"""Stage `tune`: KerasTuner Hyperband over params.yaml's tune.space, then retrain the best as `tuned`.

Trials are scored by val_accuracy on the validation split; the test set is
not an input of this stage. The search is one MLflow run with every trial as
a nested child run; the final retrain (cosine decay, early stopping on the
validation split) is a run of its own, tagged with the search's run id, and
`evaluate` scores it like every other model.

The search is KerasTuner's distributed mode, in three roles (--role), each run by
the Snakemake rule tune_<role> and logged to logs/tune/<role>.log:
- chief: serves Hyperband's oracle and owns the search run (tuning/distributed.py);
  it publishes its address in the chief file (.tuner/chief.json);
- worker (tune.workers of them: worker0, worker1, ...): runs the trials the chief
  hands out (tuning/distributed.py) and writes what it ran to .tuner/worker<N>.json;
- finish: writes the trials table, figure and best block, then retrains (here).
`--role all` (DVC's `tune` stage, or by hand) runs the chief and the workers as
processes, with the same files in <work_dir>/all/, and then finishes; with
tune.workers 1 it runs the whole search in this process, without a chief.
The oracle makes the decisions a single process would, so the result does not
depend on the number of workers (see tuning/hyperband.py).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import shutil
import sys
import time
from pathlib import Path

from fashion_mlp import PipelineError, tracking
from fashion_mlp.config import add_section_flags, section_from_args, validate_section
from fashion_mlp.io import atomic_output, read_json, write_json
from fashion_mlp.runtime import configure_tensorflow
from fashion_mlp.stages.common import add_flags
from fashion_mlp.tuning.distributed import run_chief, run_processes, run_worker
from fashion_mlp.tuning.hyperband import (
    active_hparams,
    log_search_result,
    make_tuner,
    search_data,
    search_run,
    tuner_dir,
)

ROLES = ("all", "chief", "worker", "finish")
ROLE_FLAGS = {  # what each role needs beyond the tune section
    "chief": ("chief_file",),
    "worker": ("chief_file", "worker_id", "worker_out"),
    "finish": ("worker_results", "trials_out", "best_out", "figure_out", "model_out", "history_out"),
    "all": ("trials_out", "best_out", "figure_out", "model_out", "history_out"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp tune", description=__doc__.splitlines()[0])
    add_section_flags(parser, "tune")
    add_flags(parser, "seed", "threads", "experiment")  # threads: each worker's and the retrain's
    parser.add_argument("--data", type=Path, required=True, help="train.npz from prepare")
    parser.add_argument(
        "--work_dir",
        type=Path,
        required=True,
        help="parent of the tuner's directory, which is named by a hash of the settings",
    )
    # which part of the search this process is (see ROLES)
    parser.add_argument(
        "--role",
        choices=ROLES,
        default="all",
        help="one part of the search, as Snakemake's rule tune_<role> runs it; all: every part",
    )
    parser.add_argument("--chief_file", type=Path, help="chief, worker: where the chief publishes its address")
    parser.add_argument("--worker_id", type=int, help="worker: 0 .. workers-1")
    parser.add_argument("--worker_out", type=Path, help="worker: the trials it ran and the search's result")
    parser.add_argument("--worker_results", type=Path, nargs="+", help="finish: every worker's --worker_out")
    # finish, all: the stage's outputs
    parser.add_argument("--trials_out", type=Path)
    parser.add_argument("--best_out", type=Path, help="best_hparams.json")
    parser.add_argument("--figure_out", type=Path)
    parser.add_argument("--model_out", type=Path)
    parser.add_argument("--history_out", type=Path)
    parser.add_argument(
        "--timings_dir",
        type=Path,
        default=Path("reports/timings"),
        help="finish, all: where tune.json and tuned.json get the wall times and who ran which "
        "trial (untracked); default: %(default)s",
    )
    return parser


def tune_params(args: argparse.Namespace) -> dict:
    """The tune section as params.yaml spells it."""
    return section_from_args(args, "tune")


def best_block(values: dict, section: dict) -> dict:
    """The best trial as a train.<model> block of params.yaml, with the tune section's final-retrain settings."""
    return {
        "hidden": [int(values[f"units_{i}"]) for i in range(values["layers"])],
        "activation": "relu",
        "dropout": float(values["dropout"]),
        "l2": float(values["l2"]),
        "batchnorm": bool(values["batchnorm"]),
        "learning_rate": float(values["learning_rate"]),
        "lr_schedule": section["final_lr_schedule"],
        "lr_decay_rate": section["final_lr_decay_rate"],
        "batch_size": section["batch_size"],
        "epochs": section["final_epochs"],
        "early_stopping_patience": section["final_early_stopping_patience"],
        "early_stopping_monitor": section["final_early_stopping_monitor"],
        "steps_per_execution": section["steps_per_execution"],
        # the retrain's optional levers (tune.final_label_smoothing, ...), left out when absent as in a train block
        **{key: section[f"final_{key}"] for key in ("label_smoothing", "augment", "ema") if f"final_{key}" in section},
    }


# --- finish: the stage's outputs and the retrain ----------------------------------------


def run_finish(args: argparse.Namespace, section: dict, threads: int, configure: bool = True) -> None:
    """Write the trials table, figure and best block from the workers' results; retrain the best as `tuned`."""
    results = [read_json(path) for path in args.worker_results]
    searches = {json.dumps(r["search"], sort_keys=True) for r in results}
    if len(searches) != 1:
        raise PipelineError(
            f"the workers' results {[str(p) for p in args.worker_results]} describe "
            "different searches; rerun the tune jobs"
        )
    search = results[0]["search"]
    ran_by = {trial: f"worker{r['worker']}" for r in results for trial in r["trials_run"]}
    rows = search["trials"]
    values = search["best_values"]
    best_row = next(row for row in rows if row["trial_id"] == search["best_trial_id"])
    block = best_block(values, section)
    # KerasTuner's trial ids and the worker that ran a trial follow the order trials were handed
    # out, which varies from run to run: they go to the untracked timings, and a trial is named
    # by its draw and round in the versioned files.
    write_trials(args.trials_out, [{k: v for k, v in row.items() if k != "trial_id"} for row in rows])
    plot_trials(rows, args.figure_out)
    write_json(
        args.timings_dir / "tune.json",
        {
            "search_seconds": search["seconds"],
            "mlflow_run_id": search["parent_run_id"],
            "workers": {f"worker{r['worker']}": len(r["trials_run"]) for r in results},
            "trials": [
                {
                    "draw": row["draw"],
                    "round": row["round"],
                    "trial_id": row["trial_id"],
                    "worker": ran_by.get(row["trial_id"], ""),
                }
                for row in rows
            ],
        },
    )
    print(
        f"tune finish: {len(rows)} trials in {search['seconds']:.0f} s by {len(results)} worker(s); best trial "
        f"{best_row['trial_id']} val_accuracy {best_row['val_accuracy']:.4f}: {block}",
        flush=True,
    )

    if configure:  # (run_single has configured this process already)
        configure_tensorflow(threads, args.seed)

    from fashion_mlp.data import load_arrays
    from fashion_mlp.models.training import train_and_log

    data = load_arrays(args.data)
    tracking.init(args.experiment)
    kept = train_and_log(
        "tuned",
        block,
        data,
        args.data,
        args.seed,
        threads,
        args.model_out,
        args.history_out,
        tags={"tune_run_id": search["parent_run_id"]},
        timings_dir=args.timings_dir,
    )
    search_images = section["search_limit_train"] or len(data["y_train"])
    write_json(
        args.best_out,
        {
            "train_block": block,
            "best_trial": {
                "draw": best_row["draw"],
                "round": best_row["round"],
                "val_accuracy": best_row["val_accuracy"],
                # sorted: the oracle's order differs with and without gRPC (tune.workers 1)
                "hyperparameters": dict(sorted(active_hparams(values).items())),
            },
            "search": {
                "trials": len(rows),
                "train_images": int(search_images),
                "val_images": len(data["y_val"]),
                "max_epochs": section["max_epochs"],
                "factor": section["factor"],
                "hyperband_iterations": section["hyperband_iterations"],
            },
            "retrain": {"kept_epoch": int(kept["epoch"]), "val_accuracy": kept["val_accuracy"]},
        },
    )
    # every trial's checkpoints
    shutil.rmtree(tuner_dir(args.work_dir, section, args.seed, args.data), ignore_errors=True)


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
    panels = (
        ("learning_rate", "Learning rate", "log"),
        ("units", "Width of the first layer", "linear"),
        ("layers", "Hidden layers", "linear"),
        ("dropout", "Dropout", "linear"),
        ("l2", "L2 penalty (0, then log)", "symlog"),
        ("batchnorm", "BatchNorm (0 = off, 1 = on)", "linear"),
    )
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), sharey=True, constrained_layout=True)
    for ax, (key, label, scale) in zip(axes.flat, panels, strict=True):
        # units is "512 256" (the first layer is plotted); batchnorm a bool
        xs = [float(r[key].split()[0]) if isinstance(r[key], str) else float(r[key]) for r in done]
        points = ax.scatter(
            xs,
            [r["val_accuracy"] for r in done],
            c=[r["epochs"] for r in done],
            cmap="viridis",
            s=30,
            edgecolor="k",
            linewidth=0.3,
        )
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


# --- all: the whole stage in one command (DVC, or by hand) ------------------------------


def run_single(args: argparse.Namespace, section: dict, threads: int, worker_out: Path) -> None:
    """The whole search in this process, written as the one worker's result."""
    configure_tensorflow(threads, args.seed)
    tracking.init(args.experiment)
    x, y, validation = search_data(args.data, section["search_limit_train"], args.seed)
    gc.freeze()  # see tuning.distributed.run_worker
    tags = tracking.base_tags("tune", args.data)
    tuner = make_tuner(
        section, args.seed, tuner_dir(args.work_dir, section, args.seed, args.data), tags, None, overwrite=True
    )
    tuner.tuner_id = "worker0"  # as its trials are tagged and counted with workers
    with search_run(section, args.seed, tags) as run:
        started = time.perf_counter()
        tuner.search(x, y, validation_data=validation, batch_size=section["batch_size"], verbose=2)
        seconds = time.perf_counter() - started
        search = log_search_result(tuner.oracle, seconds, run.info.run_id)
    write_json(
        worker_out,
        {
            "worker": 0,
            "threads": threads,
            "trials_run": tuner.trials_run,
            "seconds": round(seconds, 1),
            "search": search,
        },
    )
    # Free the search's models and caches before the retrain: they would set the peak memory.
    import keras

    del tuner, x, y, validation
    keras.backend.clear_session(free_memory=True)


def run_all(args: argparse.Namespace, section: dict, argv: list[str], threads: int) -> None:
    """Run the chief and `workers` worker processes, wait for them, then finish here.

    This is what Snakemake does with its three rules (tune_chief, tune_worker, tune_finish),
    for an engine that runs one command per stage. The hand-off files are those of the
    rules, in <work_dir>/all/.
    """
    state = args.work_dir / "all"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    args.worker_results = [state / f"worker{i}.json" for i in range(section["workers"])]
    if section["workers"] == 1:  # no chief and no gRPC: the same search, in this process
        run_single(args, section, threads, args.worker_results[0])
        run_finish(args, section, threads, configure=False)
    else:
        command = [sys.executable, "-m", "fashion_mlp.cli", "tune", *argv]
        run_processes(command, threads, state / "chief.json", args.worker_results)
        run_finish(args, section, threads)
    shutil.rmtree(state, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[2:] if argv is None else argv
    args = build_parser().parse_args(argv)
    section = tune_params(args)
    validate_section("tune", section)
    missing = [f"--{name}" for name in ROLE_FLAGS[args.role] if getattr(args, name) is None]
    if missing:
        raise PipelineError(f"tune --role {args.role} needs {' '.join(missing)}")
    if args.role == "worker" and not 0 <= args.worker_id < args.workers:
        raise PipelineError(f"tune: --worker_id {args.worker_id} is not in 0 .. {args.workers - 1} (tune.workers)")
    threads = args.threads
    if args.role == "chief":
        run_chief(args, section)
    elif args.role == "worker":
        run_worker(args, section, threads)
    elif args.role == "finish":
        run_finish(args, section, threads)
    else:
        run_all(args, section, argv, threads)


if __name__ == "__main__":
    main()
