"""Command `lesson <name>`: one of the tutorial's claims, shown and checked (fashion_mlp/lessons/).

Reads only the training split of train.npz (a stratified subset of its training images, and its
validation images), never test; a lesson on the trained models (`model_lessons:`) reads models/ instead.
Writes the lesson's record (the claim, the figures that decide it, "holds") as JSON and its figure,
and logs both to an MLflow run of their own, `lesson-<name>`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fashion_mlp import PipelineError
from fashion_mlp.config import add_section_flags, section_from_args, validate_section
from fashion_mlp.io import write_json
from fashion_mlp.lessons.catalogue import LESSONS, section
from fashion_mlp.stages.common import add_flags, models_to_read


def build_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"fashion-mlp lesson {name}", description=LESSONS[name].TITLE)
    add_section_flags(parser, section(name))
    add_flags(parser, "seed", "threads", "experiment")
    parser.add_argument("--data", type=Path, required=True, help="train.npz from prepare (never test.npz)")
    if getattr(LESSONS[name], "MODELS", False):
        add_flags(parser, "params")
        parser.add_argument("--models_dir", type=Path, required=True, help="the trained models' folder (models/)")
    parser.add_argument("--json_out", type=Path, required=True, help="reports/lessons/<name>.json")
    parser.add_argument("--figure_out", type=Path, required=True, help="reports/figures/lesson_<name>.png")
    return parser


def training_split(path: Path, images: int | None, seed: int) -> dict[str, np.ndarray]:
    """A stratified subset of `images` training images (all of them if None) and every validation image, flat."""
    from fashion_mlp.data import load_arrays, stratified_indices

    arrays = load_arrays(path, keys=("x_train", "y_train", "x_val", "y_val"))
    pick = np.arange(len(arrays["y_train"])) if images is None else stratified_indices(arrays["y_train"], images, seed)
    flat = {"x": arrays["x_train"][pick], "y": arrays["y_train"][pick], "x_val": arrays["x_val"]}
    flat["y_val"] = arrays["y_val"]
    return {k: (v.reshape(len(v), -1) if k.startswith("x") else v.astype(np.int64)) for k, v in flat.items()}


def trained_models(folder: Path, names: list[str] | None) -> dict[str, Path]:
    """name -> models/<name>.keras: the models --params names (train's entries, then tuned), or every file."""
    paths = [folder / f"{name}.keras" for name in names] if names else sorted(folder.glob("*.keras"))
    missing = [str(path) for path in paths if not path.is_file()]
    if missing or not paths:
        raise PipelineError(f"lesson: no trained model at {', '.join(missing) or folder / '*.keras'}; run train first")
    return {path.stem: path for path in paths}


def numbers(figures: dict, prefix: str = "") -> dict[str, float]:
    """The record's numeric figures as MLflow metrics, nested ones by dotted name ("first_epoch.Adam")."""
    out = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out |= numbers(value, f"{prefix}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def log_to_mlflow(args: argparse.Namespace, name: str, record: dict, train: dict | None) -> str:
    """A run of its own: the figures as metrics, the record and figure as artifacts, the splits it read."""
    import mlflow

    from fashion_mlp import tracking

    experiment_id = tracking.init(args.experiment)
    module = LESSONS[name]
    tags = tracking.base_tags("lesson", args.data) | {"lesson": name, "reads_data": str(module.DATA).lower()}
    if getattr(module, "MODELS", False):
        tags["models"] = ",".join(train)  # the trained models it read, by name
    start = {"experiment_id": experiment_id, "run_name": f"lesson-{name}", "tags": tags}
    with tracking.with_retry(mlflow.start_run, **start) as run:
        tracking.with_retry(mlflow.log_metrics, numbers(record["figures"]) | {"holds": float(record["holds"])})
        for path in (args.json_out, args.figure_out):
            mlflow.log_artifact(str(path), artifact_path="lesson")
        if module.DATA:
            splits = {"train": (train["x"], train["y"]), "validation": (train["x_val"], train["y_val"])}
            tracking.log_datasets(args.data, splits, sha256=tags["data_sha256"])
        return run.info.run_id


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print("usage: fashion-mlp lesson <name> [flags]   (fashion-mlp lesson <name> --help for its flags)\n")
        print("\n".join(f"  {name:<24} {module.TITLE}" for name, module in LESSONS.items()))
        return
    if not argv or argv[0] not in LESSONS:
        given = repr(argv[0]) if argv else "none"
        raise PipelineError(f"lesson: the first argument names a lesson, one of {', '.join(LESSONS)}; got {given}")
    name, module = argv[0], LESSONS[argv[0]]
    args = build_parser(name).parse_args(argv[1:])
    options = section_from_args(args, section(name))
    validate_section(section(name), options)

    # The subset first: the full training array (170 MB) is freed before TensorFlow loads (a third of a GB).
    train = training_split(args.data, options.get("images"), args.seed) if module.DATA else None
    if getattr(module, "MODELS", False):  # the trained models take the training split's place
        train = trained_models(args.models_dir, models_to_read(args))
    if module.KERAS:  # seeded and deterministic; the others never import TensorFlow
        from fashion_mlp.runtime import configure_tensorflow

        configure_tensorflow(args.threads, args.seed)
    record = {"lesson": name, "title": module.TITLE, "claim": module.CLAIM, "params": options, "seed": args.seed}
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one BLAS thread: NumPy's sums in one order, the same bytes under any engine
        record |= module.run(options, train, args.seed)
    write_json(args.json_out, {k: v for k, v in record.items() if not k.startswith("_")})  # "_": the figure's only
    module.plot(record, args.figure_out)
    run_id = log_to_mlflow(args, name, record, train)
    failed = [check for check, ok in record["passed"].items() if not ok]
    verdict = "DOES NOT HOLD: " + ", ".join(failed) if failed else "holds"
    print(f"lesson {name}: {verdict}; MLflow run {run_id}")


if __name__ == "__main__":
    main()
