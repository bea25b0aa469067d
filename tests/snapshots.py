"""What a smoke run leaves, captured when it ends (tests/smoke_runs.py takes it), before any test changes its copy:
the engine's output and logs, its MLflow runs, every model's weights, metrics and predictions, dvc.lock, the
hashes of the files in git, and the profile's job records. A later test compares with this, never with the copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from conftest import run
from fashion_mlp.io import sha256_file
from fashion_mlp.profiling import sampler

MODELS = ("baseline", "regularized", "cnn", "tuned")


@dataclass
class Snapshot:
    """One engine invocation and what it left, kept before later tests change the copy."""

    repo: Path
    output: str  # the engine's stdout and stderr
    logs: str  # every job log under logs/ (Snakemake's)
    run_ids: set[str]  # the MLflow runs it created
    weights: dict[str, list] = field(repr=False)  # model -> its weight arrays
    metrics: dict[str, dict] = field(repr=False)  # model -> test metrics
    predictions: dict[str, bytes] = field(repr=False)
    lock: str = field(repr=False)  # dvc.lock: the hash of every output, deps and params
    versioned: dict[str, str] = field(repr=False)  # sha256 of every file in git (dvc.lock, metrics, summary, ...)
    tree: str = ""  # the commit's tree (git rev-parse HEAD^{tree}): the files the run started from
    profile: str = field(default="", repr=False)  # reports/timings/profile.md, drawn by Snakemake's onsuccess
    profile_jobs: list[dict] = field(default_factory=list, repr=False)  # the newest run's job records


def mlflow_runs(repo: Path) -> tuple:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fashion-mnist-mlp")
    assert experiment is not None, "the experiment was not created in <repo>/mlflow.db"
    assert experiment.artifact_location == (repo / "mlartifacts").as_uri()
    return client, client.search_runs([experiment.experiment_id], max_results=10_000)


def run_statuses(repo: Path) -> dict[str, str]:
    """{run id: status} of every MLflow run in the copy's store (none before its first run)."""
    if not (repo / "mlflow.db").exists():
        return {}
    _, runs = mlflow_runs(repo)
    return {r.info.run_id: r.info.status for r in runs}


def model_weights(repo: Path, models=MODELS) -> dict[str, list]:
    import keras

    return {
        model: keras.saving.load_model(repo / f"models/{model}.keras", safe_mode=True).get_weights() for model in models
    }


def hashes(repo: Path, paths) -> dict[str, str]:
    return {path: sha256_file(repo / path) for path in paths}


def snapshot(repo: Path, output: str, runs_before: set[str], models=MODELS) -> Snapshot:
    tracked = run(["git", "ls-files", "-z"], repo).stdout.split("\0")
    return Snapshot(
        repo=repo,
        output=output,
        logs="".join(p.read_text(errors="replace") for p in sorted(repo.glob("logs/**/*.log"))),
        run_ids=set(run_statuses(repo)) - runs_before,
        weights=model_weights(repo, models),
        metrics={model: json.loads((repo / f"reports/metrics/{model}.json").read_text()) for model in models},
        predictions={m: (repo / f"reports/predictions/{m}.csv").read_bytes() for m in models},
        lock=(repo / "dvc.lock").read_text(),
        versioned=hashes(repo, filter(None, tracked)),
        tree=run(["git", "rev-parse", "HEAD^{tree}"], repo).stdout.strip(),
        profile=profile.read_text() if (profile := repo / "reports/timings/profile.md").exists() else "",
        profile_jobs=newest_profile_jobs(repo),
    )


def newest_profile_jobs(repo: Path) -> list[dict]:
    """The job records (fashion_mlp/profiling) of the newest profiled run in `repo`, if any."""
    run = sampler.newest_run(repo / "reports/timings/runs")
    return [json.loads(p.read_text()) for p in sampler.job_records(run)] if run else []
