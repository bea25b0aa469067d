"""The Snakefile and dvc.yaml are one pipeline: same stages, commands, deps, outs and params."""

from __future__ import annotations

import contextlib
import importlib
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run
from fashion_mlp import forkserver
from fashion_mlp.cli import COMMANDS
from fashion_mlp.config import cli_flags

pytestmark = pytest.mark.slow  # a Snakemake dry run and DVC's stage index of the real repository

LOG_REDIRECT = re.compile(r"\s*>\s*\S+\s+2>&1\s*$")
# DVC's stage `check` validates params.yaml before any stage removes its outputs, and every stage
# depends on its file; Snakemake validates while it parses the Snakefile, so it has no such job.
DVC_ONLY, CHECKED = "check", "reports/params_check.json"


# A Snakemake job's thread variables put back to 1 (common.smk's ONE_THREAD_ENV: demos reserves two
# cores and computes on one); DVC runs every command in the caller's environment.
THREAD_ENV = re.compile(rf"^(?:(?:{'|'.join(forkserver.SNAKEMAKE_THREAD_VARIABLES)})=1 )+")


def normalize(cmd: str) -> str:
    return " ".join(THREAD_ENV.sub("", LOG_REDIRECT.sub("", cmd)).split())


# Snakemake runs the stage `tune` as one job per role (tune_chief, tune_worker, tune_finish, talking
# through .tuner/); DVC runs the same roles inside its one `tune` stage (`fashion-mlp tune`, --role all).
SEARCH_RULES = {"tune_chief", "tune_worker"}
# Not --threads: both engines retrain on the same threads, or the weights may differ (a Zen 3 did).
FINISH_ONLY_FLAGS = re.compile(r" --role \S+| --worker_results(?: \.tuner/\S+)+")


def snakemake_jobs(repo: Path) -> dict[frozenset, dict]:
    """Every job of a forced dry run (`snakemake -n -p`), keyed by its set of output files.

    The search's jobs are left out and `tune_finish` is shown as the one stage DVC runs.
    """
    out = run(["snakemake", "--dry-run", "--printshellcmds", "--forceall", "--cores", "2"], repo).stdout
    jobs = {}
    for block in re.split(r"^(?:local)?rule ", out, flags=re.M)[1:]:
        rule = block.split(":", 1)[0]
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, flags=re.M))
        command = re.search(r"^Shell command: (.*)$", block, flags=re.M)
        if "output" not in fields or rule in SEARCH_RULES:
            continue  # the `all` target, and the search's jobs
        outs = frozenset(fields["output"].split(", "))
        cmd = normalize(command.group(1))
        deps = set(fields["input"].split(", ")) if "input" in fields else set()
        if rule == "tune_finish":
            cmd = FINISH_ONLY_FLAGS.sub("", cmd)
            deps = {dep for dep in deps if not dep.startswith(".tuner/")}
        jobs[outs] = {"rule": rule, "cmd": cmd, "deps": deps, "threads": int(fields.get("threads", 1))}
    return jobs


def dvc_stages(repo: Path) -> dict[frozenset, dict]:
    """Every DVC stage, keyed by its set of outputs. A folder dependency (register and report read
    every model's files by folder) counts as the stage outputs inside it, which is what Snakemake lists."""
    from dvc.repo import Repo

    stages = {}
    with contextlib.chdir(repo), Repo(str(repo)) as dvc_repo:  # stage names are relative to the cwd
        all_outs = {str(Path(o.fs_path).relative_to(repo)) for o in dvc_repo.index.outs}

        def expand(dep: str) -> set[str]:
            inside = {out for out in all_outs if out.startswith(f"{dep}/")}
            return inside or {dep}

        for stage in dvc_repo.index.stages:
            if stage.addressing == DVC_ONLY:
                continue
            params = {}
            for dep in stage.deps:
                if hasattr(dep, "params"):  # a ParamsDependency: the keys it tracks
                    params.update({key: None for key in dep.params})
            outs = frozenset(str(Path(o.fs_path).relative_to(repo)) for o in stage.outs)
            stages[outs] = {
                "name": stage.addressing,
                "cmd": normalize(stage.cmd),
                "deps": set().union(
                    *(expand(str(Path(d.fs_path).relative_to(repo))) for d in stage.deps if not hasattr(d, "params"))
                )
                - {CHECKED},
                "params": sorted(params),
            }
    return stages


STUDENT = "student"  # a distill: entry the engines' copy adds: the default run has none
# What the copy links rather than copies: the real checkout's own files; its run's outputs stay out.
LEFT_OUT = {".git", ".dvc", ".snakemake", ".venv", "params.yaml", "dvc.lock", "data", "models", "logs", "registered"}
COPIED = {"dvc.yaml", "Snakefile", ".gitignore", ".dvcignore"}  # DVC places a linked dvc.yaml's stages where it points


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The repository's pipeline, with params.yaml plus one student (distill:) whose teacher is `cnn`,
    so both engines show the student's jobs too; everything else is the real checkout, linked."""
    root = tmp_path_factory.mktemp("engines")
    for entry in REPO.iterdir():
        if entry.name in COPIED:
            shutil.copy(entry, root / entry.name)
        elif entry.name not in LEFT_OUT:
            (root / entry.name).symlink_to(entry)
    (root / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["distill"] = {
        STUDENT: {
            **params["train"]["baseline"],
            "threads": 2,  # not the default: both engines must pass it, and Snakemake reserve the cores
            "teacher": {"model": "cnn", "temperature": 4.0, "alpha": 0.9},
        }
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    return root


@pytest.fixture(scope="module")
def engines(repo):
    return snakemake_jobs(repo), dvc_stages(repo)


def test_same_stages_and_outputs(engines, repo):
    snake, dvc = engines
    assert set(snake) == set(dvc), "the engines produce different sets of outputs"
    names = {dvc[outs]["name"]: snake[outs]["rule"] for outs in dvc}
    params = yaml.safe_load((repo / "params.yaml").read_text())
    expected = {
        "download": "download",
        "prepare": "prepare",
        "tune": "tune_finish",
        "evaluate_search@tuned": "evaluate",
        "explain_search@tuned": "explain",
        "register": "register",
        "card": "card",
        "demos": "demos",
        "report": "report",
    }
    for model in params["train"]:
        expected[f"train@{model}"] = "train"
        expected[f"evaluate@{model}"] = "evaluate"
        expected[f"explain@{model}"] = "explain"
    for model in params["distill"]:
        expected[f"distill@{model}"] = "train"
        expected[f"evaluate_distill@{model}"] = "evaluate"
        expected[f"explain_distill@{model}"] = "explain"
    for lesson in params["lessons"]:
        expected[f"lesson@{lesson}"] = "lesson"
    for lesson in params["model_lessons"]:
        expected[f"model_lesson@{lesson}"] = "lesson"
    assert names == expected


def test_same_commands_and_deps(engines):
    snake, dvc = engines
    for outs, stage in dvc.items():
        assert snake[outs]["cmd"] == stage["cmd"], stage["name"]
        assert snake[outs]["deps"] == stage["deps"], stage["name"]


def test_declared_params_are_the_ones_on_the_command_line(engines, repo):
    """Every params.yaml value a DVC stage tracks reaches its command, so both engines rerun on it."""
    _, dvc = engines
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for stage in dvc.values():
        if "--params params.yaml" in stage["cmd"]:  # it reads its declared sections from the file itself
            continue
        for dotted in stage["params"]:
            value = params
            for key in dotted.split("."):
                value = value[key]
            flag = cli_flags(value) if isinstance(value, dict) else f"--{dotted.split('.')[-1]} {value}"
            assert flag in stage["cmd"], f"{stage['name']}: {dotted} does not reach the command"


def param_flag_names(node: dict) -> set[str]:
    """The flag names (`--NAME`) that a params.yaml section renders to, as cli_flags and DVC render it."""
    return set(re.findall(r"(?:^|\s)--([\w.]+)", cli_flags(node)))


def every_param_flag_name(params: dict) -> set[str]:
    """Every flag name some part of params.yaml could put on a command line: a section (${tune}) or
    an entry of one (${item}, train.baseline); a mapping inside an entry renders with its prefix
    (--teacher.model), never alone."""
    names = {key for key, value in params.items() if not isinstance(value, dict)}
    for section in (value for value in params.values() if isinstance(value, dict)):
        names |= param_flag_names(section)
        for entry in (value for value in section.values() if isinstance(value, dict)):
            names |= param_flag_names(entry)
    return names


def literal_flag_names(repo) -> dict[str, set[str]]:
    """Per dvc.yaml stage, the flags its command template writes with a literal value (`--threads 1`):
    a params key of the same name (a train block's threads) does not reach them."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return {
        name: set(re.findall(r"(?:^|\s)--([\w.]+)\s+(?![$-])", (stage.get("do") or stage)["cmd"]))
        for name, stage in stages.items()
    }


def test_every_param_on_the_command_line_is_tracked(engines, repo):
    """The other direction: a value from params.yaml on a stage's command must be one the stage
    declares, or DVC would not rerun the stage when it changes (Snakemake would, from its params)."""
    _, dvc = engines
    params = yaml.safe_load((repo / "params.yaml").read_text())
    from_params = every_param_flag_name(params)
    literal = literal_flag_names(repo)
    for stage in dvc.values():
        declared = set()
        for dotted in stage["params"]:
            value = params
            for key in dotted.split("."):
                value = value[key]
            declared |= param_flag_names(value) if isinstance(value, dict) else {dotted.split(".")[-1]}
        used = set(re.findall(r"(?:^|\s)--([\w.]+)", stage["cmd"])) & from_params - literal[stage["name"].split("@")[0]]
        assert used <= declared, f"{stage['name']}: {sorted(used - declared)} come from params.yaml undeclared"


def test_snakemake_summary_lists_the_files_dvc_declares(engines, repo):
    """Snakemake's own list of the files it makes (`--summary`) is dvc.yaml's list of outs."""
    _, dvc = engines
    out = run(["snakemake", "--summary", "--cores", "2"], repo).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows and rows[0][:3] == ["output_file", "date", "rule"], out[:500]
    summary = {row[0] for row in rows[1:] if row[0] and not row[0].startswith(".tuner/")}
    assert summary == set().union(*dvc), sorted(summary ^ set().union(*dvc))


def role(name: str) -> str:
    """A job's stage: evaluate@baseline, evaluate_search@tuned and evaluate_distill@student are all
    `evaluate`; a student's distill@ is `train`."""
    stage = name.split("@")[0].removesuffix("_search").removesuffix("_distill")
    return "train" if stage == "distill" else stage


def test_only_evaluate_explain_and_card_read_the_test_split_and_nothing_chooses_on_them(engines):
    """The tutorial validated on the test set. Here three stages read it, and all only measure:
    `evaluate` (metrics), `explain` (attributions) and `card` (photo-like pictures). What they write
    reaches `register`, which chooses by the validation accuracy in the metrics (test_register.py),
    `report` and `card`, whose card nothing reads; no stage that fits or searches (train, tune)
    depends on the test split or on anything made from it."""
    snakemake, dvc = engines
    for jobs, key in ((snakemake, "rule"), (dvc, "name")):
        roles = {outs: role(job[key]) for outs, job in jobs.items()}
        readers = {roles[outs] for outs, job in jobs.items() if "data/prepared/test.npz" in job["deps"]}
        assert readers == {"evaluate", "explain", "card"}, readers
        from_test = set().union(*(outs for outs in jobs if roles[outs] in readers))
        downstream = {roles[outs] for outs, job in jobs.items() if job["deps"] & from_test}
        assert downstream <= {"register", "report", "card"}, downstream
        from_card = set().union(*(outs for outs in jobs if roles[outs] == "card"))
        assert not any(job["deps"] & from_card for job in jobs.values()), "a stage reads the model card"


def test_a_student_waits_for_its_teacher_under_both_engines(engines):
    """distill@student reads the teacher's model, train's output, and nothing made from the test split."""
    for jobs in engines:
        (student,) = [job for outs, job in jobs.items() if f"models/{STUDENT}.keras" in outs]
        assert "models/cnn.keras" in student["deps"] and "data/prepared/test.npz" not in student["deps"]
        assert "--teacher_path models/cnn.keras" in student["cmd"]


def test_a_blocks_threads_reach_both_commands_and_snakemake_reserves_them(engines):
    """The student's `threads: 2` is its --threads under both engines (the weights depend on it), and
    Snakemake reserves two cores for it; a block without the key trains on one."""
    snake, dvc = engines
    for jobs in (snake, dvc):
        (student,) = [job for outs, job in jobs.items() if f"models/{STUDENT}.keras" in outs]
        (baseline,) = [job for outs, job in jobs.items() if "models/baseline.keras" in outs]
        assert re.findall(r"--threads \S+", student["cmd"]) == ["--threads 2"]
        assert "--threads" not in baseline["cmd"]
    assert [job["threads"] for outs, job in snake.items() if f"models/{STUDENT}.keras" in outs] == [2]
    assert [job["threads"] for outs, job in snake.items() if "models/baseline.keras" in outs] == [1]


def test_a_stage_run_by_hand_uses_the_engines_thread_count(engines):
    """Run without --threads, a stage uses the count both engines pass it: on a two-core CPU, evaluate on
    every core wrote other last digits of the calibration's temperature than the pipeline's one thread."""
    checked = set()
    for jobs in engines:
        for job in jobs.values():
            command = job["cmd"].split()
            passed = re.findall(r"--threads (\S+)", job["cmd"])
            if command[1] == "train" or not passed:
                continue  # a train block's threads is its own key (test above)
            module = importlib.import_module(COMMANDS[command[1]][0])
            parser = module.build_parser(command[2]) if command[1] == "lesson" else module.build_parser()
            assert parser.get_default("threads") == int(passed[0]), job["cmd"]
            checked.add(command[1])
    assert {"tune", "evaluate", "explain", "card", "demos", "lesson"} <= checked
