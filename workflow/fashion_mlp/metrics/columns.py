"""A model's row: the figures of reports/metrics/<model>.json that the summary's model table shows and
evaluate logs to MLflow, in one list. A new column is one entry here (and, for a figure evaluate does
not compute yet, its computation in evaluate.compute_metrics; for an interval, a scorer in stats.SCORERS).

A metrics file or preset record written before a column existed shows a blank cell in it.
"""

from __future__ import annotations

from typing import NamedTuple


class Column(NamedTuple):
    key: str  # the key in the metrics JSON
    header: str | None  # its header in the model table; None: MLflow only
    spec: str  # format() spec of a value: ".4f", "," (thousands), "d"
    interval: bool = False  # a 95 % bootstrap interval beside it: evaluate computes it, the table shows it
    mlflow: bool = False  # evaluate logs it as test_<key> (and test_<key>_ci_low/_high with an interval)
    anchor: bool = False  # where the published anchors' figure goes (test accuracy)


COLUMNS = (
    Column("val_accuracy", "Validation accuracy", ".4f"),  # train logs it, as final_val_accuracy
    Column("accuracy", "Test accuracy", ".4f", interval=True, mlflow=True, anchor=True),
    Column("macro_f1", "Macro F1", ".4f", interval=True, mlflow=True),
    Column("loss", "Test loss", ".4f", mlflow=True),
    Column("params", "Parameters", ","),
    Column("epochs_run", "Epochs run", "d"),
    Column("macro_precision", None, ".4f", mlflow=True),
    Column("macro_recall", None, ".4f", mlflow=True),
    Column("weighted_f1", None, ".4f", mlflow=True),
)
# reports/headline.json (report writes it), the one file dvc.yaml declares as metrics: DVC's default views
# (`dvc metrics diff`, `dvc exp show`) show these few figures per model; the rest stays in the metrics JSONs.
HEADLINE = {  # its key: the path of the figure in the metrics JSON
    "accuracy": ("accuracy",),
    "macro_f1": ("macro_f1",),
    "val_accuracy": ("val_accuracy",),
    "ece": ("calibration", "ece"),
    "ece_scaled": ("calibration", "ece_scaled"),
    "kept_epoch": ("kept_epoch",),
}
REQUIRED = ("model", "accuracy", "val_accuracy")  # what ranking and choosing need: never blank
INTERVALS = tuple(c.key for c in COLUMNS if c.interval)


def headline(metrics: dict) -> dict:
    """The HEADLINE figures of a metrics record; a figure the record lacks is left out."""
    out = {}
    for key, path in HEADLINE.items():
        value = metrics
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            out[key] = value
    return out


def table_columns() -> list[Column]:
    return [c for c in COLUMNS if c.header]


def cell(metrics: dict, column: Column) -> str:
    """A value as the table shows it, or '' when the record has no such figure."""
    value = metrics.get(column.key)
    return "" if value is None else format(value, column.spec)


def interval_cell(metrics: dict, key: str) -> str:
    """'0.8757–0.8883' from the metrics JSON, or '' when evaluate wrote no interval for `key`."""
    ci = metrics.get("confidence_intervals", {}).get(key)
    return f"{ci['low']:.4f}–{ci['high']:.4f}" if ci else ""


def mlflow_metrics(metrics: dict) -> dict[str, float]:
    """The columns evaluate logs, as MLflow metric names: test_<key>, and the intervals' ends."""
    out = {f"test_{c.key}": metrics[c.key] for c in COLUMNS if c.mlflow and c.key in metrics}
    for key, ends in metrics.get("confidence_intervals", {}).items():
        if key in INTERVALS:
            out |= {f"test_{key}_ci_low": ends["low"], f"test_{key}_ci_high": ends["high"]}
    return out
