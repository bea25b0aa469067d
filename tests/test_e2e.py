"""End to end on real Fashion-MNIST (a 3000-image subset, 2 epochs), under both engines.

Each test works in its own copy of the repository, as a user's clone would.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import edit_params, run
from fashion_mlp.data import CLASS_NAMES, RAW_FILES
from fashion_mlp.io import sha256_file

pytestmark = pytest.mark.e2e
MODELS = ("baseline", "regularized", "tuned")


def mlflow_runs(repo: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fashion-mnist-mlp")
    assert experiment is not None, "the experiment was not created in <repo>/mlflow.db"
    assert experiment.artifact_location == (repo / "mlartifacts").as_uri()
    return client, client.search_runs([experiment.experiment_id])


def assert_outputs(repo: Path) -> None:
    for name in RAW_FILES:
        assert (repo / "data/raw" / name).is_file()
    assert not list((repo / "data/raw").glob(".*")), "a temporary file was left in data/raw"
    stats = json.loads((repo / "reports/data_stats.json").read_text())
    assert stats["counts"] == {"train": 2700, "val": 300, "test": 1000}
    for model in MODELS:
        assert (repo / f"models/{model}.keras").is_file()
        history = (repo / f"reports/history/{model}.csv").read_text().splitlines()
        assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,epoch_seconds,kept"
        assert len(history) == 1 + 2
        assert sum(int(line.rsplit(",", 1)[1]) for line in history[1:]) == 1, "exactly one kept epoch"
        metrics = json.loads((repo / f"reports/metrics/{model}.json").read_text())
        assert metrics["model"] == model and metrics["n_test"] == 1000
        assert 0.5 < metrics["accuracy"] <= 1 and metrics["loss"] > 0 and 0 < metrics["macro_f1"] <= 1
        assert set(metrics["per_class"]) == set(CLASS_NAMES)
        assert metrics["epochs_run"] == 2
        for kind in ("confusion", "curves", "predictions"):
            assert (repo / f"reports/figures/{model}_{kind}.png").read_bytes()[:4] == b"\x89PNG"
        predictions = (repo / f"reports/predictions/{model}.csv").read_text().splitlines()
        assert predictions[0] == "actual,predicted" and len(predictions) == 1 + 1000
    summary = (repo / "reports/summary.md").read_text()
    for needle in ("| baseline |", "| regularized |", "0.8833", "0.8700", "0.8660", "0.8710",
                   "figures/baseline_confusion.png", "figures/model_comparison.png"):
        assert needle in summary


def assert_mlflow(repo: Path, engine: str) -> None:
    client, runs = mlflow_runs(repo)
    model_runs = [r for r in runs if r.data.tags.get("model") in MODELS]
    by_model = {r.data.tags["model"]: r for r in model_runs}
    assert sorted(by_model) == sorted(MODELS) and len(model_runs) == 3, "one run per model, train and evaluate together"
    assert all(r.info.status == "FINISHED" for r in runs)
    assert_tuning_runs(client, runs, by_model["tuned"])
    assert_champion(client, repo)
    data_sha = sha256_file(repo / "data/prepared/train.npz")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for model, r in by_model.items():
        assert r.info.status == "FINISHED"
        if model in params["train"]:
            spec = params["train"][model]
            assert r.data.params["learning_rate"] == str(spec["learning_rate"])
            assert r.data.params["hidden"] == str(spec["hidden"])
        assert r.data.params["epochs"] == "2" and r.data.params["seed"] == str(params["seed"])
        history = client.get_metric_history(r.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2], "per-epoch metrics with step = epoch"
        metrics = json.loads((repo / f"reports/metrics/{model}.json").read_text())
        assert r.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
        assert r.data.metrics["test_macro_f1"] == pytest.approx(metrics["macro_f1"])
        tags = r.data.tags
        assert tags["engine"] == engine and tags["stage"] == "train,evaluate"
        assert tags["data_sha256"] == data_sha
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", tags["git_commit"])
        assert tags["model_sha256"] == sha256_file(repo / f"models/{model}.keras")
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id, "figures")}
        assert f"figures/{model}_confusion.png" in artifacts
        logged = client.search_logged_models([r.info.experiment_id])
        assert any(m.source_run_id == r.info.run_id for m in logged), "the model is logged to its run"


def assert_tuning_runs(client, runs, tuned_run) -> None:
    """One parent `tune` run, every Hyperband trial nested under it, the retrain linked to it."""
    parents = [r for r in runs if r.data.tags.get("stage") == "tune" and r.info.run_name == "tune"]
    assert len(parents) == 1
    parent = parents[0]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) >= 2 and len(trials) == int(parent.data.metrics["trials"])
    for trial in trials:
        assert {"trial_id", "bracket", "round"} <= set(trial.data.tags)
        assert {"layers", "units_0", "dropout", "l2", "learning_rate", "batchnorm"} <= set(trial.data.params)
        assert client.get_metric_history(trial.info.run_id, "val_accuracy"), "per-epoch metrics of the trial"
    assert tuned_run.data.tags["tune_run_id"] == parent.info.run_id


def assert_champion(client, repo: Path) -> None:
    champion = json.loads((repo / "reports/champion.json").read_text())
    candidates = {c["model"]: c["val_accuracy"] for c in champion["candidates"]}
    assert champion["champion"] == max(candidates, key=candidates.get), "chosen by validation accuracy"
    version = client.get_model_version_by_alias("fashion-mnist-mlp", "champion")
    assert int(version.version) == champion["version"]
    assert version.run_id == champion["run_id"]


def assert_tuning_outputs(repo: Path) -> None:
    trials = (repo / "reports/tuning/trials.csv").read_text().splitlines()
    assert trials[0].startswith("trial_id,status,val_accuracy,epochs,bracket,round,layers,units")
    assert len(trials) >= 1 + 2
    best = json.loads((repo / "reports/tuning/best_hparams.json").read_text())
    assert best["search"]["trials"] == len(trials) - 1
    assert best["train_block"]["lr_schedule"] == "cosine" and best["train_block"]["epochs"] == 2
    assert (repo / "reports/figures/tuning_trials.png").read_bytes()[:4] == b"\x89PNG"
    summary = (repo / "reports/summary.md").read_text()
    assert "## Hyperparameter search" in summary and "## Champion" in summary


def assert_demo_outputs(repo: Path) -> None:
    xor = json.loads((repo / "reports/demos/xor.json").read_text())
    assert xor["perceptron_best_accuracy"] == 0.75 and xor["perceptron_accuracy"] <= 0.75
    assert xor["mlp_accuracy"] == 1.0
    table = (repo / "reports/demos/activations.csv").read_text()
    assert table.splitlines()[1].startswith("-5.0,0.00669")  # the tutorial's sigmoid(-5) = 0.0067
    for name in ("xor_points", "xor_boundaries", "activations"):
        assert (repo / f"reports/figures/{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "## XOR and activation functions" in (repo / "reports/summary.md").read_text()


def test_snakemake_end_to_end(smoke_repo: Path) -> None:
    # 4 cores: the two trainings, then the two evaluations, run in parallel on one SQLite store.
    run(["snakemake", "--cores", "4"], smoke_repo)
    assert_outputs(smoke_repo)
    assert_tuning_outputs(smoke_repo)
    assert_demo_outputs(smoke_repo)
    assert_mlflow(smoke_repo, engine="snakemake")
    # Snakemake's onsuccess brought DVC's lock up to date: nothing left to reproduce.
    status = run(["dvc", "status", "--json"], smoke_repo)
    assert json.loads(status.stdout) == {}, status.stdout
    run(["snakemake", "--report", "reports/report.html"], smoke_repo)
    html = (smoke_repo / "reports/report.html").read_text(errors="replace")
    assert "tuned_confusion.png" in html and "tuning_trials.png" in html and "model_comparison.png" in html
    again = run(["snakemake", "--cores", "2", "--dry-run"], smoke_repo)
    assert "Nothing to be done" in again.stdout + again.stderr
    # A params.yaml edit reaches Snakemake through the rules' params: only that model reruns.
    edit_params(smoke_repo, {"train.regularized.dropout": [0.0, 0.4]})
    plan = run(["snakemake", "--cores", "2", "--dry-run", "--quiet", "rules"], smoke_repo).stdout
    planned = dict(re.findall(r"^(\w+)\s+(\d+)$", plan, flags=re.M))
    assert planned == {"train": "1", "evaluate": "1", "register": "1", "report": "1", "all": "1",
                       "total": "5"}, plan


def test_dvc_repro_reruns_only_what_changed(smoke_repo: Path) -> None:
    run(["dvc", "repro"], smoke_repo)
    assert_outputs(smoke_repo)
    assert_tuning_outputs(smoke_repo)
    assert_demo_outputs(smoke_repo)
    assert_mlflow(smoke_repo, engine="dvc")
    metrics = run(["dvc", "metrics", "show", "--json"], smoke_repo)
    assert "accuracy" in metrics.stdout
    baseline = (smoke_repo / "models/baseline.keras").read_bytes()
    regularized = (smoke_repo / "models/regularized.keras").read_bytes()

    edit_params(smoke_repo, {"train.regularized.dropout": [0.0, 0.4]})
    diff = run(["dvc", "params", "diff", "--json"], smoke_repo)
    assert "train.regularized.dropout" in diff.stdout and "baseline" not in diff.stdout
    status = json.loads(run(["dvc", "status", "--json"], smoke_repo).stdout)
    assert set(status) == {"train@regularized"}, status

    rerun = run(["dvc", "repro"], smoke_repo)
    ran = set(re.findall(r"Running stage '([^']+)'", rerun.stdout))
    assert ran == {"train@regularized", "evaluate@regularized", "register", "report"}, rerun.stdout
    assert (smoke_repo / "models/baseline.keras").read_bytes() == baseline
    assert (smoke_repo / "models/regularized.keras").read_bytes() != regularized
    assert json.loads(run(["dvc", "status", "--json"], smoke_repo).stdout) == {}

    run(["dvc", "plots", "show", "--out", "plots_html"], smoke_repo)
    page = (smoke_repo / "plots_html/index.html").read_text()
    assert "val_accuracy" in page and "baseline_confusion.png" in page

    # An experiment from the command line, without editing params.yaml.
    run(["git", "add", "-A"], smoke_repo)
    run(["git", "commit", "-qm", "regularized dropout 0.4"], smoke_repo)
    experiment = run(["dvc", "exp", "run", "-S", "train.baseline.epochs=1"], smoke_repo)
    ran = set(re.findall(r"Running stage '([^']+)'", experiment.stdout))
    assert ran == {"train@baseline", "evaluate@baseline", "register", "report"}, experiment.stdout
    assert json.loads((smoke_repo / "reports/metrics/baseline.json").read_text())["epochs_run"] == 1
