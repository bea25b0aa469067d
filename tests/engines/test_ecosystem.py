"""Issue 15, the tools' own conventions: MLflow dataset inputs and one invocation id per pipeline run,
DVC's experiment name and model artifacts, DVC experiment queues, one lock for Python 3.11 to 3.13.

The whole-pipeline checks are plain functions for the integrator's end-to-end runs (they are not
collected as tests): check_mlflow_lineage(repo) after any Snakemake or DVC smoke run, and
check_queue(repo) after the DVC smoke run's `dvc repro` (it queues two experiments that rerun
only the baseline's training and what follows it). `snakemake --cores 1`: test_reliability.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import REPO, engine_env, run

# --- one id per pipeline invocation ----------------------------------------------------


@pytest.fixture
def tracking(monkeypatch):
    """fashion_mlp.tracking's lineage module (invocation_id calls its dvc_process), in a clean environment."""
    from fashion_mlp.tracking import lineage

    for var in (lineage.INVOCATION_VAR, "DVC_STAGE", "DVC_EXP_NAME"):
        monkeypatch.delenv(var, raising=False)
    return lineage


class FakeProcess:
    def __init__(self, pid: int, started: float):
        self.pid, self.started = pid, started

    def create_time(self) -> float:
        return self.started


def test_the_snakefile_s_invocation_id_is_used_as_is(tracking, monkeypatch):
    monkeypatch.setenv(tracking.INVOCATION_VAR, "from-the-snakefile")
    assert tracking.invocation_tags() == {"invocation_id": "from-the-snakefile"}


def test_under_dvc_every_stage_of_one_dvc_process_gets_the_same_id(tracking, monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "train@baseline")
    monkeypatch.setattr(tracking, "dvc_process", lambda: FakeProcess(4242, 1700000000.5))
    first = tracking.invocation_id()
    monkeypatch.delenv(tracking.INVOCATION_VAR)  # the next stage: a new process, the same `dvc repro`
    assert tracking.invocation_id() == first
    monkeypatch.delenv(tracking.INVOCATION_VAR)  # the next `dvc repro`
    monkeypatch.setattr(tracking, "dvc_process", lambda: FakeProcess(4243, 1700000100.5))
    assert tracking.invocation_id() != first
    uuid.UUID(first)


def test_by_hand_a_stage_gets_its_own_id_and_exports_it_to_its_processes(tracking):
    import os

    first = tracking.invocation_id()
    assert os.environ[tracking.INVOCATION_VAR] == first  # tune --role all's chief and workers inherit it
    uuid.UUID(first)


def test_dvc_experiment_name_is_tagged(tracking, monkeypatch):
    monkeypatch.setenv(tracking.INVOCATION_VAR, "x")
    monkeypatch.setenv("DVC_EXP_NAME", "sweep-epochs-3")
    assert tracking.invocation_tags() == {"invocation_id": "x", "dvc_exp_name": "sweep-epochs-3"}


# A stage's command: what tracking.temporary_experiment says where DVC runs it, appended to argv[1].
SAY_TEMPORARY = """
import sys
from fashion_mlp.tracking import temporary_experiment
with open(sys.argv[1], "a") as out:
    out.write(f"{temporary_experiment()}\\n")
"""


@pytest.mark.slow
def test_only_an_experiment_in_a_temporary_copy_counts_as_temporary(tmp_path):
    """Real DVC: `dvc exp run --temp` runs the stage in a copy under .dvc/tmp/exps/ with DVC_ROOT on the
    workspace (register then moves no alias: test_register.py); `dvc exp run` and `dvc repro` run it in the
    workspace, whose outputs they change."""
    repo, seen, script = tmp_path / "repo", tmp_path / "seen.txt", tmp_path / "say.py"
    repo.mkdir()
    script.write_text(SAY_TEMPORARY)
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    (repo / "params.yaml").write_text("n: 1\n")
    stage = {"cmd": f"{sys.executable} {script} {seen}", "params": ["n"], "always_changed": True}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"say": stage}}))
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "say"], repo)
    run(["dvc", "exp", "run", "--temp", "-n", "in-a-copy", "-S", "n=2"], repo)
    run(["dvc", "exp", "run", "-n", "in-place", "-S", "n=3"], repo)
    run(["dvc", "repro"], repo)
    assert seen.read_text().split() == ["in-a-copy", "None", "None"]


# A child of a process whose argv[0] is `dvc`, as a stage command is of `dvc repro`.
UNDER_DVC = """
import subprocess, sys
child = "from fashion_mlp.tracking import dvc_process; import os; print(dvc_process().pid, os.getppid())"
subprocess.run([sys.argv[1], "-c", child], check=True)  # sys.executable would now be dvc
"""


def test_dvc_process_is_the_nearest_dvc_ancestor():
    out = subprocess.run(
        ["bash", "-c", 'exec -a dvc "$0" -c "$1" "$0"', sys.executable, UNDER_DVC],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert out[0] == out[1], out


# --- MLflow dataset inputs, read back through MLflow's client ----------------------------------------

LOG_SPLITS = """
import sys
import mlflow
import numpy as np
from fashion_mlp import tracking

tracking.init("lineage")
x, y = np.zeros((6, 28, 28), np.float32), np.arange(6, dtype=np.uint8)
with mlflow.start_run(tags=tracking.base_tags("train", sys.argv[1])) as run:
    tracking.log_datasets(sys.argv[1], {"train": (x[:4], y[:4]), "validation": (x[4:], y[4:])})
print(run.info.run_id)
"""


@pytest.mark.slow  # MLflow creates its SQLite store
def test_splits_are_dataset_inputs_with_name_digest_source_and_the_invocation_tags(tmp_path):
    from mlflow import MlflowClient

    data = tmp_path / "train.npz"
    data.write_bytes(b"stand-in for the prepared file")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = engine_env() | {
        "MLFLOW_TRACKING_URI": uri,
        "FASHION_MLP_ROOT": str(REPO),
        "FASHION_MLP_INVOCATION": "invocation-1",
        "DVC_EXP_NAME": "sweep-1",
        "PYTHONPATH": str(REPO / "workflow"),
    }
    command = [sys.executable, "-c", LOG_SPLITS, str(data)]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_ = MlflowClient(tracking_uri=uri).get_run(proc.stdout.split()[-1])
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    inputs = {i.dataset.name: i for i in run_.inputs.dataset_inputs}
    assert sorted(inputs) == ["train", "validation"]
    for name, context in (("train", "training"), ("validation", "validation")):
        dataset = inputs[name].dataset
        assert dataset.digest == sha[:36] and sha.startswith(dataset.digest)
        assert json.loads(dataset.source) == {"uri": str(data)} and dataset.source_type == "local"
        tags = {t.key: t.value for t in inputs[name].tags}
        assert tags == {"mlflow.data.context": context, "sha256": sha}
    assert json.loads(inputs["train"].dataset.profile)["features_shape"] == [4, 28, 28]
    assert run_.data.tags["invocation_id"] == "invocation-1" and run_.data.tags["dvc_exp_name"] == "sweep-1"


def check_mlflow_lineage(repo: Path) -> None:
    """After a Snakemake or DVC smoke run in `repo` (its own store): every run carries an invocation id;
    those that fit a model read train and validation, the evaluated ones test, each with its file's digest."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=5000)
    assert runs, "no MLflow run"
    digest = {
        name: hashlib.sha256((repo / f"data/prepared/{name}.npz").read_bytes()).hexdigest()[:36]
        for name in ("train", "test")
    }
    for run_ in runs:
        tags = run_.data.tags
        assert tags.get("invocation_id"), f"run {run_.info.run_name} has no invocation_id"
        inputs = {i.dataset.name: i.dataset for i in run_.inputs.dataset_inputs}
        if tags.get("model") == "hyperband-search" or tags.get("reads_data") == "false":
            continue  # the chief's run (its trials read the data), a lesson on toy data
        if tags.get("stage") != "evaluate":  # not a run of its own for a model trained elsewhere (dvc pull)
            assert inputs.keys() >= {"train", "validation"}, (run_.info.run_name, sorted(inputs))
            assert inputs["train"].digest == inputs["validation"].digest == digest["train"]
            assert json.loads(inputs["train"].source)["uri"].endswith("data/prepared/train.npz")
        if "evaluate" in tags.get("stage", ""):
            assert inputs["test"].digest == digest["test"], run_.info.run_name
            assert tags.get("evaluate_invocation_id")
    # One pipeline invocation, one group: the trials share their search's id.
    by_search = {}
    for run_ in runs:
        if run_.data.tags.get("model") == "trial":
            parent = client.get_run(run_.data.tags["mlflow.parentRunId"])
            by_search.setdefault(parent.data.tags["invocation_id"], set()).add(run_.data.tags["invocation_id"])
    assert all(ids == {parent} for parent, ids in by_search.items()), by_search


# --- DVC's model artifacts ---------------------------------------------------------------------------


@pytest.mark.slow  # DVC's index of the real repository (2 s), as test_dag_equality.py
def test_dvc_yaml_declares_the_champion_as_a_model_artifact_made_by_register():
    """Artifacts are a list DVC cannot template, so dvc.yaml names no model there: its one artifact is
    the champion's copy that register writes, whatever model and kind won."""
    from dvc.repo import Repo

    repo = Repo(str(REPO))
    artifacts = repo.artifacts.read()["dvc.yaml"]  # DVC's own parser and checks
    assert {name: a.path for name, a in artifacts.items()} == {"fashion-mnist-classifier": "registered/champion.keras"}
    makers = {out.def_path: stage.addressing for stage in repo.index.stages for out in stage.outs}
    assert makers["registered/champion.keras"] == "register"
    for name, artifact in artifacts.items():
        assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name), name  # DVC's (and Studio's) artifact names
        assert artifact.type == "model" and artifact.desc and "fashion-mnist" in artifact.labels, name


@pytest.mark.slow  # DVC as a subprocess
def test_dvc_artifacts_get_fetches_the_champion_by_name(tmp_path):
    """`dvc artifacts get` on a tiny DVC repo that declares the project's artifacts section."""
    repo = tmp_path / "repo"
    (repo / "registered").mkdir(parents=True)
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    (repo / "registered" / "champion.keras").write_bytes(b"stand-in for the champion")
    run(["dvc", "add", "-q", "registered/champion.keras"], repo)
    artifacts = yaml.safe_load((REPO / "dvc.yaml").read_text())["artifacts"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"artifacts": artifacts}))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "champion"], repo)
    # A version in the model registry is a git tag NAME@vX.Y.Z (what `gto register` makes).
    name = "fashion-mnist-classifier"
    run(["git", "tag", "-a", f"{name}@v1.0.0", "-m", f"Registered {name} v1.0.0"], repo)
    out = tmp_path / "got"
    out.mkdir()
    run(["dvc", "artifacts", "get", str(repo), name, "-o", "champion.keras"], out)
    assert (out / "champion.keras").read_bytes() == b"stand-in for the champion"
    # The registry's listing (gto, which DVC installs) shows the registered version.
    listing = json.loads(run([str(Path(sys.executable).parent / "gto"), "show", "--json"], repo).stdout)
    assert listing[name]["version"] == "v1.0.0" and listing[name]["registered"]


# --- Python 3.11 to 3.13 -----------------------------------------------------------------------------


def test_one_lock_for_every_supported_python():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.14"
    lock = (REPO / "requirements.lock").read_text()
    assert "--universal --python-version 3.11" in lock.splitlines()[1]  # resolved for 3.11 and up
    # shap 0.51.0 is the last release for 3.11: the lock carries both, by marker.
    assert "shap==0.51.0 ; python_full_version < '3.12'" in lock
    assert re.search(r"^shap==0\.52\.\d+ ; python_full_version >= '3\.12'$", lock, re.M)
    assert "uv pip compile" in (REPO / "Makefile").read_text()
    ci = (REPO / ".ci/run").read_text()
    assert "3.12" in ci and "3.13" in ci


@pytest.mark.parametrize("free_gib, stops", [(2, True), (20, False)])
def test_ci_stops_at_once_where_the_disk_is_nearly_full(tmp_path, free_gib, stops):
    """.ci/run names the free space and stops before installing anything where the disk has less than 10 GiB
    (stop 43's CI ran out of space half-way through pip); with enough, it goes on. A copy of it runs in an
    empty folder, with stand-ins for df, apt-get and make on PATH, so nothing is installed or tested."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci/run", tmp_path / ".ci/run")
    tools = tmp_path / "bin"
    tools.mkdir()
    free_kib = free_gib * 1024 * 1024
    scripts = {
        "df": f'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"\necho "vda 1 1 {free_kib} 9% /work"',
        "apt-get": f'echo "apt-get $*" >> {tmp_path}/ran',
        "make": f'echo "make $*" >> {tmp_path}/ran',
    }
    for name, body in scripts.items():
        (tools / name).write_text(f"#!/bin/sh\n{body}\n")
        (tools / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(tmp_path / ".ci/run")], env=env, capture_output=True, text=True)
    ran = (tmp_path / "ran").read_text() if (tmp_path / "ran").exists() else ""
    if stops:
        assert result.returncode == 1, result.stderr
        assert "only 2048 MiB free in /work: CI needs about 10 GiB" in result.stderr
        assert ran == ""
    else:
        assert result.returncode == 0, result.stderr
        assert "make lint" in ran and "make test\n" in ran


def test_a_session_removes_only_the_smoke_copies_failed_sessions_kept_over_a_day_ago(tmp_path):
    """Failed test sessions keep their smoke copies (0.5 GB each) to look at; seven had piled up here. A new
    session removes those older than a day, and leaves younger ones (a running session's among them) and
    folders of other names alone."""
    from smoke_runs import KEPT_FOR, remove_stale_copies

    now = time.time()
    ages = {"fashion-mlp-smoke-old": KEPT_FOR + 60, "fashion-mlp-smoke-young": 60, "other-old": KEPT_FOR + 60}
    for name, age in ages.items():
        (tmp_path / name / "dvc").mkdir(parents=True)
        os.utime(tmp_path / name, (now - age, now - age))
    assert remove_stale_copies(tmp_path, now) == [tmp_path / "fashion-mlp-smoke-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fashion-mlp-smoke-young", "other-old"]


# --- DVC experiment queues (for the DVC end-to-end run) ------------------------------------------------

QUEUE_EPOCHS = (3, 4)  # train.baseline.epochs of the two experiments (the smoke copy has 2), run side by side
QUEUE_TIMEOUT = 1500


def check_queue(repo: Path) -> dict:
    """Two `dvc exp run --queue -S train.baseline.epochs=N`, then `dvc queue start -j 2`, in `repo`:
    a smoke copy already brought up to date by `dvc repro`. Each experiment reruns only the baseline's
    training and evaluation, register and report. Every run lands in the repo's one MLflow store, tagged
    with its experiment's name, and ends FINISHED; no experiment fails and no log says `database is locked`.
    Two experiments run at once. Returns figures for the report (seconds, runs)."""
    names = [f"sweep-epochs-{e}" for e in QUEUE_EPOCHS]
    for epochs, name in zip(QUEUE_EPOCHS, names, strict=True):
        run(["dvc", "exp", "run", "--queue", "-S", f"train.baseline.epochs={epochs}", "--name", name], repo)
    started = time.monotonic()
    # Not `run`: its captured pipe stays open as long as the detached queue workers hold it, and a worker that
    # stays idle after the queue is done (seen once, 10 min) would block it; the status below says when it is.
    subprocess.run(
        ["dvc", "queue", "start", "-j", "2"],
        cwd=repo,
        env=engine_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=300,
    )
    status = ""
    while time.monotonic() - started < QUEUE_TIMEOUT:
        status = run(["dvc", "queue", "status"], repo).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(5)
    seconds = time.monotonic() - started
    run(["dvc", "queue", "stop"], repo, check=False)
    return {"seconds": round(seconds)} | check_queue_results(repo, names, status)


def check_queue_results(repo: Path, names: list[str], status: str) -> dict:
    """check_queue's checks once the queue is done; `status` is `dvc queue status`'s last output."""
    from mlflow import MlflowClient

    logs = {name: run(["dvc", "queue", "logs", name], repo, check=False).stdout for name in names}
    for name in names:
        assert re.search(rf"\s{name}\s.*\bSuccess\b", status), f"{name}:\n{status}\n{logs[name][-3000:]}"
        assert "database is locked" not in logs[name], logs[name][-3000:]
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    shown_names = {exp.get("name") for rev in shown for exp in rev.get("experiments") or []}
    assert set(names) <= shown_names, shown_names

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    every = client.search_runs(experiments, max_results=5000)
    assert [r.info.run_name for r in every if r.info.status != "FINISHED"] == []
    ids = {}
    for name in names:
        runs = [r for r in every if r.data.tags.get("dvc_exp_name") == name]
        lessons = [r.data.tags["lesson"] for r in runs if r.data.tags.get("stage") == "lesson"]
        assert lessons == ["learned_features"], (name, lessons)  # the lesson on the trained models reran
        runs = [r for r in runs if r.data.tags.get("stage") != "lesson"]
        assert [r.data.tags["model"] for r in runs] == ["baseline"], (name, [r.data.tags for r in runs])
        assert runs[0].data.params["epochs"] == str(QUEUE_EPOCHS[names.index(name)])
        assert "test" in {i.dataset.name for i in runs[0].inputs.dataset_inputs}  # evaluated too
        ids[name] = runs[0].data.tags["invocation_id"]
    assert len(set(ids.values())) == len(names), ids  # one group per experiment
    return {"runs": len(every)}
