"""`fashion-mlp probe NAME --set KEY=VALUE ...`: one training of a preset's model with a few keys changed,
scored on validation only, and recorded.

A preset's recipe is chosen among variants of it (docs/models.md lists them). A probe trains one
variant: the preset's overrides applied to params.yaml, then the probe's own `--set`s; the teacher
first when the model is a student (or `--teacher_path`, one trained before); then the model, once
per `--seed` given, side by side (a lever is judged over seeds). Each is `fashion-mlp train` with the
flags both engines would pass, in a scratch directory with its own MLflow store, so the project's
registry and outputs stay as they are. A probe reads the training split only, so any number of
probes leave the test set unread; `fashion-mlp preset` is what scores a recipe on test. The figures
(validation accuracy at the last and the best epoch, training accuracy, teacher, seed, CPU, time,
peak memory) are appended to reports/probes/NAME.jsonl, from which `make docs` writes the probes'
table.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from fashion_mlp import PipelineError
from fashion_mlp.config import cli_flags, load_params, model_block, project_root
from fashion_mlp.experiments.preset import apply_overrides, load_preset
from fashion_mlp.io import sha256_file, write_text
from fashion_mlp.machine import machine
from fashion_mlp.tracking import git_commit

DATA = Path("data/prepared/train.npz")  # the training and validation splits; the test split is another file
PROGRAM = [sys.executable, "-m", "fashion_mlp"]  # `fashion-mlp` of this interpreter, whatever PATH says


def parse_sets(pairs: list[str]) -> dict:
    """`key=value` pairs as {key: value}, the value read as YAML (as `dvc exp run -S` does)."""
    sets = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise PipelineError(f"--set {pair!r}: expected KEY=VALUE, e.g. distill.mlp_warped.dropout=0.0")
        sets[key] = yaml.safe_load(text)
    return sets


def probe_params(params: dict, preset: dict, source: str, sets: dict) -> dict:
    """params.yaml with the preset's `set:` and `add:` applied, then the probe's changes (existing keys only,
    the preset's new entries included), checked against the schema."""
    with_preset = apply_overrides(params, preset["set"], source, preset.get("add"))
    return apply_overrides(with_preset, sets, "fashion-mlp probe --set")


def train_command(
    model: str, block: dict, seed: int, workdir: Path, teacher_path: Path | None = None, data: Path = DATA
) -> list[str]:
    """`fashion-mlp train` for one block, as dvc.yaml's train and distill stages write it, into `workdir`."""
    argv = ["fashion-mlp", "train", "--model", model, *shlex.split(cli_flags(block)), "--seed", str(seed)]
    argv += ["--experiment", "probes", "--data", str(data)]
    if teacher_path is not None:
        argv += ["--teacher_path", str(teacher_path)]
    argv += ["--model_out", str(workdir / f"{model}.keras"), "--history_out", str(workdir / f"{model}.csv")]
    return [*argv, "--timings_dir", str(workdir / "timings")]


def history_figures(path: Path) -> dict:
    """What a training's history CSV says: the last epoch's validation and training accuracy, and the
    best validation accuracy with its epoch (which `register` could not pick: it reads the kept weights)."""
    try:
        rows = list(csv.DictReader(path.open()))
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read the training's history ({exc})") from None
    if not rows or "val_accuracy" not in rows[0]:
        raise PipelineError(f"{path}: no epochs with val_accuracy")
    best = max(rows, key=lambda row: float(row["val_accuracy"]))  # the first of equal bests
    kept = [int(row["epoch"]) for row in rows if row.get("kept") == "1"]
    return {
        "epochs": len(rows),
        "val_accuracy": round(float(rows[-1]["val_accuracy"]), 4),
        "train_accuracy": round(float(rows[-1]["accuracy"]), 4),
        "best_val_accuracy": round(float(best["val_accuracy"]), 4),
        "best_epoch": int(best["epoch"]),
        "kept_epoch": kept[0] if kept else None,
    }


def run_trainings(jobs: list[tuple[list[str], Path]]) -> list[float]:
    """`fashion-mlp train` commands side by side, each logging to the scratch store in its own directory;
    their wall seconds. A failure stops the others and names its command."""
    started, running = time.monotonic(), []
    for argv, directory in jobs:
        directory.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{directory / 'mlflow.db'}")
        print(" ".join(shlex.quote(a) for a in argv), flush=True)
        running.append(subprocess.Popen([*PROGRAM, *argv[1:]], env=env, cwd=project_root()))
    seconds = [0.0] * len(running)
    pending = dict(enumerate(running))
    while pending:
        for index, process in list(pending.items()):
            if process.poll() is None:
                continue
            del pending[index]
            seconds[index] = round(time.monotonic() - started, 1)
            if process.returncode != 0:
                for other in pending.values():
                    other.terminate()
                    other.wait()
                argv = jobs[index][0]
                raise PipelineError(f"the probe's training failed: {' '.join(argv[:4])} ... (its output is above)")
        time.sleep(0.2)
    return seconds


def ready_teacher(
    name: str | None, argv: list[str] | None, path: Path | None, workdir: Path
) -> tuple[dict | None, dict[str, float]]:
    """A student's teacher, trained now (`argv`) or reused (`path`): what the record says of it, and the
    seconds its training took. No teacher: None."""
    if argv:
        [seconds] = run_trainings([(argv, workdir)])
        return {"model": name, "trained": True, **history_figures(workdir / f"{name}.csv")}, {"teacher": seconds}
    if not name:
        return None, {}
    teacher = {"model": name, "trained": False, "sha256": sha256_file(path)}
    history = path.with_suffix(".csv")  # a probe's teacher has its history beside it
    if history.is_file():
        teacher["val_accuracy"] = history_figures(history)["val_accuracy"]
    return teacher, {}


def append_record(path: Path, record: dict) -> None:
    """Add one line to the JSON-lines file, rewriting it whole (atomically: a failure leaves the old file)."""
    old = path.read_text() if path.exists() else ""
    write_text(path, old + json.dumps(record, sort_keys=False) + "\n")


def committed_code(records: Path) -> str:
    """The commit the probe runs; changes other than the probes' own records are an error naming them,
    since a record must say which code and params made it."""
    commit = git_commit()
    if commit == "unknown":
        raise PipelineError("not a git checkout: a probe's record names the commit it ran")
    if commit.endswith("-dirty"):
        pathspec = ["."]
        with contextlib.suppress(ValueError):  # records kept outside the repository change nothing in it
            pathspec.append(f":(exclude){records.resolve().relative_to(project_root().resolve())}")
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *pathspec],
            capture_output=True, text=True, check=True, cwd=project_root(),
        ).stdout.split("\n")  # fmt: skip
        changed = [line[3:] for line in status if line.strip()]
        if changed:
            raise PipelineError(
                f"commit or stash your changes first ({', '.join(changed)}): a probe runs committed code"
            )
    return commit.removesuffix("-dirty")


RECORD_KEYS = ("preset", "label", "set", "seed", "val_accuracy", "best_val_accuracy", "best_epoch", "train_accuracy")


def load_probes(directory: Path) -> list[dict]:
    """Every recorded probe (reports/probes/NAME.jsonl), by preset and then in the order they ran; a line that
    is not such a record is an error naming the file and the line. No directory: no probes."""
    if not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise PipelineError(f"{path}:{number}: not JSON ({exc})") from None
            missing = [key for key in RECORD_KEYS if not isinstance(record, dict) or key not in record]
            if missing:
                raise PipelineError(
                    f"{path}:{number}: not a record of `fashion-mlp probe` (missing {', '.join(missing)})"
                )
            records.append(record)
    return records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp probe", description=__doc__)
    parser.add_argument("name", help="a preset: presets/<name>.yaml")
    parser.add_argument("--label", required=True, help="what the probe changes, in words (the table's first column)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml key to change after the preset's (repeatable)")  # fmt: skip
    parser.add_argument("--seed", type=int, nargs="+", dest="seeds", metavar="SEED",
                        help="default: params.yaml's seed; several train the model once per seed, side by side "
                        "(one teacher), each recorded")  # fmt: skip
    parser.add_argument("--teacher_path", type=Path, help="a student's teacher trained before: not trained again")
    parser.add_argument("--workdir", type=Path, help="where the models, histories and MLflow store go (default: new)")
    parser.add_argument("--data", type=Path, default=DATA, help="prepare's train.npz (default: %(default)s)")
    parser.add_argument("--presets_dir", type=Path, default=Path("presets"), help="default: %(default)s")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="default: %(default)s")
    parser.add_argument("--out_dir", type=Path, default=Path("reports/probes"), help="default: %(default)s")
    parser.add_argument("--dry_run", action="store_true", help="check the changes and print the commands only")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    source = args.presets_dir / f"{args.name}.yaml"
    preset, sets = load_preset(source), parse_sets(args.sets)
    params = probe_params(load_params(args.params), preset, str(source), sets)
    model = preset["model"]
    try:
        block, section = model_block(params, model)
    except KeyError:
        raise PipelineError(f"{source}: model {model!r} is no train: or distill: entry; a probe trains one") from None
    seeds = args.seeds or [params["seed"]]
    if len(set(seeds)) != len(seeds):
        raise PipelineError(f"--seed {' '.join(map(str, seeds))}: a seed given twice")
    if args.workdir is not None:
        workdir = args.workdir.resolve()
    elif args.dry_run:
        workdir = Path(tempfile.gettempdir()) / f"probe-{args.name}-XXXX"  # made only by a real run
    else:
        workdir = Path(tempfile.mkdtemp(prefix=f"probe-{args.name}-"))
    teacher_name = block.get("teacher", {}).get("model")
    if args.teacher_path is not None and not args.teacher_path.is_file():
        raise PipelineError(f"--teacher_path {args.teacher_path}: no such file")
    teacher_path = args.teacher_path or (workdir / f"{teacher_name}.keras" if teacher_name else None)
    teacher_argv = None
    if teacher_name and args.teacher_path is None:
        teacher_argv = train_command(teacher_name, params["train"][teacher_name], seeds[0], workdir, data=args.data)
    folders = {seed: workdir / f"seed-{seed}" for seed in seeds}
    models = [(train_command(model, block, seed, d, teacher_path, args.data), d) for seed, d in folders.items()]
    if args.dry_run:
        print("\n".join(" ".join(shlex.quote(a) for a in c) for c in [teacher_argv, *(m for m, _ in models)] if c))
        return
    threads = block.get("threads", 1)  # as `train` reads it: 1 when absent
    if len(seeds) * threads > (os.cpu_count() or 1):
        print(f"note: {len(seeds)} trainings of {threads} threads share {os.cpu_count()} cores, so each takes "
              f"longer (--set {section}.threads=1 gives each a core)", file=sys.stderr)  # fmt: skip
    commit = committed_code(args.out_dir)
    if not (project_root() / args.data).is_file():
        raise PipelineError(f"{project_root() / args.data}: missing; `dvc repro prepare` (or make run) makes it")
    workdir.mkdir(parents=True, exist_ok=True)
    teacher, seconds = ready_teacher(teacher_name, teacher_argv, teacher_path, workdir)
    model_seconds = run_trainings(models)
    peak_rss_mb = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)  # the largest training's
    for seed, (_, directory), wall in zip(seeds, models, model_seconds, strict=True):
        figures = history_figures(directory / f"{model}.csv")
        record = {
            "preset": args.name,
            "label": args.label,
            "model": model,
            "set": sets,
            "seed": seed,
            "code_commit": commit,
            "recorded": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": machine(),
            "teacher": teacher,
            **figures,
            "seconds": seconds | {"model": wall},
            "side_by_side": len(seeds),
            "peak_rss_mb": peak_rss_mb,
        }
        append_record(args.out_dir / f"{args.name}.jsonl", record)
        print(
            f"{args.out_dir / args.name}.jsonl: {model} ({args.label}, seed {seed}): validation "
            f"{figures['val_accuracy']:.4f} (best {figures['best_val_accuracy']:.4f} at epoch "
            f"{figures['best_epoch']}), training accuracy {figures['train_accuracy']:.4f}; its model in {directory}"
        )
