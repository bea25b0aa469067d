"""Speed benchmark: the project's `train` stage against a plain Keras script, in one run.

Both train the tutorial's baseline (params.yaml's train.baseline, batch 32) for
the same epochs on the same prepared data, one after the other, `--repeats`
times each. The plain script (benchmarks/plain_keras.py) is what a notebook
does: `model.fit` with Keras' defaults. The project's stage is run exactly as
the pipeline runs it, MLflow logging, model saving and all, against a
throw-away MLflow store. Then it times a no-op rerun of both engines.

    python benchmarks/speed.py                 # needs data/prepared/*.npz: `snakemake --cores all` first
    python benchmarks/speed.py --json out.json # also keep the raw numbers

It prints the wall times and their ratio, the epoch times, the test accuracy
of each model (and whether their weights are identical), and the no-op rerun
times. The goals: epochs ≤ 0.5x and the whole stage ≤ 0.65x plain
Keras; each no-op rerun ≤ 5 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRAIN = REPO / "data/prepared/train.npz"
TEST = REPO / "data/prepared/test.npz"


def clean_env(tmp: Path) -> dict[str, str]:
    """No inherited thread caps or engine settings; MLflow writes to a throw-away store."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "DVC_", "FASHION_MLP_", "SNAKEMAKE_", "OMP_", "TF_"))
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    env["FASHION_MLP_ROOT"] = str(REPO)
    return env


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} ... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def baseline_block(epochs: int) -> tuple[dict, int]:
    """train.baseline with the benchmark's epochs, and the seed."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    return params["train"]["baseline"] | {"epochs": epochs}, params["seed"]


def run_plain(tmp: Path, env: dict, epochs: int, batch_size: int, seed: int, model_out: Path) -> dict:
    seconds, out = timed(
        [
            sys.executable,
            str(REPO / "benchmarks/plain_keras.py"),
            "--data",
            str(TRAIN),
            "--epochs",
            str(epochs),
            "--batch_size",
            str(batch_size),
            "--seed",
            str(seed),
            "--model_out",
            str(model_out),
        ],
        tmp,
        env,
    )
    result = json.loads(out.strip().splitlines()[-1])
    return {"wall": seconds, "epoch_seconds": result["epoch_seconds"], "val_accuracy": result["val_accuracy"]}


def run_project(tmp: Path, env: dict, block: dict, seed: int, model_out: Path, threads: int) -> dict:
    from fashion_mlp.config import cli_flags

    history = tmp / "history.csv"
    cmd = [
        "fashion-mlp",
        "train",
        "--model",
        "baseline",
        *cli_flags(block).split(),
        "--seed",
        str(seed),
        "--experiment",
        "speed-benchmark",
        "--data",
        str(TRAIN),
        "--model_out",
        str(model_out),
        "--history_out",
        str(history),
        "--timings_dir",
        str(tmp / "timings"),
    ]
    cmd += ["--threads", str(threads)]
    seconds, _ = timed(cmd, tmp, env)
    with open(history, newline="") as fh:
        rows = list(csv.DictReader(fh))
    timings = json.loads((tmp / "timings/baseline.json").read_text())  # the history CSV holds no times
    return {
        "wall": seconds,
        "epoch_seconds": timings["epoch_seconds"],
        "val_accuracy": [float(r["val_accuracy"]) for r in rows],
    }


def compare_models(plain: Path, project: Path) -> dict:
    """Test accuracy of each model, and whether their weights are identical array by array."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from fashion_mlp.data import load_arrays

    test = load_arrays(TEST)
    models = {
        name: keras.saving.load_model(path, safe_mode=True) for name, path in (("plain", plain), ("project", project))
    }
    accuracy = {
        name: float(np.mean(np.argmax(m.predict(test["x_test"], batch_size=1024, verbose=0), axis=1) == test["y_test"]))
        for name, m in models.items()
    }
    a, b = (m.get_weights() for m in models.values())
    identical = len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    return {"test_accuracy": accuracy, "identical_weights": identical}


def noop_rerun(cores: int) -> dict:
    """Seconds for each engine to find nothing to do; None if it had work to do (not a no-op)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "SNAKEMAKE_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    times = {}
    for name, cmd, idle in (
        ("snakemake", ["snakemake", "--cores", str(cores)], "Nothing to be done"),
        ("dvc repro", ["dvc", "repro"], "up to date"),
    ):
        started = time.perf_counter()
        result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        said = result.stdout + result.stderr
        times[name] = seconds if result.returncode == 0 and idle in said else None
    return times


def median_epoch(seconds: list[float]) -> float:
    """The steady-state epoch: the median without the first, which also traces the graph."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def table(plain: list[dict], project: list[dict], models: dict, noop: dict, epochs: int, threads: int) -> str:
    def med(runs, key):
        return statistics.median(key(r) for r in runs)

    p_wall, q_wall = med(plain, lambda r: r["wall"]), med(project, lambda r: r["wall"])
    p_epoch, q_epoch = (
        med(plain, lambda r: median_epoch(r["epoch_seconds"])),
        med(project, lambda r: median_epoch(r["epoch_seconds"])),
    )
    same_val = all(r["val_accuracy"] == plain[0]["val_accuracy"] for r in plain + project)
    acc = models["test_accuracy"]
    lines = [
        f"Tutorial baseline, batch 32, {epochs} epochs, {os.cpu_count()} cores (plain Keras: all of them; "
        f"project: {threads} TF thread(s)); median of {len(plain)} run(s) each",
        "",
        "| | plain Keras | project `train` | ratio | goal |",
        "|---|---|---|---|---|",
        f"| whole stage, wall (s) | {p_wall:.1f} | {q_wall:.1f} | {q_wall / p_wall:.2f} | ≤ 0.65 |",
        f"| epoch, median after the first (s) | {p_epoch:.2f} | {q_epoch:.2f} | {q_epoch / p_epoch:.2f} | ≤ 0.50 |",
        f"| first epoch, with tracing (s) | {med(plain, lambda r: r['epoch_seconds'][0]):.2f} | "
        f"{med(project, lambda r: r['epoch_seconds'][0]):.2f} | | |",
        f"| test accuracy | {acc['plain']:.4f} | {acc['project']:.4f} | | identical |",
        "",
        f"Validation accuracy identical at every epoch in every run: {'yes' if same_val else 'NO'}. "
        f"Final weights identical array by array: {'yes' if models['identical_weights'] else 'NO'}.",
        "",
        "| no-op rerun | seconds | goal |",
        "|---|---|---|",
    ]
    for name, seconds in noop.items():
        shown = "not measured: the pipeline was not up to date" if seconds is None else f"{seconds:.1f}"
        lines.append(f"| `{name}` | {shown} | ≤ 5 |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of both runs (the tutorial's 10)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, alternating; medians are shown")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="the project's TF threads: 1, as the train rule and dvc.yaml give it (plain Keras uses every core)",
    )
    parser.add_argument("--cores", type=int, default=2, help="--cores of the no-op Snakemake rerun")
    parser.add_argument("--skip-noop", action="store_true", help="skip the no-op rerun timings")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    for path in (TRAIN, TEST):
        if not path.exists():
            sys.exit(f"{path.relative_to(REPO)} is missing: run `snakemake --cores all` (or `dvc repro prepare`) first")

    block, seed = baseline_block(args.epochs)
    plain, project = [], []
    with tempfile.TemporaryDirectory(prefix="speed-") as name:
        tmp = Path(name)
        env = clean_env(tmp)
        for i in range(args.repeats):
            print(f"run {i + 1}/{args.repeats}: plain Keras ...", file=sys.stderr, flush=True)
            plain.append(run_plain(tmp, env, args.epochs, block["batch_size"], seed, tmp / "plain.keras"))
            print(f"run {i + 1}/{args.repeats}: project train ...", file=sys.stderr, flush=True)
            project.append(run_project(tmp, env, block, seed, tmp / "project.keras", args.threads))
        models = compare_models(tmp / "plain.keras", tmp / "project.keras")
    noop = {} if args.skip_noop else noop_rerun(args.cores)
    print(table(plain, project, models, noop, args.epochs, args.threads))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "plain": plain,
                    "project": project,
                    "models": models,
                    "noop": noop,
                    "block": block,
                    "cpu_count": os.cpu_count(),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
