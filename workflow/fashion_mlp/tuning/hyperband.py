"""The Hyperband search of stage `tune`, the same in every process that takes part in it.

- the search space (hypermodel) and the working directory a search's settings name;
- the lockstep oracle: it decides with any number of workers what one process decides;
- the tuner that seeds each trial by its place in the search and logs it as a nested MLflow run;
- the finished search: its trials, in search order, and its best trial.

Roles and processes are distributed.py's job, the stage's outputs stages/tune.py's. TensorFlow,
Keras, KerasTuner and MLflow are imported only when a tuner is built or a result is logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from fashion_mlp import tracking
from fashion_mlp.config import flatten
from fashion_mlp.profiling import marks

SEARCH_RUN = "tune"  # the MLflow run of the search; every trial is a nested run of it


def hypermodel(space: dict, steps_per_execution: int):
    """A KerasTuner build function drawing one MLP from `space`."""
    from fashion_mlp.models.architectures import build_mlp
    from fashion_mlp.models.fitting import compile_model

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
            values.update(
                {
                    "tuner/trial_id": best.trial_id,
                    "tuner/epochs": self._get_epochs(number, round_num),
                    "tuner/initial_epoch": self._get_epochs(number, round_num - 1),
                    "tuner/bracket": number,
                    "tuner/round": round_num,
                }
            )
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
    Each trial reseeds from (seed, draw, round) (see trial_seed), so its result does not depend on
    the process that runs it or on the trials that process ran before. A worker names the search's run as
    `parent_run_id`; in the chief's own process the active run is the parent.
    """
    import keras
    import keras_tuner as kt
    import mlflow

    from fashion_mlp.models.fitting import built_before_tracing

    oracle_class = lockstep_oracle_class()

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            tracking.with_retry(mlflow.log_metrics, {k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)

    class TrackedHyperband(kt.Hyperband):
        def __init__(self, hypermodel, *, objective, max_epochs, factor, hyperband_iterations, **kwargs):
            # kt.Hyperband.__init__ with the lockstep oracle in place of its own
            oracle = oracle_class(
                objective, max_epochs=max_epochs, factor=factor, hyperband_iterations=hyperband_iterations, seed=seed
            )
            kt.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)
            self.trials_run: list[str] = []
            self.tensors: tuple | None = None  # (the NumPy x the search was given, its arrays as tensors)

        def run_trial(self, trial, *args, **kwargs):
            try:
                return self.tracked_trial(trial, *args, **kwargs)
            except Exception as exc:
                # KerasTuner would mark the trial INVALID and go on: the search's result would then depend on a
                # passing failure (a lost store race, a full disk), and nobody would know. Stop the search instead.
                raise kt.errors.FatalError(f"tune: trial {trial.trial_id} failed: {exc!r}") from exc

        def tracked_trial(self, trial, *args, **kwargs):
            prefix = f"trial {trial.trial_id}: "  # the profile's marks (profiling/marks.py)
            marks.mark(prefix + "trial start")
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
            with tracking.with_retry(
                mlflow.start_run,
                run_name=f"trial-{trial.trial_id}",
                nested=True,
                parent_run_id=parent_run_id,
                tags=tags,
            ):
                tracking.with_retry(mlflow.log_params, active_hparams(values))
                # ~30 ms: train is the search's subset of the prepared file (search_limit_train)
                splits = {"train": (args[0], args[1]), "validation": kwargs["validation_data"]}
                tracking.log_datasets(base_tags["data_file"], splits, base_tags["data_sha256"])
                kwargs["callbacks"] = [*kwargs.get("callbacks", []), EpochLogger(), marks.epoch_marks(prefix)]
                # Seeded last: an MLflow call before may draw from `random` (an HTTP retry's jitter),
                # which Keras' initializers draw from too.
                keras.utils.set_random_seed(trial_seed(seed, values))
                args, kwargs["validation_data"] = self.as_tensors(args, kwargs["validation_data"])
                kwargs["callbacks"].insert(0, built_before_tracing(args[0], args[1]))
                result = super().run_trial(trial, *args, **kwargs)  # KerasTuner clears the session first
            self.trials_run.append(trial.trial_id)
            marks.mark(prefix + "trial end")
            return result

        def as_tensors(self, args: tuple, validation: tuple) -> tuple:
            """The trials' arrays as TensorFlow tensors, made once per process."""
            import tensorflow as tf

            if self.tensors is None or self.tensors[0] is not args[0]:
                self.tensors = (args[0], tuple(tf.constant(a) for a in (*args[:2], *validation)))
            x, y, x_val, y_val = self.tensors[1]
            return (x, y, *args[2:]), (x_val, y_val)

    return TrackedHyperband


def settings_key(section: dict, seed: int, data: str | Path) -> str:
    """A short hash of everything that defines the search, naming its working directory.

    The chief, the workers and finish must agree on it, so it depends on the tune
    section, the seed and the data, and on nothing role-specific.
    """
    keyed = {"tune": section, "seed": seed, "data": str(data)}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:12]


def tuner_dir(work_dir: Path, section: dict, seed: int, data: str | Path) -> Path:
    """The search's working directory, shared by the chief and the workers."""
    return work_dir / settings_key(section, seed, data)


def make_tuner(section: dict, seed: int, directory: Path, tags: dict, parent_run_id: str | None, overwrite: bool):
    """The tracked Hyperband tuner of the tune section `section`, working in `directory`."""
    return tracked_hyperband_class(tags, seed, parent_run_id)(
        hypermodel(section["space"], section["steps_per_execution"]),
        objective="val_accuracy",
        max_epochs=section["max_epochs"],
        factor=section["factor"],
        hyperband_iterations=section["hyperband_iterations"],
        directory=str(directory.parent),
        project_name=directory.name,
        overwrite=overwrite,
    )


def search_subset(x, y, limit: int | None, seed: int):
    """The trials' training data: all of it, or a stratified, seeded subset of `limit` images."""
    from fashion_mlp.data import stratified_indices

    if limit is None:
        return x, y
    keep = stratified_indices(y, limit, seed)
    return x[keep], y[keep]


def search_data(path: Path, limit: int | None, seed: int) -> tuple:
    """The trials' training images and labels, and the validation split. The rest of the
    training split is let go: a worker keeps only what its trials read."""
    from fashion_mlp.data import load_arrays

    data = load_arrays(path)
    x, y = search_subset(data["x_train"], data["y_train"], limit, seed)
    return x, y, (data["x_val"], data["y_val"])


@contextlib.contextmanager
def search_run(section: dict, seed: int, tags: dict):
    """The search's MLflow run, with the tune section and seed as its params (the chief's, or the single process's)."""
    import mlflow

    with tracking.with_retry(mlflow.start_run, run_name=SEARCH_RUN, tags=tags | {"model": "hyperband-search"}) as run:
        tracking.with_retry(mlflow.log_params, flatten({**section, "seed": seed}))
        yield run


def log_search_result(oracle, seconds: float, run_id: str) -> dict:
    """The finished search as the workers and finish see it, logged to the active search run."""
    import mlflow

    rows = trial_rows(oracle)
    best = best_trial(oracle)
    tracking.with_retry(
        mlflow.log_metrics, {"search_seconds": seconds, "trials": len(rows), "best_trial_val_accuracy": best.score}
    )
    tracking.with_retry(mlflow.set_tag, "best_trial_id", best.trial_id)
    print(
        f"tune: search over, {len(rows)} trials in {seconds:.0f} s; best trial {best.trial_id} "
        f"val_accuracy {best.score:.4f}",
        flush=True,
    )
    return {
        "trials": rows,
        "seconds": round(seconds, 1),
        "parent_run_id": run_id,
        "best_trial_id": best.trial_id,
        "best_values": best.hyperparameters.values,
    }


def active_hparams(values: dict) -> dict:
    """The trial's hyperparameters, without Hyperband's bookkeeping or unused layer widths."""
    layers = values["layers"]
    active = {
        k: v
        for k, v in values.items()
        if not k.startswith("tuner/") and not (k.startswith("units_") and int(k.split("_")[1]) >= layers)
    }
    return active | {"batchnorm": bool(values["batchnorm"])}  # hp.Choice stores booleans as 0/1


def trial_rows(oracle) -> list[dict]:
    """One row per trial, in search order: by configuration drawn, then round."""
    rows = []
    for trial in sorted(oracle.trials.values(), key=lambda t: trial_key(t.hyperparameters.values)):
        values = trial.hyperparameters.values
        layers = values["layers"]
        rows.append(
            {
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
            }
        )
    return rows


def best_trial(oracle):
    """The trial with the best validation accuracy; ties go to the earlier draw, then the longer round."""
    done = [t for t in oracle.trials.values() if t.status == "COMPLETED" and t.score is not None]
    return min(
        done, key=lambda t: (-t.score, trial_key(t.hyperparameters.values)[0], -trial_key(t.hyperparameters.values)[1])
    )
