"""The results blocks of docs/explain.md and the README's explanation sentence, from reports/explain/*.json
(BLOCKS in results_blocks.py names them). `r` is results_blocks.Reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from results_text import every_model, join_and, percent, value_span

from fashion_mlp.attribution.checks import CONTROLS
from fashion_mlp.models import kinds as model_kinds
from fashion_mlp.summary.explanations import methods_table

if TYPE_CHECKING:
    from results_blocks import Reports


def _kind_groups(r: Reports, models: list[str]) -> list[tuple[str, list[str]]]:
    """Models grouped by kind, in registry order: ('MLPs', [...]), ('CNN', [...])."""
    groups = []
    for kind in model_kinds.KINDS.values():
        names = [m for m in models if r.kinds[m].name == kind.name]
        if names:
            label = kind.name.upper() + ("s" if len(names) > 1 else "")
            groups.append((label, names))
    return groups


def _verdicts(r: Reports, method: str, label: str) -> str:
    """'SHAP fails on every model', 'LRP fails on 1 of 4 models (cnn)', 'SHAP passes on every model'."""
    covered = [m for m in r.models if r.explain[m].get(method)]
    failed = [m for m in covered if r.explain[m][method]["randomization"]["verdict"] == "FAILS"]
    if not failed:
        return f"{label} passes on every model"
    which = "" if len(failed) == len(covered) else f" ({', '.join(failed)})"
    return f"{label} fails on {every_model(len(failed), len(covered))}{which}"


def _faithful(r: Reports, method: str, label: str) -> str:
    """'SHAP beats every control on every model', 'LRP beats every control on 2 of 3 models (cnn: brightest)'."""
    covered = [m for m in r.models if r.explain[m].get(method)]
    missed = {m: [c for c, ok in r.explain[m][method]["beats"].items() if not ok] for m in covered}
    missed = {m: controls for m, controls in missed.items() if controls}
    if not missed:
        return f"{label} beats every control on every model"
    which = "; ".join(f"{m}: not {', '.join(c.replace('_', ' ') for c in controls)}" for m, controls in missed.items())
    return f"{label} beats every control on {every_model(len(covered) - len(missed), len(covered))} ({which})"


def _control_areas(r: Reports, names: list[str], test: str) -> str:
    """'random 0.52 to 0.55, random garment 0.40 to 0.42, brightest 0.30 to 0.33': the controls' areas of a test."""
    return ", ".join(
        f"{c.replace('_', ' ')} {value_span([r.explain[m][test][f'{c}_area'] for m in names], '.3f')}" for c in CONTROLS
    )


def _methods(r: Reports) -> list[tuple[str, str]]:
    """The attribution methods that explain at least one model (LRP leaves out a kind it does not cover)."""
    return [
        (key, label)
        for key, label in (("shap", "SHAP"), ("lrp", "LRP"))
        if any(r.explain[m].get(key) for m in r.models)
    ]


def explain_summary(r: Reports) -> list[str]:
    """The randomization verdicts and the deletion test, in one sentence per check."""
    verdicts = []
    for method, label in _methods(r):
        covered = [r.explain[m][method]["randomization"] for m in r.models if r.explain[m].get(method)]
        rho = value_span([c[c["judged_on"]] for c in covered], ".2f")
        noise = value_span([c["noise_reference"][c["judged_on"]] for c in covered], ".2f")
        verdicts.append(f"{_verdicts(r, method, label)}, with ρ {rho} against {noise} for noise maps")
    text = (
        "By the model-randomization sanity check on the maps' magnitudes over the garment, judged against two noise "
        "maps of the same input (a method fails when its interval lies above theirs by more than the margin), "
        f"{join_and(verdicts)}."
    )
    areas = {}
    for method, label in _methods(r):
        covered = [r.explain[m] for m in r.models if r.explain[m].get(method)]
        areas[label] = (value_span([e[method]["deletion_area"] for e in covered], ".3f"),
                        value_span([e[method]["insertion_area"] for e in covered], ".3f"))  # fmt: skip
    verdicts = join_and([_faithful(r, method, label) for method, label in _methods(r)])
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
            f"{m} {percent(c['mean_relevance_in'] / c['mean_relevance_out'])}"
            for m in lrp
            for c in [r.explain[m]["lrp"]["conservation"]]
        ]
        lines.append(f"- The share of the logit that LRP's relevance keeps down to the pixels: {', '.join(kept)}.")
    for key, label in (("spearman_abs_on_garment", "ρ of |maps| on the garment"), ("spearman_abs", "Over all pixels"),
                       ("spearman", "Signed maps")):  # fmt: skip
        groups = []
        for kind, names in _kind_groups(r, r.models):
            shap = value_span([r.explain[m]["shap"]["randomization"][key] for m in names], ".2f")
            covered = [m for m in names if r.explain[m].get("lrp")]
            lrp_span = (
                value_span([r.explain[m]["lrp"]["randomization"][key] for m in covered], ".2f") if covered else "n/a"
            )
            groups.append(f"{kind} SHAP {shap}, LRP {lrp_span}")
        noise = {
            method: value_span([r.explain[m][method]["randomization"]["noise_reference"][key] for m in names], ".2f")
            for method, names in (("shap", r.models), ("lrp", [m for m in r.models if r.explain[m].get("lrp")]))
            if names
        }
        groups.append("noise maps " + ", ".join(f"{m.upper()}'s {v}" for m, v in noise.items()))
        if key == "spearman_abs_on_garment":
            verdicts = join_and([_verdicts(r, method, label) for method, label in _methods(r)])
            forms = {  # each method's noise maps, as its reports name them (LRP's depend on its rule)
                name: sorted(
                    {r.explain[m][method]["randomization"]["reference"] for m in r.models if r.explain[m].get(method)}
                )
                for method, name in _methods(r)
            }
            forms = ", ".join(f"{' or '.join(ref)} for {name}" for name, ref in forms.items())
            lines.append(
                "- The randomization check, on |maps| over the garment against two noise maps of the same input "
                f"({forms}): {verdicts}. {label}: {'; '.join(groups)}."
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
                    areas.append(f"{name} {value_span([r.explain[m][method][f'{test}_area'] for m in covered], '.3f')}")
            groups.append(f"{kind} {', '.join(areas)} against {_control_areas(r, names, test)}")
        lines.append(f"- {test.capitalize()} areas ({better} is more faithful): {'; '.join(groups)}.")
    lines.append(f"  Against the three controls: {join_and([_faithful(r, m, label) for m, label in _methods(r)])}.")
    return lines


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
            f"{row['layer']} ({RULE_NAMES[row['rule']]}) {percent(row['share_of_top'])}"
            for row in lrp["conservation"]["per_layer"][1:]
            if row["rule"] != "route"  # reshapes and pooling move relevance without changing its sum
        )
        folded = ", ".join(lrp["folded_batchnorm"]) or "none"
        lines.append(f"| {name} | {lrp['method']} | {folded} | logit 100 % → {path} |")
    return lines
