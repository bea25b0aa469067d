"""experiments/preset.py: overrides are checked before anything runs; the record comes from the experiment's commit."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from conftest import REPO
from fashion_mlp import PipelineError, machine
from fashion_mlp.config import load_params
from fashion_mlp.experiments import preset as presets


def write_preset(tmp_path, **content):
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def test_every_shipped_preset_applies_to_params_yaml_and_turns_into_one_command():
    params = load_params(REPO / "params.yaml")
    shipped = sorted((REPO / "presets").glob("*.yaml"))
    assert shipped, "presets/ holds at least the MLP preset of issue 14"
    for path in shipped:
        preset = presets.load_preset(path)
        added = preset.get("add", {})
        applied = presets.apply_overrides(params, preset["set"], str(path), added)
        assert applied != params
        argv = presets.command(path.stem, preset["set"], added)
        assert argv[:6] == ["dvc", "exp", "run", "--temp", "-n", path.stem]
        assert len(argv) == 6 + 2 * (len(preset["set"]) + len(added))


def test_overrides_replace_leaves_and_render_as_dvc_reads_them():
    params = load_params(REPO / "params.yaml")
    overrides = {"tune.final_epochs": 150, "tune.final_augment.flip": True, "tune.final_ema": None}
    applied = presets.apply_overrides(params, overrides, "p.yaml")
    assert applied["tune"]["final_epochs"] == 150 and applied["tune"]["final_augment"]["flip"] is True
    assert params["tune"]["final_epochs"] != 150  # the loaded params are left alone
    assert presets.command("x", overrides)[6:] == [
        *("-S", "tune.final_epochs=150", "-S", "tune.final_augment.flip=true", "-S", "tune.final_ema=null"),
    ]
    assert presets.render(0.1) == "0.1" and presets.render([32, 64]) == "[32,64]"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tune.final_epoch": 3}, r"p\.yaml: set\.tune\.final_epoch: params\.yaml has no key tune\.final_epoch"),
        ({"tune.final_augment": 2}, r"set\.tune\.final_augment: a mapping; set its keys one by one"),
        ({"tune.final_epochs": 0}, r"p\.yaml applied to params\.yaml: 'tune\.final_epochs' = 0 is not allowed"),
    ],
)
def test_a_bad_override_is_refused_by_name(overrides, message):
    with pytest.raises(PipelineError, match=message):
        presets.apply_overrides(load_params(REPO / "params.yaml"), overrides, "p.yaml")


def student_keys(name: str = "student", teacher: str = "cnn") -> dict:
    """A distill: entry as `add:` spells it: the baseline's block and a teacher, key by dotted key."""
    block = dict(load_params(REPO / "params.yaml")["train"]["baseline"])
    block["teacher"] = {"model": teacher, "temperature": 4.0, "alpha": 0.9}
    return {f"distill.{name}.{key}": value for key, value in block.items() if not isinstance(value, dict)} | {
        f"distill.{name}.teacher.{key}": value for key, value in block["teacher"].items()
    }


def test_added_keys_make_a_new_student_rendered_with_dvc_s_plus():
    params = load_params(REPO / "params.yaml")
    added = student_keys()
    applied = presets.apply_overrides(params, {"train.cnn.epochs": 9}, "p.yaml", added)
    assert applied["distill"]["student"]["teacher"] == {"model": "cnn", "temperature": 4.0, "alpha": 0.9}
    assert applied["distill"]["student"]["hidden"] == params["train"]["baseline"]["hidden"]
    assert "student" not in params["distill"]  # the loaded params are left alone
    argv = presets.command("x", {"train.cnn.epochs": 9}, added)
    assert argv[6:10] == ["-S", "train.cnn.epochs=9", "-S", "+distill.student.hidden=[128]"]
    assert "+distill.student.teacher.model=cnn" in argv and "+distill.student.early_stopping_patience=null" in argv


@pytest.mark.parametrize(
    "added, message",
    [
        ({"train.wide.hidden": [64]}, r"add\.train\.wide\.hidden: only new entries of distill can be added"),
        (student_keys(teacher="resnet"), r"distill\.student\.teacher\.model: 'resnet' is no entry of train:"),
        (
            {k: v for k, v in student_keys().items() if not k.endswith(".epochs")},
            r"p\.yaml applied to params\.yaml: .*distill\.student.*epochs",
        ),
    ],
)
def test_a_bad_addition_is_refused_by_name(added, message):
    with pytest.raises(PipelineError, match=message):
        presets.apply_overrides(load_params(REPO / "params.yaml"), {"train.cnn.epochs": 9}, "p.yaml", added)


def test_a_missing_or_incomplete_preset_file_is_named(tmp_path):
    with pytest.raises(PipelineError, match=r"nope\.yaml: no such preset"):
        presets.load_preset(tmp_path / "nope.yaml")
    with pytest.raises(PipelineError, match=r"long\.yaml: missing model, set"):
        presets.load_preset(write_preset(tmp_path, description="d"))
    with pytest.raises(PipelineError, match=r"long\.yaml: `set` must map params\.yaml keys"):
        presets.load_preset(write_preset(tmp_path, description="d", model="tuned", set={}))


def test_dry_run_checks_and_prints_the_command_without_running_it(capsys, tmp_path):
    path = write_preset(tmp_path, description="d", model="tuned", set={"tune.final_epochs": 40})
    presets.main(["long", "--presets_dir", str(tmp_path), "--params", str(REPO / "params.yaml"), "--dry_run"])
    assert capsys.readouterr().out.strip() == "dvc exp run --temp -n long -S tune.final_epochs=40"
    assert not (tmp_path / "reports").exists() and path.exists()


def test_the_record_is_read_from_the_experiments_commit(tmp_path):
    """A git repository with a commit under DVC's experiment ref, as `dvc exp run -n long` leaves one."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)  # the predictions are read through DVC
    git("add", ".dvc")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "base")
    baseline = git("rev-parse", "HEAD")
    (tmp_path / "reports/metrics").mkdir(parents=True)
    (tmp_path / "reports/predictions").mkdir(parents=True)
    for model in ("tuned", "cnn", "base"):
        (tmp_path / f"reports/metrics/{model}.json").write_text(json.dumps({"model": model, "accuracy": 0.91}))
        (tmp_path / f"reports/predictions/{model}.csv").write_text(
            "actual,predicted\nBag,Bag\nShirt,T-shirt/top\nAnkle boot,Sneaker\n"
        )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"cnn": {"kind": "cnn"}, "base": {}}}))
    git("add", "reports", "params.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "exp")
    rev = git("rev-parse", "HEAD")
    git("update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/long", rev)
    git("reset", "-q", "--hard", baseline)

    assert presets.experiment_rev("long", baseline, tmp_path) == rev
    with pytest.raises(PipelineError, match=r"no DVC experiment 'short' on commit"):
        presets.experiment_rev("short", baseline, tmp_path)
    preset = {"description": "d", "model": "tuned", "goal": 0.91, "set": {"tune.final_epochs": 40}}
    record = presets.record("long", preset, ["dvc", "exp", "run"], rev, baseline, 600.4, tmp_path)
    assert record["metrics"] == {"model": "tuned", "accuracy": 0.91} and record["kind"] == "mlp"
    assert (record["seconds"], record["command"], record["experiment_commit"]) == (600, "dvc exp run", rev)
    assert record["predicted"] == "807"  # Bag, T-shirt/top, Sneaker: the summary's paired tests read them
    assert record["machine"] == machine.machine() and record["machine"]["cores"] == os.cpu_count()
    assert presets.record("long", preset | {"model": "cnn"}, [], rev, baseline, None, tmp_path)["kind"] == "cnn"
    assert presets.record("long", preset | {"model": "base"}, [], rev, baseline, None, tmp_path)["seconds"] is None
    with pytest.raises(PipelineError, match=r"the experiment's commit [0-9a-f]{7} has no reports/metrics/nope\.json"):
        presets.record("long", preset | {"model": "nope"}, [], rev, baseline, None, tmp_path)
    assert presets.model_kind({"train": {}}, "tuned") == "mlp"
    with pytest.raises(PipelineError, match=r"model 'nope' is neither tuned nor a block of train"):
        presets.model_kind({"train": {}}, "nope")


def test_a_run_is_refused_outside_git_or_with_uncommitted_changes(tmp_path, monkeypatch):
    path = write_preset(tmp_path, description="d", model="tuned", set={"tune.final_epochs": 40})
    argv = ["long", "--presets_dir", str(path.parent), "--params", str(REPO / "params.yaml")]
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.setenv("FASHION_MLP_ROOT", str(checkout))
    with pytest.raises(PipelineError, match=r"checkout is not a git checkout"):
        presets.main(argv)
    subprocess.run(["git", "init", "-q"], cwd=checkout, check=True)
    (checkout / "params.yaml").write_text("seed: 1\n")
    subprocess.run(["git", "add", "params.yaml"], cwd=checkout, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "p"], cwd=checkout, check=True)
    (checkout / "params.yaml").write_text("seed: 2\n")
    with pytest.raises(PipelineError, match=r"commit or stash your changes first"):
        presets.main(argv)
