"""What the end-to-end tests check in a smoke run's copy (test_e2e_snakemake.py, test_e2e_dvc.py): the
outputs, the MLflow runs and their lineage, the tuning and the demos, that two runs hold the same files and
weights, a SIGKILL in the middle of a training with what it leaves, and Snakemake's job timeline.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from conftest import assert_png, engine_env, run
from fashion_mlp import forkserver
from fashion_mlp.data import CLASS_NAMES, RAW_FILES
from fashion_mlp.io import sha256_file
from fashion_mlp.machine import label, machine
from fashion_mlp.profiling.marks import TRAINING_MARKS
from snapshots import MODELS, Snapshot, mlflow_runs, run_statuses

UNCERTAINTY_METRICS = (
    "test_accuracy_ci_low",
    "test_accuracy_ci_high",
    "test_macro_f1_ci_low",
    "test_macro_f1_ci_high",
    "temperature",
    "test_ece",
    "test_ece_scaled",
    "test_nll_scaled",
)


def assert_outputs(repo: Path) -> None:
    for name in RAW_FILES:
        assert (repo / "data/raw" / name).is_file()
    assert not list((repo / "data/raw").glob(".*")), "a temporary file was left in data/raw"
    stats = json.loads((repo / "reports/data_stats.json").read_text())
    assert stats["counts"] == {"train": 2700, "val": 300, "test": 1000}
    for model in MODELS:
        assert (repo / f"models/{model}.keras").is_file()
        history = (repo / f"reports/history/{model}.csv").read_text().splitlines()
        assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,kept"  # no wall times
        assert len(history) == 1 + 2
        assert sum(int(line.rsplit(",", 1)[1]) for line in history[1:]) == 1, "exactly one kept epoch"
        metrics = json.loads((repo / f"reports/metrics/{model}.json").read_text())
        assert metrics["model"] == model and metrics["n_test"] == 1000
        assert 0.5 < metrics["accuracy"] <= 1 and metrics["loss"] > 0 and 0 < metrics["macro_f1"] <= 1
        assert set(metrics["per_class"]) == set(CLASS_NAMES)
        assert metrics["epochs_run"] == 2
        for kind in ("confusion", "curves", "predictions", "reliability"):
            assert (repo / f"reports/figures/{model}_{kind}.png").read_bytes()[:4] == b"\x89PNG"
        predictions = (repo / f"reports/predictions/{model}.csv").read_text().splitlines()
        assert predictions[0] == "actual,predicted" and len(predictions) == 1 + 1000
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for name in [*params["lessons"], *params["model_lessons"]]:
        lesson = json.loads((repo / f"reports/lessons/{name}.json").read_text())
        assert lesson["lesson"] == name and lesson["claim"] and isinstance(lesson["holds"], bool), lesson
        if name in params["model_lessons"]:  # it read every trained model (its verdict is the models')
            assert set(lesson["figures"]) >= {*params["train"], "tuned"}, lesson["figures"]
        else:
            assert lesson["holds"], lesson
        assert_png(repo / f"reports/figures/lesson_{name}.png")
    summary = (repo / "reports/summary.md").read_text()
    assert "## The tutorial's claims, checked" in summary
    for needle in (
        "| baseline |",
        "| regularized |",
        "0.8833",
        "0.8700",
        "0.8660",
        "0.8710",
        "figures/baseline_confusion.png",
        "figures/model_comparison.png",
    ):
        assert needle in summary


def assert_mlflow(repo: Path, engine: str) -> None:
    client, runs = mlflow_runs(repo)
    model_runs = [r for r in runs if r.data.tags.get("model") in MODELS]
    by_model = {r.data.tags["model"]: r for r in model_runs}
    assert sorted(by_model) == sorted(MODELS) and len(model_runs) == len(MODELS), "a run per model"
    assert all(r.info.status == "FINISHED" for r in runs)
    assert_traceable(runs, sha256_file(repo / "data/prepared/train.npz"))
    assert_tuning_runs(client, runs, by_model["tuned"])
    assert_champion(client, repo)
    data_sha = sha256_file(repo / "data/prepared/train.npz")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for model, r in by_model.items():
        assert r.info.status == "FINISHED"
        if model in params["train"]:
            spec = params["train"][model]
            assert r.data.params["learning_rate"] == str(spec["learning_rate"])
            assert r.data.params["hidden" if spec.get("kind", "mlp") == "mlp" else "conv"] == str(
                spec.get("hidden", spec.get("conv"))
            )
        assert r.data.params["epochs"] == "2" and r.data.params["seed"] == str(params["seed"])
        history = client.get_metric_history(r.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2], "per-epoch metrics with step = epoch"
        metrics = json.loads((repo / f"reports/metrics/{model}.json").read_text())
        assert r.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
        assert r.data.metrics["test_macro_f1"] == pytest.approx(metrics["macro_f1"])
        for name in UNCERTAINTY_METRICS:
            assert name in r.data.metrics, f"{model}: no {name} in MLflow"
        tags = r.data.tags
        assert tags["engine"] == engine and tags["stage"] == "train,evaluate"
        assert tags["data_sha256"] == data_sha
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", tags["git_commit"])
        assert tags["model_sha256"] == sha256_file(repo / f"models/{model}.keras")
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id, "figures")}
        assert {f"figures/{model}_confusion.png", f"figures/{model}_reliability.png"} <= artifacts
        logged = client.search_logged_models([r.info.experiment_id])
        assert any(m.source_run_id == r.info.run_id for m in logged), "the model is logged to its run"


def assert_traceable(runs, data_sha: str) -> None:
    """Every run, Hyperband trials included, names its exact inputs and the process that ran it."""
    for r in runs:
        tags = r.data.tags
        missing = {"data_sha256", "git_commit", "host", "pid", "cpu"} - set(tags)
        assert not missing, (
            f"run {r.info.run_name!r} lacks the tags {sorted(missing)}"
            " (hyperband.py: trial runs need tracking.base_tags too)"
        )
        assert tags["data_sha256"] == data_sha, r.info.run_name
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", tags["git_commit"]), r.info.run_name
        assert tags["cpu"] == label(machine()), r.info.run_name


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
    assert champion["model_sha256"] == sha256_file(repo / f"models/{champion['champion']}.keras")
    # The version and run id stay in MLflow (they depend on the store's past, not on the inputs).
    version = client.get_model_version_by_alias("fashion-mnist-classifier", "champion")
    assert client.get_run(version.run_id).data.tags["model_sha256"] == champion["model_sha256"]


def assert_tuning_outputs(repo: Path) -> None:
    trials = (repo / "reports/tuning/trials.csv").read_text().splitlines()
    # No KerasTuner trial id or worker: they follow the order trials were handed out.
    assert trials[0].startswith("draw,status,val_accuracy,epochs,bracket,round,layers,units")
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


def assert_same_versioned_files(expected: Snapshot, actual: Snapshot) -> None:
    """Every output's hash (all in dvc.lock) and every file in git is the same, byte for byte."""
    assert actual.lock == expected.lock, "dvc.lock differs"
    differ = sorted(path for path in expected.versioned if actual.versioned.get(path) != expected.versioned[path])
    assert not differ, f"versioned files differ: {differ}"


def assert_same_weights(expected: dict[str, list], actual: dict[str, list], models=MODELS) -> None:
    """Bit-identical models, compared array by array (a test that names the differing array)."""
    for model in models:
        assert len(actual[model]) == len(expected[model]), model
        for i, (want, got) in enumerate(zip(expected[model], actual[model], strict=True)):
            assert want.dtype == got.dtype and want.shape == got.shape, (model, i)
            assert np.array_equal(want, got), f"{model}: weight array {i} differs"


def output_files(repo: Path) -> dict[str, bool]:
    """Every output that dvc.yaml declares, and whether DVC caches it (cache: false ones live in git)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return {
            str(Path(o.fs_path).relative_to(repo)): bool(o.use_cache)
            for stage in dvc_repo.index.stages
            for o in stage.outs
        }


def dvc_status(repo: Path) -> dict:
    return json.loads(run(["dvc", "status", "--json"], repo).stdout)


# --- SIGKILL in the middle of a training --------------------------------------------------


def in_first_epoch(path: Path, since: float) -> bool:
    """A training log written since `since` that has begun its first epoch."""
    try:
        return path.stat().st_mtime >= since and "Epoch 1/" in path.read_text(errors="replace")
    except FileNotFoundError:
        return False


def kill_mid_training(
    repo: Path, cmd: list[str], out: Path, watched: Callable[[], list[Path]], timeout: float = 600
) -> str:
    """Run `cmd` in a process group of its own; SIGKILL the whole group once a training is in its
    first epoch, as a power cut or the OOM killer would. Returns what the engine printed."""
    started = time.time()
    with open(out, "w") as sink:
        engine = subprocess.Popen(
            cmd, cwd=repo, env=engine_env(), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        while not any(in_first_epoch(path, started) for path in watched()):
            assert engine.poll() is None, f"{cmd} ended before a training began:\n{out.read_text()[-3000:]}"
            assert time.time() - started < timeout, f"no training began within {timeout} s"
            time.sleep(0.1)
    finally:
        os.killpg(engine.pid, signal.SIGKILL)  # the engine and every job it started
        engine.wait(timeout=60)
    wait_until_gone(engine.pid)
    return out.read_text()


def wait_until_gone(group: int, timeout: float = 30) -> None:
    """Wait until no live process of the killed group is left (the resume must not race with one)."""
    deadline = time.time() + timeout
    while True:
        alive = []
        for process in psutil.process_iter(["status"]):
            try:
                if os.getpgid(process.pid) == group and process.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(process.pid)
            except (ProcessLookupError, psutil.Error):
                continue
        if not alive:
            return
        assert time.time() < deadline, f"processes {alive} survived SIGKILL"
        time.sleep(0.1)


def running_runs(repo: Path) -> set[str]:
    return {run_id for run_id, status in run_statuses(repo).items() if status == "RUNNING"}


def assert_orphans_closed(repo: Path, orphans: set[str]) -> None:
    statuses = run_statuses(repo)
    assert {statuses[run_id] for run_id in orphans} == {"KILLED"}, "the killed trainings' runs are KILLED"
    assert "RUNNING" not in statuses.values(), "no run is left RUNNING"


# --- Snakemake's job timeline -------------------------------------------------------------

# A job's block; the jobs of a group (the search's chief and workers) are indented by 4.
JOB_START = re.compile(
    r"^(?P<indent> {0,4})\[([^\]]+)\]\n(?P=indent)(?:local)?rule (\w+):\n"
    r"(?:(?P=indent)    .*\n)*?(?P=indent)    jobid: (\d+)$",
    re.M,
)
JOB_END = re.compile(r"^\[([^\]]+)\]\nFinished jobid: (\d+) \(Rule: (\w+)\)$", re.M)


@dataclass
class Job:
    rule: str
    start: int  # where Snakemake's log says it started, and finished: the log's order, not its clock
    end: int

    def overlaps(self, other: Job) -> bool:
        return self.start < other.end and other.start < self.end


def job_timeline(output: str) -> list[Job]:
    """Every job of a Snakemake run, as the positions of its start and end in the run's log."""
    starts = {m.group(4): (m.group(3), m.start()) for m in JOB_START.finditer(output)}
    ends = {m.group(2): m.start() for m in JOB_END.finditer(output)}
    assert starts and set(starts) == set(ends), "every job that started finished"
    return [Job(rule, start, ends[jobid]) for jobid, (rule, start) in starts.items() if rule != "all"]


def assert_ran_in_parallel(output: str) -> None:
    """The two trainings (or a training and the search), the evaluations and the demos overlapped: a job
    started before another one's end in Snakemake's own account, whatever the machine's speed."""
    jobs = job_timeline(output)
    trainings = [j for j in jobs if j.rule in ("train", "tune_worker", "tune_finish")]
    assert any(a.overlaps(b) for a in trainings for b in trainings if a is not b), "trainings ran one by one"
    for rule in ("evaluate", "demos"):
        assert any(a.overlaps(b) for a in jobs if a.rule == rule for b in jobs if b is not a), (
            f"no {rule} job ran beside another job"
        )


def check_profile(first: Snapshot) -> None:
    """Every job of the run recorded itself (true CPU, peak RSS, marks), and onsuccess drew the profile:
    each training's phases, the trials' medians, the machine's busy cores."""
    jobs = {(j["command"], j["label"]) for j in first.profile_jobs}
    shell_jobs = re.findall(r"^\s*(?:local)?rule (\w+):$", first.output, flags=re.M)
    assert len(first.profile_jobs) == sum(rule != "all" for rule in shell_jobs) + 1, (
        "one record per job, and init-tracking"
    )
    assert {("train", m) for m in MODELS if m != "tuned"} | {("tune", "worker0"), ("tune", "chief")} <= jobs
    for job in first.profile_jobs:
        assert job["cpu_seconds"] > 0 and job["wall_seconds"] > 0 and 50 < job["max_rss_mb"] < 4000, job
        if job["command"] == "train":
            names = [name for name, _ in job["marks"]]
            assert names == list(TRAINING_MARKS), names  # each once, in order
    text = first.profile
    assert text.startswith("# Where the last run's time went") and "The machine's cores were" in text
    assert re.search(r"median \d+\.\d s over 4 trainings", text), "train's three and the search's retrain"
    assert re.search(r"### The search's \d+ trials: median seconds per phase", text)
    assert "| train cnn |" in text and "| tune finish |" in text


def assert_stages_forked(repo: Path, output: str) -> None:
    """A run under `make repro` (python -m fashion_mlp.forkserver -- dvc repro): each stage that ran and that
    waits for the server was a fork of it (its log names each fork), no job was declined, and the only other
    forks are the search's chief and workers, which `tune --role all` starts. `download` and `prepare` wait
    for no server (START_WAIT): at a run's start it is still importing, so they may run on their own."""
    ran = [shlex.split(c)[1:] for c in re.findall(r"^> (fashion-mlp .+)$", output, flags=re.M)]
    expected = Counter(" ".join(a[:3]) for a in ran if forkserver.served(a) and forkserver.start_wait(a) > 0)
    log = (repo / "logs" / "forkserver.log").read_text()
    forked = Counter(re.findall(r"^forkserver: (.+): forked, pid \d+$", log, flags=re.M))
    tail = f"\n--- logs/forkserver.log\n{log[-4000:]}"
    assert len(expected) > 5 and not expected - forked, f"not forked: {sorted((expected - forked).elements())}{tail}"
    assert all(job.startswith("tune ") for job in forked - expected), f"forked: {sorted(forked.elements())}{tail}"
    assert "runs on its own" not in log, tail
