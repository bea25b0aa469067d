"""The summary's "Explanations" section, from `fashion-mlp explain`'s JSON files (docs/explain.md).

Markdown only; `explain` computes the figures.
"""

from __future__ import annotations

import os
from pathlib import Path


def summary_section(explain: list[dict], figures_dir: Path, summary_dir: Path) -> list[str]:
    """Markdown lines of the "Explanations" section, from `fashion-mlp explain`'s JSON files (docs/explain.md)."""

    def check(part: dict) -> str:
        rand = part["randomization"]
        key = rand["judged_on"]
        return f"{rand[key]:.2f} against {rand['noise_reference'][key]:.2f} ({rand['verdict']})"

    lines = [
        "## Explanations (SHAP and LRP)",
        "",
        "Both methods explain the logit of a class (docs/explain.md). Additivity and conservation: how far "
        "SHAP values sum from f(x) − E f(background), and how much of the logit LRP's relevance keeps down to the "
        "pixels. Randomization: Spearman correlation of |maps| on the garment's pixels between the trained model and "
        "the same architecture re-initialized, against the level two noise maps of the same input reach (x·noise "
        "for LRP, (x − background mean)·noise for SHAP): a method FAILS only when its 95 % interval lies above "
        "that level's, for then its maps keep more than the input. "
        "Deletion: area under accuracy as pixels are removed, highest attribution first (lower is more faithful); "
        "random order is the control.",
        "",
        "| Model | SHAP additivity gap | LRP relevance out → in | Randomization ρ SHAP vs noise "
        "| Randomization ρ LRP vs noise | Deletion area SHAP / LRP / random |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for e in explain:
        shap, lrp = e["shap"], e["lrp"]
        if lrp is None:  # a kind LRP does not cover (models/kinds.py)
            conservation, lrp_check, lrp_area = "n/a (kind not covered)", "n/a", "n/a"
        else:
            kept = lrp["conservation"]
            conservation = f"{kept['mean_relevance_out']:.2f} → {kept['mean_relevance_in']:.2f}"
            lrp_check, lrp_area = check(lrp), f"{lrp['deletion_area']:.3f}"
        lines.append(
            f"| {e['model']} | {shap['additivity_max_abs_gap']:.1e} | {conservation} | {check(shap)} | {lrp_check} | "
            f"{shap['deletion_area']:.3f} / {lrp_area} / {e['deletion']['random_area']:.3f} |"
        )
    lines.append("")
    for e in explain:
        links = []
        for kind, label in (("classes", "Per-class maps"), ("examples", "Examples"), ("deletion", "Deletion curves")):
            path = figures_dir / f"{e['model']}_explain_{kind}.png"
            if path.exists():
                links.append(f"[{label}]({Path(os.path.relpath(path, summary_dir)).as_posix()})")
        lines.append(f"- **{e['model']}**: " + " · ".join(links))
    return [*lines, ""]
