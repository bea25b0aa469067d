"""`fashion-mlp compare [A] [B]`: did a params edit help? The same models of two runs, image by image.

A and B are git revisions, DVC experiment names or `workspace` (default: HEAD against the workspace,
so it answers right after `dvc repro` or `dvc exp run`). For every model on both sides: accuracy and
macro F1 of each, the difference B − A with a paired bootstrap interval, the exact McNemar test
adjusted by Holm across the models, a verdict, and the params of that model that differ.
It measures; it chooses nothing. Picking the best of many runs by their test figures is selection on
the test set: choose with `--split validation`, report with the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fashion_mlp import PipelineError
from fashion_mlp.config import TUNED, flatten
from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.experiments.revisions import PREDICTIONS, WORKSPACE, read_side
from fashion_mlp.io import write_text
from fashion_mlp.metrics.paired import compare_models
from fashion_mlp.metrics.stats import ALPHA, CONFIDENCE
from fashion_mlp.summary.significance import format_p

SHARED = ("seed", "data.", "prepare.")  # what every model's training reads besides its own entry
HEADERS = (
    "Model", "Accuracy A → B", "Δ (95 % CI)", "Macro F1 A → B", "Δ (95 % CI)", "Only A / B right",
    "McNemar p (Holm)", "Verdict", "Params changed",
)  # fmt: skip


def params_diff(a: dict, b: dict) -> dict[str, dict]:
    """Flattened keys whose values differ, like `dvc params diff`: {key: {"a": old, "b": new}}; None: absent."""
    flat_a, flat_b = flatten(a), flatten(b)
    keys = sorted(set(flat_a) | set(flat_b))
    return {k: {"a": flat_a.get(k), "b": flat_b.get(k)} for k in keys if flat_a.get(k) != flat_b.get(k)}


def model_keys(model: str, diff: dict) -> list[str]:
    """The changed keys that the model's training reads: its own entry (tune: for tuned) and SHARED."""
    own = "tune." if model == TUNED else f"train.{model}."
    return [k for k in diff if k.startswith((own, *SHARED[1:])) or k in SHARED]


def compare(a: str | None, b: str | None, split: str, resamples: int | None, seed: int | None, alpha: float) -> dict:
    side_a, side_b = read_side(a, split), read_side(b, split)
    seed = side_b.params.get("seed", 0) if seed is None else seed
    if resamples is None:
        resamples = side_b.params.get("evaluate", {}).get("bootstrap_resamples", 1000)
    common = [m for m in side_a.models if m in side_b.models]
    if not common:
        raise PipelineError(f"{side_a.label} and {side_b.label} have no model in common")
    pairs = {}
    for model in common:
        (true_a, pred_a), (true_b, pred_b) = side_a.labels[model], side_b.labels[model]
        if not np.array_equal(true_a, true_b):
            raise PipelineError(
                f"{model}: the {split} images of {side_a.label} and {side_b.label} differ (data or prepare "
                "changed), so the runs cannot be compared image by image"
            )
        pairs[model] = (true_a, pred_a, pred_b)
    diff = params_diff(side_a.params, side_b.params)
    rows = compare_models(pairs, resamples, seed, alpha)
    for row in rows:
        row["params_changed"] = model_keys(row["model"], diff)
    return {
        "a": side_a.label, "b": side_b.label, "split": split, "images": rows[0]["n"], "resamples": resamples,
        "seed": seed, "alpha": alpha, "models": rows, "params_diff": diff,
        "only_a": [m for m in side_a.models if m not in common],
        "only_b": [m for m in side_b.models if m not in common],
    }  # fmt: skip


# --- output -------------------------------------------------------------------------


def _delta(figure: dict) -> str:
    ci = figure["interval"]
    return f"{figure['difference']:+.4f} ({ci['low']:+.4f} to {ci['high']:+.4f})"


def cells(row: dict) -> list[str]:
    acc, f1 = row["accuracy"], row["macro_f1"]
    verdict = "no significant difference" if row["verdict"].startswith("no ") else f"B {row['verdict']}"
    return [
        row["model"], f"{acc['a']:.4f} → {acc['b']:.4f}", _delta(acc), f"{f1['a']:.4f} → {f1['b']:.4f}", _delta(f1),
        f"{row['only_a_correct']:,} / {row['only_b_correct']:,}",
        f"{format_p(row['p_value'])} ({format_p(row['p_holm'])})", verdict, ", ".join(row["params_changed"]) or "none",
    ]  # fmt: skip


def aligned(headers, rows) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in (headers, *rows)]


def markdown_table(headers, rows, align: str) -> list[str]:
    """`align`: a letter per column, l or r."""
    rule = [{"l": "---", "r": "---:"}[a] for a in align]
    return [f"| {' | '.join(map(str, line))} |" for line in (headers, rule, *rows)]


def heading(result: dict) -> list[str]:
    return [
        f"A = {result['a']}, B = {result['b']}: the {result['split']} split, {result['images']:,} images.",
        f"Δ is B − A with a paired {100 * CONFIDENCE:g} % bootstrap interval ({result['resamples']:,} resamples, seed "
        f"{result['seed']}); McNemar p is exact, Holm-adjusted across the {len(result['models'])} models; "
        f"a verdict needs an adjusted p below {result['alpha']}.",
    ]


def footer(result: dict) -> list[str]:
    sides = (("A", "only_a"), ("B", "only_b"))
    lines = [f"Only in {side}: {', '.join(result[key])}." for side, key in sides if result[key]]
    if result["split"] == "test":
        lines.append(
            "The test split measures; picking the best of many runs by it is selection on the test set "
            "(choose with --split validation)."
        )
    return lines


def render_text(result: dict) -> str:
    table = aligned(HEADERS, [cells(r) for r in result["models"]])
    return "\n".join([*heading(result), "", *table, "", *footer(result)])


def render_markdown(result: dict) -> str:
    lines = [f"## Did it help? {result['b']} against {result['a']}", "", *heading(result), ""]
    lines += [*markdown_table(HEADERS, [cells(r) for r in result["models"]], "lrrrrrrll"), "", *footer(result), ""]
    if result["params_diff"]:
        diff = [(f"`{k}`", json.dumps(v["a"]), json.dumps(v["b"])) for k, v in result["params_diff"].items()]
        lines += ["### Params that differ", "", *markdown_table(("Param", "A", "B"), diff, "lll"), ""]
    for row in result["models"]:
        if row["only_a_correct"] + row["only_b_correct"] == 0:
            continue  # the same answer on every image: nothing per class to show
        f1 = row["per_class_f1"]
        by_class = zip(CLASS_NAMES, f1["a"], f1["b"], strict=True)
        per_class = [(name, f"{a:.4f}", f"{b:.4f}", f"{b - a:+.4f}") for name, a, b in by_class]
        lines += [f"<details><summary>{row['model']}: F1 per class</summary>", ""]
        lines += [*markdown_table(("Class", "F1 A", "F1 B", "Δ"), per_class, "lrrr"), "", "</details>", ""]
    return "\n".join(lines)


# --- command ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", nargs="?", default="HEAD", help="git revision, DVC experiment or 'workspace' (HEAD)")
    parser.add_argument("b", nargs="?", default=WORKSPACE, help="the same for the other side (the workspace)")
    parser.add_argument(
        "--split", choices=tuple(PREDICTIONS), default="test", help="validation to choose, test (default) to report"
    )
    parser.add_argument("--md", type=Path, help="write the comparison as Markdown for a pull request ('-': stdout)")
    parser.add_argument("--json", type=Path, help="write it as JSON for scripts ('-': stdout)")
    parser.add_argument("--resamples", type=int, help="bootstrap resamples (B's evaluate.bootstrap_resamples)")
    parser.add_argument("--seed", type=int, help="the bootstrap's seed (B's params.yaml seed)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="family-wise level of a verdict")
    return parser


def emit(path: Path | None, text: str) -> None:
    if path is None:
        return
    if str(path) == "-":
        sys.stdout.write(text + "\n")
    else:
        write_text(path, text + "\n")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    revision = {WORKSPACE: None}
    a, b = revision.get(args.a, args.a), revision.get(args.b, args.b)
    result = compare(a, b, args.split, args.resamples, args.seed, args.alpha)
    if "-" not in (str(args.md), str(args.json)):
        print(render_text(result))
    emit(args.md, render_markdown(result))
    emit(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
