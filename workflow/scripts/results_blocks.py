"""The generators of results_doc.py's blocks: each turns the git-tracked reports into the Markdown lines of one
block (BLOCKS maps a block's name to its generator). Figures come from reports/metrics/, reports/explain/ and
reports/presets/, for the models of params.yaml, and from the published anchors; the wording follows the figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from results_explain import explain_findings, explain_methods, explain_summary, explain_table, lrp_conservation
from results_text import join_and, number_word, percent, value_span

from fashion_mlp import PipelineError
from fashion_mlp.config import load_params, model_names, students
from fashion_mlp.experiments.probe import load_probes
from fashion_mlp.io import read_json, read_metrics
from fashion_mlp.machine import label
from fashion_mlp.metrics.columns import REQUIRED
from fashion_mlp.models import kinds as model_kinds
from fashion_mlp.stages.register import choices
from fashion_mlp.summary.anchors import ANCHORS
from fashion_mlp.summary.models_table import GOALS
from fashion_mlp.summary.presets import load_presets, preset_rows, ran_on

REPO = Path(__file__).resolve().parents[2]

# What the README's table says each model is. Prose, not results: a model not named here is
# described by its kind ("a CNN"). The champion and the best MLP are computed, not typed.
DESCRIPTIONS = {
    "baseline": "the tutorial's model",
    "regularized": 'the tutorial\'s "improved" model, its decay really applied',
    "cnn": "a small CNN for comparison",
    "tuned": "Hyperband's best trial, retrained",
}


# --- the committed reports ----------------------------------------------------------------------


@dataclass
class Reports:
    """The git-tracked figures the blocks are written from, models in params.yaml's order."""

    models: list[str]
    kinds: dict[str, model_kinds.Kind]
    metrics: dict[str, dict]
    explain: dict[str, dict]
    presets: list[dict]
    probes: list[dict]


def load(root: Path = REPO) -> Reports:
    """params.yaml's models with their metrics and explanations, and the preset records; a missing
    or garbled file is an error naming it."""
    params = load_params(root / "params.yaml")
    models = model_names(params)
    blocks = {**params["train"], **students(params)}
    kinds = {name: model_kinds.of_block(blocks.get(name, {})) for name in models}  # tuned: no kind key
    metrics = read_metrics([root / f"reports/metrics/{name}.json" for name in models], REQUIRED)
    explain = {}
    for name in models:
        path = root / f"reports/explain/{name}.json"
        try:
            explain[name] = read_json(path)
        except (OSError, ValueError) as exc:
            raise PipelineError(f"{path}: cannot read explain's JSON ({exc})") from None
    return Reports(
        models=models,
        kinds=kinds,
        metrics={m["model"]: m for m in metrics},
        explain=explain,
        presets=load_presets(root / "reports/presets"),
        probes=load_probes(root / "reports/probes"),
    )


# --- wording ------------------------------------------------------------------------------------


# --- the blocks ---------------------------------------------------------------------------------


def models_table(r: Reports) -> list[str]:
    """Every model of the run, every recorded preset and every published anchor, one row each."""
    mlp_kinds = {name: kind.name for name, kind in r.kinds.items()}
    champion, best_mlp = choices(r.metrics, mlp_kinds)
    lines = [
        "| Model | Test accuracy | Macro F1 | Val. accuracy | What it is |",
        "|---|---:|---:|---:|---|",
    ]
    for name in r.models:
        m = r.metrics[name]
        roles = (["the champion"] if name == champion else []) + (
            ["the best MLP: `best-mlp`"] if name == best_mlp else []
        )
        what = DESCRIPTIONS.get(name, r.kinds[name].noun) + (f" ({join_and(roles)})" if roles else "")
        lines.append(f"| {name} | **{m['accuracy']:.4f}** | {m['macro_f1']:.4f} | {m['val_accuracy']:.4f} | {what} |")
    rows, _ = preset_rows(r.presets)
    for row, p in zip(rows, r.presets, strict=True):
        took = "" if p["seconds"] is None else f" ({p['seconds'] / 60:.0f} min)"
        what = f"{p['model']}'s longer recipe `presets/{p['preset']}.yaml`, last run on {p['recorded']}{took}"
        lines.append(
            f"| {row['model']} | **{row['accuracy']:.4f}** | {row['macro_f1']:.4f} | {row['val_accuracy']:.4f} "
            f"| {what} |"
        )
    for a in ANCHORS:
        note = f"; {a.note}" if a.note else ""
        lines.append(f"| *{a.name}* | *{a.accuracy:.4f}* | | | published: {a.source}{note} |")
    return lines


def goals(r: Reports) -> list[str]:
    """Which goals the default run and the presets meet, and which models the aliases go to."""
    met, missed = [], []
    for name in r.models:
        if name in GOALS:
            accuracy = r.metrics[name]["accuracy"]
            (met if accuracy >= GOALS[name] else missed).append((name, GOALS[name], accuracy))
    clauses = []
    if met:
        clauses.append(f"the goals of {join_and([f'{name} (≥ {goal:.3f})' for name, goal, _ in met])} are met")
    if missed:
        owners = join_and([f"{name}'s (≥ {goal:.3f}, at {accuracy:.4f})" for name, goal, accuracy in missed])
        clauses.append(f"{owners} {'is' if len(missed) == 1 else 'are'} not, within the run's time budget")
    text = f"In the default run {'; '.join(clauses)}." if clauses else ""
    recipes = []
    for p in r.presets:
        accuracy, goal = p["metrics"]["accuracy"], p.get("goal")
        default = r.metrics.get(p["model"], {}).get("accuracy")
        verdict = "" if goal is None else f" against the goal ≥ {goal:.3f} ({'met' if accuracy >= goal else 'not met'})"
        if default is None:  # a model the preset adds (a student under distill:)
            recipes.append(f"{p['preset']} adds {p['model']}, at {accuracy:.4f}{verdict}")
        else:
            recipes.append(f"{p['preset']} takes {p['model']} from {default:.4f} to {accuracy:.4f}{verdict}")
    if recipes:
        text += " Longer recipes, each a DVC experiment: " + "; ".join(recipes) + "."
    champion, best_mlp = choices(r.metrics, {name: kind.name for name, kind in r.kinds.items()})
    mlp = f" and the best MLP **{best_mlp}** (alias `best-mlp`)" if best_mlp and best_mlp != champion else ""
    text += f" By validation accuracy the champion is **{champion}**{mlp}."
    return [text.strip()]


def calibration_summary(r: Reports) -> list[str]:
    """Over- or under-confidence (the temperature) and what temperature scaling does to the ECE."""
    cal = {name: r.metrics[name]["calibration"] for name in r.models}
    temps = {name: c["temperature"] for name, c in cal.items()}
    over = [name for name, t in temps.items() if t > 1]
    under = [name for name, t in temps.items() if t < 1]
    n = len(temps)
    if len(over) == n:
        t_span = value_span(list(temps.values()), ".3f")
        text = f"All {number_word(n)} models are over-confident (temperature T {t_span}, above 1)"
    elif len(under) == n:
        t_span = value_span(list(temps.values()), ".3f")
        text = f"All {number_word(n)} models are under-confident (temperature T {t_span}, below 1)"
    else:
        verb = {True: "is", False: "are"}
        parts = [f"{join_and(over)} {verb[len(over) == 1]} over-confident (T > 1)"] if over else []
        parts += [f"{join_and(under)} {verb[len(under) == 1]} under-confident (T < 1)"] if under else []
        exact = [name for name, t in temps.items() if t == 1]
        parts += [f"{join_and(exact)} {verb[len(exact) == 1]} calibrated as trained (T = 1)"] if exact else []
        text = "Of the models, " + ", ".join(parts)
    cuts = {name: 1 - c["ece_scaled"] / c["ece"] for name, c in cal.items() if c["ece"] > 0}
    lower = sorted((share, name) for name, share in cuts.items() if share > 0)
    higher = [name for name, share in cuts.items() if share <= 0]
    if lower:
        (low, low_name), (high, high_name) = lower[0], lower[-1]
        span = (
            f"{percent(low)} ({low_name})" if low_name == high_name else
            f"{percent(low)} ({low_name}) to {percent(high)} ({high_name})"
        )  # fmt: skip
        lowered = {name for _, name in lower}
        who = "" if len(lower) == n else f" of {join_and([name for name in cal if name in lowered])}"
        text += (
            f": temperature scaling fitted on the validation split cuts the expected calibration error{who} by {span}"
        )
    if higher:
        text += f"{'; it' if lower else ': temperature scaling'} does not lower that of {join_and(higher)}"
    return [text + "."]


def intervals_table(r: Reports) -> list[str]:
    """Each model's intervals, temperature, ECE and NLL, from its metrics JSON."""
    lines = [
        "| Model | Test accuracy (95 % CI) | Macro F1 (95 % CI) | T | ECE before → after | Test NLL before → after |",
        "|---|---|---|---:|---|---|",
    ]
    for name in r.models:
        m = r.metrics[name]
        ci, c = m["confidence_intervals"], m["calibration"]
        lines.append(
            f"| {name} | {m['accuracy']:.4f} ({ci['accuracy']['low']:.4f}–{ci['accuracy']['high']:.4f}) "
            f"| {m['macro_f1']:.4f} ({ci['macro_f1']['low']:.4f}–{ci['macro_f1']['high']:.4f}) "
            f"| {c['temperature']:.3f} | {c['ece']:.4f} → {c['ece_scaled']:.4f} "
            f"| {c['nll']:.4f} → {c['nll_scaled']:.4f} |"
        )
    return lines


def presets(r: Reports) -> list[str]:
    """What each recorded preset scored, against its goal, from reports/presets/<name>.json."""
    lines = []
    for p in r.presets:
        m = p["metrics"]
        low, high = m["confidence_intervals"]["accuracy"]["low"], m["confidence_intervals"]["accuracy"]["high"]
        goal = p.get("goal")
        if goal is None:
            verdict = ""
        elif low >= goal:
            verdict = f" against its goal of {goal:.3f}: met, and the interval's lower end clears it too"
        elif m["accuracy"] >= goal:
            verdict = f" against its goal of {goal:.3f}: met, though the interval's lower end does not clear it"
        else:
            verdict = f" against its goal of {goal:.3f}: not met"
        took = "" if p["seconds"] is None else f", {p['seconds'] / 60:.1f} min for the whole experiment"
        lines.append(
            f"- **{p['preset']}** ({p['model']}): test accuracy **{m['accuracy']:.4f}** (95 % interval "
            f"{low:.4f}–{high:.4f}){verdict}; validation {m['val_accuracy']:.4f}, "
            f"{m['val_accuracy'] - m['accuracy']:.3f} above test; {m['params']:,} parameters; "
            f"recorded on {p['recorded']}{ran_on(p)}{took}."
        )
    return lines or ["- No preset has been recorded yet."]


def probes(r: Reports) -> list[str]:
    """Every probe of a preset's recipe (`fashion-mlp probe`), on validation only, from reports/probes/NAME.jsonl."""
    if not r.probes:
        return ["No probe has been recorded yet."]
    lines = [
        "| Preset | Probe | Changes | Seed | Teacher (validation) | Validation | Best epoch | Training accuracy "
        "| CPU | Recorded | Minutes |",
        "|---|---|---|---:|---|---:|---|---:|---|---|---:|",
    ]
    for p in r.probes:
        changes = "; ".join(f"`{key}={value}`" for key, value in p["set"].items()) or "none"
        teacher = p.get("teacher")
        if teacher is None:
            taught = "none"
        elif teacher["trained"]:
            taught = f"{teacher['model']}, trained ({teacher['val_accuracy']:.4f})"
        else:
            known = f"{teacher['val_accuracy']:.4f}; " if "val_accuracy" in teacher else ""
            taught = f"{teacher['model']}, reused ({known}sha256 {teacher['sha256'][:12]})"
        cpu = label(p["machine"]) if "machine" in p else "not recorded"
        minutes = f"{sum(p.get('seconds', {}).values()) / 60:.1f}"
        if p.get("side_by_side", 1) > 1:
            minutes += f" ({p['side_by_side']} side by side)"
        lines.append(
            f"| {p['preset']} | {p['label']} | {changes} | {p['seed']} | {taught} | **{p['val_accuracy']:.4f}** "
            f"| {p['best_val_accuracy']:.4f} ({p['best_epoch']}) | {p['train_accuracy']:.4f} | {cpu} "
            f"| {p.get('recorded', '')} | {minutes} |"
        )
    return lines


def val_test_gap(r: Reports) -> list[str]:
    """How far test accuracy falls below validation accuracy, over the run's models and the presets."""
    rows = [(name, r.metrics[name]) for name in r.models] + [(f"preset {p['preset']}", p["metrics"]) for p in r.presets]
    gaps = {name: m["val_accuracy"] - m["accuracy"] for name, m in rows}
    lower = [name for name, gap in gaps.items() if gap > 0]
    higher = [name for name, gap in gaps.items() if gap <= 0]
    clauses = []
    if lower:
        low_name, high_name = min(lower, key=gaps.get), max(lower, key=gaps.get)
        low, high = gaps[low_name], gaps[high_name]
        who = "Every model of the default run and every preset" if not higher else join_and(lower)
        by = (
            f"{low:.3f} ({low_name})"
            if low_name == high_name
            else f"{low:.3f} ({low_name}) to {high:.3f} ({high_name})"
        )
        clauses.append(f"{who} {'scores' if not higher else 'score'} lower on test than on validation, by {by}")
    if higher:
        clauses.append(
            f"{join_and(higher)} {'scores' if len(higher) == 1 else 'score'} as high on test as on validation, "
            "or higher"
        )
    return ["; ".join(clauses) + "."]


BLOCKS: dict[str, Callable[[Reports], list[str]]] = {
    "models-table": models_table,
    "goals": goals,
    "calibration-summary": calibration_summary,
    "explain-summary": explain_summary,
    "explain-table": explain_table,
    "explain-findings": explain_findings,
    "explain-methods": explain_methods,
    "lrp-conservation": lrp_conservation,
    "intervals-table": intervals_table,
    "presets": presets,
    "val-test-gap": val_test_gap,
    "probes": probes,
}
