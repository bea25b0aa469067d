"""The summary's "Figures" section: links to each model's figures from `evaluate`."""

from __future__ import annotations

import os
from pathlib import Path

FIGURES = (
    ("confusion", "Confusion matrix"),
    ("curves", "Training/validation curves"),
    ("predictions", "Predictions grid"),
    ("reliability", "Reliability diagram"),
)


def figure_links(metrics: list[dict], figures_dir: Path, summary_dir: Path) -> list[str]:
    lines = []
    for m in metrics:
        links = []
        for kind, label in FIGURES:
            path = figures_dir / f"{m['model']}_{kind}.png"
            if path.exists():
                links.append(f"[{label}]({Path(os.path.relpath(path, summary_dir)).as_posix()})")
        lines.append(f"- **{m['model']}**: " + " · ".join(links))
    return lines
