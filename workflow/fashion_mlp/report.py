"""Stage `report`: reports/summary.md, one table of every model against the published anchors.

Reads only small JSON files (metrics, split counts, search and champion
summaries) and the per-image prediction CSVs (for the paired tests between
models), so it is fast and never touches TensorFlow or MLflow.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fashion_mlp import explanations
from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.io import read_json, write_text
from fashion_mlp.stats import pairwise_mcnemar
from fashion_mlp.uncertainty import (
    accuracy_error_bars,
    calibration_section,
    interval,
    ranking_sentence,
    read_correct,
    significance_section,
)

# Published test accuracies the pipeline is measured against.
ANCHORS = (
    ("Tutorial baseline MLP (published)", 0.870),
    ('Tutorial "improved" MLP (published)', 0.866),
    ("Zalando benchmark: best MLP", 0.8833),
    ("scikit-learn MLPClassifier", 0.871),
)
# Accuracy goals on the 10k test set (issues #2 and #3).
GOALS = {"baseline": 0.880, "regularized": 0.890, "tuned": 0.900}
FIGURES = (
    ("confusion", "Confusion matrix"),
    ("curves", "Training/validation curves"),
    ("predictions", "Predictions grid"),
    ("reliability", "Reliability diagram"),
)


def model_table(metrics: list[dict]) -> list[str]:
    lines = [
        "| Model | Test accuracy | 95 % CI | Macro F1 | 95 % CI | Test loss | Parameters | Epochs run | Goal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in metrics:
        goal = GOALS.get(m["model"])
        verdict = "" if goal is None else f"≥ {goal:.3f} {'met' if m['accuracy'] >= goal else '**not met**'}"
        lines.append(
            f"| {m['model']} | {m['accuracy']:.4f} | {interval(m, 'accuracy')} | {m['macro_f1']:.4f} | "
            f"{interval(m, 'macro_f1')} | {m['loss']:.4f} | {m['params']:,} | {m['epochs_run']} | {verdict} |"
        )
    for name, accuracy in ANCHORS:
        lines.append(f"| *{name}* | {accuracy:.4f} | | | | | | | anchor |")
    return lines


def per_class_table(metrics: list[dict]) -> list[str]:
    lines = [
        "| Class | " + " | ".join(f"{m['model']} P / R / F1" for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for name in CLASS_NAMES:
        cells = []
        for m in metrics:
            c = m["per_class"][name]
            cells.append(f"{c['precision']:.3f} / {c['recall']:.3f} / {c['f1']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def figure_links(metrics: list[dict], figures_dir: Path, summary_dir: Path) -> list[str]:
    lines = []
    for m in metrics:
        links = []
        for kind, label in FIGURES:
            path = figures_dir / f"{m['model']}_{kind}.png"
            if path.exists():
                links.append(f"[{label}]({Path(os.path.relpath(path, summary_dir)).as_posix()})")
        lines.append(f"- **{m['model']}**: " + " · ".join(links))
    return lines


def tuning_section(tuning: dict, figures_dir: Path, summary_dir: Path) -> list[str]:
    search, best, block = tuning["search"], tuning["best_trial"], tuning["train_block"]
    figure = Path(os.path.relpath(figures_dir / "tuning_trials.png", summary_dir)).as_posix()
    hparams = ", ".join(f"{k} = {v}" for k, v in best["hyperparameters"].items())
    return [
        "## Hyperparameter search (KerasTuner Hyperband)",
        "",
        f"{search['trials']} trials (max_epochs {search['max_epochs']}, "
        f"factor {search['factor']}, {search['hyperband_iterations']} iteration(s)). Trials trained on "
        f"{search['train_images']:,} training images and were scored by accuracy on the "
        f"{search['val_images']:,} validation images. Every trial is a nested MLflow run under the `tune` run.",
        "",
        f"Best trial (draw {best['draw']}, round {best['round']}): validation accuracy "
        f"{best['val_accuracy']:.4f} with {hparams}.",
        f"It was retrained as `tuned` (hidden {block['hidden']}, {block['lr_schedule']} schedule, up to "
        f"{block['epochs']} epochs, early stopping on the validation split) and kept epoch "
        f"{tuning['retrain']['kept_epoch']} (validation accuracy {tuning['retrain']['val_accuracy']:.4f}).",
        "",
        f"![Validation accuracy of every trial]({figure})",
        "",
    ]


def champion_section(champion: dict) -> list[str]:
    lines = [
        "## Champion",
        "",
        f"**{champion['champion']}** is registered as `{champion['registered_model']}@{champion['alias']}`: "
        f"{champion['reason']}. The test set played no part in the choice.",
        "",
        "| Model | Validation accuracy | Test accuracy |",
        "|---|---:|---:|",
    ]
    lines += [f"| {c['model']} | {c['val_accuracy']:.4f} | {c['test_accuracy']:.4f} |" for c in champion["candidates"]]
    return [*lines, ""]


def timings_markdown(timings_dir: Path) -> str | None:
    """The wall times that train and tune left in `timings_dir` (untracked), as Markdown; None if there are none."""
    models = [read_json(path) for path in sorted(timings_dir.glob("*.json")) if path.stem != "tune"]
    search = read_json(timings_dir / "tune.json") if (timings_dir / "tune.json").exists() else None
    if not models and not search:
        return None
    lines = [
        "# Wall times of the last run of each stage",
        "",
        "Written by `fashion-mlp report` from the stages' timings files beside it; not versioned.",
        "",
    ]
    if models:
        lines += ["| Model | Epochs run | Train s | s/epoch | MLflow run |", "|---|---:|---:|---:|---|"]
        lines += [
            f"| {t['model']} | {t['epochs_run']} | {t['train_seconds']:.1f} | {t['seconds_per_epoch']:.2f} "
            f"| {t['mlflow_run_id']} |"
            for t in models
        ]
    if search:
        workers = ", ".join(f"{name} {count}" for name, count in search["workers"].items())
        lines += [
            "",
            f"Hyperband search: {len(search['trials'])} trials in {search['search_seconds']:.0f} s "
            f"(trials per worker: {workers}); MLflow run {search['mlflow_run_id']}.",
        ]
    return "\n".join(lines) + "\n"


def plot_comparison(metrics: list[dict], path: Path) -> None:
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    names = [m["model"] for m in metrics]
    accuracies = [m["accuracy"] for m in metrics]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names) + 3), 4.5))
    errors = accuracy_error_bars(metrics)  # None without intervals
    bars = ax.bar(names, accuracies, color="tab:blue", yerr=errors, capsize=6)
    ax.bar_label(bars, labels=[f"{a:.4f}" for a in accuracies], label_type="center", color="white")
    for (label, accuracy), style in zip(ANCHORS, ("--", ":", "-.", (0, (1, 3))), strict=True):
        ax.axhline(accuracy, color="gray", linestyle=style, linewidth=1, label=f"{label}: {accuracy:.4f}")
    low = min(accuracies + [a for _, a in ANCHORS])
    n_test = metrics[0]["n_test"]
    ax.set(
        ylim=(max(0.0, low - 0.03), min(1.0, max(accuracies) + 0.02)),
        ylabel="Test accuracy",
        title=f"Test accuracy per model ({n_test:,} test images)" + ("" if errors is None else ", 95 % CIs"),
    )
    ax.legend(title="Published anchors", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, path)


def demos_section(xor: dict, activations_md: str, figures: dict[str, Path], summary_dir: Path) -> list[str]:
    """Markdown lines of the "XOR and activation functions" section, from the outputs of `fashion-mlp demos`.

    `xor`: the parsed xor.json; `activations_md`: the text of activations.md;
    `figures`: paths of the "xor_points", "xor_boundaries" and "activations" PNGs
    (missing files are skipped); `summary_dir`: the summary's folder, for relative links.
    """

    def link(key: str, alt: str) -> list[str]:
        path = figures.get(key)
        if path is None or not Path(path).exists():
            return []
        return [f"![{alt}]({Path(os.path.relpath(path, summary_dir)).as_posix()})", ""]

    solved = (
        "classifies all four points"
        if xor["mlp_solved"]
        else f"reached only {xor['mlp_accuracy']:.2f} (raise demos.xor_epochs or demos.xor_hidden)"
    )
    lines = [
        "## XOR and activation functions",
        "",
        "Generated by `fashion-mlp demos`, which needs no Fashion-MNIST data.",
        "",
        "| Model on XOR | Accuracy |",
        "|---|---:|",
        f"| Any single-layer perceptron (best possible, proved by linear programming) | "
        f"{xor['perceptron_best_accuracy']:.2f} |",
        f"| scikit-learn Perceptron, trained (seed {xor['seed']}) | {xor['perceptron_accuracy']:.2f} |",
        f"| MLP, one hidden layer of {xor['xor_hidden']} {xor['xor_activation']} units, "
        f"{xor['xor_epochs']} full-batch Adam steps | {xor['mlp_accuracy']:.2f} |",
        "",
        "No straight line puts (0,1) and (1,0) on one side and (0,0) and (1,1) on the other, so a linear "
        "threshold unit misclassifies at least one of the four points; every three of them can be separated, "
        f"hence the ceiling of 3/4. The hidden layer bends the boundary: the MLP {solved}.",
        "",
        *link("xor_points", "The four XOR points"),
        *link("xor_boundaries", "Decision boundaries of the perceptron and of the MLP"),
        "Activation functions at a few inputs:",
        "",
        activations_md.rstrip("\n"),
        "",
        *link("activations", "Sigmoid, tanh, ReLU and softmax"),
    ]
    return lines


def render(
    metrics: list[dict],
    stats: dict,
    figures_dir: Path,
    chart: Path,
    out: Path,
    tuning: dict | None = None,
    champion: dict | None = None,
    demos: list[str] | None = None,
    pairs: list[dict] | None = None,
    explain: list[str] | None = None,
) -> str:
    counts = stats["counts"]
    chart_link = Path(os.path.relpath(chart, out.parent)).as_posix()
    lines = [
        "# Fashion-MNIST MLPs: summary",
        "",
        "Generated by `fashion-mlp report` from `reports/metrics/*.json`; do not edit by hand.",
        "",
        f"Data: {counts['train']:,} training, {counts['val']:,} validation (stratified, seed {stats['seed']}) "
        f"and {counts['test']:,} test images. Early stopping and model selection saw only the validation "
        "split. The test set was read only by `evaluate` (metrics) and `explain` (attributions), which "
        "measure and choose nothing.",
        "",
        "## Models",
        "",
        *model_table(metrics),
        "",
        f"{ranking_sentence(metrics, pairs)} Anchors are published "
        "figures for comparison, not runs of this pipeline. Wall times differ on every run, so they are "
        "not in this file: see `reports/timings/` (untracked, rewritten by each run) and MLflow.",
        "",
        f"![Test accuracy per model]({chart_link})",
        "",
        *(significance_section(pairs) if pairs else []),
        *calibration_section(metrics),
        *(tuning_section(tuning, figures_dir, out.parent) if tuning else []),
        *(champion_section(champion) if champion else []),
        "## Per-class precision / recall / F1 (test set)",
        "",
        *per_class_table(metrics),
        "",
        "## Figures",
        "",
        *figure_links(metrics, figures_dir, out.parent),
        "",
        *(explain or []),
        *(demos or []),
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp report", description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, nargs="+", required=True, help="reports/metrics/<model>.json")
    parser.add_argument(
        "--predictions", type=Path, nargs="+", help="reports/predictions/<model>.csv, for the paired tests"
    )
    parser.add_argument("--data_stats", type=Path, required=True, help="split counts from prepare")
    parser.add_argument("--tuning", type=Path, help="best_hparams.json from tune")
    parser.add_argument("--champion", type=Path, help="champion.json from register")
    parser.add_argument("--demos_xor", type=Path, help="xor.json from demos")
    parser.add_argument("--demos_activations", type=Path, help="activations.md from demos")
    parser.add_argument("--explain", type=Path, nargs="+", help="reports/explain/<model>.json from explain")
    parser.add_argument("--figures_dir", type=Path, required=True, help="where evaluate put the PNGs")
    parser.add_argument("--chart_out", type=Path, required=True, help="bar chart comparing the models")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown summary")
    parser.add_argument(
        "--timings_dir",
        type=Path,
        help="train's and tune's wall times; summary.md there gets them as a table "
        "(untracked); default: timings/ beside --out",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    metrics = [read_json(path) for path in args.metrics]
    pairs = pairwise_mcnemar(read_correct(args.predictions, metrics)) if args.predictions else None
    plot_comparison(metrics, args.chart_out)
    tuning = read_json(args.tuning) if args.tuning else None
    champion = read_json(args.champion) if args.champion else None
    demos = None
    if args.demos_xor and args.demos_activations:
        figures = {key: args.figures_dir / f"{key}.png" for key in ("xor_points", "xor_boundaries", "activations")}
        demos = demos_section(read_json(args.demos_xor), args.demos_activations.read_text(), figures, args.out.parent)
    explain = None
    if args.explain:
        explain = explanations.summary_section(
            [read_json(path) for path in args.explain], args.figures_dir, args.out.parent
        )
    write_text(
        args.out,
        render(
            metrics,
            read_json(args.data_stats),
            args.figures_dir,
            args.chart_out,
            args.out,
            tuning,
            champion,
            demos,
            pairs,
            explain,
        ),
    )
    timings_dir = args.timings_dir or args.out.parent / "timings"
    timings = timings_markdown(timings_dir)
    if timings:
        write_text(timings_dir / "summary.md", timings)
    print(f"report: wrote {args.out} ({len(metrics)} models)")


if __name__ == "__main__":
    main()
