"""End to end under DVC, on real Fashion-MNIST (a 3000-image subset, 2 epochs), one stage at a time.

A fresh copy of the repository, as a user's clone would be, run once in the background from the session's
start (tests/smoke_runs.py, as `make repro` runs it), then copied once more when it ends. The tests go
through each copy in file order. The first: the run itself, a SIGKILL in the middle of a training and
`dvc repro` to resume, and a new model as one params entry. The second: a queue of two experiments, a bad
params edit and its revert, a push/pull round trip, and plots of an experiment and a preset. What a later
test compares with is captured when the run ends (e2e_checks.py checks it). Each test leaves its copy
complete and up to date for the next.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import psutil
import pytest
import yaml
from e2e_checks import (
    assert_demo_outputs,
    assert_mlflow,
    assert_orphans_closed,
    assert_outputs,
    assert_stages_forked,
    assert_tuning_outputs,
    dvc_status,
    kill_mid_training,
    output_files,
    running_runs,
)
from test_card import check_model_card
from test_ecosystem import check_mlflow_lineage, check_queue
from test_explain import check_explain_outputs
from test_model_kinds import check_cnn_model
from test_register import check_registry_aliases
from test_report_comparison import check_comparison
from test_report_statistics import check_uncertainty

from conftest import edit_params, run
from snapshots import MODELS, Snapshot, hashes, run_statuses

pytestmark = pytest.mark.e2e


# --- DVC: one copy, a bad edit, a push/pull round trip, a kill ------------------------------


def test_dvc_end_to_end(dvc_repo: Path, dvc_first: Snapshot) -> None:
    assert_outputs(dvc_repo)
    assert_tuning_outputs(dvc_repo)
    assert_demo_outputs(dvc_repo)
    assert_mlflow(dvc_repo, engine="dvc")
    assert_stages_forked(dvc_repo, dvc_first.output)
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


def test_dvc_plots_an_experiment_and_a_preset_from_the_command_line(dvc_copy: Path) -> None:
    """In the second copy, last: its experiment and preset commit the copy's state and change its demos."""
    repo = dvc_copy
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
