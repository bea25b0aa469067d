"""The summary's paired tests: the sentence that names the best model, and the McNemar table.

Markdown only; `stats` computes the tests. The summary says a model is better than another only
where the Holm-adjusted exact McNemar p-value is below 0.05.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fashion_mlp import PipelineError
from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.metrics.stats import ALPHA


def format_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def read_correct(paths: list[Path], metrics: list[dict]) -> dict[str, np.ndarray]:
    """Per model (in the metrics' order), whether each test image was classified correctly (read_labels)."""
    return read_labels(paths, metrics)[1]


def read_labels(paths: list[Path], metrics: list[dict]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The true class index of every test image, and per model (in the metrics' order) whether it
    classified each one correctly.

    `paths` are evaluate's predictions CSVs (actual,predicted), named <model>.csv. They must list
    the same true classes in the same order: a paired test needs the same images.
    """
    by_model = {Path(path).stem: Path(path) for path in paths}
    correct, reference = {}, None
    for model in (m["model"] for m in metrics):
        path = by_model.get(model)
        if path is None:
            raise PipelineError(f"--predictions names no {model}.csv for model {model!r}; got {sorted(by_model)}")
        try:
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
            actual = [row["actual"] for row in rows]
            predicted = [row["predicted"] for row in rows]
        except (OSError, KeyError, TypeError) as exc:
            raise PipelineError(f"{path}: not a predictions CSV with columns actual,predicted ({exc!r})") from None
        if reference is None:
            reference = (path, actual)
        elif actual != reference[1]:
            raise PipelineError(
                f"{path} and {reference[0]} do not hold the same test images (their true classes differ); "
                "rerun evaluate for both on the same test.npz"
            )
        correct[model] = np.array(actual) == np.array(predicted)
    if reference is None:
        return np.array([], dtype=int), correct
    index = {name: i for i, name in enumerate(CLASS_NAMES)}
    unknown = sorted(set(reference[1]) - set(index))
    if unknown:
        raise PipelineError(f"{reference[0]}: true classes that are no Fashion-MNIST class: {', '.join(unknown)}")
    return np.array([index[name] for name in reference[1]]), correct


def ranking_sentence(metrics: list[dict], pairs: list[dict] | None) -> str:
    """The sentence that names the top model; "better" only where its paired test is significant."""
    best = max(metrics, key=lambda m: m["accuracy"])
    head = f"Highest test accuracy: **{best['model']}** ({best['accuracy']:.4f})."
    if pairs is None:
        return head + " No paired test was run (no predictions given), so no difference is claimed."
    ahead, tied = [], []
    for pair in pairs:
        if best["model"] in (pair["a"], pair["b"]):
            other = pair["b"] if pair["a"] == best["model"] else pair["a"]
            (ahead if pair["better"] == best["model"] else tied).append(f"{other} (p = {format_p(pair['p_holm'])})")
    parts = []
    if ahead:
        parts.append("It is significantly better than " + enumerate_words(ahead, "and"))
    if tied:
        parts.append(("but the" if ahead else "The") + " test set cannot tell it from " + enumerate_words(tied, "or"))
    return f"{head} {', '.join(parts)}: paired exact McNemar tests, Holm-adjusted p-values, level {ALPHA}."


def enumerate_words(items: list[str], conjunction: str) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def significance_section(pairs: list[dict]) -> list[str]:
    n = pairs[0]["n"]
    lines = [
        "## Are the differences real? Paired exact McNemar tests",
        "",
        f"Every model was scored on the same {n:,} test images, so the models are compared image by image: "
        "only the images that exactly one model of a pair gets right carry information. The p-value is the exact "
        "(binomial) McNemar test's; Holm's adjustment over all pairs keeps the chance of any false claim in this "
        f"table at {ALPHA} or below. Overlapping bootstrap intervals above do not mean that two models are equal: "
        "the models err on largely the same images, which the paired test accounts for.",
        "",
        *pairs_table(pairs),
    ]
    return [*lines, ""]


def pairs_table(pairs: list[dict]) -> list[str]:
    """The McNemar table's rows, one per pair, with its header."""
    lines = [
        "| Model A | Model B | Only A right | Only B right | Accuracy A − B | McNemar p | Holm-adjusted p | Verdict |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for p in pairs:
        verdict = f"**{p['better']}** better" if p["better"] else f"no significant difference at {ALPHA}"
        lines.append(
            f"| {p['a']} | {p['b']} | {p['only_a_correct']:,} | {p['only_b_correct']:,} | "
            f"{(p['only_a_correct'] - p['only_b_correct']) / p['n']:+.4f} | {format_p(p['p_value'])} | "
            f"{format_p(p['p_holm'])} | {verdict} |"
        )
    return lines
