"""Stage `tune`: KerasTuner Hyperband over params.yaml's tune.space, then retrain the best as `tuned`.

Trials are scored by val_accuracy on the validation split; the test set is
not an input of this stage. The search is one MLflow run with every trial as
a nested child run; the final retrain (cosine decay, early stopping on the
validation split) is a run of its own, tagged with the search's run id, and
`evaluate` scores it like every other model.

The search is KerasTuner's distributed mode, in three roles (--role):
- chief: serves Hyperband's oracle over gRPC on loopback and owns the search run;
- worker (tune.workers of them): asks the chief for trials and runs them, one TF
  thread each by default, logging each trial under the search run;
- finish: writes the trials table, figure and best block, then retrains.
Snakemake runs them as jobs (rules tune_oracle, tune_worker, tune); `--role all`
(DVC, or by hand) starts the chief and workers as processes and then finishes.
The oracle makes the decisions a single process would, so the result does not
depend on the number of workers (see lockstep_oracle_class).
"""

from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import json
import os
import shutil
import time
from concurrent import futures
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
        # Every layer's width is declared, used or not, so the oracle's space is whole from
        # the start: otherwise a width joins it only when a deeper net is first built, the
        # first such trial gets the default width, and the draws depend on the trial order.
        widths = [hp.Int(f"units_{i}", low, high, step=step) for i in range(space["layers"][1])]
        hidden = widths[:layers]
        low, high, step = space["dropout"]
        dropout = hp.Float("dropout", low, high, step=step)
        l2 = hp.Choice("l2", space["l2"])
        learning_rate = hp.Float("learning_rate", *space["learning_rate"], sampling="log")
        batchnorm = hp.Choice("batchnorm", space["batchnorm"])
        model = build_mlp(hidden, "relu", dropout, l2, bool(batchnorm), name="trial")
        return compile_model(model, learning_rate, steps_per_execution)

    return build


def lockstep_oracle_class():
    """Hyperband's oracle, made to decide with any number of workers what one process decides.

    KerasTuner's own oracle, asked by several workers at once, promotes the best of a
    round before the round has ended, so the search would depend on which worker was
    faster. This one promotes from a round only once every trial of it has ended; while
    a bracket waits for that, idle workers start the next bracket's random trials. The
    random configurations are drawn in the same order as in one process (each carries
    its draw number, `tuner/draw`), every promotion sees the same finished round, and a
    trial is seeded by its draw and round (see trial_seed), not by the process running
    it. So the trials, their scores and the best are the same whatever `tune.workers`
    is; only KerasTuner's trial numbers follow the order trials were handed out.
    """
    import keras_tuner as kt

    class LockstepHyperbandOracle(kt.oracles.HyperbandOracle):
        def populate_space(self, trial_id):
            self._remove_completed_brackets()
            running = {trial.trial_id for trial in self.ongoing_trials.values()}
            for bracket in self._brackets:
                number, rounds = bracket["bracket_num"], bracket["rounds"]
                if len(rounds[0]) < self._get_size(number, 0):
                    return self._drawn(self._random_trial(trial_id, bracket))
                for round_num in range(1, len(rounds)):
                    size = self._get_size(number, round_num)
                    if len(rounds[round_num]) >= size:
                        continue
                    if any(info["id"] in running for info in rounds[round_num - 1]):
                        break  # this bracket waits for its round to end; try the next one
                    promoted = self._promote(bracket, round_num, trial_id)
                    if promoted:
                        return promoted
            if self._current_bracket == 0 and self._current_iteration + 1 == self.hyperband_iterations:
                return {"status": "IDLE"} if self.ongoing_trials else {"status": "STOPPED"}
            self._increment_bracket_num()
            self._start_new_bracket()
            return self._drawn(self._random_trial(trial_id, self._brackets[-1]))

        def _drawn(self, response: dict) -> dict:
            if response["status"] == "RUNNING":
                self.draws = getattr(self, "draws", 0) + 1
                response["values"]["tuner/draw"] = self.draws
            return response

        def _promote(self, bracket: dict, round_num: int, trial_id: str) -> dict | None:
            """The best trial of the ended round before, not yet promoted, for `epochs` more (KerasTuner's rule)."""
            number, rounds = bracket["bracket_num"], bracket["rounds"]
            size, past_size = self._get_size(number, round_num), self._get_size(number, round_num - 1)
            selected = {info["past_id"] for info in rounds[round_num]}
            candidates = [self.trials[info["id"]] for info in rounds[round_num - 1] if info["id"] not in selected]
            candidates = [trial for trial in candidates if trial.status == "COMPLETED"]
            if len(candidates) <= past_size - size:
                return None
            best = sorted(candidates, key=lambda t: t.score, reverse=self.objective.direction == "max")[0]
            values = best.hyperparameters.values.copy()
            values.update({"tuner/trial_id": best.trial_id,
                           "tuner/epochs": self._get_epochs(number, round_num),
                           "tuner/initial_epoch": self._get_epochs(number, round_num - 1),
                           "tuner/bracket": number, "tuner/round": round_num})
            rounds[round_num].append({"past_id": best.trial_id, "id": trial_id})
            return {"status": "RUNNING", "values": values}

    return LockstepHyperbandOracle


def trial_key(values: dict) -> tuple[int, int]:
    """A trial's place in the search, the same however many workers run it: (draw, round)."""
    return int(values["tuner/draw"]), int(values["tuner/round"])


def trial_seed(seed: int, values: dict) -> int:
    """A trial's own seed: the pipeline's seed, the trial's draw and round, nothing else."""
    draw, round_num = trial_key(values)
    return seed * 1_000_000 + draw * 100 + round_num


def tracked_hyperband_class(base_tags: dict[str, str], seed: int, parent_run_id: str | None = None):
    """Hyperband whose every trial is a nested MLflow run with its params, epochs and bracket tags.

    `base_tags` (data hash, git commit, ...) go on every trial run too, so each can be traced alone.
    Each trial reseeds from (seed, trial id), so its result does not depend on the process that
    runs it or on the trials that process ran before. A worker names the search's run as
    `parent_run_id`; in the chief's own process the active run is the parent.
    """
    import keras
    import keras_tuner as kt
    import mlflow

    from fashion_mlp import tracking

    oracle_class = lockstep_oracle_class()

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            tracking.with_retry(mlflow.log_metrics, {k: float(v) for k, v in (logs or {}).items()},
                                step=epoch + 1)

    class TrackedHyperband(kt.Hyperband):
        def __init__(self, hypermodel, *, objective, max_epochs, factor, hyperband_iterations, **kwargs):
            # kt.Hyperband.__init__ with the lockstep oracle in place of its own
            oracle = oracle_class(objective, max_epochs=max_epochs, factor=factor,
                                  hyperband_iterations=hyperband_iterations, seed=seed)
            kt.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)
            self.trials_run: list[str] = []

        def run_trial(self, trial, *args, **kwargs):
            values = trial.hyperparameters.values
            tags = base_tags | {
                "trial_id": trial.trial_id,
                "draw": str(values.get("tuner/draw")),
                "bracket": str(values.get("tuner/bracket")),
                "round": str(values.get("tuner/round")),
                "stage": "tune",
                "model": "trial",
                "worker": self.tuner_id,
            }
            keras.utils.set_random_seed(trial_seed(seed, values))
            with tracking.with_retry(mlflow.start_run, run_name=f"trial-{trial.trial_id}", nested=True,
                                     parent_run_id=parent_run_id, tags=tags):
                tracking.with_retry(mlflow.log_params, active_hparams(values))
                kwargs["callbacks"] = [*kwargs.get("callbacks", []), EpochLogger()]
                result = super().run_trial(trial, *args, **kwargs)  # KerasTuner clears the session first
            self.trials_run.append(trial.trial_id)
            return result

    return TrackedHyperband


def active_hparams(values: dict) -> dict:
    """The trial's hyperparameters, without Hyperband's bookkeeping or unused layer widths."""
    layers = values["layers"]
    active = {k: v for k, v in values.items()
              if not k.startswith("tuner/") and not (k.startswith("units_") and int(k.split("_")[1]) >= layers)}
    return active | {"batchnorm": bool(values["batchnorm"])}  # hp.Choice stores booleans as 0/1


def trial_rows(oracle) -> list[dict]:
    """One row per trial, in search order: by configuration drawn, then round."""
    rows = []
    for trial in sorted(oracle.trials.values(), key=lambda t: trial_key(t.hyperparameters.values)):
        values = trial.hyperparameters.values
        layers = values["layers"]
        rows.append({
            "trial_id": trial.trial_id,
            "draw": values["tuner/draw"],
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
    return rows


def best_trial(oracle):
    """The trial with the best validation accuracy; ties go to the earlier draw, then the longer round."""
    done = [t for t in oracle.trials.values() if t.status == "COMPLETED" and t.score is not None]
    return min(done, key=lambda t: (-t.score, trial_key(t.hyperparameters.values)[0],
                                    -trial_key(t.hyperparameters.values)[1]))


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


def search_data(args: argparse.Namespace) -> tuple:
    """The trials' training images and labels, and the validation split. The rest of the
    training split is let go: a worker keeps only what its trials read."""
    from fashion_mlp.data import load_arrays

    data = load_arrays(args.data)
    x, y = search_subset(data["x_train"], data["y_train"], args.search_limit_train, args.seed)
    return x, y, (data["x_val"], data["y_val"])


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
    """A short hash of everything that defines the search, naming its working directory.

    The chief, the workers and the final step must agree on it, so it depends on the
    tune section, the seed and the data, and on nothing role-specific.
    """
    keyed = {"tune": tune_params(args), "seed": args.seed, "data": str(args.data)}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp tune", description=__doc__.splitlines()[0])
    # tune.* (see params.yaml)
    parser.add_argument("--max_epochs", type=int, required=True)
    parser.add_argument("--factor", type=int, required=True)
    parser.add_argument("--hyperband_iterations", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True, help="processes that run trials")
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
    parser.add_argument("--threads", type=int, default=None)
    # which part of the search this process is (see ROLES)
    parser.add_argument("--role", choices=ROLES, default="all")
    parser.add_argument("--oracle_file", type=Path, help="chief, worker: where the chief publishes its address")
    parser.add_argument("--worker_id", type=int, help="worker: 0 .. workers-1")
    parser.add_argument("--worker_out", type=Path, help="worker: the trials it ran and the search's result")
    parser.add_argument("--worker_results", type=Path, nargs="+", help="finish: every worker's --worker_out")
    # finish, all: the stage's outputs
    parser.add_argument("--trials_out", type=Path)
    parser.add_argument("--best_out", type=Path, help="best_hparams.json")
    parser.add_argument("--figure_out", type=Path)
    parser.add_argument("--model_out", type=Path)
    parser.add_argument("--history_out", type=Path)
    parser.add_argument("--timings_dir", type=Path, default=Path("reports/timings"),
                        help="finish, all: where tune.json and tuned.json get the wall times and who ran which "
                             "trial (untracked); default: %(default)s")
    return parser


ROLES = ("all", "chief", "worker", "finish")
ROLE_FLAGS = {  # what each role needs beyond the tune section
    "chief": ("oracle_file",),
    "worker": ("oracle_file", "worker_id", "worker_out"),
    "finish": ("worker_results", "trials_out", "best_out", "figure_out", "model_out", "history_out"),
    "all": ("trials_out", "best_out", "figure_out", "model_out", "history_out"),
}


def tune_params(args: argparse.Namespace) -> dict:
    names = ("max_epochs", "factor", "hyperband_iterations", "workers", "batch_size", "steps_per_execution",
             "final_epochs", "final_lr_schedule", "final_lr_decay_rate", "final_early_stopping_patience",
             "final_early_stopping_monitor", "search_limit_train")
    return {**{n: getattr(args, n) for n in names}, "space": space_from_args(args)}


def tuner_dir(args: argparse.Namespace) -> Path:
    """The search's working directory, shared by the chief and the workers."""
    return args.work_dir / settings_key(args)


def make_tuner(args: argparse.Namespace, tags: dict, parent_run_id: str | None, overwrite: bool):
    directory = tuner_dir(args)
    return tracked_hyperband_class(tags, args.seed, parent_run_id)(
        hypermodel(space_from_args(args), args.steps_per_execution),
        objective="val_accuracy",
        max_epochs=args.max_epochs,
        factor=args.factor,
        hyperband_iterations=args.hyperband_iterations,
        directory=str(directory.parent),
        project_name=directory.name,
        overwrite=overwrite,
    )


# --- the chief: Hyperband's oracle, served to the workers -------------------------------


def run_chief(args: argparse.Namespace) -> None:
    """Serve the oracle on a free loopback port until every trial has ended, then publish the result.

    The address goes to --oracle_file, for the workers; when the search is over the same
    file gets the search's summary, after the MLflow run is closed, so that a worker
    which has seen it can exit (and Snakemake stop this service job) without losing anything.
    """
    from fashion_mlp import tracking

    # Snakemake starts the workers once this file exists: say at once that the chief is
    # starting (TensorFlow takes seconds to load); the address follows.
    write_json(args.oracle_file, {"starting": True} | tracking.process_tags())

    from fashion_mlp.runtime import configure_tensorflow

    configure_tensorflow(1, args.seed)  # the chief builds the space but trains nothing

    import grpc
    import mlflow
    # KerasTuner's own servicer and exit test; its start_server() would need the port chosen
    # beforehand and notices the end of the search only every 20 s.
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

    from fashion_mlp.config import flatten

    tracking.init(args.experiment)
    tags = tracking.base_tags("tune", args.data)
    tuner = make_tuner(args, tags, None, overwrite=True)  # never resume another search's trials
    with tracking.with_retry(mlflow.start_run, run_name="tune", tags=tags | {"model": "hyperband-search"}) as run:
        tracking.with_retry(mlflow.log_params, flatten({**tune_params(args), "seed": args.seed}))
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        servicer = OracleServicer(tuner.oracle)
        protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
        port = server.add_insecure_port(f"{ORACLE_HOST}:0")
        server.start()
        address = {"host": ORACLE_HOST, "port": port, "parent_run_id": run.info.run_id,
                   "tuner_dir": str(tuner_dir(args))} | tracking.process_tags()
        write_json(args.oracle_file, address)
        print(f"tune chief: oracle at {ORACLE_HOST}:{port}, search run {run.info.run_id}", flush=True)
        started = time.perf_counter()
        watch = WorkerWatch(tuner_dir(args), tuner.oracle)
        while not (servicer.stop_triggered and exit_chief(tuner.oracle)):
            time.sleep(0.2)
            watch.check()
        seconds = time.perf_counter() - started
        server.stop(grace=5)
        search = log_search_result(tuner.oracle, seconds, run.info.run_id)
    write_json(args.oracle_file, address | {"search": search})


def log_search_result(oracle, seconds: float, run_id: str) -> dict:
    """The finished search as the workers and `finish` see it, logged to the active search run."""
    import mlflow

    from fashion_mlp import tracking

    rows = trial_rows(oracle)
    best = best_trial(oracle)
    tracking.with_retry(mlflow.log_metrics, {"search_seconds": seconds, "trials": len(rows),
                                             "best_trial_val_accuracy": best.score})
    tracking.with_retry(mlflow.set_tag, "best_trial_id", best.trial_id)
    print(f"tune: search over, {len(rows)} trials in {seconds:.0f} s; best trial {best.trial_id} "
          f"val_accuracy {best.score:.4f}", flush=True)
    return {"trials": rows, "seconds": round(seconds, 1), "parent_run_id": run_id,
            "best_trial_id": best.trial_id, "best_values": best.hyperparameters.values}


class WorkerWatch:
    """The chief's check that its workers are alive: a search whose worker died can never end.

    Each worker leaves its process tags in the tuner directory when it starts. The chief
    fails (and with it the search run) when a worker's process is gone before the oracle
    told it to stop, or when no worker has turned up in CHIEF_START_TIMEOUT seconds.
    """

    def __init__(self, directory: Path, oracle):
        self.directory, self.oracle = directory, oracle
        self.started = time.monotonic()
        self.connected: set[str] = set()
        self.last_check = 0.0

    def check(self) -> None:
        from fashion_mlp import PipelineError
        from fashion_mlp.io import read_json
        from fashion_mlp.tracking import process_alive

        self.connected |= set(self.oracle.tuner_ids)
        if time.monotonic() - self.last_check < 2:
            return
        self.last_check = time.monotonic()
        workers = {path.stem.removeprefix("process-"): read_json(path)
                   for path in self.directory.glob("process-worker*.json")}
        if not workers and time.monotonic() - self.started > CHIEF_START_TIMEOUT:
            raise PipelineError(f"no tuning worker started within {CHIEF_START_TIMEOUT} s")
        for name, tags in sorted(workers.items()):
            stopped = name in self.connected and name not in self.oracle.tuner_ids
            if not stopped and not process_alive(int(tags["pid"]), tags["pid_started"]):
                raise PipelineError(f"tuning {name} (pid {tags['pid']}) died before the search ended; "
                                    "see its log")


def watch_chief(address: dict):
    """A worker's check that its chief is alive while it searches; set the returned event when
    the search is over. KerasTuner's client would wait an hour for a chief that is gone; this
    ends the worker within seconds instead."""
    import sys
    import threading

    from fashion_mlp.tracking import process_alive

    over = threading.Event()

    def watch() -> None:
        while not over.wait(2):
            if not process_alive(int(address["pid"]), address["pid_started"]):
                print(f"tune worker: the chief (pid {address['pid']}) died mid-search; stopping",
                      file=sys.stderr, flush=True)
                os._exit(3)

    threading.Thread(target=watch, name="watch-chief", daemon=True).start()
    return over


ORACLE_HOST = "127.0.0.1"  # Snakemake runs a service job on its consumers' node
CHIEF_START_TIMEOUT = 600  # seconds a worker waits for the chief's address


def read_oracle_file(path: Path, wants_search: bool, timeout: float) -> dict:
    """Wait for the chief's address (or, with wants_search, its final summary) in `path`.

    Both engines remove an earlier search's file before the chief starts, so a file
    whose chief process is gone means that the chief failed.
    """
    from fashion_mlp import PipelineError
    from fashion_mlp.io import read_json
    from fashion_mlp.tracking import process_alive

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            address = read_json(path)
        except (OSError, ValueError):  # not there yet (it is written atomically)
            address = None
        if address and "search" in address:
            return address
        if address:
            if not process_alive(int(address["pid"]), address["pid_started"]):
                raise PipelineError(f"the tuning chief (pid {address['pid']}) ended before publishing "
                                    f"{'the result' if wants_search else 'its address'} in {path}; see its log")
            if not wants_search and "port" in address:
                return address
        time.sleep(0.5)
    raise PipelineError(f"no tuning chief published its {'result' if wants_search else 'address'} in {path} "
                        f"within {timeout:.0f} s")


# --- a worker: trials from the chief, run one after another -----------------------------


def run_worker(args: argparse.Namespace, threads: int) -> None:
    """Run the trials the chief hands out (KerasTuner's distributed mode) until it says stop."""
    from fashion_mlp.runtime import configure_tensorflow

    configure_tensorflow(threads, args.seed)

    from fashion_mlp import tracking

    address = read_oracle_file(args.oracle_file, wants_search=False, timeout=CHIEF_START_TIMEOUT)
    if "search" in address:  # the chief has already finished: nothing left to run
        print(f"tune worker {args.worker_id}: the search is already over", flush=True)
        search = address["search"]
        trials_run, seconds = [], 0.0
    else:
        tuner_id = f"worker{args.worker_id}"
        write_json(Path(address["tuner_dir"]) / f"process-{tuner_id}.json", tracking.process_tags())  # for WorkerWatch
        search_over = watch_chief(address)
        os.environ.update({"KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": address["host"],
                           "KERASTUNER_ORACLE_PORT": str(address["port"])})
        tracking.init(args.experiment)
        x, y, validation = search_data(args)
        # KerasTuner runs a full garbage collection before every trial, and each walked all of
        # TensorFlow's and MLflow's objects (0.5 s a trial). Those live as long as the process:
        # freezing them leaves each collection only the trials' own objects.
        gc.freeze()
        tuner = make_tuner(args, tracking.base_tags("tune", args.data), address["parent_run_id"], overwrite=False)
        wait_when_idle(tuner)
        started = time.perf_counter()
        tuner.search(x, y, validation_data=validation, batch_size=args.batch_size, verbose=2)
        seconds = time.perf_counter() - started
        search_over.set()  # the chief may now publish the result and exit
        trials_run = tuner.trials_run
        address = read_oracle_file(args.oracle_file, wants_search=True, timeout=CHIEF_START_TIMEOUT)
        search = address["search"]
        wait_for_exit(address)
    write_json(args.worker_out, {"worker": args.worker_id, "threads": threads, "trials_run": trials_run,
                                 "seconds": round(seconds, 1), "search": search})
    print(f"tune worker {args.worker_id}: ran {len(trials_run)} trials in {seconds:.0f} s", flush=True)


def wait_for_exit(address: dict, timeout: float = 60) -> None:
    """Let the chief exit by itself (it is about to) before this worker ends and Snakemake
    stops the chief's service job."""
    from fashion_mlp.tracking import process_alive

    deadline = time.monotonic() + timeout
    while process_alive(int(address["pid"]), address["pid_started"]) and time.monotonic() < deadline:
        time.sleep(0.2)


def wait_when_idle(tuner) -> None:
    """KerasTuner's search loop asks again at once when the oracle says IDLE; pause instead,
    or a waiting worker would spin a core that the other worker's trial needs."""
    import keras_tuner as kt

    ask = tuner.oracle.create_trial

    def create_trial(tuner_id):
        trial = ask(tuner_id)
        if trial.status == kt.engine.trial.TrialStatus.IDLE:
            time.sleep(0.25)
        return trial

    tuner.oracle.create_trial = create_trial


# --- finish: the stage's outputs and the retrain ----------------------------------------


def run_finish(args: argparse.Namespace, threads: int, configure: bool = True) -> None:
    """Write the trials table, figure and best block from the workers' results; retrain the best as `tuned`."""
    from fashion_mlp import PipelineError
    from fashion_mlp.io import read_json

    results = [read_json(path) for path in args.worker_results]
    searches = {json.dumps(r["search"], sort_keys=True) for r in results}
    if len(searches) != 1:
        raise PipelineError(f"the workers' results {[str(p) for p in args.worker_results]} describe "
                            "different searches; rerun the tune jobs")
    search = results[0]["search"]
    ran_by = {trial: f"worker{r['worker']}" for r in results for trial in r["trials_run"]}
    rows = search["trials"]
    values = search["best_values"]
    best_row = next(row for row in rows if row["trial_id"] == search["best_trial_id"])
    block = best_block(values, args)
    # KerasTuner's trial ids and the worker that ran a trial follow the order trials were handed
    # out, which varies from run to run: they go to the untracked timings, and a trial is named
    # by its draw and round in the versioned files.
    write_trials(args.trials_out, [{k: v for k, v in row.items() if k != "trial_id"} for row in rows])
    plot_trials(rows, args.figure_out)
    write_json(args.timings_dir / "tune.json", {
        "search_seconds": search["seconds"], "mlflow_run_id": search["parent_run_id"],
        "workers": {f"worker{r['worker']}": len(r["trials_run"]) for r in results},
        "trials": [{"draw": row["draw"], "round": row["round"], "trial_id": row["trial_id"],
                    "worker": ran_by.get(row["trial_id"], "")} for row in rows]})
    print(f"tune: {len(rows)} trials in {search['seconds']:.0f} s by {len(results)} worker(s); best trial "
          f"{best_row['trial_id']} val_accuracy {best_row['val_accuracy']:.4f}: {block}", flush=True)

    if configure:  # (run_single has configured this process already)
        from fashion_mlp.runtime import configure_tensorflow

        configure_tensorflow(threads, args.seed)

    from fashion_mlp import tracking
    from fashion_mlp.data import load_arrays
    from fashion_mlp.train import train_and_log

    data = load_arrays(args.data)
    tracking.init(args.experiment)
    kept = train_and_log("tuned", block, data, args.data, args.seed, threads, args.model_out, args.history_out,
                         tags={"tune_run_id": search["parent_run_id"]}, timings_dir=args.timings_dir)
    search_images = args.search_limit_train or len(data["y_train"])
    write_json(args.best_out, {
        "train_block": block,
        "best_trial": {"draw": best_row["draw"], "round": best_row["round"], "val_accuracy": best_row["val_accuracy"],
                       # sorted: the oracle's order differs with and without gRPC (tune.workers 1)
                       "hyperparameters": dict(sorted(active_hparams(values).items()))},
        "search": {"trials": len(rows), "train_images": int(search_images),
                   "val_images": int(len(data["y_val"])), "max_epochs": args.max_epochs,
                   "factor": args.factor, "hyperband_iterations": args.hyperband_iterations},
        "retrain": {"kept_epoch": int(kept["epoch"]), "val_accuracy": kept["val_accuracy"]},
    })
    shutil.rmtree(tuner_dir(args), ignore_errors=True)  # every trial's checkpoints


# --- all: the whole stage in one command (DVC, or by hand) ------------------------------


def run_single(args: argparse.Namespace, threads: int, worker_out: Path) -> None:
    """The whole search in this process, written as the one worker's result."""
    from fashion_mlp.runtime import configure_tensorflow

    configure_tensorflow(threads, args.seed)

    import mlflow

    from fashion_mlp import tracking
    from fashion_mlp.config import flatten

    tracking.init(args.experiment)
    x, y, validation = search_data(args)
    gc.freeze()  # see run_worker
    tags = tracking.base_tags("tune", args.data)
    tuner = make_tuner(args, tags, None, overwrite=True)
    tuner.tuner_id = "worker0"  # as its trials are tagged and counted with workers
    with tracking.with_retry(mlflow.start_run, run_name="tune", tags=tags | {"model": "hyperband-search"}) as run:
        tracking.with_retry(mlflow.log_params, flatten({**tune_params(args), "seed": args.seed}))
        started = time.perf_counter()
        tuner.search(x, y, validation_data=validation, batch_size=args.batch_size, verbose=2)
        seconds = time.perf_counter() - started
        search = log_search_result(tuner.oracle, seconds, run.info.run_id)
    write_json(worker_out, {"worker": 0, "threads": threads, "trials_run": tuner.trials_run,
                            "seconds": round(seconds, 1), "search": search})
    # Free the search's models and caches before the retrain: they would set the peak memory.
    import keras

    del tuner, x, y, validation
    keras.backend.clear_session(free_memory=True)


def run_all(args: argparse.Namespace, argv: list[str], threads: int) -> None:
    """Start the chief and `workers` worker processes, wait for them, then finish here.

    This is what Snakemake does with its three rules (tune_oracle, tune_worker, tune),
    for an engine that runs one command per stage.
    """
    import subprocess
    import sys

    from fashion_mlp import PipelineError

    state = args.work_dir / "distributed"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    oracle_file = state / "oracle.json"
    results = [state / f"worker-{i}.json" for i in range(args.workers)]
    if args.workers == 1:  # no chief and no gRPC: the same search, in this process
        run_single(args, threads, results[0])
        args.worker_results = results
        run_finish(args, threads, configure=False)
        shutil.rmtree(state, ignore_errors=True)
        return
    command = [sys.executable, "-m", "fashion_mlp.cli", "tune", *argv]
    worker_threads = max(1, threads // args.workers)
    procs = {"chief": subprocess.Popen([*command, "--role", "chief", "--oracle_file", str(oracle_file)])}
    for i, out in enumerate(results):
        procs[f"worker {i}"] = subprocess.Popen([*command, "--role", "worker", "--worker_id", str(i),
                                                 "--threads", str(worker_threads), "--oracle_file",
                                                 str(oracle_file), "--worker_out", str(out)])
    try:
        # After a failure the others end by themselves within seconds (the chief watches its
        # workers, the workers their chief), each saying why; past a minute they are stopped.
        first_failure = None
        while [p for p in procs.values() if p.poll() is None]:
            if first_failure is None and any(p.returncode not in (None, 0) for p in procs.values()):
                first_failure = time.monotonic()
            if first_failure is not None and time.monotonic() - first_failure > 60:
                break
            time.sleep(0.5)
        failed = [name for name, p in procs.items() if p.poll() != 0]
        if failed:
            raise PipelineError(f"tune: the {', '.join(failed)} process failed (see the output above)")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            p.wait()
    args.worker_results = results
    run_finish(args, threads)
    shutil.rmtree(state, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    import sys

    from fashion_mlp import PipelineError

    argv = sys.argv[2:] if argv is None else argv
    args = build_parser().parse_args(argv)
    validate_section("tune", tune_params(args))
    missing = [f"--{name}" for name in ROLE_FLAGS[args.role] if getattr(args, name) is None]
    if missing:
        raise PipelineError(f"tune --role {args.role} needs {' '.join(missing)}")
    if args.role == "worker" and not 0 <= args.worker_id < args.workers:
        raise PipelineError(f"tune: --worker_id {args.worker_id} is not in 0 .. {args.workers - 1} (tune.workers)")
    threads = args.threads or default_threads()
    if args.role == "chief":
        run_chief(args)
    elif args.role == "worker":
        run_worker(args, threads)
    elif args.role == "finish":
        run_finish(args, threads)
    else:
        run_all(args, argv, threads)


if __name__ == "__main__":
    main()
