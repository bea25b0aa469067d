"""The search's pure pieces: the hypermodel's space, the best block, the tuner directory key, the champion rule."""

from __future__ import annotations

import pytest

from fashion_mlp import register, tune
from fashion_mlp.config import validate_section

ARGV = [
    "--max_epochs", "10", "--factor", "3", "--hyperband_iterations", "1", "--workers", "2", "--batch_size", "128",
    "--steps_per_execution", "16", "--final_epochs", "40", "--final_lr_schedule", "cosine",
    "--final_lr_decay_rate", "1.0", "--final_early_stopping_patience", "8",
    "--final_early_stopping_monitor", "val_accuracy", "--search_limit_train", "20000",
    "--space.layers", "1", "3", "--space.units", "32", "1024", "32", "--space.dropout", "0.0", "0.5", "0.1",
    "--space.l2", "0.0", "1e-05", "--space.learning_rate", "0.0001", "0.01", "--space.batchnorm", "False", "True",
    "--seed", "42", "--experiment", "e", "--data", "d.npz", "--work_dir", ".tuner",
    "--trials_out", "t.csv", "--best_out", "b.json", "--figure_out", "f.png", "--model_out", "m.keras",
    "--history_out", "h.csv",
]
TRIAL = {"layers": 2, "units_0": 512, "units_1": 256, "units_2": 32, "dropout": 0.3, "l2": 1e-05,
         "learning_rate": 0.001, "batchnorm": 1, "tuner/epochs": 10, "tuner/bracket": 0, "tuner/round": 0}


def test_cli_flags_round_trip_to_the_tune_section():
    args = tune.build_parser().parse_args(ARGV)
    params = tune.tune_params(args)
    validate_section("tune", params)
    assert params["space"] == {"layers": [1, 3], "units": [32, 1024, 32], "dropout": [0.0, 0.5, 0.1],
                               "l2": [0.0, 1e-05], "learning_rate": [0.0001, 0.01], "batchnorm": [False, True]}


def test_active_hparams_drop_bookkeeping_and_unused_layers():
    assert tune.active_hparams(TRIAL) == {"layers": 2, "units_0": 512, "units_1": 256, "dropout": 0.3,
                                          "l2": 1e-05, "learning_rate": 0.001, "batchnorm": True}


def test_best_block_is_a_valid_train_block_with_the_retrain_settings():
    args = tune.build_parser().parse_args(ARGV)
    block = tune.best_block(TRIAL, args)
    validate_section("train", block)
    assert block["hidden"] == [512, 256] and block["batchnorm"] is True
    assert (block["lr_schedule"], block["epochs"], block["early_stopping_patience"]) == ("cosine", 40, 8)
    assert block["early_stopping_monitor"] == "val_accuracy"


def test_tuner_directory_changes_with_the_space_but_not_with_outputs():
    base = tune.build_parser().parse_args(ARGV)
    other_out = tune.build_parser().parse_args([*ARGV[:-2], "--history_out", "elsewhere.csv"])
    i = ARGV.index("--space.units")
    wider = tune.build_parser().parse_args([*ARGV[:i + 1], "32", "2048", "32", *ARGV[i + 4:]])
    worker = tune.build_parser().parse_args([*ARGV, "--role", "worker", "--worker_id", "1", "--threads", "1"])
    assert tune.settings_key(base) == tune.settings_key(other_out) == tune.settings_key(worker)
    assert tune.settings_key(base) != tune.settings_key(wider)


def test_hypermodel_builds_a_model_inside_the_space():
    import keras_tuner as kt

    hp = kt.HyperParameters()
    model = tune.hypermodel({"layers": [1, 3], "units": [32, 64, 32], "dropout": [0.0, 0.5, 0.1],
                             "l2": [0.0], "learning_rate": [1e-4, 1e-2], "batchnorm": [False, True]}, 1)(hp)
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert 2 <= len(dense) <= 4 and dense[-1].units == 10
    assert all(32 <= layer.units <= 64 for layer in dense[:-1])
    assert 1e-4 <= hp.values["learning_rate"] <= 1e-2
    # every width is in the space from the first build, used or not: the oracle draws them all
    assert {"units_0", "units_1", "units_2"} <= set(hp.values)


@pytest.mark.parametrize("scores, winner", [
    ({"baseline": 0.89, "regularized": 0.91, "tuned": 0.905}, "regularized"),
    ({"baseline": 0.90, "regularized": 0.90, "tuned": 0.89}, "baseline"),  # ties: first listed
])
def test_champion_is_the_best_validation_accuracy(scores, winner):
    # Test accuracy is deliberately the reverse order: it must not matter.
    candidates = {m: {"val_accuracy": v, "accuracy": 1 - v} for m, v in scores.items()}
    assert register.choose(candidates) == winner


def test_kept_epoch_follows_the_early_stopping_monitor():
    from fashion_mlp.train import kept_epoch

    rows = [{"epoch": 1, "val_loss": 0.40, "val_accuracy": 0.85},
            {"epoch": 2, "val_loss": 0.30, "val_accuracy": 0.88},   # lowest val_loss
            {"epoch": 3, "val_loss": 0.35, "val_accuracy": 0.90},   # highest val_accuracy
            {"epoch": 4, "val_loss": 0.38, "val_accuracy": 0.89}]
    assert kept_epoch(rows, None)["epoch"] == 4  # no early stopping: the last weights
    assert kept_epoch(rows, 2, "val_loss")["epoch"] == 2
    assert kept_epoch(rows, 2, "val_accuracy")["epoch"] == 3


def test_plot_trials_draws_rows_as_trial_rows_makes_them(tmp_path):
    rows = [{"trial_id": f"{i:04d}", "status": "COMPLETED", "val_accuracy": 0.8 + i / 100, "epochs": 2 + i,
             "bracket": 0, "round": 0, "layers": 1 + i % 3, "units": " ".join(["64"] * (1 + i % 3)),
             "dropout": 0.1 * i, "l2": [0.0, 1e-5, 1e-4][i % 3], "learning_rate": 10 ** -(2 + i % 2),
             "batchnorm": bool(i % 2)} for i in range(4)]
    rows.append({**rows[0], "trial_id": "0004", "val_accuracy": None})  # a failed trial is left out
    path = tmp_path / "trials.png"
    tune.plot_trials(rows, path)
    assert path.read_bytes()[:4] == b"\x89PNG"
