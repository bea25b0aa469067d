"""Stage `train`: fit one model (MLP or CNN) from its params.yaml block on the training split, validating on validation.

A distill: entry (DVC's distill@<model>) runs the same stage with `--teacher_path`: the teacher's
saved model, which the student learns from (models/distillation.py).

Reads only `train.npz` (the test set is not an input of this stage), writes
the model and a per-epoch history CSV, and logs params, per-epoch metrics and
the model to one MLflow run that `evaluate` later completes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fashion_mlp.config import add_section_flags, section_from_args, validate_section
from fashion_mlp.io import sha256_file
from fashion_mlp.models.training import TIMINGS_DIR, train_and_log
from fashion_mlp.stages.common import add_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp train", description=__doc__.splitlines()[0])
    add_section_flags(parser, "train")
    add_flags(parser, "model", "seed", "experiment")  # --threads is the block's own key
    parser.add_argument("--data", type=Path, required=True, help="train.npz from prepare")
    parser.add_argument("--model_out", type=Path, required=True)
    parser.add_argument("--history_out", type=Path, required=True)
    parser.add_argument(
        "--teacher_path",
        type=Path,
        help="a distill: entry's teacher, models/<teacher.model>.keras (its `train` output)",
    )
    parser.add_argument(
        "--timings_dir",
        type=Path,
        default=TIMINGS_DIR,
        help="where <model>.json gets the wall times (untracked); default: %(default)s",
    )
    return parser


def model_params(args: argparse.Namespace) -> dict:
    """The train.<model> block as params.yaml spells it."""
    return section_from_args(args, "train")


def check_teacher(params: dict, teacher_path: Path | None, model: str) -> None:
    """A student needs its teacher's file, and only a student takes one."""
    if "teacher" in params and teacher_path is None:
        raise SystemExit(f"train: distill.{model} has a teacher ({params['teacher']['model']}): pass --teacher_path")
    if "teacher" not in params and teacher_path is not None:
        raise SystemExit(f"train: --teacher_path {teacher_path} given, but train.{model} has no teacher block")
    if teacher_path is not None and not teacher_path.is_file():
        raise SystemExit(
            f"train: the teacher's model {teacher_path} does not exist: train {params['teacher']['model']} first"
        )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    params = model_params(args)
    section = "distill" if "teacher" in params else "train"
    validate_section("train", params, source=f"{section}.{args.model}")
    check_teacher(params, args.teacher_path, args.model)
    threads = params.get("threads", 1)  # part of the recipe: the weights depend on it

    from fashion_mlp.runtime import configure_tensorflow

    configure_tensorflow(threads, args.seed)

    from fashion_mlp import tracking
    from fashion_mlp.data import load_arrays

    data = load_arrays(args.data)
    teacher = None
    if args.teacher_path is not None:
        import keras

        teacher = keras.saving.load_model(args.teacher_path, safe_mode=True, compile=False)
    tracking.init(args.experiment)
    train_and_log(
        args.model,
        params,
        data,
        args.data,
        args.seed,
        threads,
        args.model_out,
        args.history_out,
        tags={"teacher_sha256": sha256_file(args.teacher_path)} if teacher is not None else None,
        timings_dir=args.timings_dir,
        teacher=teacher,
    )


if __name__ == "__main__":
    main()
