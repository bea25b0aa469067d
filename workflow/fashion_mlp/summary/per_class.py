"""The summary's per-class precision, recall and F1 of every model on the test set."""

from __future__ import annotations

from fashion_mlp.data import CLASS_NAMES


def per_class_table(metrics: list[dict]) -> list[str]:
    lines = [
        "| Class | " + " | ".join(f"{m['model']} P / R / F1" for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for name in CLASS_NAMES:
        cells = []
        for m in metrics:
            c = m["per_class"][name]
            cells.append(f"{c['precision']:.3f} / {c['recall']:.3f} / {c['f1']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
