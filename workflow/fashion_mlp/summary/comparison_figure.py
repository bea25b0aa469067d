"""The summary's figure: test accuracy (95 % CI bars) of every model against its size, with the anchors.

Its drawing helpers also draw the untracked figure of accuracy against training time (timings.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fashion_mlp.models.kinds import KINDS
from fashion_mlp.summary.anchors import ANCHORS

OTHER = {"marker": "D", "colour": "C1", "line": "-."}  # a kind the registry does not know (an old record's)


def accuracy_error_bars(metrics: list[dict]) -> np.ndarray | None:
    """Distances from each accuracy down and up to its interval's ends (matplotlib's yerr), or None."""
    if not all("confidence_intervals" in m for m in metrics):
        return None
    accuracy = np.array([m["accuracy"] for m in metrics])
    low, high = (np.array([m["confidence_intervals"]["accuracy"][end] for m in metrics]) for end in ("low", "high"))
    return np.stack([accuracy - low, high - accuracy]).clip(min=0.0)


def _style(kind: str, attribute: str) -> str:
    """A kind's marker, colour or anchor line style, from the registry (models/kinds.py)."""
    return getattr(KINDS[kind], attribute) if kind in KINDS else OTHER[attribute]


def _label(kind: str) -> str:
    return KINDS[kind].label if kind in KINDS else (kind.upper() or "unknown kind")


def _draw_anchors(ax) -> None:
    for i, a in enumerate(ANCHORS):
        label = f"{a.name}: {a.accuracy:.4f}" + (f" ({a.note})" if a.note else "")
        ax.axhline(a.accuracy, color=f"C{i + 3}", linestyle=_style(a.kind, "line"), linewidth=1, label=label)


def _draw_models(ax, xs: list[float], metrics: list[dict], kinds: dict[str, str]) -> None:
    errors = accuracy_error_bars(metrics)  # None without intervals
    labelled = set()
    for i, (x, m) in enumerate(zip(xs, metrics, strict=True)):
        kind = kinds.get(m["model"], "")
        yerr = None if errors is None else errors[:, i : i + 1]
        label = None if kind in labelled else f"{_label(kind)}: models of this run"
        labelled.add(kind)
        style = {"fmt": _style(kind, "marker"), "color": _style(kind, "colour"), "capsize": 4}
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
