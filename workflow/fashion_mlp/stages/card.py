"""Stage `card`: the model card of each model `register` chose, in reports/model_card.md and on its version.

For the champion, and the best MLP when it is another model: what it is for and not for, its data
and their hashes, its test metrics with intervals and per class, calibration, the explanation
checks, its answers on photo-like pictures (measured here, on a stratified sample of the test
split: the card measures and chooses nothing), its training block and its known limits. The file
is a function of params, code and data; the registry's copy, the version's description, adds the
version number, its run and the commit that trained it.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

from fashion_mlp.config import TUNED, add_section_flags, load_params, model_block, section_from_args, validate_section
from fashion_mlp.io import read_json, sha256_file, write_json, write_text
from fashion_mlp.stages.common import add_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp card", description=__doc__.splitlines()[0])
    add_section_flags(parser, "card")
    add_flags(parser, "seed", "threads", "experiment", "params")
    parser.add_argument("--champion", type=Path, required=True, help="champion.json from register")
    parser.add_argument("--metrics", type=Path, required=True, help="reports/metrics (the folder)")
    parser.add_argument("--explain", type=Path, required=True, help="reports/explain (the folder)")
    parser.add_argument("--predictions", type=Path, required=True, help="reports/predictions (the folder)")
    parser.add_argument("--data_stats", type=Path, required=True, help="split counts from prepare")
    parser.add_argument(
        "--tuning", type=Path, required=True, help="best_hparams.json: the block `tuned` was trained from"
    )
    parser.add_argument("--models_dir", type=Path, required=True, help="where <model>.keras files are")
    parser.add_argument("--train_data", type=Path, required=True, help="train.npz (its hash only)")
    parser.add_argument("--test_data", type=Path, required=True, help="test.npz: the robustness sample")
    parser.add_argument("--out", type=Path, required=True, help="reports/model_card.md")
    parser.add_argument("--robustness_out", type=Path, required=True, help="the robustness figures, JSON")
    return parser


def confusions(path: Path, top: int = 3) -> list[tuple[str, str, int]]:
    """The `top` most frequent (true, predicted) mistakes of a predictions CSV, ties by name."""
    with open(path, newline="") as fh:
        pairs = Counter(
            (row["actual"], row["predicted"]) for row in csv.DictReader(fh) if row["actual"] != row["predicted"]
        )
    return [(true, predicted, n) for (true, predicted), n in sorted(pairs.items(), key=lambda i: (-i[1], i[0]))[:top]]


def training_block(model: str, params: dict, tuning: Path) -> tuple[dict, str]:
    if model == TUNED:
        return read_json(tuning)[
            "train_block"
        ], "the search's best trial with tune's retrain settings, best_hparams.json"
    block, where = model_block(params, model)
    return block, f"params.yaml, {where}"


def cards_to_write(champion: dict) -> dict[str, list[str]]:
    """Model -> the aliases this run offers it (the champion first; the best MLP when it is another model)."""
    aliases = {champion["champion"]: [champion["alias"]]}
    best = champion.get("best_mlp")
    if best:
        aliases.setdefault(best["model"], []).append(best["alias"])
    return aliases


def measure_robustness(model_path: Path, test_data: Path, images: int, seed: int) -> dict:
    import keras
    import numpy as np

    from fashion_mlp import inference
    from fashion_mlp.data import load_arrays, stratified_indices
    from fashion_mlp.metrics import robustness

    test = load_arrays(test_data)
    keep = stratified_indices(test["y_test"], images, seed)
    pixels = np.round(test["x_test"][keep] * 255).astype(np.uint8)  # prepare's scale, undone exactly
    model = keras.saving.load_model(model_path, safe_mode=True)
    return robustness.measure(lambda x: inference.probabilities(model, x), pixels, test["y_test"][keep], seed)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    validate_section("card", section_from_args(args, "card"))
    from fashion_mlp.runtime import configure_tensorflow

    configure_tensorflow(args.threads, args.seed)
    from fashion_mlp.summary import model_card

    champion, params = read_json(args.champion), load_params(args.params)
    shared = {
        "registered_model": champion["registered_model"],
        "data_stats": read_json(args.data_stats),
        "train_sha256": sha256_file(args.train_data),
        "test_sha256": sha256_file(args.test_data),
    }
    kinds = {c["model"]: c["kind"] for c in champion["candidates"]}
    reasons = {champion["champion"]: champion["reason"]} | (
        {champion["best_mlp"]["model"]: champion["best_mlp"]["reason"]} if champion.get("best_mlp") else {}
    )
    cards, measured = [], {}
    for model, aliases in cards_to_write(champion).items():
        path = args.models_dir / f"{model}.keras"
        block, source = training_block(model, params, args.tuning)
        explain = args.explain / f"{model}.json"
        measured[model] = measure_robustness(path, args.test_data, args.robustness_images, args.seed)
        record = shared | {
            "model": model,
            "aliases": aliases,
            "kind": kinds[model],
            "reason": f"Chosen for its {reasons[model]}",
            "metrics": read_json(args.metrics / f"{model}.json"),
            "explain": read_json(explain) if explain.exists() else None,
            "confusions": confusions(args.predictions / f"{model}.csv"),
            "robustness": measured[model],
            "block": block,
            "block_source": source,
            "model_sha256": sha256_file(path),
        }
        cards.append((model, path, model_card.render(record)))
    write_text(args.out, "\n---\n\n".join(text for _, _, text in cards))
    write_json(args.robustness_out, measured)
    for model, path, text in cards:
        describe_version(args.experiment, champion["registered_model"], model, path, text)
    print(f"card: wrote {args.out} ({', '.join(m for m, _, _ in cards)})")


def describe_version(experiment: str, registered_model: str, model: str, path: Path, card: str) -> None:
    """The card as the description of the version that holds this model file, with what the registry adds."""
    import mlflow

    from fashion_mlp import registry, tracking

    tracking.init(experiment)
    version = registry.version_of(registered_model, sha256_file(path))
    if version is None:  # register has not run against this store
        print(f"card: no version of {registered_model} holds {path}; the card is in the file only")
        return
    client = mlflow.MlflowClient()
    run = tracking.with_retry(client.get_run, version.run_id) if version.run_id else None
    tags = run.data.tags if run else {}
    where = (
        f"\n\n## In the registry\n\nVersion {version.version} of `{registered_model}`, logged by run "
        f"`{version.run_id}`, trained at commit `{tags.get('git_commit', 'unknown')}` by {tags.get('engine', '?')}."
    )
    tracking.with_retry(client.update_model_version, registered_model, version.version, description=card + where)
    if run is not None:
        with tracking.resume_run(run.info.run_id):
            mlflow.log_text(card + where, "model_card.md")
