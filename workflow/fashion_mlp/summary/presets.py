"""The summary's preset rows and their "Longer recipes (presets)" section, from reports/presets/*.json.

`fashion-mlp preset NAME` runs a recipe too long for the default run once and records it there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fashion_mlp import PipelineError
from fashion_mlp.io import read_json
from fashion_mlp.machine import label
from fashion_mlp.metrics.columns import REQUIRED
from fashion_mlp.metrics.stats import ALPHA, pairwise_mcnemar
from fashion_mlp.summary.significance import pairs_table

PRESET_KEYS = ("preset", "description", "model", "kind", "command", "code_commit", "experiment_commit", "recorded",
               "seconds", "metrics")  # fmt: skip


def load_presets(directory: Path | None) -> list[dict]:
    """The recorded preset runs (`fashion-mlp preset NAME` wrote reports/presets/NAME.json), by name.

    Each becomes a row named `<model> (preset <name>)` with the preset's goal; a file that is not such
    a record is an error naming it. No directory: no presets.
    """
    if directory is None or not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            record = read_json(path)
        except ValueError as exc:
            raise PipelineError(f"{path}: cannot read the preset record ({exc})") from None
        if not isinstance(record, dict):
            missing = list(PRESET_KEYS)
        else:  # the record's own keys first, then the metrics' keys that the table reads
            missing = [key for key in PRESET_KEYS if key not in record]
            missing = missing or [f"metrics.{key}" for key in REQUIRED if key not in record["metrics"]]
        if missing:
            raise PipelineError(f"{path}: not a record of `fashion-mlp preset` (missing {', '.join(missing)})")
        records.append(record)
    return records


def ran_on(preset: dict) -> str:
    """`on <its CPU>`, with a space before, for a record that names it; records older than the field lack it."""
    return f" on {label(preset['machine'])}" if "machine" in preset else ""


def row_name(preset: dict) -> str:
    return f"{preset['model']} (preset {preset['preset']})"


def preset_pairs(presets: list[dict], run_correct: dict[str, np.ndarray], actual: np.ndarray) -> list[dict]:
    """Exact McNemar tests, Holm-adjusted, between every preset that recorded its predictions (`predicted`)
    and the run's models those presets are about (mlp-long: tuned): did the longer recipe help, image by image?
    Two run models are not paired here: the summary's own McNemar section tests them.

    `actual` is the test images' true classes, in the order of the run's predictions and of every record.
    A record made before records kept predictions has none, and one made on another number of test images
    (a run with `prepare.limit_test`) cannot be paired: both are left out, and the section says so.
    """
    kept = [p for p in presets if "predicted" in p and len(p["predicted"]) == len(actual)]
    if not kept:
        return []
    correct = {row_name(p): np.frombuffer(p["predicted"].encode(), dtype=np.uint8) - ord("0") == actual for p in kept}
    about = [m for m in dict.fromkeys(p["model"] for p in kept) if m in run_correct]  # what a kept preset lengthens
    return pairwise_mcnemar(
        {**correct, **{m: run_correct[m] for m in about}}, tested=lambda a, b: a in correct or b in correct
    )


def preset_pairs_section(pairs: list[dict], presets: list[dict]) -> list[str]:
    """The presets' paired tests, and which records had no predictions to test."""
    if not pairs:
        return []
    unpaired = [row_name(p) for p in presets if "predicted" not in p]
    paired = {name for pair in pairs for name in (pair["a"], pair["b"])}
    elsewhere = [row_name(p) for p in presets if "predicted" in p and row_name(p) not in paired]
    left_out = (
        f" {', '.join(unpaired)} recorded no predictions (recorded before records kept them), so "
        f"{'it is' if len(unpaired) == 1 else 'they are'} not in this table."
        if unpaired
        else ""
    )
    if elsewhere:
        left_out += (
            f" {', '.join(elsewhere)} {'was' if len(elsewhere) == 1 else 'were'} scored on another number of "
            "test images than this run's, so not paired."
        )
    return [
        "### The presets, paired",
        "",
        "The presets that recorded their predictions on the same test images, against each other and against "
        f"this run's models they lengthen: exact McNemar tests, Holm-adjusted over this table, level {ALPHA}."
        + left_out,
        "",
        *pairs_table(pairs),
        "",
    ]


def preset_rows(presets: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """The presets' metrics as rows of the model table and figure, and their kinds."""
    rows = [{**p["metrics"], "model": row_name(p), "goal": p.get("goal")} for p in presets]
    return rows, {row["model"]: p["kind"] for row, p in zip(rows, presets, strict=True)}


def preset_section(presets: list[dict]) -> list[str]:
    """Where each preset row comes from: its recipe, command, commits and wall time."""
    if not presets:
        return []
    lines = [
        "## Longer recipes (presets)",
        "",
        "Recipes too long for the default run, each a DVC experiment run by `fashion-mlp preset <name>` "
        "(presets/<name>.yaml holds its params.yaml overrides); reports/presets/<name>.json records its latest run. "
        "Every choice in them was made on the validation split, as in the default run; their rows above are "
        "that record, not this run.",
        "",
    ]
    for p in presets:
        took = "" if p["seconds"] is None else f"in {p['seconds'] / 60:.1f} min "  # None: recorded afterwards, untimed
        lines += [
            f"- **{p['model']} (preset {p['preset']})**: {p['description'].strip()} "
            f"Ran {took}on {p['recorded']}{ran_on(p)} "
            f"(code {p['code_commit'][:7]}, experiment commit {p['experiment_commit'][:7]}): `{p['command']}`",
        ]
    return [*lines, ""]
