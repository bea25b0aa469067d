"""End to end under Snakemake, on real Fashion-MNIST (a 3000-image subset, 2 epochs).

Two fresh copies of the repository, as users' clones would be: one run with 4 parallel jobs, one through
the cluster-generic profile (the search's model only: tests/smoke_runs.py says why). Each runs once, in the
background from the session's start (tests/smoke_runs.py); the tests then go through the first copy in
file order: the run itself, a bad params edit, a SIGKILL in the middle of a training and the README's
command to resume. The runs give the same bytes as each other and as DVC's (test_e2e_dvc.py); so do the
resumed ones. What a later test compares with is captured when a run ends (e2e_checks.py checks it).
Each test leaves its copy complete and up to date for the next.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from e2e_checks import (
    assert_demo_outputs,
    assert_mlflow,
    assert_orphans_closed,
    assert_outputs,
    assert_ran_in_parallel,
    assert_same_versioned_files,
    assert_same_weights,
    assert_traceable,
    assert_tuning_outputs,
    assert_tuning_runs,
    check_profile,
    dvc_status,
    kill_mid_training,
    running_runs,
)
from test_card import check_model_card
from test_ecosystem import check_mlflow_lineage
from test_explain import check_explain_outputs
from test_model_kinds import check_cnn_model
from test_predict import check_champion_predicts
from test_register import check_registry_aliases
from test_report_comparison import check_comparison
from test_report_statistics import check_uncertainty

from conftest import edit_params, run
from fashion_mlp.io import sha256_file
from smoke_runs import CLUSTER_TARGET
from snapshots import Snapshot, hashes, mlflow_runs, run_statuses, snapshot

pytestmark = pytest.mark.e2e


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
