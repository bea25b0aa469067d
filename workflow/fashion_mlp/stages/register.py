"""Stage `register`: register the best model by *validation* accuracy as the MLflow champion, and the best MLP.

Candidates are compared on the validation split only (the accuracy of the
epoch whose weights were kept, from each metrics JSON); test accuracy is
reported, never used to choose. The winner becomes a new version of the registered
model, as a pyfunc that takes pictures (fashion_mlp.serving), and the alias
`champion` points at it. The best MLP by the same rule gets the alias `best-mlp`.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from fashion_mlp import PipelineError, registry
from fashion_mlp.config import add_section_flags, section_from_args, validate_section
from fashion_mlp.io import atomic_output, model_files, read_metrics, sha256_file, write_json
from fashion_mlp.models import kinds as model_kinds
from fashion_mlp.stages.common import add_flags, models_to_read


def rank_key(candidate: dict) -> tuple:
    """Highest validation accuracy first; on a tie the smaller model, then the name: never the listing order."""
    return (-candidate["val_accuracy"], candidate.get("params", 0), candidate["model"])


def choose(candidates: dict[str, dict]) -> str:
    """Name of the candidate with the highest validation accuracy (ties: fewer parameters, then the name)."""
    return min(candidates, key=lambda name: rank_key({"model": name, **candidates[name]}))


def model_kind(path: Path) -> str:
    """The kind of the saved .keras model (models/kinds.py), an error naming the known kinds if it is none.

    The kind is read from the model file itself (its config.json, no TensorFlow): the file is
    what register registers, both engines already make register depend on it, and it carries
    its architecture wherever it came from (a train run, tune's retrain, `dvc pull`), whereas
    params.yaml knows nothing of `tuned` and an MLflow run may be missing from the store.
    """
    return model_kinds.of_saved(path).name


def read_candidates(paths: list[Path]) -> dict[str, dict]:
    """Metrics JSONs by model name; a missing, garbled or incomplete file is an error naming it."""
    return {m["model"]: m for m in read_metrics(paths, ("model", "val_accuracy", "accuracy"))}


def choices(candidates: dict[str, dict], kinds: dict[str, str]) -> tuple[str, str | None]:
    """(champion among all models, best MLP or None when no candidate is an MLP)."""
    mlps = {name: m for name, m in candidates.items() if model_kinds.get(kinds[name]).best_mlp}
    return choose(candidates), (choose(mlps) if mlps else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp register", description=__doc__.splitlines()[0])
    add_section_flags(parser, "mlflow")
    add_flags(parser, "params")
    parser.add_argument(
        "--metrics", type=Path, nargs="+", required=True, help="reports/metrics: the folder, or <model>.json files"
    )
    parser.add_argument("--models_dir", type=Path, required=True, help="where <model>.keras files are")
    parser.add_argument("--out", type=Path, required=True, help="JSON naming the champion, the best MLP and why")
    parser.add_argument(
        "--champion_out", type=Path, help="a copy of the champion's .keras file (DVC's artifact of the champion)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        default=os.environ.get("FASHION_MLP_FORCE_PROMOTION", "") not in ("", "0"),
        help="move the aliases to this run's best whatever the promotion gate says (and say so in the tag); on "
        "when $FASHION_MLP_FORCE_PROMOTION is set, e.g. FASHION_MLP_FORCE_PROMOTION=1 dvc repro -f -s register",
    )
    parser.add_argument(
        "--decisions_out",
        type=Path,
        default=Path("reports/promotion.json"),
        help="the gate's decisions, which depend on the store's history (untracked); default: %(default)s",
    )
    return parser


def register_version(experiment_id: str, registered_model: str, model_path: Path, tags: dict[str, str]):
    """The registry's version of this .keras file, and the SHA-256 of the data it was trained on.

    A version already tagged with the file's SHA-256 is reused if it is logged as register logs one
    today (as code, with its ONNX export): a rerun that makes the same model adds no version, and one
    from before (pickled, or without ONNX) is replaced.
    Otherwise the file is logged as a picture-taking pyfunc (fashion_mlp.serving) into the run that
    trained it, and registered: `mlflow models serve` on an alias answers pictures with class names.
    The run's own Keras-flavour model stays as it was.
    """
    import mlflow

    from fashion_mlp import serving, tracking

    run, model_sha = tracking.trained_run(experiment_id, model_path)
    if run is None:
        raise PipelineError(f"no MLflow run logged {model_path}; rerun its train stage to register it")
    data_sha = run.data.tags.get("data_sha256")
    version = registry.version_of(registered_model, model_sha, current_only=True)
    if version is not None:
        return version, data_sha
    with tracking.resume_run(run.info.run_id):
        logged = serving.log_model(model_path)
    version = tracking.with_retry(mlflow.register_model, logged.model_uri, registered_model)
    client = mlflow.MlflowClient()
    for key, value in (tags | {"model_sha256": model_sha}).items():
        tracking.with_retry(client.set_model_version_tag, registered_model, version.version, key, value)
    return version, data_sha


def promote(registered_model: str, alias: str, candidate: registry.Model, tolerance: float, force: bool):
    """Move `alias` to the candidate's version if the gate lets it (registry.decide) and this is no temporary
    DVC experiment (registry.held); tag the decision on it."""
    import mlflow

    from fashion_mlp import tracking

    decision = registry.decide(alias, candidate, registry.holder(registered_model, alias), tolerance, force)
    experiment = tracking.temporary_experiment()
    if experiment is not None:  # a preset or a queued sweep must not change what `make serve` serves
        decision = registry.held(decision, experiment)
    client = mlflow.MlflowClient()
    if decision.moves:
        tracking.with_retry(client.set_registered_model_alias, registered_model, alias, candidate.version)
    tag = f"{registry.DECISION_TAG}_{alias}"
    text = f"{decision.outcome}: {decision.reason}"
    tracking.with_retry(client.set_model_version_tag, registered_model, candidate.version, tag, text)
    return decision


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    validate_section("mlflow", section_from_args(args, "mlflow"))
    candidates = read_candidates(model_files(args.metrics, models_to_read(args), ".json"))
    kinds = {name: model_kind(args.models_dir / f"{name}.keras") for name in candidates}
    winner, best_mlp = choices(candidates, kinds)

    from fashion_mlp import tracking

    experiment_id = tracking.init(args.experiment)
    # When the champion is an MLP both aliases may name ONE version (one model file, one version).
    # Versions are made before any alias moves, so a failure leaves both aliases where they were.
    models = {}
    for name in dict.fromkeys(filter(None, (winner, best_mlp))):
        path = args.models_dir / f"{name}.keras"
        tags = {"model": name, "kind": kinds[name], "val_accuracy": str(candidates[name]["val_accuracy"])}
        version, data_sha = register_version(experiment_id, args.registered_model, path, tags)
        val = candidates[name]["val_accuracy"]
        models[name] = registry.Model(name, val, sha256_file(path), data_sha, str(version.version))
    decisions = []
    for alias, name in ((registry.CHAMPION_ALIAS, winner), (registry.MLP_ALIAS, best_mlp)):
        if name is None:  # no MLP in this run: the alias stays on the MLP that holds it, if any
            print(f"register: @{alias}: no candidate in this run; the alias stays where it is")
            continue
        decision = promote(args.registered_model, alias, models[name], args.promotion_tolerance, args.force)
        decisions.append({"alias": alias, "candidate": name, "version": models[name].version} | vars(decision))
        print(f"register: {decision.line(models[name])}")

    # champion.json is this run's choice, from params, code and data alone: what the gate then did
    # depends on the store's history too, so it goes to MLflow (version tags) and the untracked timings.
    record = summary(
        candidates, kinds, winner, best_mlp, args.registered_model, args.models_dir, args.promotion_tolerance
    )
    write_json(args.out, record)
    write_json(args.decisions_out, {"registered_model": args.registered_model, "decisions": decisions})
    if args.champion_out:
        with atomic_output(args.champion_out) as tmp:
            shutil.copyfile(args.models_dir / f"{winner}.keras", tmp)
    ranking = ", ".join(m["model"] for m in sorted(candidates.values(), key=rank_key))
    print(f"register: this run's best: {winner} ({kinds[winner]}), best MLP {best_mlp}; ranking {ranking}")


def summary(
    candidates: dict[str, dict],
    kinds: dict[str, str],
    winner: str,
    best_mlp: str | None,
    registered_model: str,
    models_dir: Path,
    promotion_tolerance: float | None = None,
) -> dict:
    """champion.json: this run's choice for each alias, why, and every candidate with its kind; no version
    numbers and no gate decision (both depend on the store's history, not on params, code and data)."""
    ranking = sorted(candidates.values(), key=rank_key)
    order = ", ".join(m["model"] for m in ranking)

    def entry(name: str, alias: str, among: str) -> dict:
        return {
            "model": name,
            "kind": kinds[name],
            "alias": alias,
            "model_sha256": sha256_file(models_dir / f"{name}.keras"),
            "reason": f"highest validation accuracy ({candidates[name]['val_accuracy']:.4f}) among {among}",
        }

    champion = entry(winner, registry.CHAMPION_ALIAS, order)
    mlps = ", ".join(m["model"] for m in ranking if model_kinds.get(kinds[m["model"]]).best_mlp)
    return {
        "champion": winner,
        "kind": kinds[winner],
        "registered_model": registered_model,
        "promotion_tolerance": promotion_tolerance,
        "alias": registry.CHAMPION_ALIAS,
        "model_sha256": champion["model_sha256"],
        "reason": champion["reason"],
        "best_mlp": entry(best_mlp, registry.MLP_ALIAS, f"the MLPs {mlps}") if best_mlp else None,
        "candidates": [
            {
                "model": m["model"],
                "kind": kinds[m["model"]],
                "val_accuracy": m["val_accuracy"],
                "test_accuracy": m["accuracy"],
            }
            for m in ranking
        ],
    }


if __name__ == "__main__":
    main()
