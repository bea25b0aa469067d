"""Matplotlib without a display, and figures saved atomically: shared by every stage that draws."""

from __future__ import annotations

import os

from fashion_mlp.io import atomic_output


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    """Write `fig` to `path` (format from its suffix) atomically, then free it."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
