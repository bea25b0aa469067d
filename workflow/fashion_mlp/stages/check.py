"""Stage `check` (DVC's first): params.yaml against its schema, before any stage runs.

DVC removes a stage's outputs just before it runs the stage's command, so a value that the command
then refuses would cost a good output (a typo in `train.baseline` would delete models/baseline.keras).
Every other DVC stage depends on this stage's small output, so DVC runs it first and a bad edit stops
here, with every message naming its key, and nothing is removed. Snakemake needs no such stage: it
checks params.yaml while it parses the Snakefile. The output holds no values, only that they passed,
so a valid edit changes it not at all and reruns nothing through it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fashion_mlp.config import SCHEMA_PATH, load_params
from fashion_mlp.io import write_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp check", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the file to check")
    parser.add_argument("--out", type=Path, required=True, help="written only when every value passes")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    params = load_params(args.params)  # ParamsError naming every bad key: fashion-mlp exits with it
    schema = SCHEMA_PATH.relative_to(SCHEMA_PATH.parents[2]).as_posix()
    write_json(
        args.out, {"params": str(args.params), "valid": True, "checked_against": [schema, "the kinds' registry"]}
    )
    print(f"check: {args.params} is valid ({len(params)} sections)")
