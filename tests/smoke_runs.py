"""The smoke pipelines that the end-to-end tests inspect, started in the background at the session's start.

A smoke run takes one to three minutes, much of it on one core: DVC runs one stage at a time, and
each job spends seconds importing TensorFlow. So, once pytest knows which runs the selected tests
need, it copies the repository once per run and starts them all side by side, moves the e2e tests to
the end, and runs the other tests meanwhile. A test gets a run through its fixture (`snakemake_first`,
`dvc_first`, `cluster_first`, or `snakemake_repo` / `dvc_repo` for the copy), which waits for that run
and captures what it left (a Snapshot) before any test touches the copy.

The runs are fresh clones of one state of the working tree, made together, so that an edit to the
tree while the tests run cannot make the engines' inputs differ.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import DEBIAN_DATA, engine_env, run, smoke_copy
from fashion_mlp.io import sha256_file

MODELS = ("baseline", "regularized", "cnn", "tuned")
RUN_TIMEOUT = 1200  # seconds; three runs share two cores

# One fresh copy per run. 4 cores for Snakemake: two 2-thread jobs at a time (trainings, search,
# evaluations) plus the 1-thread ones, all on one SQLite store. The cluster-generic profile hands
# every job to workflow/scripts/cluster/submit.py, detached, with a login-like environment.
# The cluster run makes the search's model only: the jobs that matter on a batch system (a pipe group
# of chief and workers, 1- and 2-thread jobs, detached processes logging to one store) at half the
# cost of a whole run; that every output is the same under any engine is checked by the other two.
CLUSTER_TARGET = "reports/predictions/tuned.csv"  # not in git: a clone lacks it, so the jobs run
COMMANDS = {
    "snakemake": ["snakemake", "--cores", "4"],
    "dvc": ["dvc", "repro"],
    "cluster": ["snakemake", "--profile", "profiles/cluster-generic", CLUSTER_TARGET],
}
MODELS_OF = {"cluster": ("tuned",)}  # the models a run makes, if not all of MODELS
FIXTURES = {"snakemake_first": "snakemake", "dvc_first": "dvc", "cluster_first": "cluster"}


# --- what a run leaves, captured when it ends --------------------------------------------


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
    )


# --- the background runs -------------------------------------------------------------------


@dataclass
class BackgroundRun:
    name: str
    repo: Path
    process: subprocess.Popen
    out: Path
    started: float

    def wait(self) -> Snapshot:
        try:
            code = self.process.wait(timeout=max(1.0, self.started + RUN_TIMEOUT - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            raise AssertionError(f"the {self.name} smoke run took over {RUN_TIMEOUT} s") from None
        output = self.out.read_text(errors="replace")
        cmd = " ".join(COMMANDS[self.name])
        assert code == 0, f"{cmd} failed ({code}) in {self.repo}\n--- output\n{output[-8000:]}"
        return snapshot(self.repo, output, set(), MODELS_OF.get(self.name, MODELS))


class SmokeRuns:
    """The runs the selected tests need, started together; each waited for and captured once."""

    def __init__(self, names: list[str]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fashion-mlp-smoke-"))
        self.runs: dict[str, BackgroundRun] = {}
        self.snapshots: dict[str, Snapshot] = {}
        copies = {name: smoke_copy(self.root / name / "repo") for name in names}  # all before any run starts
        for name, repo in copies.items():
            out = self.root / name / "engine.out"
            with open(out, "w") as sink:
                process = subprocess.Popen(
                    COMMANDS[name],
                    cwd=repo,
                    env=engine_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a test's killpg of its own engine cannot reach these
                )
            self.runs[name] = BackgroundRun(name, repo, process, out, time.monotonic())

    def result(self, name: str) -> Snapshot:
        if name not in self.runs:
            pytest.fail(f"the {name} smoke run was not started: its test was not seen at collection")
        if name not in self.snapshots:
            self.snapshots[name] = self.runs[name].wait()
        return self.snapshots[name]

    def stop(self, keep: bool) -> None:
        for background in self.runs.values():
            if background.process.poll() is None:
                os.killpg(background.process.pid, 9)
                background.process.wait()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


# --- pytest hooks and fixtures (registered by conftest.py) --------------------------------

_RUNS: SmokeRuns | None = None


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected
def pytest_collection_modifyitems(session, config, items) -> None:
    global _RUNS
    needed = {FIXTURES[name] for item in items for name in getattr(item, "fixturenames", ()) if name in FIXTURES}
    # The runs go in the background now; the tests that wait for them go last, in their files' order.
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
    if needed and DEBIAN_DATA.is_dir() and not config.option.collectonly:
        _RUNS = SmokeRuns([name for name in COMMANDS if name in needed])


def pytest_sessionfinish(session, exitstatus) -> None:
    if _RUNS is not None:
        _RUNS.stop(keep=exitstatus != 0)  # a failed session keeps the copies to look at


def _result(name: str) -> Snapshot:
    if not DEBIAN_DATA.is_dir():
        pytest.skip(f"{DEBIAN_DATA} missing: apt-get install dataset-fashion-mnist (make test does)")
    assert _RUNS is not None, "no smoke run was started"
    return _RUNS.result(name)


@pytest.fixture(scope="session")
def snakemake_first() -> Snapshot:
    return _result("snakemake")


@pytest.fixture(scope="session")
def dvc_first() -> Snapshot:
    return _result("dvc")


@pytest.fixture(scope="session")
def cluster_first() -> Snapshot:
    return _result("cluster")


@pytest.fixture(scope="session")
def snakemake_repo(snakemake_first: Snapshot) -> Path:
    return snakemake_first.repo


@pytest.fixture(scope="session")
def dvc_repo(dvc_first: Snapshot) -> Path:
    return dvc_first.repo
