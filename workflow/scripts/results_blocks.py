"""The generators of results_doc.py's blocks: each turns the git-tracked reports into the Markdown lines of one
block (BLOCKS maps a block's name to its generator). Figures come from reports/metrics/, reports/explain/ and
reports/presets/, for the models of params.yaml, and from the published anchors; the wording follows the figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fashion_mlp import PipelineError
from fashion_mlp.attribution.checks import CONTROLS
from fashion_mlp.config import load_params, model_names
from fashion_mlp.io import read_json, read_metrics
from fashion_mlp.metrics.columns import REQUIRED
from fashion_mlp.models import kinds as model_kinds
from fashion_mlp.stages.register import choices
from fashion_mlp.summary.anchors import ANCHORS
from fashion_mlp.summary.explanations import methods_table
from fashion_mlp.summary.models_table import GOALS
from fashion_mlp.summary.presets import load_presets, preset_rows

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


def load(root: Path = REPO) -> Reports:
    """params.yaml's models with their metrics and explanations, and the preset records; a missing
    or garbled file is an error naming it."""
    params = load_params(root / "params.yaml")
    models = model_names(params)
    kinds = {name: model_kinds.of_block(params["train"].get(name, {})) for name in models}  # tuned: no kind key
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
    )


# --- wording ------------------------------------------------------------------------------------


def _and(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _span(values: list[float], spec: str) -> str:
    """'0.51' when the values print alike, else '0.51 to 0.55'."""
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low} to {high}"


def _every(count: int, total: int) -> str:
    return "every model" if count == total else f"{count} of {total} models"


def _verdicts(r: Reports, method: str, label: str) -> str:
    """'SHAP fails on every model', 'LRP fails on 1 of 4 models (cnn)', 'SHAP passes on every model'."""
    covered = [m for m in r.models if r.explain[m].get(method)]
    failed = [m for m in covered if r.explain[m][method]["randomization"]["verdict"] == "FAILS"]
    if not failed:
        return f"{label} passes on every model"
    which = "" if len(failed) == len(covered) else f" ({', '.join(failed)})"
    return f"{label} fails on {_every(len(failed), len(covered))}{which}"


def _faithful(r: Reports, method: str, label: str) -> str:
    """'SHAP beats every control on every model', 'LRP beats every control on 2 of 3 models (cnn: brightest)'."""
    covered = [m for m in r.models if r.explain[m].get(method)]
    missed = {m: [c for c, ok in r.explain[m][method]["beats"].items() if not ok] for m in covered}
    missed = {m: controls for m, controls in missed.items() if controls}
    if not missed:
        return f"{label} beats every control on every model"
    which = "; ".join(f"{m}: not {', '.join(c.replace('_', ' ') for c in controls)}" for m, controls in missed.items())
    return f"{label} beats every control on {_every(len(covered) - len(missed), len(covered))} ({which})"


def _control_areas(r: Reports, names: list[str], test: str) -> str:
    """'random 0.52 to 0.55, random garment 0.40 to 0.42, brightest 0.30 to 0.33': the controls' areas of a test."""
    return ", ".join(
        f"{c.replace('_', ' ')} {_span([r.explain[m][test][f'{c}_area'] for m in names], '.3f')}" for c in CONTROLS
    )


def _methods(r: Reports) -> list[tuple[str, str]]:
    """The attribution methods that explain at least one model (LRP leaves out a kind it does not cover)."""
    return [
        (key, label)
        for key, label in (("shap", "SHAP"), ("lrp", "LRP"))
        if any(r.explain[m].get(key) for m in r.models)
    ]


NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _count(n: int) -> str:
    return NUMBERS[n] if n < len(NUMBERS) else str(n)


def _percent(share: float) -> str:
    return f"{100 * share:.0f} %"


def _kind_groups(r: Reports, models: list[str]) -> list[tuple[str, list[str]]]:
    """Models grouped by kind, in registry order: ('MLPs', [...]), ('CNN', [...])."""
    groups = []
    for kind in model_kinds.KINDS.values():
        names = [m for m in models if r.kinds[m].name == kind.name]
        if names:
            label = kind.name.upper() + ("s" if len(names) > 1 else "")
            groups.append((label, names))
    return groups


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
        what = DESCRIPTIONS.get(name, r.kinds[name].noun) + (f" ({_and(roles)})" if roles else "")
        lines.append(f"| {name} | **{m['accuracy']:.4f}** | {m['macro_f1']:.4f} | {m['val_accuracy']:.4f} | {what} |")
    rows, _ = preset_rows(r.presets)
    for row, p in zip(rows, r.presets, strict=True):
        took = "" if p["seconds"] is None else f", {p['seconds'] / 60:.0f} min"
        what = f"{p['model']}'s longer recipe `presets/{p['preset']}.yaml`, run once ({p['recorded']}{took})"
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
        clauses.append(f"the goals of {_and([f'{name} (≥ {goal:.3f})' for name, goal, _ in met])} are met")
    if missed:
        owners = _and([f"{name}'s (≥ {goal:.3f}, at {accuracy:.4f})" for name, goal, accuracy in missed])
        clauses.append(f"{owners} {'is' if len(missed) == 1 else 'are'} not, within the run's time budget")
    text = f"In the default run {'; '.join(clauses)}." if clauses else ""
    recipes = []
    for p in r.presets:
        accuracy, goal = p["metrics"]["accuracy"], p.get("goal")
        default = r.metrics.get(p["model"], {}).get("accuracy")
        start = f" from {default:.4f}" if default is not None else ""
        verdict = "" if goal is None else f" against the goal ≥ {goal:.3f} ({'met' if accuracy >= goal else 'not met'})"
        recipes.append(f"{p['preset']} takes {p['model']}{start} to {accuracy:.4f}{verdict}")
    if recipes:
        text += " Longer recipes, each run once as a DVC experiment: " + "; ".join(recipes) + "."
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
        text = (
            f"All {_count(n)} models are over-confident (temperature T {_span(list(temps.values()), '.3f')}, above 1)"
        )
    elif len(under) == n:
        text = (
            f"All {_count(n)} models are under-confident (temperature T {_span(list(temps.values()), '.3f')}, below 1)"
        )
    else:
        verb = {True: "is", False: "are"}
        parts = [f"{_and(over)} {verb[len(over) == 1]} over-confident (T > 1)"] if over else []
        parts += [f"{_and(under)} {verb[len(under) == 1]} under-confident (T < 1)"] if under else []
        exact = [name for name, t in temps.items() if t == 1]
        parts += [f"{_and(exact)} {verb[len(exact) == 1]} calibrated as trained (T = 1)"] if exact else []
        text = "Of the models, " + ", ".join(parts)
    cuts = {name: 1 - c["ece_scaled"] / c["ece"] for name, c in cal.items() if c["ece"] > 0}
    lower = sorted((share, name) for name, share in cuts.items() if share > 0)
    higher = [name for name, share in cuts.items() if share <= 0]
    if lower:
        (low, low_name), (high, high_name) = lower[0], lower[-1]
        span = (
            f"{_percent(low)} ({low_name})" if low_name == high_name else
            f"{_percent(low)} ({low_name}) to {_percent(high)} ({high_name})"
        )  # fmt: skip
        lowered = {name for _, name in lower}
        who = "" if len(lower) == n else f" of {_and([name for name in cal if name in lowered])}"
        text += (
            f": temperature scaling fitted on the validation split cuts the expected calibration error{who} by {span}"
        )
    if higher:
        text += f"{'; it' if lower else ': temperature scaling'} does not lower that of {_and(higher)}"
    return [text + "."]


def explain_summary(r: Reports) -> list[str]:
    """The randomization verdicts and the deletion test, in one sentence per check."""
    verdicts = []
    for method, label in _methods(r):
        covered = [r.explain[m][method]["randomization"] for m in r.models if r.explain[m].get(method)]
        rho = _span([c[c["judged_on"]] for c in covered], ".2f")
        noise = _span([c["noise_reference"][c["judged_on"]] for c in covered], ".2f")
        verdicts.append(f"{_verdicts(r, method, label)}, with ρ {rho} against {noise} for noise maps")
    text = (
        "By the model-randomization sanity check on the maps' magnitudes over the garment, judged against two noise "
        "maps of the same input (a method fails when its interval lies above theirs by more than the margin), "
        f"{_and(verdicts)}."
    )
    areas = {}
    for method, label in _methods(r):
        covered = [r.explain[m] for m in r.models if r.explain[m].get(method)]
        areas[label] = (_span([e[method]["deletion_area"] for e in covered], ".3f"),
                        _span([e[method]["insertion_area"] for e in covered], ".3f"))  # fmt: skip
    verdicts = _and([_faithful(r, method, label) for method, label in _methods(r)])
    text += (
        " By the deletion and insertion tests (pixels removed, or put back on an empty canvas, in the method's order; "
        f"a method beats a control with a lower deletion and a higher insertion area), {verdicts}. Deletion areas "
        f"{', '.join(f'{k} {v[0]}' for k, v in areas.items())} against {_control_areas(r, r.models, 'deletion')}; "
        f"insertion areas {', '.join(f'{k} {v[1]}' for k, v in areas.items())} against "
        f"{_control_areas(r, r.models, 'insertion')}."
    )
    return [text]


def explain_table(r: Reports) -> list[str]:
    """explain's checks per model, with the model's test accuracy."""
    lines = [
        "| Model | Test accuracy | SHAP additivity gap | LRP relevance out → in | ρ signed SHAP / LRP "
        "| ρ \\|maps\\| SHAP / LRP | ρ \\|maps\\| on garment SHAP / LRP (noise maps) "
        "| Deletion area SHAP / LRP (controls: random / on garment / brightest) | Insertion area, likewise |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in r.models:
        e, shap, lrp = r.explain[name], r.explain[name]["shap"], r.explain[name].get("lrp")

        def both(key: str, shap=shap, lrp=lrp, noise: bool = False) -> str:
            def cell(rand: dict) -> str:
                return f"{rand[key]:.3f}" + (f" ({rand['noise_reference'][key]:.3f})" if noise else "")

            return f"{cell(shap['randomization'])} / {cell(lrp['randomization']) if lrp else 'n/a'}"

        kept = "n/a"
        if lrp:
            kept = f"{lrp['conservation']['mean_relevance_out']:.2f} → {lrp['conservation']['mean_relevance_in']:.2f}"

        def areas(test: str, shap=shap, lrp=lrp, e=e) -> str:
            lrp_area = f"{lrp[f'{test}_area']:.3f}" if lrp else "n/a"
            controls = " / ".join(f"{e[test][f'{c}_area']:.3f}" for c in CONTROLS)
            return f"{shap[f'{test}_area']:.3f} / {lrp_area} ({controls})"

        lines.append(
            f"| {name} | {r.metrics[name]['accuracy']:.4f} | {shap['additivity_max_abs_gap']:.1e} "
            f"| {kept} | {both('spearman')} | {both('spearman_abs')} "
            f"| {both('spearman_abs_on_garment', noise=True)} "
            f"| {areas('deletion')} | {areas('insertion')} |"
        )
    return lines


def explain_findings(r: Reports) -> list[str]:
    """The table above in words, one bullet per check, the kinds side by side."""
    gaps = {m: r.explain[m]["shap"]["additivity_max_abs_gap"] for m in r.models}
    worst = max(gaps, key=lambda m: (gaps[m], m))
    rounding = "to float32 rounding" if gaps[worst] < 1e-5 else "only roughly, above float32 rounding"
    lines = [f"- SHAP is additive {rounding}: its largest gap is {gaps[worst]:.1e} ({worst})."]
    lrp = [m for m in r.models if r.explain[m].get("lrp")]
    if lrp:
        kept = [
            f"{m} {_percent(c['mean_relevance_in'] / c['mean_relevance_out'])}"
            for m in lrp
            for c in [r.explain[m]["lrp"]["conservation"]]
        ]
        lines.append(f"- The share of the logit that LRP's relevance keeps down to the pixels: {', '.join(kept)}.")
    for key, label in (("spearman_abs_on_garment", "ρ of |maps| on the garment"), ("spearman_abs", "Over all pixels"),
                       ("spearman", "Signed maps")):  # fmt: skip
        groups = []
        for kind, names in _kind_groups(r, r.models):
            shap = _span([r.explain[m]["shap"]["randomization"][key] for m in names], ".2f")
            covered = [m for m in names if r.explain[m].get("lrp")]
            lrp_span = _span([r.explain[m]["lrp"]["randomization"][key] for m in covered], ".2f") if covered else "n/a"
            groups.append(f"{kind} SHAP {shap}, LRP {lrp_span}")
        noise = {
            method: _span([r.explain[m][method]["randomization"]["noise_reference"][key] for m in names], ".2f")
            for method, names in (("shap", r.models), ("lrp", [m for m in r.models if r.explain[m].get("lrp")]))
            if names
        }
        groups.append("noise maps " + ", ".join(f"{m.upper()}'s {v}" for m, v in noise.items()))
        if key == "spearman_abs_on_garment":
            verdicts = _and([_verdicts(r, method, label) for method, label in _methods(r)])
            lines.append(
                "- The randomization check, on |maps| over the garment against two noise maps of the same input "
                f"(x·noise for LRP, (x − background mean)·noise for SHAP): {verdicts}. {label}: {'; '.join(groups)}."
            )
        else:
            lines.append(f"  {label}: {'; '.join(groups)}.")
    for test, better in (("deletion", "lower"), ("insertion", "higher")):
        groups = []
        for kind, names in _kind_groups(r, r.models):
            areas = []
            for method, name in _methods(r):
                covered = [m for m in names if r.explain[m].get(method)]
                if covered:
                    areas.append(f"{name} {_span([r.explain[m][method][f'{test}_area'] for m in covered], '.3f')}")
            groups.append(f"{kind} {', '.join(areas)} against {_control_areas(r, names, test)}")
        lines.append(f"- {test.capitalize()} areas ({better} is more faithful): {'; '.join(groups)}.")
    lines.append(f"  Against the three controls: {_and([_faithful(r, m, label) for m, label in _methods(r)])}.")
    return lines


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
            f"recorded on {p['recorded']}{took}."
        )
    return lines or ["- No preset has been recorded yet."]


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
        who = "Every model of the default run and every preset" if not higher else _and(lower)
        by = (
            f"{low:.3f} ({low_name})"
            if low_name == high_name
            else f"{low:.3f} ({low_name}) to {high:.3f} ({high_name})"
        )
        clauses.append(f"{who} {'scores' if not higher else 'score'} lower on test than on validation, by {by}")
    if higher:
        clauses.append(
            f"{_and(higher)} {'scores' if len(higher) == 1 else 'score'} as high on test as on validation, or higher"
        )
    return ["; ".join(clauses) + "."]


def explain_methods(r: Reports) -> list[str]:
    """Every attribution method through the same checks, one row per model and method."""
    return methods_table([{"model": m, **r.explain[m]} for m in r.models])


RULE_NAMES = {"epsilon": "ε", "gamma": "γ", "zbox": "z^B", "route": "moved", "": ""}


def lrp_conservation(r: Reports) -> list[str]:
    """LRP's relevance on its way down, per model: the share of the logit left after each layer, with its rule."""
    lines = [
        "| Model | Rules | BatchNorm folded | Share of the logit left after each layer, from the top (rule) |",
        "|---|---|---|---|",
    ]
    for name in r.models:
        lrp = r.explain[name].get("lrp")
        if not lrp:
            lines.append(f"| {name} | not run for this kind | | |")
            continue
        path = " → ".join(
            f"{row['layer']} ({RULE_NAMES[row['rule']]}) {_percent(row['share_of_top'])}"
            for row in lrp["conservation"]["per_layer"][1:]
            if row["rule"] != "route"  # reshapes and pooling move relevance without changing its sum
        )
        folded = ", ".join(lrp["folded_batchnorm"]) or "none"
        lines.append(f"| {name} | {lrp['method']} | {folded} | logit 100 % → {path} |")
    return lines


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
}
