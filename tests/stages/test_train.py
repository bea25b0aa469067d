"""Training: bit-for-bit determinism and the stage end to end with MLflow (its flags: test_train_args.py)."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CLI, REPO, SUBPROCESS_TIMEOUT, clean_env
from fashion_mlp.data import save_arrays
from fashion_mlp.models.training import HISTORY_COLUMNS


def synthetic_data(n_train: int, n_val: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Images in [0, 1] whose mean brightness pattern depends on the class, so there is something to learn."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28), dtype=np.float32)

    def make(n):
        y = np.resize(np.arange(10, dtype=np.uint8), n)
        rng.shuffle(y)
        x = np.clip(0.7 * prototypes[y] + 0.3 * rng.random((n, 28, 28), dtype=np.float32), 0, 1)
        return x.astype(np.float32), y

    x_train, y_train = make(n_train)
    x_val, y_val = make(n_val)
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}


# --- determinism -----------------------------------------------------------------------

TRAIN_TWICE = """
import sys
import keras
import numpy as np
from fashion_mlp.runtime import configure_tensorflow

data_path, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
configure_tensorflow(1, seed)  # before any TensorFlow op
from fashion_mlp.data import load_arrays
from fashion_mlp.models.architectures import build_mlp
from fashion_mlp.models.training import fit, make_history_callback

data = load_arrays(data_path)
params = {"learning_rate": 0.003, "lr_schedule": "exponential", "lr_decay_rate": 0.8, "batch_size": 32,
          "epochs": 2, "early_stopping_patience": None, "early_stopping_monitor": "val_loss",
          "steps_per_execution": 4}
arrays = {}
for run in ("first", "other"):
    if run == "other":
        keras.utils.set_random_seed(seed + 1)  # a second training shows that the seed matters
    model = build_mlp([32, 16], "relu", [0.2, 0.1], [0.0, 0.001], [False, True])
    arrays[f"{run}_initial_0"] = model.get_weights()[0].copy()
    fit(model, data, params, [make_history_callback()])
    arrays.update({f"{run}_w{i}": w for i, w in enumerate(model.get_weights())})
np.savez(out, **arrays)
"""


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(tmp_path):
    """Two processes train with seed 7 (then reseed to 8 and train again): same seeds, same bits."""
    data = tmp_path / "train.npz"
    save_arrays(data, **synthetic_data(300, 60))
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", TRAIN_TWICE, str(data), "7", str(tmp_path / f"{name}.npz")],
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("a", "b")
    }
    for name, proc in procs.items():
        try:
            output, _ = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        assert proc.returncode == 0, f"run {name} failed:\n{output[-3000:]}"

    def weights(name):
        with np.load(tmp_path / f"{name}.npz", allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}

    a, b = weights("a"), weights("b")
    assert set(a) == set(b)
    trained = sorted(k for k in a if k.startswith("first_w"))
    assert len(trained) == 2 * 2 + 4 + 2  # two hidden Dense (kernel, bias), BatchNorm's 4, output Dense
    for key in a:
        assert np.array_equal(a[key], b[key]), f"{key} differs between two processes with the same seed"
    # the check has teeth: training moved the weights, and another seed gives other weights
    assert not np.array_equal(a["first_initial_0"], a["first_w0"])
    assert not np.array_equal(a["first_initial_0"], a["other_initial_0"])
    for i in range(len(trained)):
        assert not np.array_equal(a[f"first_w{i}"], a[f"other_w{i}"]), i


TRAIN_WITH = """
import sys
import keras
import numpy as np
from fashion_mlp.runtime import configure_tensorflow

data_path, threads, out, data_autotuning = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "on"
configure_tensorflow(threads, 42)
if data_autotuning:  # Keras' and tf.data's default, which the project turns off
    import tensorflow as tf

    tf.data.Dataset.with_options = tf.data.Dataset.with_options.original
from fashion_mlp.data import load_arrays
from fashion_mlp.models.architectures import build_mlp
from fashion_mlp.models.training import fit, make_history_callback

data = load_arrays(data_path)
arrays = {}
for spe in map(int, sys.argv[5:]):
    keras.utils.set_random_seed(42)  # each training starts from the same state
    params = {"learning_rate": 0.001, "lr_schedule": "exponential", "lr_decay_rate": 0.8, "batch_size": 32,
              "epochs": 2, "early_stopping_patience": None, "early_stopping_monitor": "val_loss",
              "steps_per_execution": spe}
    model = build_mlp([128], "relu", 0.2, 0.0, False)  # the tutorial's baseline
    arrays[f"spe{spe}_initial"] = model.get_weights()[0].copy()
    history = make_history_callback()
    fit(model, data, params, [history])
    arrays[f"spe{spe}_val_loss"] = [r["val_loss"] for r in history.rows]
    arrays.update({f"spe{spe}_w{i}": w for i, w in enumerate(model.get_weights())})
np.savez(out, **arrays)
"""


@pytest.mark.slow
def test_speed_settings_do_not_change_results(tmp_path):
    """Keras' defaults (one batch per call, tf.data's autotuning) and the project's speed settings
    (many batches per call, no autotuning) train the baseline to the same weights, bit for bit, on one
    thread and on two. Across thread counts they need not: on a Zen 3 one and two threads differed
    (docs/reliability.md), which is why both engines give every job the same threads."""
    data = tmp_path / "train.npz"
    save_arrays(data, **synthetic_data(2000, 200))  # 63 batches: 8 per call leaves a partial last call
    runs = {  # name: threads, tf.data autotuning, steps_per_execution values
        "two-threads": (2, "on", ["1"]),
        "two-threads-project": (2, "off", ["8", "64"]),
        "one-thread": (1, "on", ["1"]),
        "one-thread-project": (1, "off", ["64"]),
    }
    for name, (threads, autotuning, spes) in runs.items():
        out = tmp_path / f"{name}.npz"
        result = subprocess.run(
            [sys.executable, "-c", TRAIN_WITH, str(data), str(threads), str(out), autotuning, *spes],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )
        assert result.returncode == 0, f"{name} failed:\n{result.stderr[-3000:]}"

    def arrays(name):
        with np.load(tmp_path / f"{name}.npz", allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}

    for threads, project in (("two-threads", ("spe8", "spe64")), ("one-thread", ("spe64",))):
        trained = arrays(threads) | arrays(f"{threads}-project")
        reference = {k.removeprefix("spe1_"): v for k, v in trained.items() if k.startswith("spe1_")}
        assert len(reference) == 2 + 4  # initial kernel, val_loss, two kernels, two biases
        assert not np.array_equal(reference["initial"], reference["w0"])  # training moved the weights
        for prefix in project:
            for key, value in reference.items():
                assert np.array_equal(trained[f"{prefix}_{key}"], value), f"{threads} {prefix}: {key} differs"


def test_datasets_run_without_autotuning_and_keep_their_other_options():
    import tensorflow as tf

    from fashion_mlp.runtime import without_data_autotuning

    without_data_autotuning(tf)
    without_data_autotuning(tf)  # a second call wraps nothing twice
    assert tf.data.Dataset.with_options.original.__name__ == "with_options"
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.range(5).batch(2).with_options(options)
    assert dataset.options().autotune.enabled is False
    assert dataset.options().deterministic is True
    assert dataset.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    assert [b.tolist() for b in dataset.as_numpy_iterator()] == [[0, 1], [2, 3], [4]]


# --- the stage end to end --------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Run `fashion-mlp train` once on a tiny npz with its own MLflow store; share the outputs."""
    tmp = tmp_path_factory.mktemp("train_stage")
    data = tmp / "data" / "train.npz"
    save_arrays(data, **synthetic_data(200, 50, seed=1))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    model_out = tmp / "models" / "tiny.keras"
    history_out = tmp / "reports" / "history" / "tiny.csv"
    argv = [
        "train",
        "--model",
        "tiny",
        "--hidden",
        "16",
        "--activation",
        "relu",
        "--dropout",
        "0.1",
        "--l2",
        "0.0",
        "--batchnorm",
        "false",
        "--learning_rate",
        "0.01",
        "--lr_schedule",
        "exponential",
        "--lr_decay_rate",
        "0.5",
        "--batch_size",
        "32",
        "--epochs",
        "3",
        "--early_stopping_patience",
        "None",
        "--early_stopping_monitor",
        "val_loss",
        "--steps_per_execution",
        "4",
        "--seed",
        "3",
        "--experiment",
        "unit-test-train",
        "--data",
        str(data),
        "--model_out",
        str(model_out),
        "--history_out",
        str(history_out),
        "--threads",
        "1",
    ]
    command = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "fashion_mlp"]
    # FASHION_MLP_ROOT as the Snakefile exports it (git_commit and the default store resolve against it)
    env = clean_env(MLFLOW_TRACKING_URI=uri, FASHION_MLP_ROOT=str(REPO))
    proc = subprocess.run(command + argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, f"fashion-mlp train failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return {
        "tmp": tmp,
        "data": data,
        "uri": uri,
        "model_out": model_out,
        "history_out": history_out,
        "stdout": proc.stdout,
        "timings": tmp / "reports/timings/tiny.json",
    }  # the default, under cwd


def _history(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [{k: float(v) for k, v in row.items()} for row in reader]
        return list(reader.fieldnames), rows


@pytest.mark.slow
def test_train_stage_writes_model_and_history(trained):
    model = trained["model_out"]
    assert model.is_file() and model.read_bytes()[:2] == b"PK"  # .keras is a zip archive
    columns, rows = _history(trained["history_out"])
    assert (
        columns
        == list(HISTORY_COLUMNS)
        == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "kept"]
    )  # no wall times
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["learning_rate"] for r in rows] == pytest.approx([0.01, 0.005, 0.0025], rel=1e-5)
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["val_accuracy"] <= 1 for r in rows)
    assert "train: tiny: 3 epochs" in trained["stdout"]
    for directory in (model.parent, trained["history_out"].parent):
        assert not list(directory.glob(".*.tmp-*"))


@pytest.mark.slow
def test_train_stage_logs_an_mlflow_run(trained):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=trained["uri"])
    experiment = client.get_experiment_by_name("unit-test-train")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny"

    params = run.data.params
    assert params["model"] == "tiny" and params["seed"] == "3" and params["threads"] == "1"
    assert params["hidden"] == "[16]" and params["dropout"] == "0.1" and params["lr_schedule"] == "exponential"
    assert params["batchnorm"] == "False"
    assert params["n_train"] == "200" and params["n_val"] == "50"
    assert params["n_params"] == str(784 * 16 + 16 + 16 * 10 + 10)

    tags = run.data.tags
    for key in ("git_commit", "data_sha256", "engine", "stage", "model_sha256"):
        assert tags.get(key), key
    assert tags["data_sha256"] == hashlib.sha256(trained["data"].read_bytes()).hexdigest()
    assert tags["model_sha256"] == hashlib.sha256(trained["model_out"].read_bytes()).hexdigest()
    assert tags["engine"] == "cli" and tags["stage"] == "train" and tags["model"] == "tiny"
    assert tags["model_kind"] == "mlp"  # a block without `kind`

    _, rows = _history(trained["history_out"])
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        points = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)
        assert [p.step for p in points] == [1, 2, 3], metric
        assert [p.value for p in points] == pytest.approx([r[metric] for r in rows], rel=1e-6), metric
    # The wall times are MLflow's and the untracked timings file's, not the versioned history's.
    epoch_seconds = sorted(client.get_metric_history(run.info.run_id, "epoch_seconds"), key=lambda m: m.step)
    assert [p.step for p in epoch_seconds] == [1, 2, 3] and all(p.value > 0 for p in epoch_seconds)
    assert run.data.metrics["train_seconds"] == pytest.approx(sum(p.value for p in epoch_seconds))
    timings = json.loads(trained["timings"].read_text())
    assert timings["model"] == "tiny" and timings["epochs_run"] == 3 and timings["mlflow_run_id"] == run.info.run_id
    assert timings["epoch_seconds"] == pytest.approx([p.value for p in epoch_seconds], abs=1e-3)
    assert run.data.metrics["epochs_run"] == 3
    assert run.data.metrics["kept_epoch"] == 3  # no early stopping: the last epoch is kept
    assert run.data.metrics["final_val_loss"] == pytest.approx(rows[-1]["val_loss"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "history" in artifacts


@pytest.mark.slow
def test_train_stage_artifacts_and_model_stay_with_its_store(trained):
    """With MLFLOW_TRACKING_URI set, artifacts go beside the job (./mlruns), not into <repo>/mlartifacts."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=trained["uri"])
    experiment = client.get_experiment_by_name("unit-test-train")
    run = client.search_runs([experiment.experiment_id])[0]
    uri = run.info.artifact_uri
    if uri.startswith("file:"):
        import urllib.parse
        import urllib.request

        uri = urllib.request.url2pathname(urllib.parse.urlparse(uri).path)
    artifact_dir = Path(uri).resolve()
    assert artifact_dir.is_relative_to(trained["tmp"].resolve())
    logged = artifact_dir / "history" / trained["history_out"].name
    assert logged.read_bytes() == trained["history_out"].read_bytes()
    mlmodels = list(trained["tmp"].glob("mlruns/**/MLmodel"))
    assert len(mlmodels) == 1  # the Keras model was logged too
    assert "tensorflow" in mlmodels[0].read_text()
