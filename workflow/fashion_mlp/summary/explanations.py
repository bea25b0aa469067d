"""The summary's "Explanations" section, from `fashion-mlp explain`'s JSON files (docs/explain.md).

Markdown only; `explain` computes the figures.
"""

from __future__ import annotations

import os
from pathlib import Path

from fashion_mlp.attribution.checks import CONTROLS

FIGURES = (  # explain's figures of a model, as the summary links them
    ("classes", "Per-class maps"),
    ("examples", "Examples"),
    ("deletion", "Deletion and insertion curves"),
    ("cascade", "Layer randomization"),
    ("randomized", "Randomized maps"),
)


def summary_section(explain: list[dict], figures_dir: Path, summary_dir: Path) -> list[str]:
    """Markdown lines of the "Explanations" section, from `fashion-mlp explain`'s JSON files (docs/explain.md)."""

    def check(part: dict) -> str:
        rand = part["randomization"]
        key = rand["judged_on"]
        return f"{rand[key]:.2f} against {rand['noise_reference'][key]:.2f} ({rand['verdict']})"

    def areas(e: dict, test: str) -> str:
        lrp = f"{e['lrp'][f'{test}_area']:.3f}" if e["lrp"] else "n/a"
        controls = " / ".join(f"{e[test][f'{c}_area']:.3f}" for c in CONTROLS)
        return f"{e['shap'][f'{test}_area']:.3f} / {lrp} ({controls})"

    lines = [
        "## Explanations (SHAP and LRP)",
        "",
        "Both methods explain the logit of a class (docs/explain.md). Additivity and conservation: how far "
        "SHAP values sum from f(x) − E f(background), and how much of the logit LRP's relevance keeps down to the "
        "pixels. Randomization: Spearman correlation of |maps| on the garment's pixels between the trained model and "
        "the same architecture re-initialized, against the level two noise maps of the same input reach (x·noise "
        "for LRP, (x − background mean)·noise for SHAP): a method FAILS only when its 95 % interval lies above "
        "that level's by more than the margin of docs/explain.md, for then its maps keep more than the input. "
        "Deletion and insertion: area under accuracy as pixels are removed from the image, or put back on an empty "
        "canvas, highest attribution first (lower deletion and higher insertion are more faithful). A method must "
        "beat three control orders on both: random, random on the garment, and brightest pixel first.",
        "",
        "| Model | SHAP additivity gap | LRP relevance out → in | Randomization ρ SHAP vs noise "
        "| Randomization ρ LRP vs noise | Deletion area SHAP / LRP (controls) | Insertion area SHAP / LRP (controls) "
        "| Faithfulness SHAP / LRP |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in explain:
        shap, lrp = e["shap"], e["lrp"]
        if lrp is None:  # a kind LRP does not cover (models/kinds.py)
            conservation, lrp_check, lrp_verdict = "n/a (kind not covered)", "n/a", "n/a"
        else:
            kept = lrp["conservation"]
            conservation = f"{kept['mean_relevance_out']:.2f} → {kept['mean_relevance_in']:.2f}"
            lrp_check, lrp_verdict = check(lrp), lrp["faithfulness_verdict"]
        lines.append(
            f"| {e['model']} | {shap['additivity_max_abs_gap']:.1e} | {conservation} | {check(shap)} | {lrp_check} | "
            f"{areas(e, 'deletion')} | {areas(e, 'insertion')} | {shap['faithfulness_verdict']} / {lrp_verdict} |"
        )
    lines += [
        "",
        "The same checks on reference methods: the plain gradient and SmoothGrad (judged against plain noise "
        "maps), input × gradient and Integrated Gradients from a black or the background-mean image (against "
        "noise maps multiplied by the input, or by its distance from the baseline).",
        "",
        *methods_table(explain),
        "",
    ]
    for e in explain:
        links = []
        for kind, label in FIGURES:
            path = figures_dir / f"{e['model']}_explain_{kind}.png"
            if path.exists():
                links.append(f"[{label}]({Path(os.path.relpath(path, summary_dir)).as_posix()})")
        lines.append(f"- **{e['model']}**: " + " · ".join(links))
    return [*lines, ""]


def methods_table(explain: list[dict]) -> list[str]:
    """SHAP, LRP and the reference methods (gradient, SmoothGrad, input × gradient, Integrated Gradients)
    through the same checks, one row per model and method: is a result the method's, or the data's and the metric's?"""
    lines = [
        "| Model | Method | ρ \\|maps\\| on the garment, trained vs randomized (noise maps: form, level) "
        "| Randomization | Every layer re-initialized, top down (two random inits) | Trained on permuted labels "
        "| Deletion / insertion area | Against the control orders |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for e in explain:
        parts = [(key, label, e[key]) for key, label in (("shap", "SHAP"), ("lrp", "LRP")) if e.get(key)]
        parts += [(key, part["label"], part) for key, part in e.get("reference_methods", {}).items()]
        layers = e.get("cascade")
        for key, label, part in parts:
            cascade = permuted = "n/a"
            if layers and key in layers["cascading"]:  # the methods of explain.cascade_methods
                cascade = f"{layers['cascading'][key][-1]['mean']:.2f} ({layers['two_random_inits'][key]['mean']:.2f})"
                if "permuted_labels" in layers:  # the data randomization, when run
                    permuted = f"{layers['permuted_labels'][key]['mean']:.2f}"
            rand = part["randomization"]
            judged = rand["judged_on"]
            rho = f"{rand[judged]:.2f} ({rand['reference']}: {rand['noise_reference'][judged]:.2f})"
            areas = f"{part['deletion_area']:.3f} / {part['insertion_area']:.3f}"
            lines.append(
                f"| {e['model']} | {label} | {rho} | {rand['verdict']} | {cascade} | {permuted} | {areas} "
                f"| {part['faithfulness_verdict']} |"
            )
    return lines
