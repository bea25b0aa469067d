"""reports/timings/summary.md: the wall times train and tune left there, beside test accuracy (untracked).

Wall times differ on every run, so they stay out of summary.md, which is versioned.
"""

from __future__ import annotations

from pathlib import Path

from fashion_mlp.io import read_json
from fashion_mlp.summary.comparison_figure import _draw_anchors, _draw_models, _finish

TIME_FIGURE = "accuracy_vs_time.png"  # in the timings folder, beside its summary.md


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
