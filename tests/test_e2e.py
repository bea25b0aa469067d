"""End to end on real Fashion-MNIST (a 3000-image subset, 2 epochs), under both engines.

Three fresh copies of the repository, as users' clones would be: one run by Snakemake with 4
parallel jobs, one by DVC one stage at a time, one by Snakemake through the cluster-generic
profile (the search's model only: tests/smoke_runs.py says why). A run takes minutes, so each
copy is run once, in the background from the session's start (tests/smoke_runs.py), and the
tests of an engine then go through its copy in file order: the run itself, a bad params edit,
a push/pull round trip (DVC), a SIGKILL in the middle of a training and the README's command
to resume. The three runs give the same bytes; so do the resumed ones. Whatever a later test
compares with (models' weights, metrics, logs, MLflow runs) is captured when a run ends, so no
test depends on what came after it.
Each test leaves its copy complete and up to date for the next.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from conftest import assert_png, edit_params, engine_env, run
from fashion_mlp.data import CLASS_NAMES, RAW_FILES
from fashion_mlp.io import sha256_file
from fashion_mlp.machine import label, machine
from fashion_mlp.profiling.marks import TRAINING_MARKS
from smoke_runs import CLUSTER_TARGET, MODELS, Snapshot, hashes, mlflow_runs, run_statuses, snapshot
from test_card import check_model_card
from test_ecosystem import check_mlflow_lineage, check_queue
from test_explain import check_explain_outputs
from test_model_kinds import check_cnn_model
from test_predict import check_champion_predicts
from test_register import check_registry_aliases
from test_report_comparison import check_comparison
from test_report_statistics import check_uncertainty

pytestmark = pytest.mark.e2e
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


# --- Snakemake: one copy, its run, a bad edit, a kill -------------------------------------


def test_snakemake_end_to_end(snakemake_repo: Path, snakemake_first: Snapshot, tmp_path: Path) -> None:
    repo, output = snakemake_repo, snakemake_first.output
    done = re.findall(r"^(\d+) of (\d+) steps \(100%\) done$", output, flags=re.M)
    assert done and done[-1][0] == done[-1][1] and int(done[-1][1]) >= 12, "every job of the run finished"
    assert "Error in rule" not in output
    for text in (output, snakemake_first.logs):
        assert "database is locked" not in text
    assert_ran_in_parallel(output)
    assert snakemake_first.run_ids, "the run logged to MLflow"
    assert_outputs(repo)
    assert_tuning_outputs(repo)
    assert_demo_outputs(repo)
    assert_mlflow(repo, engine="snakemake")
    check_uncertainty(repo)
    check_explain_outputs(repo)
    check_mlflow_lineage(repo)
    check_champion_predicts(repo, tmp_path / "pictures")  # the registered champion, through `fashion-mlp predict`
    check_cnn_model(repo)
    check_registry_aliases(repo)
    check_model_card(repo)
    check_comparison(repo)
    check_profile(snakemake_first)
    # Snakemake's onsuccess brought DVC's lock up to date: nothing left to reproduce.
    assert dvc_status(repo) == {}
    run(["snakemake", "--report", "reports/report.html"], repo)
    html = (repo / "reports/report.html").read_text(errors="replace")
    assert "tuned_confusion.png" in html and "tuning_trials.png" in html and "model_comparison.png" in html
    again = run(["snakemake", "--cores", "2", "--dry-run"], repo)
    assert "Nothing to be done" in again.stdout + again.stderr
    # A params.yaml edit reaches Snakemake through the rules' params: only that model reruns.
    original = (repo / "params.yaml").read_text()
    edit_params(repo, {"train.regularized.dropout": [0.0, 0.4]})
    try:
        plan = run(["snakemake", "--cores", "2", "--dry-run", "--quiet", "rules"], repo).stdout
    finally:
        (repo / "params.yaml").write_text(original)  # the next tests start from the run's params
    planned = dict(re.findall(r"^(\w+)\s+(\d+)$", plan, flags=re.M))
    assert planned == {
        "train": "1",
        "evaluate": "1",
        "explain": "1",
        "register": "1",
        "card": "1",
        "report": "1",
        "lesson": "1",  # learned_features reads the trained models
        "all": "1",
        "total": "8",
    }, plan


def file_states(repo: Path) -> dict[str, tuple[int, str]]:
    """(mtime, sha256) of every file the pipeline wrote."""
    return {
        str(p.relative_to(repo)): (p.stat().st_mtime_ns, sha256_file(p))
        for top in ("data", "models", "reports")
        for p in sorted((repo / top).rglob("*"))
        if p.is_file()
    }


def test_snakemake_bad_edit_is_refused_before_any_job(snakemake_repo: Path) -> None:
    """The schema stops the run while the Snakefile is read: no job starts, so nothing is lost."""
    repo = snakemake_repo
    before = file_states(repo)
    original = (repo / "params.yaml").read_text()
    edit_params(repo, {"train.baseline.dropout": 1.5})
    try:
        failed = run(["snakemake", "--cores", "all"], repo, check=False)
    finally:
        (repo / "params.yaml").write_text(original)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "params.yaml: 'train.baseline.dropout' = 1.5 is not allowed; expected a number in [0, 1)" in output
    assert "jobid:" not in output, "a job started"
    assert file_states(repo) == before, "the artifacts were never touched"
    again = run(["snakemake", "--cores", "all", "--dry-run"], repo)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_snakemake_killed_mid_training_resumes_with_the_readme_command(
    snakemake_repo: Path, snakemake_first: Snapshot, tmp_path: Path
) -> None:
    """A second and a third invocation on the same store: killed, then resumed. The resumed run's
    files are byte for byte the first run's, as if nothing had happened."""
    repo = snakemake_repo
    runs_before = set(run_statuses(repo))
    # One training forced (with what follows it); kill everything as soon as it is in its first epoch.
    killed = kill_mid_training(
        repo,
        ["snakemake", "--cores", "4", "--forcerun", "models/baseline.keras"],
        tmp_path / "killed.out",
        watched=lambda: [repo / "logs/train/baseline.log"],
    )
    assert "rule train:" in killed
    assert list((repo / ".snakemake/incomplete").iterdir()), "the kill interrupted jobs"
    orphans = running_runs(repo)
    assert orphans, "the killed training left its MLflow run RUNNING"

    resumed = run(["snakemake", "--cores", "all"], repo)  # the README's command, no clean-up first
    output = resumed.stdout + resumed.stderr
    assert "Using workflow specific profile profiles/default" in output
    assert "LockException" not in output
    for run_id in orphans:  # closed by the Snakefile's onstart, before any job
        assert f"run {run_id} was left RUNNING by a process that is gone; marked KILLED" in output
    assert not list((repo / ".snakemake/incomplete").iterdir())
    assert_outputs(repo)
    resumed_snapshot = snapshot(repo, output, runs_before)
    assert_same_weights(snakemake_first.weights, resumed_snapshot.weights)  # as if never interrupted
    assert resumed_snapshot.predictions == snakemake_first.predictions
    assert_same_versioned_files(snakemake_first, resumed_snapshot)
    assert_orphans_closed(repo, orphans)
    assert {s for r, s in run_statuses(repo).items() if r not in orphans} == {"FINISHED"}
    assert dvc_status(repo) == {}


# --- DVC: one copy, a bad edit, a push/pull round trip, a kill ------------------------------


def test_dvc_end_to_end(dvc_repo: Path, dvc_first: Snapshot) -> None:
    assert_outputs(dvc_repo)
    assert_tuning_outputs(dvc_repo)
    assert_demo_outputs(dvc_repo)
    assert_mlflow(dvc_repo, engine="dvc")
    check_uncertainty(dvc_repo)
    check_explain_outputs(dvc_repo)
    check_mlflow_lineage(dvc_repo)
    check_cnn_model(dvc_repo)
    check_registry_aliases(dvc_repo)
    check_model_card(dvc_repo)
    check_comparison(dvc_repo)
    metrics = run(["dvc", "metrics", "show", "--json"], dvc_repo)
    assert "accuracy" in metrics.stdout


def test_dvc_queue_runs_two_queued_experiments_with_two_workers_into_the_one_store(dvc_copy: Path) -> None:
    """`dvc exp run --queue -S ...` twice, then `dvc queue start -j 2` (README: Sweep values in parallel), in
    the second copy of the DVC run: beside the tests of the first, on another worker."""
    dvc_repo = dvc_copy
    figures = check_queue(dvc_repo)
    print(f"\ndvc queue: {figures}")

    # fashion-mlp compare: an experiment against the run it started from (the workspace), read from
    # DVC's cache. Only the baseline's epochs changed; every other model gives the same answers.
    compared = run(["fashion-mlp", "compare", "workspace", "sweep-epochs-3", "--json", "-"], dvc_repo)
    rows = {row["model"]: row for row in json.loads(compared.stdout)["models"]}
    assert list(rows) == list(MODELS), rows.keys()
    changed = rows.pop("baseline")
    assert changed["params_changed"] == ["train.baseline.epochs"] and changed["n"] == 1000
    assert changed["only_a_correct"] + changed["only_b_correct"] > 0 and changed["p_value"] < 1
    for row in rows.values():
        assert (row["p_value"], row["verdict"], row["params_changed"]) == (1.0, "no significant difference at 0.05", [])


def test_same_params_and_seed_give_identical_models_under_both_engines(
    snakemake_first: Snapshot, dvc_first: Snapshot
) -> None:
    """Two fresh clones, one run by Snakemake with 4 parallel jobs, one by DVC one stage at a time.
    It reads the snapshots alone, so it can run beside the tests that change either copy."""
    assert snakemake_first.tree == dvc_first.tree, "the clones hold the same files"
    assert_same_weights(snakemake_first.weights, dvc_first.weights)
    assert dvc_first.metrics == snakemake_first.metrics
    assert dvc_first.predictions == snakemake_first.predictions
    # The same dvc.lock (every output's md5, .keras models included) and the same files in git.
    assert_same_versioned_files(snakemake_first, dvc_first)


def test_dvc_bad_edit_is_refused_before_any_output_is_removed_and_its_revert_runs_nothing_but_the_check(
    dvc_copy: Path,
) -> None:
    """DVC removes a stage's outputs before its command runs, so a value the command refused used to cost
    the model it would have replaced. The `check` stage, which every stage depends on, runs first.
    In the DVC run's second copy, after the queue's experiments (which leave the workspace as it was)."""
    repo = dvc_copy
    outputs = output_files(repo)
    before = hashes(repo, outputs)
    runs_before = set(run_statuses(repo))
    original = (repo / "params.yaml").read_text()

    edit_params(repo, {"train.baseline.dropout": 1.5})
    try:
        failed = run(["dvc", "repro"], repo, check=False)
    finally:
        bad = (repo / "params.yaml").read_text()
        (repo / "params.yaml").write_text(original)  # the next tests start from the run's params
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "params.yaml: 'train.baseline.dropout' = 1.5 is not allowed; expected a number in [0, 1)" in output, output
    assert set(re.findall(r"Running stage '([^']+)'", failed.stdout)) == {"check"}
    assert hashes(repo, outputs) == before, "a good output was removed or changed by a refused edit"
    assert "dropout: 1.5" in bad

    restored = run(["dvc", "repro"], repo)
    assert set(re.findall(r"Running stage '([^']+)'", restored.stdout)) <= {"check"}, restored.stdout
    assert set(run_statuses(repo)) == runs_before, "no new MLflow run: nothing was trained"
    assert hashes(repo, outputs) == before
    assert dvc_status(repo) == {}


def test_dvc_push_then_pull_into_an_empty_cache_gives_back_identical_files(dvc_copy: Path, tmp_path: Path) -> None:
    repo = dvc_copy
    outputs = output_files(repo)
    cached = sorted(path for path, use_cache in outputs.items() if use_cache)
    before = hashes(repo, outputs)
    run(["dvc", "remote", "add", "--default", "local", str(tmp_path / "remote")], repo)
    run(["dvc", "push"], repo)

    shutil.rmtree(repo / ".dvc/cache")
    for path in cached:  # the cache: false outputs (metrics, summary, demos' text) are git's to version
        (repo / path).unlink()
    assert dvc_status(repo), "DVC sees the outputs missing"
    run(["dvc", "pull"], repo)

    assert hashes(repo, outputs) == before, "every artifact is back, byte for byte"
    assert dvc_status(repo) == {}
    assert json.loads(run(["dvc", "status", "--cloud", "--json"], repo).stdout) == {}


def lock_holders(repo: Path) -> set[int]:
    """The pids in DVC's path lock file, .dvc/tmp/rwlock."""
    lock = json.loads((repo / ".dvc/tmp/rwlock").read_text())
    holders = [info for info in lock.get("write", {}).values()]
    holders += [info for infos in lock.get("read", {}).values() for info in infos]
    return {info["pid"] for info in holders}


def test_dvc_killed_mid_training_resumes_and_reruns_only_what_changed(
    dvc_repo: Path, dvc_first: Snapshot, tmp_path: Path
) -> None:
    repo = dvc_repo
    baseline = (repo / "models/baseline.keras").read_bytes()
    regularized = (repo / "models/regularized.keras").read_bytes()

    edit_params(repo, {"train.regularized.dropout": [0.0, 0.4]})
    diff = run(["dvc", "params", "diff", "--json"], repo)
    assert "train.regularized.dropout" in diff.stdout and "baseline" not in diff.stdout
    # register and report track train: for its list of models (a removed entry's files stay behind).
    # check reads every section: it runs first after any params edit (and changes nothing downstream).
    # model_lesson@learned_features reads every trained model, and train for their names.
    changed = {"check", "train@regularized", "register", "card", "report", "model_lesson@learned_features"}
    assert set(dvc_status(repo)) == changed

    out = tmp_path / "killed.out"
    killed = kill_mid_training(repo, ["dvc", "repro"], out, watched=lambda: [out])
    assert "Running stage 'train@regularized'" in killed
    assert lock_holders(repo), "the killed DVC left its locks behind"
    orphans = running_runs(repo)
    assert orphans, "the killed training left its MLflow run RUNNING"

    rerun = run(["dvc", "repro"], repo)  # the README's command, no clean-up first
    ran = set(re.findall(r"Running stage '([^']+)'", rerun.stdout))
    expected = {  # not check: the killed run had passed it before it started train@regularized
        "train@regularized",
        "evaluate@regularized",
        "explain@regularized",
        "register",
        "card",
        "report",
        "model_lesson@learned_features",
    }
    assert ran == expected, rerun.stdout
    assert "had been killed. Auto removed it from the lock file" in rerun.stdout + rerun.stderr
    # DVC drops a dead process's entries lazily, from the paths it touches; those left block nothing.
    assert not {pid for pid in lock_holders(repo) if psutil.pid_exists(pid)}, "a live process holds a lock"
    assert (repo / "models/baseline.keras").read_bytes() == baseline
    assert (repo / "models/regularized.keras").read_bytes() != regularized
    assert dvc_status(repo) == {}
    assert_orphans_closed(repo, orphans)


def test_dvc_plots_an_experiment_and_a_preset_from_the_command_line(dvc_repo: Path, dvc_first: Snapshot) -> None:
    repo = dvc_repo
    run(["dvc", "plots", "show", "--out", "plots_html"], repo)
    page = (repo / "plots_html/index.html").read_text()
    assert "val_accuracy" in page and "baseline_confusion.png" in page

    # An experiment from the command line, without editing params.yaml.
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "the state the tests left"], repo)
    # A demos param: the cheapest rerun (demos, then report); the queue's experiments set a training's.
    experiment = run(["dvc", "exp", "run", "-S", "demos.activation_points=[-4,0,4]"], repo)
    ran = set(re.findall(r"Running stage '([^']+)'", experiment.stdout))
    assert ran == {"check", "demos", "report"}, experiment.stdout
    table = (repo / "reports/demos/activations.csv").read_text().splitlines()
    assert [float(row.split(",")[0]) for row in table[1:]] == [-4.0, 0.0, 4.0], table

    # The same change as a preset (docs/models.md): a file of overrides, one command, a temporary
    # copy that leaves the workspace alone, and a record that the report shows as a row.
    preset = {"description": "two points", "model": "baseline", "set": {"demos.activation_points": [-3, 3]}}
    (repo / "presets/two-points.yaml").write_text(yaml.safe_dump(preset))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "the experiment above, and a preset"], repo)
    ran = run(["fashion-mlp", "preset", "two-points"], repo)
    assert set(re.findall(r"Running stage '([^']+)'", ran.stdout)) == {"check", "demos", "report"}, ran.stdout
    record = json.loads((repo / "reports/presets/two-points.json").read_text())
    assert record["command"] == "dvc exp run --temp -n two-points -S demos.activation_points=[-3,3]"
    assert record["metrics"] == json.loads((repo / "reports/metrics/baseline.json").read_text())
    shown = run(["git", "show", f"{record['experiment_commit']}:reports/demos/activations.csv"], repo).stdout
    assert [float(row.split(",")[0]) for row in shown.splitlines()[1:]] == [-3.0, 3.0], shown
    assert (repo / "reports/demos/activations.csv").read_text().splitlines() == table, "the workspace moved"
    assert run(["git", "status", "--porcelain"], repo).stdout.split() == ["??", "reports/presets/two-points.json"]
    run(["dvc", "repro", "report"], repo)
    assert "| baseline (preset two-points) |" in (repo / "reports/summary.md").read_text()


def test_a_new_model_is_one_params_entry_under_both_engines_and_removing_it_removes_its_row(
    dvc_repo: Path, dvc_first: Snapshot
) -> None:
    """Adding a model is one entry under train: in params.yaml, nothing else: both engines plan its
    train, evaluate and explain jobs, and after a run the summary has its row. Removing the entry
    removes the row and the candidate, though the removed model's files are still on disk. Last of the DVC
    copy's tests: the leftover files would make later experiments there recheck register and card."""
    repo = dvc_repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    block = dict(params["train"]["baseline"], hidden=[48])
    text = (repo / "params.yaml").read_text()
    edit_params(repo, {"train.wide": block})  # the only edit: no dvc.yaml, rule or code change

    stages = run(["dvc", "stage", "list"], repo).stdout
    assert all(f"{stage}@wide " in stages for stage in ("train", "evaluate", "explain")), stages
    planned = run(["snakemake", "--dry-run", "--cores", "2"], repo).stdout
    for made in ("models/wide.keras", "reports/metrics/wide.json", "reports/explain/wide.json"):
        assert made in planned, made

    ran = set(re.findall(r"Running stage '([^']+)'", run(["dvc", "repro"], repo).stdout))
    lesson = "model_lesson@learned_features"  # it reads every trained model
    assert ran == {"check", "train@wide", "evaluate@wide", "explain@wide", "register", "card", "report", lesson}, ran
    summary = (repo / "reports/summary.md").read_text()
    assert re.search(r"^\| wide \| mlp \| 0\.\d{4} \| 0\.\d{4} \|", summary, flags=re.M), summary[:2000]
    candidates = json.loads((repo / "reports/champion.json").read_text())["candidates"]
    assert "wide" in {c["model"] for c in candidates}

    (repo / "params.yaml").write_text(text)  # the entry removed; its files stay in the workspace
    assert (repo / "reports/metrics/wide.json").exists() and (repo / "models/wide.keras").exists()
    assert "@wide" not in run(["dvc", "stage", "list"], repo).stdout
    assert "wide" not in run(["snakemake", "--dry-run", "--cores", "2"], repo).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", run(["dvc", "repro"], repo).stdout))
    assert ran == {"check", "register", "card", "report", lesson}, ran
    assert "| wide |" not in (repo / "reports/summary.md").read_text()
    candidates = json.loads((repo / "reports/champion.json").read_text())["candidates"]
    assert {c["model"] for c in candidates} == set(MODELS)


# --- Snakemake on a cluster executor ------------------------------------------------------


def test_cluster_generic_profile_runs_every_job_as_a_separate_submission_with_the_local_results(
    cluster_first: Snapshot, snakemake_first: Snapshot
) -> None:
    """profiles/cluster-generic hands every job to workflow/scripts/cluster/submit.py, which starts it
    detached, in another working directory, with a login-like environment: nothing is inherited
    from the Snakemake process. The results equal the local run's, bit for bit."""
    repo, cluster = cluster_first.repo, cluster_first
    jobs = [
        json.loads(p.read_text()) | {"exit": (p.parent / "exit").read_text().strip()}
        for p in sorted((repo / ".snakemake/cluster-jobs").glob("*/job.json"))
    ]
    # The run makes CLUSTER_TARGET: download, prepare, the search (its chief and workers: one group
    # job), tune's retrain and its evaluation (`all` is not asked for).
    assert len(jobs) == 5 and all(job["exit"] == "0" for job in jobs), jobs
    for job in jobs:
        assert not {k for k in job["env"] if k.startswith(("FASHION_MLP_", "MLFLOW_", "OMP_", "SNAKEMAKE_"))}
    assert {job["threads"] for job in jobs} == {1, 2}, "the rules' threads reach the submit command"
    client, runs = mlflow_runs(repo)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert_traceable(runs, sha256_file(repo / "data/prepared/train.npz"))
    tuned = [r for r in runs if r.data.tags.get("model") == "tuned"]
    assert len(tuned) == 1 and tuned[0].data.tags["stage"] == "train,evaluate"
    assert_tuning_runs(client, runs, tuned[0])
    # Bit for bit the local run's: the weights, the predictions and every file the jobs wrote.
    assert_same_weights(snakemake_first.weights, cluster.weights, models=["tuned"])
    assert cluster.metrics == {"tuned": snakemake_first.metrics["tuned"]}
    assert cluster.predictions == {"tuned": snakemake_first.predictions["tuned"]}
    made = ["models/tuned.keras", "reports/metrics/tuned.json", "reports/tuning/best_hparams.json", CLUSTER_TARGET]
    assert hashes(repo, made) == hashes(snakemake_first.repo, made)
