"""The summary's model table: every model of the run, the presets' rows and the published anchors.

Its values are functions of params, code and data only, so summary.md stays byte-identical across reruns.
"""

from __future__ import annotations

from fashion_mlp.summary.anchors import ANCHORS

# Accuracy goals on the 10k test set, by model name (issues #2, #3 and #14's CNN row).
GOALS = {"baseline": 0.880, "regularized": 0.890, "tuned": 0.900, "cnn": 0.925}


REQUIRED = ("model", "accuracy", "val_accuracy", "macro_f1", "loss", "params", "epochs_run")  # the table reads them


def interval(metrics: dict, key: str) -> str:
    """'0.8757–0.8883' from the metrics JSON, or '' when evaluate wrote no intervals."""
    ci = metrics.get("confidence_intervals", {}).get(key)
    return f"{ci['low']:.4f}–{ci['high']:.4f}" if ci else ""


def model_table(metrics: list[dict], kinds: dict[str, str] | None = None) -> list[str]:
    """Every model and every published anchor, one row each."""
    kinds = kinds or {}
    lines = [
        "| Model | Kind | Validation accuracy | Test accuracy | 95 % CI | Macro F1 | 95 % CI | Test loss | Parameters "
        "| Epochs run | Goal |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in metrics:
        goal = GOALS.get(m["model"], m.get("goal"))  # a preset row carries its own goal
        verdict = "" if goal is None else f"≥ {goal:.3f} {'met' if m['accuracy'] >= goal else '**not met**'}"
        lines.append(
            f"| {m['model']} | {kinds.get(m['model'], '')} | {m['val_accuracy']:.4f} | {m['accuracy']:.4f} | "
            f"{interval(m, 'accuracy')} | {m['macro_f1']:.4f} | {interval(m, 'macro_f1')} | {m['loss']:.4f} | "
            f"{m['params']:,} | {m['epochs_run']} | {verdict} |"
        )
    for a in ANCHORS:
        note = f"anchor: {a.note}" if a.note else "anchor"
        lines.append(f"| *{a.name}* | {a.kind} | | {a.accuracy:.4f} | | | | | | | {note} |")
    return lines


def anchor_sources() -> list[str]:
    """The anchors' sources, one bullet each (workflow/fashion_mlp/summary/anchors.py holds them)."""
    return ["Sources of the anchors:", "", *(f"- {a.name}: {a.source}" for a in ANCHORS)]
