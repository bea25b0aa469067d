"""The summary's champion: the line under the model table and the "Champion" section, from champion.json."""

from __future__ import annotations

from fashion_mlp.models.kinds import KINDS

KIND_NAMES = {name: kind.noun for name, kind in KINDS.items()}  # "an MLP"


def kinds_of(champion: dict | None) -> dict[str, str]:
    """Model name -> kind, as register recorded them in champion.json ({} without it)."""
    return {c["model"]: c["kind"] for c in (champion or {}).get("candidates", []) if "kind" in c}


def headline(champion: dict | None) -> list[str]:
    """One line under the table: which model, of which kind, won, and which is the best MLP."""
    if not champion:
        return []
    kind = champion.get("kind", "")
    best = champion.get("best_mlp")
    mlp = f"best MLP: **{best['model']}**" if best else "no MLP among the models"
    return [f"Champion by validation accuracy: **{champion['champion']}**, {KIND_NAMES.get(kind, kind)}; {mlp}.", ""]


def champion_section(champion: dict) -> list[str]:
    """Which model, of which kind, holds each alias, and why."""
    name = champion["registered_model"]
    kind = champion.get("kind", "")
    lines = [
        "## Champion",
        "",
        f"**{champion['champion']}** ({KIND_NAMES.get(kind, kind)}) is registered as `{name}@{champion['alias']}`: "
        f"{champion['reason']}. The winning kind is **{kind}**.",
    ]
    best = champion.get("best_mlp")
    if best is None:
        lines.append("No model is an MLP, so this run offers no version for the alias `best-mlp`.")
    elif best["model"] == champion["champion"]:
        lines.append(f"The champion is also the best MLP: the same version carries `{name}@{best['alias']}`.")
    else:
        lines.append(f"The best MLP, **{best['model']}**, is registered as `{name}@{best['alias']}`: {best['reason']}.")
    lines.append("The test set played no part in either choice; the table above shows every validation accuracy.")
    if "promotion_tolerance" in champion:
        lines.append(
            "A promotion gate stands between this run's choice and the registry: a version takes an alias from "
            "the one that holds it only if its validation accuracy is at most "
            f"{champion['promotion_tolerance']} lower and both were trained on the same data. What it decided "
            "depends on the store's history, so it is not in this file: each version's tag `promotion_<alias>` "
            "says, with both figures, and so does the untracked `reports/promotion.json`."
        )
    return [*lines, ""]
