"""tuning/hyperband.py: the space, the lockstep oracle, trial keys and seeds, the search's rows and best.

The oracle is driven by hand, with scores that depend only on a trial's hyperparameters, as a
seeded trial's do; one slow test trains a real trial.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from conftest import TRIAL
from fashion_mlp.tuning import hyperband

SECTION = {
    "max_epochs": 10,
    "factor": 3,
    "hyperband_iterations": 1,
    "workers": 2,
    "batch_size": 128,
    "steps_per_execution": 16,
    "final_epochs": 40,
    "final_lr_schedule": "cosine",
    "final_lr_decay_rate": 1.0,
    "final_early_stopping_patience": 8,
    "final_early_stopping_monitor": "val_accuracy",
    "search_limit_train": 20000,
    "space": {
        "layers": [1, 3],
        "units": [32, 1024, 32],
        "dropout": [0.0, 0.5, 0.1],
        "l2": [0.0, 1e-05],
        "learning_rate": [0.0001, 0.01],
        "batchnorm": [False, True],
    },
}


def test_active_hparams_drop_bookkeeping_and_unused_layers():
    assert hyperband.active_hparams(TRIAL) == {
        "layers": 2,
        "units_0": 512,
        "units_1": 256,
        "dropout": 0.3,
        "l2": 1e-05,
        "learning_rate": 0.001,
        "batchnorm": True,
    }


def test_a_trial_is_keyed_and_seeded_by_its_draw_and_round_only():
    values = TRIAL | {"tuner/draw": 7, "tuner/round": 2, "tuner/trial_id": "0003"}
    assert hyperband.trial_key(values) == (7, 2)
    assert hyperband.trial_seed(42, values) == 42_000_702
    assert hyperband.trial_seed(42, values | {"tuner/trial_id": "0011"}) == hyperband.trial_seed(42, values)
    seeds = {hyperband.trial_seed(42, {"tuner/draw": d, "tuner/round": r}) for d in range(1, 60) for r in range(5)}
    assert len(seeds) == 59 * 5


def test_tuner_directory_is_named_by_the_section_seed_and_data():
    key = hyperband.settings_key(SECTION, 42, "d.npz")
    wider = SECTION | {"space": SECTION["space"] | {"units": [32, 2048, 32]}}
    assert key == hyperband.settings_key(dict(SECTION), 42, "d.npz") and len(key) == 12
    assert key != hyperband.settings_key(wider, 42, "d.npz")
    assert key != hyperband.settings_key(SECTION, 43, "d.npz")
    assert key != hyperband.settings_key(SECTION, 42, "other.npz")
    assert hyperband.tuner_dir(hyperband.Path(".tuner"), SECTION, 42, "d.npz") == hyperband.Path(".tuner") / key


def test_best_trial_prefers_the_score_then_the_earlier_draw_then_the_longer_round():
    def trial(trial_id, score, draw, round_num, status="COMPLETED"):
        values = {"tuner/draw": draw, "tuner/round": round_num}
        return SimpleNamespace(
            trial_id=trial_id, score=score, status=status, hyperparameters=SimpleNamespace(values=values)
        )

    trials = [
        trial("a", 0.8, 1, 0),
        trial("b", 0.9, 3, 0),
        trial("c", 0.9, 2, 0),
        trial("d", 0.9, 2, 1),
        trial("e", 0.95, 4, 0, status="FAILED"),
        trial("f", None, 5, 0, status="COMPLETED"),
    ]
    oracle = SimpleNamespace(trials={t.trial_id: t for t in trials})
    assert hyperband.best_trial(oracle).trial_id == "d"


def test_hypermodel_builds_a_model_inside_the_space():
    import keras_tuner as kt

    hp = kt.HyperParameters()
    model = hyperband.hypermodel(
        {
            "layers": [1, 3],
            "units": [32, 64, 32],
            "dropout": [0.0, 0.5, 0.1],
            "l2": [0.0],
            "learning_rate": [1e-4, 1e-2],
            "batchnorm": [False, True],
        },
        1,
    )(hp)
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert 2 <= len(dense) <= 4 and dense[-1].units == 10
    assert all(32 <= layer.units <= 64 for layer in dense[:-1])
    assert 1e-4 <= hp.values["learning_rate"] <= 1e-2
    # every width is in the space from the first build, used or not: the oracle draws them all
    assert {"units_0", "units_1", "units_2"} <= set(hp.values)


# --- the lockstep oracle, driven by hand ------------------------------------------------


def score(values: dict) -> float:
    """A trial's score from its hyperparameters and budget alone, as a seeded trial's is."""
    return round(values["learning_rate"] * 50 + values["units_0"] / 2000 + values["tuner/epochs"] / 100, 6)


def search(tmp_path, workers: int, seed: int = 0):
    """A whole Hyperband search with `workers` workers, whose trials end in a shuffled order."""
    import keras_tuner as kt

    oracle = hyperband.lockstep_oracle_class()(
        kt.Objective("val_accuracy", "max"), max_epochs=9, factor=3, hyperband_iterations=1, seed=1
    )
    oracle._set_project_dir(str(tmp_path), f"search-{workers}-{seed}")
    oracle.verbose = 0
    hp = kt.HyperParameters()
    hp.Int("layers", 1, 3)
    for i in range(3):
        hp.Int(f"units_{i}", 32, 1024, step=32)
    hp.Float("dropout", 0.0, 0.5, step=0.1)
    hp.Choice("l2", [0.0, 1e-5])
    hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
    hp.Choice("batchnorm", [0, 1])
    oracle.update_space(hp)
    rng = random.Random(seed)
    running, stopped = {}, set()
    while len(stopped) < workers:
        for name in (f"worker{i}" for i in range(workers)):
            if name in running or name in stopped:
                continue
            trial = oracle.create_trial(name)
            if trial.status == "RUNNING":
                running[name] = trial
            elif trial.status == "STOPPED":
                stopped.add(name)
        if running:  # one of the running trials ends: any of them
            trial = running.pop(rng.choice(sorted(running)))
            oracle.update_trial(trial.trial_id, {"val_accuracy": score(trial.hyperparameters.values)})
            trial.status = "COMPLETED"
            oracle.end_trial(trial)
    return oracle


def outcome(oracle) -> list[dict]:
    """The search's rows without KerasTuner's trial numbers (they follow the order trials were handed out)."""
    return [{k: v for k, v in row.items() if k != "trial_id"} for row in hyperband.trial_rows(oracle)]


def test_the_lockstep_oracle_decides_the_same_with_any_number_of_workers(tmp_path):
    single = search(tmp_path, workers=1)
    rows = outcome(single)
    assert len(rows) > 10 and all(row["status"] == "COMPLETED" for row in rows)
    assert [(row["draw"], row["round"]) for row in rows] == sorted((row["draw"], row["round"]) for row in rows)
    assert max(row["round"] for row in rows) >= 1, "a search this size promotes"
    best = hyperband.best_trial(single).hyperparameters.values
    for workers, seed in ((2, 0), (3, 1), (3, 2)):
        spread = search(tmp_path, workers, seed)
        assert outcome(spread) == rows, f"{workers} workers, order {seed}"
        spread_best = hyperband.best_trial(spread).hyperparameters.values
        assert {k: v for k, v in spread_best.items() if k != "tuner/trial_id"} == {
            k: v for k, v in best.items() if k != "tuner/trial_id"
        }


def test_trial_rows_show_only_the_layers_a_trial_uses(tmp_path):
    oracle = search(tmp_path, workers=1)
    drawn = {trial.trial_id: trial.hyperparameters.values for trial in oracle.trials.values()}
    rows = hyperband.trial_rows(oracle)
    assert sorted(row["trial_id"] for row in rows) == sorted(drawn)
    for row in rows:
        values = drawn[row["trial_id"]]
        assert row["layers"] == values["layers"] and row["val_accuracy"] == score(values)
        assert row["units"].split() == [str(values[f"units_{i}"]) for i in range(values["layers"])]
        assert row["batchnorm"] is (values["batchnorm"] == 1)  # a bool, not KerasTuner's 0 or 1
    assert {row["layers"] for row in rows} == {1, 2, 3} and {row["batchnorm"] for row in rows} == {False, True}


@pytest.mark.parametrize("limit", [None, 30])
def test_search_subset_is_all_or_a_stratified_seeded_subset(limit):
    import numpy as np

    y = np.repeat(np.arange(10), 10)
    x = np.arange(100)
    sx, sy = hyperband.search_subset(x, y, limit, seed=3)
    if limit is None:
        assert sx is x and sy is y
    else:
        assert len(sy) == limit and np.array_equal(np.bincount(sy), [3] * 10)
        assert np.array_equal(sx, hyperband.search_subset(x, y, limit, seed=3)[0])


# --- a tracked trial, trained --------------------------------------------------------------


@pytest.mark.slow
def test_a_trial_trains_the_same_whatever_its_mlflow_calls_draw_from_random(tmp_path, monkeypatch, keras, mlflow_store):
    """An MLflow call may draw from the global `random` (urllib3's retry jitter, against a tracking
    server); Keras' initializers draw from it too. A trial is seeded after its MLflow calls, so
    such a draw leaves its training alone."""
    import mlflow
    import numpy as np

    from fashion_mlp import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    tracking.init("trial-seeding")  # points MLflow at that store, as every stage does
    rng = np.random.default_rng(0)
    x, y = rng.random((120, 28, 28), dtype=np.float32), rng.integers(0, 10, 120)
    data = tmp_path / "train.npz"
    np.savez(data, x_train=x, y_train=y)
    tags = {"data_file": str(data), "data_sha256": "0" * 64}
    section = SECTION | {"max_epochs": 1, "steps_per_execution": 1}  # one bracket of one 1-epoch trial

    def trial_losses(name: str) -> list[float]:
        tuner = hyperband.make_tuner(section, 7, tmp_path / name / "search", tags, None, overwrite=True)
        tuner.tuner_id = "worker0"
        with mlflow.start_run(run_name=name):
            tuner.search(x[:100], y[:100], validation_data=(x[100:], y[100:]), batch_size=20, verbose=0)
        return [t.metrics.get_last_value("val_loss") for t in tuner.oracle.trials.values()]

    quiet = trial_losses("quiet")
    start_run = mlflow.start_run

    def start_run_after_a_retry(*args, **kwargs):
        random.random()  # what urllib3's Retry draws for its backoff jitter
        return start_run(*args, **kwargs)

    monkeypatch.setattr(mlflow, "start_run", start_run_after_a_retry)
    assert trial_losses("retried") == quiet and len(quiet) == 1
