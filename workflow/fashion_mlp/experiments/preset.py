"""`fashion-mlp preset NAME`: a recipe too long for the default run, as one DVC experiment, and its recorded result.

A preset (presets/NAME.yaml) is a list of params.yaml overrides (`set:`), and of new entries where
params.yaml takes them (`add:`, a student under distill:). This command checks them against the
schema, runs `dvc exp run --temp -n NAME -S key=value -S +new.key=value ...` (a temporary copy of the repository:
the workspace and its outputs stay as they are; stages whose params did not change come from DVC's
cache), then reads the experiment's metrics of the preset's model from its git commit and writes
reports/presets/NAME.json. `report` shows that file as its own row, with the command that made it.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from fashion_mlp import PipelineError
from fashion_mlp.config import ParamsError, load_params, model_block, project_root, validate
from fashion_mlp.io import write_json
from fashion_mlp.machine import machine
from fashion_mlp.models import kinds
from fashion_mlp.tracking import git_commit

REQUIRED = ("description", "model", "set")
OPEN_SECTIONS = ("distill",)  # params.yaml sections whose entries a preset may add (`add:`)


def load_preset(path: Path) -> dict:
    """presets/NAME.yaml as a dict; an unreadable file or a missing key is an error naming the file."""
    try:
        preset = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such preset (the presets are the files in {path.parent}/)") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from None
    missing = [key for key in REQUIRED if not isinstance(preset, dict) or key not in preset]
    if missing:
        raise PipelineError(f"{path}: missing {', '.join(missing)} (a preset has {', '.join(REQUIRED)})")
    if not isinstance(preset["set"], dict) or not preset["set"]:
        raise PipelineError(f"{path}: `set` must map params.yaml keys (dotted, e.g. tune.final_epochs) to values")
    if not isinstance(preset.get("add", {}), dict):
        raise PipelineError(
            f"{path}: `add` must map new params.yaml keys (dotted, e.g. distill.student.epochs) to values"
        )
    return preset


def apply_overrides(params: dict, overrides: dict, source: str, added: dict | None = None) -> dict:
    """params with every `dotted.key: value` of `overrides` replaced and of `added` added, checked
    against the schema.

    `overrides` sets existing keys only, as `dvc exp run -S` does: a typo is an error naming it, not a
    new key. `added` makes new entries of an OPEN_SECTIONS section (`-S +key=value`), never an existing key.
    """
    result = copy.deepcopy(params)
    for dotted, value in (added or {}).items():
        parts = dotted.split(".")
        if parts[0] not in OPEN_SECTIONS or len(parts) < 3:
            raise PipelineError(
                f"{source}: add.{dotted}: only new entries of {', '.join(OPEN_SECTIONS)} can be added "
                "(distill.<model>.<key>); set: changes existing keys"
            )
        if parts[1] in (params.get(parts[0]) or {}):
            raise PipelineError(f"{source}: add.{dotted}: params.yaml already has {parts[0]}.{parts[1]}; use set:")
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    for dotted, value in overrides.items():
        node, parts = result, dotted.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        last = parts[-1]
        if not isinstance(node, dict) or last not in node:
            raise PipelineError(f"{source}: set.{dotted}: params.yaml has no key {dotted}")
        if isinstance(node[last], dict):
            raise PipelineError(f"{source}: set.{dotted}: a mapping; set its keys one by one ({dotted}.<key>)")
        node[last] = value
    try:
        validate(result, source=f"{source} applied to params.yaml")
    except ParamsError as exc:
        raise PipelineError(str(exc)) from None
    return result


def render(value) -> str:
    """A value as `-S key=value` spells it (YAML scalars: true, null, 0.1)."""
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def command(name: str, overrides: dict, added: dict | None = None) -> list[str]:
    """The `dvc exp run` command line of the preset (`+key` adds a key, in DVC's Hydra syntax)."""
    sets = [arg for key, value in overrides.items() for arg in ("-S", f"{key}={render(value)}")]
    adds = [arg for key, value in (added or {}).items() for arg in ("-S", f"+{key}={render(value)}")]
    return ["dvc", "exp", "run", "--temp", "-n", name, *sets, *adds]


def experiment_rev(name: str, baseline: str, repo: Path) -> str:
    """The commit of DVC experiment `name` based on `baseline` (refs/exps/<ab>/<cdef...>/<name>)."""
    refs = git(["for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], repo).split("\n")
    wanted = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
    found = [line.split()[0] for line in refs if line.endswith(" " + wanted)]
    if not found:
        raise PipelineError(f"no DVC experiment {name!r} on commit {baseline[:7]}: did `dvc exp run` fail?")
    return found[0]


def git(args: list[str], repo: Path) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def show(rev: str, path: str, repo: Path) -> str:
    """A git-tracked file as commit `rev` holds it (the metrics JSONs are in git, not DVC's cache)."""
    try:
        return git(["show", f"{rev}:{path}"], repo)
    except subprocess.CalledProcessError:
        raise PipelineError(f"the experiment's commit {rev[:7]} has no {path}") from None


def model_kind(params: dict, model: str) -> str:
    """A model's kind as params.yaml sets it: tune retrains a block without `kind:`; a train block says."""
    if model == "tuned":
        return kinds.DEFAULT
    try:
        block, _ = model_block(params, model)
    except KeyError:
        raise PipelineError(
            f"model {model!r} is neither tuned nor a block of train: or distill: in params.yaml"
        ) from None
    return kinds.of_block(block).name


def record(
    name: str, preset: dict, argv: list[str], rev: str, baseline: str, seconds: float | None, repo: Path
) -> dict:
    """What report shows of a preset run: its metrics, the command and the commits behind them."""
    metrics = json.loads(show(rev, f"reports/metrics/{preset['model']}.json", repo))
    kind = model_kind(yaml.safe_load(show(rev, "params.yaml", repo)), preset["model"])
    predicted = predicted_classes(rev, preset["model"], repo)
    return {
        "preset": name,
        "description": preset["description"],
        "model": preset["model"],
        "kind": kind,
        "goal": preset.get("goal"),
        "command": " ".join(argv),
        "code_commit": baseline,
        "experiment_commit": rev,
        "recorded": datetime.now(UTC).strftime("%Y-%m-%d"),
        "seconds": None if seconds is None else round(seconds),
        "machine": machine(),  # the weights and the wall time depend on the CPU
        "metrics": metrics,
        "predicted": predicted,
    }


def predicted_classes(rev: str, model: str, repo: Path) -> str:
    """The model's predicted class (0-9) of every test image, in test.npz's order, as one string of digits:
    the summary's paired tests against other presets and the run's models need them, and evaluate's
    CSV is in DVC's cache, which a fresh clone lacks."""
    from fashion_mlp.experiments.revisions import PREDICTIONS, open_revision, parse_predictions, read_text

    fs, label = open_revision(rev, repo)
    path = PREDICTIONS["test"].format(model=model)
    _, predicted = parse_predictions(read_text(fs, label, path), f"{label}: {path}")
    return "".join(str(int(c)) for c in predicted)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp preset", description=__doc__)
    parser.add_argument("name", help="a preset: presets/<name>.yaml")
    parser.add_argument("--presets_dir", type=Path, default=Path("presets"), help="default: %(default)s")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="default: %(default)s")
    parser.add_argument("--out_dir", type=Path, default=Path("reports/presets"), help="default: %(default)s")
    parser.add_argument("--dry_run", action="store_true", help="check the preset and print its command only")
    parser.add_argument(
        "--record_only",
        action="store_true",
        help="record the experiment NAME that already ran on this commit, without running it again",
    )
    parser.add_argument(
        "--seconds", type=float, help="with --record_only: the wall time the run took, if it was measured"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    source = args.presets_dir / f"{args.name}.yaml"
    preset = load_preset(source)
    apply_overrides(load_params(args.params), preset["set"], str(source), preset.get("add"))
    run_argv = command(args.name, preset["set"], preset.get("add"))
    print(" ".join(run_argv))
    if args.dry_run:
        return
    repo = project_root()
    commit = git_commit()  # "<sha>", "<sha>-dirty" or "unknown", as every MLflow run is tagged
    if commit == "unknown":
        raise PipelineError(f"{repo} is not a git checkout: a preset runs as a DVC experiment on a commit")
    baseline = commit.removesuffix("-dirty")
    if args.record_only:
        seconds = args.seconds
    else:
        if commit.endswith("-dirty"):
            raise PipelineError("commit or stash your changes first: the experiment runs the committed code and params")
        started = time.monotonic()
        subprocess.run(run_argv, cwd=repo, check=True)
        seconds = time.monotonic() - started
    result = record(args.name, preset, run_argv, experiment_rev(args.name, baseline, repo), baseline, seconds, repo)
    write_json(args.out_dir / f"{args.name}.json", result)
    print(f"{args.out_dir / args.name}.json: {preset['model']} test accuracy {result['metrics']['accuracy']:.4f}")
