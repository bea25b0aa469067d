"""experiments/probe.py: a variant of a preset's recipe, trained by `fashion-mlp train` with the engines' flags,
scored on validation only and recorded; the docs' table is written from the records.

The unit tests check the changes, the commands (parsed back by `train`'s own parser), the figures read
from a history and the records; one slow test runs a whole probe (a one-epoch teacher and student) on
synthetic pictures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO
from fashion_mlp import PipelineError
from fashion_mlp.config import load_params
from fashion_mlp.experiments import probe
from fashion_mlp.io import sha256_file
from fashion_mlp.stages import train as train_stage

sys.path.insert(0, str(REPO / "workflow/scripts"))
import results_blocks

WARPED = REPO / "presets/mlp-warped.yaml"


def warped_params(sets: dict) -> dict:
    preset = yaml.safe_load(WARPED.read_text())
    return probe.probe_params(load_params(REPO / "params.yaml"), preset, str(WARPED), sets)


def test_a_probe_changes_the_preset_s_keys_after_the_preset_and_refuses_unknown_ones_by_name():
    sets = probe.parse_sets(["distill.mlp_warped.dropout=0.0", "distill.mlp_warped.hidden=[512, 512]", "seed=7"])
    assert sets == {"distill.mlp_warped.dropout": 0.0, "distill.mlp_warped.hidden": [512, 512], "seed": 7}
    params = warped_params(sets)
    student = params["distill"]["mlp_warped"]
    assert student["dropout"] == 0.0 and student["hidden"] == [512, 512] and params["seed"] == 7
    assert student["epochs"] == 500 and params["train"]["cnn"]["conv"] == [32, 64]  # the preset's, kept
    with pytest.raises(PipelineError, match=r"set\.distill\.mlp_warped\.dropuot: params\.yaml has no key"):
        warped_params({"distill.mlp_warped.dropuot": 0.0})
    with pytest.raises(PipelineError, match=r"distill\.mlp_warped\.dropout"):  # the schema: [0, 1)
        warped_params({"distill.mlp_warped.dropout": 1.5})
    with pytest.raises(PipelineError, match=r"--set 'dropout': expected KEY=VALUE"):
        probe.parse_sets(["dropout"])


def test_the_commands_are_the_engines_train_commands_and_parse_back_to_the_blocks(tmp_path):
    params = warped_params({"distill.mlp_warped.dropout": 0.0})
    student, teacher = params["distill"]["mlp_warped"], params["train"]["cnn"]
    for name, block, teacher_path in (("cnn", teacher, None), ("mlp_warped", student, tmp_path / "cnn.keras")):
        argv = probe.train_command(name, block, 7, tmp_path, teacher_path)
        assert argv[:4] == ["fashion-mlp", "train", "--model", name]
        args = vars(train_stage.build_parser().parse_args(argv[2:]))
        assert args["seed"] == 7 and str(args["data"]) == "data/prepared/train.npz"  # never test.npz
        assert str(args["model_out"]) == str(tmp_path / f"{name}.keras")
        assert args["teacher_path"] == teacher_path
        for key in ("epochs", "batch_size", "learning_rate", "threads"):
            assert args[key] == block[key], key
    assert args["dropout"] == [0.0] and args["teacher_views_warp_pixels"] == 0.7


def write_history(path: Path, rows: list[tuple]) -> Path:
    lines = ["epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,kept"]
    lines += [f"{e},0.5,{acc},0.4,{val},0.001,{kept}" for e, acc, val, kept in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_figures_are_the_last_epoch_s_and_the_best_epoch_s(tmp_path):
    history = write_history(
        tmp_path / "h.csv", [(1, 0.8, 0.85, 0), (2, 0.9, 0.93, 0), (3, 0.91, 0.93, 0), (4, 0.92, 0.92, 1)]
    )
    assert probe.history_figures(history) == {
        "epochs": 4,
        "val_accuracy": 0.92,
        "train_accuracy": 0.92,
        "best_val_accuracy": 0.93,
        "best_epoch": 2,  # the first of equal bests
        "kept_epoch": 4,
    }
    (tmp_path / "empty.csv").write_text("epoch,loss\n")
    with pytest.raises(PipelineError, match=r"empty\.csv: no epochs with val_accuracy"):
        probe.history_figures(tmp_path / "empty.csv")
    with pytest.raises(PipelineError, match=r"gone\.csv: cannot read"):
        probe.history_figures(tmp_path / "gone.csv")


RECORD = {
    "preset": "mlp-warped",
    "label": "dropout 0",
    "model": "mlp_warped",
    "set": {"distill.mlp_warped.dropout": 0.0},
    "seed": 42,
    "recorded": "2026-12-07",
    "machine": {"cpu": "AMD EPYC", "family": "25", "model": "1", "vector": "AVX2", "cores": 2},
    "teacher": {"model": "cnn", "trained": True, "val_accuracy": 0.9433},
    "val_accuracy": 0.9291,
    "best_val_accuracy": 0.9304,
    "best_epoch": 480,
    "train_accuracy": 0.9312,
    "seconds": {"teacher": 1400.0, "model": 4300.0},
}


def test_records_are_appended_read_back_and_become_the_docs_table(tmp_path):
    out = tmp_path / "probes"
    probe.append_record(out / "mlp-warped.jsonl", RECORD)
    reused = dict(RECORD, seed=7, teacher={"model": "cnn", "trained": False, "sha256": "ab" * 32}, side_by_side=2)
    probe.append_record(out / "mlp-warped.jsonl", reused)
    records = probe.load_probes(out)
    assert records == [RECORD, reused]
    reports = results_blocks.Reports(models=[], kinds={}, metrics={}, explain={}, presets=[], probes=records)
    table = results_blocks.probes(reports)
    assert table[2] == (
        "| mlp-warped | dropout 0 | `distill.mlp_warped.dropout=0.0` | 42 | cnn, trained (0.9433) | **0.9291** "
        "| 0.9304 (480) | 0.9312 | AMD EPYC (family 25, model 1; AVX2; 2 cores) | 2026-12-07 | 95.0 |"
    )
    assert "cnn, reused (sha256 abababababab)" in table[3] and "| 7 |" in table[3]
    assert table[3].endswith("| 95.0 (2 side by side) |")
    records[1]["teacher"]["val_accuracy"] = 0.9433  # its history was beside it
    assert "cnn, reused (0.9433; sha256 abababababab)" in results_blocks.probes(reports)[3]
    assert results_blocks.probes(results_blocks.Reports([], {}, {}, {}, [], [])) == ["No probe has been recorded yet."]
    assert probe.load_probes(tmp_path / "none") == []


def test_a_line_that_is_no_probe_record_is_an_error_naming_the_file_and_line(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps(RECORD) + "\n{not json\n")
    with pytest.raises(PipelineError, match=r"p\.jsonl:2: not JSON"):
        probe.load_probes(tmp_path)
    (tmp_path / "p.jsonl").write_text(json.dumps({"preset": "x"}) + "\n")
    with pytest.raises(PipelineError, match=r"p\.jsonl:1: not a record of `fashion-mlp probe` \(missing label, set"):
        probe.load_probes(tmp_path)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_uncommitted_changes_are_refused_by_name_except_the_probes_records(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "reports/probes").mkdir(parents=True)
    (repo / "params.yaml").write_text("seed: 1\n")
    (repo / "reports/probes/p.jsonl").write_text("")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(probe, "project_root", lambda: repo)
    monkeypatch.setattr(probe, "git_commit", lambda: "abc123-dirty")
    monkeypatch.chdir(repo)
    (repo / "reports/probes/p.jsonl").write_text("{}\n")
    assert probe.committed_code(Path("reports/probes")) == "abc123"  # a record of the last probe: fine
    (repo / "params.yaml").write_text("seed: 2\n")
    with pytest.raises(PipelineError, match=r"commit or stash your changes first \(params\.yaml\)"):
        probe.committed_code(Path("reports/probes"))
    (repo / "reports/probes/p.jsonl").write_text("")
    with pytest.raises(PipelineError, match=r"commit or stash your changes first \(params\.yaml\)"):
        probe.committed_code(tmp_path / "elsewhere")  # records outside the repository excuse nothing in it
    (repo / "params.yaml").write_text("seed: 1\n")
    assert probe.committed_code(tmp_path / "elsewhere") == "abc123"


def test_a_dry_run_prints_both_commands_and_makes_nothing(tmp_path, capsys):
    probe.main(["mlp-warped", "--label", "x", "--set", "distill.mlp_warped.dropout=0.0", "--dry_run",
                "--presets_dir", str(REPO / "presets"), "--params", str(REPO / "params.yaml"),
                "--out_dir", str(tmp_path / "probes"), "--workdir", str(tmp_path / "w")])  # fmt: skip
    commands = capsys.readouterr().out.strip().split("\n")
    assert [c.split()[:4] for c in commands] == [["fashion-mlp", "train", "--model", w] for w in ("cnn", "mlp_warped")]
    assert "--dropout 0.0" in commands[1] and f"--teacher_path {tmp_path / 'w' / 'cnn.keras'}" in commands[1]
    assert not (tmp_path / "w").exists() and not (tmp_path / "probes").exists()


def test_several_seeds_share_one_teacher_and_each_student_has_its_own_folder(tmp_path, capsys):
    flags = ["--presets_dir", str(REPO / "presets"), "--params", str(REPO / "params.yaml"), "--dry_run"]
    flags += ["--workdir", str(tmp_path / "w")]
    probe.main(["mlp-warped", "--label", "x", "--seed", "42", "7", *flags])
    teacher, *students = capsys.readouterr().out.strip().split("\n")
    assert "--model cnn" in teacher and "--seed 42" in teacher and len(students) == 2
    for seed, command in zip((42, 7), students, strict=True):
        assert f"--seed {seed}" in command
        assert f"--model_out {tmp_path / 'w' / f'seed-{seed}' / 'mlp_warped.keras'}" in command
        assert f"--teacher_path {tmp_path / 'w' / 'cnn.keras'}" in command
    with pytest.raises(PipelineError, match=r"--seed 7 7: a seed given twice"):
        probe.main(["mlp-warped", "--label", "x", "--seed", "7", "7", *flags])


def tiny_preset(presets: Path) -> Path:
    """A folder with presets/tiny.yaml: a one-epoch CNN teacher and a 16-unit student of two epochs, whose
    block leaves `threads` out."""
    presets.mkdir()
    tiny = {"train.cnn.conv": [4], "train.cnn.dense": [8], "train.cnn.epochs": 1}
    student = {"hidden": [16], "activation": "relu", "dropout": 0.1, "l2": 0.0, "batchnorm": True}
    student |= {"learning_rate": 0.001, "lr_schedule": "cosine", "lr_decay_rate": 1.0, "batch_size": 32}
    student |= {"epochs": 2, "early_stopping_patience": None, "early_stopping_monitor": "val_accuracy"}
    student |= {"steps_per_execution": 4, "teacher": {"model": "cnn", "temperature": 2, "alpha": 0.9}}
    added = {f"distill.tiny.{key}": value for key, value in student.items()}
    (presets / "tiny.yaml").write_text(yaml.safe_dump({"description": "t", "model": "tiny", "set": tiny, "add": added}))
    return presets


@pytest.mark.slow  # four trainings, each its own process (two side by side): about 45 s
def test_a_probe_trains_the_teacher_then_the_student_and_records_validation_only(tmp_path, monkeypatch):
    from test_train import synthetic_data

    data = tmp_path / "train.npz"
    np.savez(data, **synthetic_data(200, 100))
    presets = tiny_preset(tmp_path / "presets")
    monkeypatch.setattr(probe, "committed_code", lambda records: "abc123")  # the test's working copy may be dirty
    out, workdir = tmp_path / "probes", tmp_path / "w"
    flags = ["--presets_dir", str(presets), "--params", str(REPO / "params.yaml"), "--data", str(data)]
    flags += ["--out_dir", str(out), "--workdir", str(workdir)]
    probe.main(["tiny", "--label", "wider", "--set", "distill.tiny.hidden=[32]", "--seed", "3", *flags])
    [record] = probe.load_probes(out)
    assert record["set"] == {"distill.tiny.hidden": [32]} and record["seed"] == 3 and record["code_commit"] == "abc123"
    assert record["epochs"] == 2 and 0 <= record["val_accuracy"] <= 1 and record["teacher"]["trained"]
    assert set(record["seconds"]) == {"teacher", "model"} and record["peak_rss_mb"] > 100
    assert (workdir / "seed-3/tiny.keras").is_file() and (workdir / "seed-3/mlflow.db").is_file()
    # The teacher again, reused: not trained a second time, named by its hash; two students side by side.
    probe.main(["tiny", "--label", "again", "--teacher_path", str(workdir / "cnn.keras"), "--seed", "1", "2", *flags])
    again = probe.load_probes(out)[1:]
    teacher = {"model": "cnn", "trained": False, "sha256": sha256_file(workdir / "cnn.keras")}
    assert [r["seed"] for r in again] == [1, 2] and all(r["side_by_side"] == 2 for r in again)
    for r in again:
        assert r["teacher"] == teacher | {"val_accuracy": record["teacher"]["val_accuracy"]}  # from cnn.csv beside it
        assert set(r["seconds"]) == {"model"} and r["epochs"] == 2
    assert sha256_file(workdir / "seed-1/tiny.keras") != sha256_file(workdir / "seed-2/tiny.keras")


def test_a_failed_training_stops_the_one_beside_it_and_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "PROGRAM", ["sh", "-c"])  # each job's argv[1] is then a shell command
    slow = (["fashion-mlp", f"echo $$ > {tmp_path / 'pid'}; sleep 60"], tmp_path / "a")
    failing = (["fashion-mlp", "sleep 1; exit 3"], tmp_path / "b")
    with pytest.raises(PipelineError, match=r"training failed: fashion-mlp sleep 1; exit 3"):
        probe.run_trainings([slow, failing])
    pid = int((tmp_path / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists()  # terminated and reaped, not left running
    assert probe.run_trainings([(["fashion-mlp", "true"], tmp_path / "c")])[0] >= 0


def test_students_side_by_side_that_outnumber_the_cores_are_pointed_out(tmp_path, monkeypatch, capsys):
    def fail(jobs):
        raise PipelineError("stop here")

    monkeypatch.setattr(probe, "committed_code", lambda records: "abc123")
    monkeypatch.setattr(probe, "run_trainings", fail)
    monkeypatch.setattr(probe.os, "cpu_count", lambda: 2)
    (tmp_path / "train.npz").write_bytes(b"")
    flags = ["--presets_dir", str(REPO / "presets"), "--params", str(REPO / "params.yaml"), "--data"]
    flags += [str(tmp_path / "train.npz"), "--teacher_path", str(tmp_path / "train.npz"), "--out_dir", str(tmp_path)]
    notes = []
    for sets in ([], ["--set", "distill.mlp_warped.threads=1"], ["--set", "distill.mlp_warped.threads=3"]):
        with pytest.raises(PipelineError, match="stop here"):
            probe.main(["mlp-warped", "--label", "x", "--seed", "1", "2", *sets, *flags, "--workdir", str(tmp_path)])
        notes.append(capsys.readouterr().err)
    assert "2 trainings of 2 threads share 2 cores" in notes[0] and "--set distill.mlp_warped.threads=1" in notes[0]
    assert notes[1] == "" and "2 trainings of 3 threads" in notes[2]
    presets = ["--presets_dir", str(tiny_preset(tmp_path / "presets"))]  # no threads in its student: 1, as in train
    with pytest.raises(PipelineError, match="stop here"):
        probe.main(["tiny", "--label", "x", "--seed", "1", "2", *flags, *presets, "--workdir", str(tmp_path)])
    assert capsys.readouterr().err == ""


def test_a_failed_training_records_nothing(tmp_path, monkeypatch):
    def fail(jobs):
        raise PipelineError(f"the probe's training failed: {' '.join(jobs[0][0][:4])}")

    monkeypatch.setattr(probe, "committed_code", lambda records: "abc123")
    monkeypatch.setattr(probe, "run_trainings", fail)
    (tmp_path / "train.npz").write_bytes(b"")
    out = tmp_path / "probes"
    flags = ["--presets_dir", str(REPO / "presets"), "--params", str(REPO / "params.yaml"), "--out_dir", str(out)]
    flags += ["--data", str(tmp_path / "train.npz"), "--workdir", str(tmp_path / "w")]
    with pytest.raises(PipelineError, match="training failed: fashion-mlp train --model cnn"):
        probe.main(["mlp-warped", "--label", "x", *flags])
    assert not out.exists()
