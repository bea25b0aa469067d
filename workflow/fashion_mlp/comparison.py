"""The summary's comparison of every model: one table, one figure, the champion and best MLP, and the timing report.

The table and the figure (test accuracy against parameter count) hold only values that are
functions of params, code and data, so summary.md stays byte-identical across reruns. Wall
times are not: test accuracy against training seconds goes to the untracked timing report
(reports/timings/summary.md and accuracy_vs_time.png). A model's kind comes from champion.json,
where `register` recorded what it read from the saved model.
"""

from __future__ import annotations

from pathlib import Path

from fashion_mlp import PipelineError
from fashion_mlp.anchors import ANCHORS
from fashion_mlp.io import read_json
from fashion_mlp.uncertainty import accuracy_error_bars, interval

# Accuracy goals on the 10k test set, by model name (issues #2, #3 and #14's CNN row).
GOALS = {"baseline": 0.880, "regularized": 0.890, "tuned": 0.900, "cnn": 0.925}
REQUIRED = ("model", "accuracy", "val_accuracy", "macro_f1", "loss", "params", "epochs_run")  # the table reads them
PRESET_KEYS = ("preset", "description", "model", "kind", "command", "code_commit", "experiment_commit", "recorded",
               "seconds", "metrics")  # fmt: skip
MARKERS = {"mlp": "o", "cnn": "s"}  # other kinds: "D"
KIND_NAMES = {"mlp": "an MLP", "cnn": "a CNN"}
TIME_FIGURE = "accuracy_vs_time.png"  # in the timings folder, beside its summary.md


def load_presets(directory: Path | None) -> list[dict]:
    """The recorded preset runs (`fashion-mlp preset NAME` wrote reports/presets/NAME.json), by name.

    Each becomes a row named `<model> (preset <name>)` with the preset's goal; a file that is not such
    a record is an error naming it. No directory: no presets.
    """
    if directory is None or not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            record = read_json(path)
        except ValueError as exc:
            raise PipelineError(f"{path}: cannot read the preset record ({exc})") from None
        if not isinstance(record, dict):
            missing = list(PRESET_KEYS)
        else:  # the record's own keys first, then the metrics' keys that the table reads
            missing = [key for key in PRESET_KEYS if key not in record]
            missing = missing or [f"metrics.{key}" for key in REQUIRED if key not in record["metrics"]]
        if missing:
            raise PipelineError(f"{path}: not a record of `fashion-mlp preset` (missing {', '.join(missing)})")
        records.append(record)
    return records


def preset_rows(presets: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """The presets' metrics as rows of the model table and figure, and their kinds."""
    rows = [{**p["metrics"], "model": f"{p['model']} (preset {p['preset']})", "goal": p.get("goal")} for p in presets]
    return rows, {row["model"]: p["kind"] for row, p in zip(rows, presets, strict=True)}


def preset_section(presets: list[dict]) -> list[str]:
    """Where each preset row comes from: its recipe, command, commits and wall time."""
    if not presets:
        return []
    lines = [
        "## Longer recipes (presets)",
        "",
        "Recipes too long for the default run, each run once as a DVC experiment by `fashion-mlp preset <name>` "
        "(presets/<name>.yaml holds its params.yaml overrides) and recorded in reports/presets/<name>.json. "
        "Every choice in them was made on the validation split, as in the default run; their rows above are "
        "that record, not this run.",
        "",
    ]
    for p in presets:
        took = "" if p["seconds"] is None else f"in {p['seconds'] / 60:.1f} min "  # None: recorded afterwards, untimed
        lines += [
            f"- **{p['model']} (preset {p['preset']})**: {p['description'].strip()} Ran {took}on {p['recorded']} "
            f"(code {p['code_commit'][:7]}, experiment commit {p['experiment_commit'][:7]}): `{p['command']}`",
        ]
    return [*lines, ""]


def kinds_of(champion: dict | None) -> dict[str, str]:
    """Model name -> kind, as register recorded them in champion.json ({} without it)."""
    return {c["model"]: c["kind"] for c in (champion or {}).get("candidates", []) if "kind" in c}


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
    """The anchors' sources, one bullet each (workflow/fashion_mlp/anchors.py holds them)."""
    return ["Sources of the anchors:", "", *(f"- {a.name}: {a.source}" for a in ANCHORS)]


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
        lines.append("No model is an MLP, so no version carries the alias `best-mlp`.")
    elif best["model"] == champion["champion"]:
        lines.append(f"The champion is also the best MLP: the same version carries `{name}@{best['alias']}`.")
    else:
        lines.append(f"The best MLP, **{best['model']}**, is registered as `{name}@{best['alias']}`: {best['reason']}.")
    lines += ["The test set played no part in either choice; the table above shows every validation accuracy.", ""]
    return lines


def _draw_anchors(ax) -> None:
    styles = {"mlp": "--", "cnn": ":"}
    for i, a in enumerate(ANCHORS):
        label = f"{a.name}: {a.accuracy:.4f}" + (f" ({a.note})" if a.note else "")
        ax.axhline(a.accuracy, color=f"C{i + 3}", linestyle=styles.get(a.kind, "-."), linewidth=1, label=label)


def _draw_models(ax, xs: list[float], metrics: list[dict], kinds: dict[str, str]) -> None:
    errors = accuracy_error_bars(metrics)  # None without intervals
    labelled = set()
    for i, (x, m) in enumerate(zip(xs, metrics, strict=True)):
        kind = kinds.get(m["model"], "")
        yerr = None if errors is None else errors[:, i : i + 1]
        label = None if kind in labelled else f"{kind.upper() or 'unknown kind'}: models of this run"
        labelled.add(kind)
        style = {"fmt": MARKERS.get(kind, "D"), "color": "C0" if kind == "mlp" else "C1", "capsize": 4}
        ax.errorbar(x, m["accuracy"], yerr=yerr, markersize=7, label=label, **style)
        ax.annotate(f"{m['model']} ({kind or '?'})", (x, m["accuracy"]), xytext=(6, 4), textcoords="offset points")


def _finish(ax, xs: list[float], metrics: list[dict], title: str) -> None:
    from matplotlib.ticker import EngFormatter, LogLocator

    ends = [m.get("confidence_intervals", {}).get("accuracy", {}) for m in metrics]  # whole error bars in view
    values = [m["accuracy"] for m in metrics] + [v for e in ends for v in e.values()] + [a.accuracy for a in ANCHORS]
    ax.set(ylim=(max(0.0, min(values) - 0.01), min(1.0, max(values) + 0.01)), ylabel="Test accuracy", title=title)
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.5, max(xs) * 2.5)  # room for the points' labels
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))  # labels at 1, 2 and 5 of each decade
    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis(EngFormatter(sep=""))  # 100k, 2M: plainer than 10^5
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="Models (95 % CI) and published anchors", fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_comparison(metrics: list[dict], path: Path, kinds: dict[str, str] | None = None) -> None:
    """Test accuracy (95 % CI bars) against parameter count, a marker per kind, the anchors as lines."""
    from fashion_mlp.figures import pyplot, save_figure

    kinds = kinds or {}
    fig, ax = pyplot().subplots(figsize=(9, 5))
    _draw_anchors(ax)
    xs = [m["params"] for m in metrics]
    _draw_models(ax, xs, metrics, kinds)
    ax.set_xlabel("Parameters (log scale)")
    _finish(ax, xs, metrics, f"Test accuracy against model size ({metrics[0].get('n_test', 0):,} test images)")
    save_figure(fig, path)


def timings_markdown(timings_dir: Path, metrics: list[dict], kinds: dict[str, str]) -> str | None:
    """The wall times that train and tune left in `timings_dir` (untracked) beside each model's test accuracy,
    as Markdown, and the figure of one against the other; None if there are no timings."""
    models = [read_json(path) for path in sorted(timings_dir.glob("*.json")) if path.stem != "tune"]
    search = read_json(timings_dir / "tune.json") if (timings_dir / "tune.json").exists() else None
    if not models and not search:
        return None
    accuracy = {m["model"]: m for m in metrics}
    lines = [
        "# Wall times of the last run of each stage",
        "",
        "Written by `fashion-mlp report` from the stages' timings files beside it; not versioned.",
        "",
    ]
    if models:
        lines += [
            "| Model | Kind | Test accuracy | Epochs run | Train s | s/epoch | MLflow run |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for t in models:
            test = f"{accuracy[t['model']]['accuracy']:.4f}" if t["model"] in accuracy else ""
            lines.append(
                f"| {t['model']} | {kinds.get(t['model'], '')} | {test} | {t['epochs_run']} | "
                f"{t['train_seconds']:.1f} | {t['seconds_per_epoch']:.2f} | {t['mlflow_run_id']} |"
            )
        timed = [t for t in models if t["model"] in accuracy]
        if timed:
            search_seconds = search["search_seconds"] if search else None
            plot_time(timed, [accuracy[t["model"]] for t in timed], kinds, timings_dir / TIME_FIGURE, search_seconds)
            lines += [
                "",
                "Train s is the sum of the epochs' times; `tuned`'s is its retrain alone, without the search "
                "(the figure adds a hollow point for the retrain plus the search's wall time).",
                "",
                f"![Test accuracy against training time]({TIME_FIGURE})",
            ]
    if search:
        workers = ", ".join(f"{name} {count}" for name, count in search["workers"].items())
        lines += [
            "",
            f"Hyperband search: {len(search['trials'])} trials in {search['search_seconds']:.0f} s "
            f"(trials per worker: {workers}); MLflow run {search['mlflow_run_id']}.",
        ]
    return "\n".join(lines) + "\n"


def plot_time(
    timings: list[dict], metrics: list[dict], kinds: dict[str, str], path: Path, search_seconds: float | None = None
) -> None:
    """Test accuracy against training seconds (log scale), a marker per kind, the anchors as lines;
    with `search_seconds`, `tuned` also as a hollow point at its retrain plus the search."""
    from fashion_mlp.figures import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(9, 5))
    _draw_anchors(ax)
    xs = [max(t["train_seconds"], 1e-3) for t in timings]
    _draw_models(ax, xs, metrics, kinds)
    tuned = next((i for i, m in enumerate(metrics) if m["model"] == "tuned"), None)
    if search_seconds is not None and tuned is not None:
        xs.append(xs[tuned] + search_seconds)
        ax.plot(xs[-1], metrics[tuned]["accuracy"], "o", markerfacecolor="none", color="C0", markersize=7)
        ax.annotate("tuned + search", (xs[-1], metrics[tuned]["accuracy"]), xytext=(6, -12), textcoords="offset points")
    ax.set_xlabel("Training seconds, this run's wall time (log scale)")
    _finish(ax, xs, metrics, "Test accuracy against training time")
    save_figure(fig, path)
