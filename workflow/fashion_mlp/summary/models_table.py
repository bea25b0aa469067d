"""The summary's model table: every model of the run, the presets' rows and the published anchors.

Its values are functions of params, code and data only, so summary.md stays byte-identical across reruns.
"""

from __future__ import annotations

from fashion_mlp.metrics.columns import cell, interval_cell, table_columns
from fashion_mlp.summary.anchors import ANCHORS

# Accuracy goals on the 10k test set, by model name: the tutorial's, beaten (baseline, regularized), and the
# project's own for the search and the CNN. A model without one gets a blank cell.
GOALS = {"baseline": 0.880, "regularized": 0.890, "tuned": 0.900, "cnn": 0.925}


def model_table(metrics: list[dict], kinds: dict[str, str] | None = None) -> list[str]:
    """Every model and every published anchor, one row each; the figures' columns are columns.COLUMNS'."""
    kinds = kinds or {}
    headers, align = ["Model", "Kind"], ["---", "---"]
    for column in table_columns():
        headers += [column.header, "95 % CI"] if column.interval else [column.header]
        align += ["---:"] * (2 if column.interval else 1)
    lines = [f"| {' | '.join([*headers, 'Goal'])} |", f"|{'|'.join([*align, '---'])}|"]
    for m in metrics:
        goal = GOALS.get(m["model"], m.get("goal"))  # a preset row carries its own goal
        verdict = "" if goal is None else f"≥ {goal:.3f} {'met' if m['accuracy'] >= goal else '**not met**'}"
        cells = [m["model"], kinds.get(m["model"], "")]
        for column in table_columns():
            cells += [cell(m, column), interval_cell(m, column.key)] if column.interval else [cell(m, column)]
        lines.append(f"| {' | '.join([*cells, verdict])} |")
    for a in ANCHORS:
        cells = [f"*{a.name}*", a.kind]
        for column in table_columns():
            cells += [f"{a.accuracy:.4f}" if column.anchor else ""] + ([""] if column.interval else [])
        cells.append(f"anchor: {a.note}" if a.note else "anchor")
        lines.append("|" + "|".join(f" {c} " if c else " " for c in cells) + "|")
    return lines


def anchor_sources() -> list[str]:
    """The anchors' sources, one bullet each (workflow/fashion_mlp/summary/anchors.py holds them)."""
    return ["Sources of the anchors:", "", *(f"- {a.name}: {a.source}" for a in ANCHORS)]
