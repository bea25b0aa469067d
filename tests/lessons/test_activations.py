"""The activation-function lesson (fashion_mlp.lessons.activations): values, stability and the table's files."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from fashion_mlp.lessons import activations


def test_activation_values_match_the_tutorial():
    table = activations.activation_table([-5, -3, 0, 2, 5])
    column = {name: [row[name] for row in table] for name in ("z", *activations.ACTIVATIONS)}
    assert column["z"] == [-5, -3, 0, 2, 5]
    # the tutorial's sigmoid outputs, each to the decimals it prints
    assert [round(v, d) for v, d in zip(column["sigmoid"], (4, 3, 1, 2, 3), strict=True)] == [
        0.0067,
        0.047,
        0.5,
        0.88,
        0.993,
    ]
    assert column["relu"] == [0, 0, 0, 2, 5]
    assert column["tanh"][2] == 0.0
    assert column["tanh"] == pytest.approx(np.tanh([-5, -3, 0, 2, 5]).tolist())
    assert sum(column["softmax"]) == pytest.approx(1.0, abs=1e-12)
    assert column["softmax"] == sorted(column["softmax"])  # increasing with z
    assert all(0 < v < 1 for v in column["softmax"])


def test_activations_are_stable_at_extreme_inputs():
    z = np.array([-1000.0, 0.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        assert activations.sigmoid(z).tolist() == [0.0, 0.5, 1.0]
        assert activations.softmax(z).tolist() == pytest.approx([0.0, 0.0, 1.0])
        assert activations.tanh(z).tolist() == [-1.0, 0.0, 1.0]


def test_activation_csv_and_markdown(tmp_path):
    table = activations.activation_table([-5, -3, 0, 2, 5])
    path = tmp_path / "activations.csv"
    activations.write_activation_csv(path, table)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["z", "sigmoid", "tanh", "relu", "softmax"]
    assert [float(r["sigmoid"]) for r in rows] == [r["sigmoid"] for r in table]  # full precision
    markdown = activations.activation_markdown(table)
    lines = markdown.splitlines()
    assert lines[0] == "| z | sigmoid(z) | tanh(z) | ReLU(z) | softmax(z) |"
    assert lines[2].startswith("| -5 | 0.006693 | -0.9999 | 0 | ")
    assert lines[4] == "| 0 | 0.5 | 0 | 0 | 0.006375 |"
    assert lines[6].startswith("| 5 | 0.9933 | 0.9999 | 5 | ")
