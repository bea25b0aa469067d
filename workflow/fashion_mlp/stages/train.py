"""Stage `train`: fit one model (MLP or CNN) from its params.yaml block on the training split, validating on validation.

Reads only `train.npz` (the test set is not an input of this stage), writes
the model and a per-epoch history CSV, and logs params, per-epoch metrics and
the model to one MLflow run that `evaluate` later completes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fashion_mlp.config import add_section_flags, section_from_args, validate_section
from fashion_mlp.models.training import TIMINGS_DIR, train_and_log
from fashion_mlp.runtime import default_threads
from fashion_mlp.stages.common import add_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp train", description=__doc__.splitlines()[0])
    add_section_flags(parser, "train")
    add_flags(parser, "model", "seed", "threads", "experiment")
    parser.add_argument("--data", type=Path, required=True, help="train.npz from prepare")
    parser.add_argument("--model_out", type=Path, required=True)
    parser.add_argument("--history_out", type=Path, required=True)
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


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    params = model_params(args)
    validate_section("train", params, source=f"train.{args.model}")
    threads = args.threads or default_threads()

    from fashion_mlp.runtime import configure_tensorflow

    configure_tensorflow(threads, args.seed)

    from fashion_mlp import tracking
    from fashion_mlp.data import load_arrays

    data = load_arrays(args.data)
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
        timings_dir=args.timings_dir,
    )


if __name__ == "__main__":
    main()
