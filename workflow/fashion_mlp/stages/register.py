"""Stage `register`: register the best model by *validation* accuracy as the MLflow champion, and the best MLP.

Candidates are compared on the validation split only (the accuracy of the
epoch whose weights were kept, from each metrics JSON); test accuracy is
reported, never used to choose. The winner becomes a new version of the registered
model, as a pyfunc that takes pictures (fashion_mlp.serving), and the alias
`champion` points at it. The best MLP by the same rule gets the alias `best-mlp`.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from fashion_mlp import PipelineError
from fashion_mlp.config import add_section_flags, section_from_args, validate_section
from fashion_mlp.io import atomic_output, model_files, read_metrics, sha256_file, write_json
from fashion_mlp.models import kinds as registry
from fashion_mlp.stages.common import add_flags, models_to_read
from fashion_mlp.tracking import CHAMPION_ALIAS, MLP_ALIAS


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
    return registry.of_saved(path).name


def read_candidates(paths: list[Path]) -> dict[str, dict]:
    """Metrics JSONs by model name; a missing, garbled or incomplete file is an error naming it."""
    return {m["model"]: m for m in read_metrics(paths, ("model", "val_accuracy", "accuracy"))}


def choices(candidates: dict[str, dict], kinds: dict[str, str]) -> tuple[str, str | None]:
    """(champion among all models, best MLP or None when no candidate is an MLP)."""
    mlps = {name: m for name, m in candidates.items() if registry.get(kinds[name]).best_mlp}
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
    return parser


def register_version(experiment_id: str, registered_model: str, model_path: Path, tags: dict[str, str]):
    """Log the .keras file as a picture-taking pyfunc into the run that trained it and register it; the version."""
    import mlflow

    from fashion_mlp import serving, tracking

    run, model_sha = tracking.trained_run(experiment_id, model_path)
    if run is None:
        raise PipelineError(f"no MLflow run logged {model_path}; rerun its train stage to register it")
    # The registered version is the .keras file wrapped as a pyfunc that takes pictures
    # (fashion_mlp.serving), logged into the run that trained it: `mlflow models serve` on the alias
    # answers image bytes with class names. The run's own Keras-flavour model stays as it was.
    with tracking.resume_run(run.info.run_id):
        logged = serving.log_model(model_path)
    version = tracking.with_retry(mlflow.register_model, logged.model_uri, registered_model)
    client = mlflow.MlflowClient()
    for key, value in (tags | {"model_sha256": model_sha}).items():
        tracking.with_retry(client.set_model_version_tag, registered_model, version.version, key, value)
    return version


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    validate_section("mlflow", section_from_args(args, "mlflow"))
    candidates = read_candidates(model_files(args.metrics, models_to_read(args), ".json"))
    kinds = {name: model_kind(args.models_dir / f"{name}.keras") for name in candidates}
    winner, best_mlp = choices(candidates, kinds)

    import mlflow

    from fashion_mlp import tracking

    experiment_id = tracking.init(args.experiment)
    # What a user of `models:/<name>@best-mlp` expects: the pure MLP this run would serve, servable
    # like the champion and moving with every run as the champion does. When the champion is an MLP
    # both aliases name ONE version (one model, one version: comparing the two versions tells whether
    # the champion is an MLP), and a run with no MLP at all removes a stale best-mlp rather than
    # leaving it on an older run's model. Versions are registered before any alias moves, so a failure
    # leaves both aliases where the previous run put them.
    versions = {}
    for name in dict.fromkeys(filter(None, (winner, best_mlp))):
        tags = {"model": name, "kind": kinds[name], "val_accuracy": str(candidates[name]["val_accuracy"])}
        versions[name] = register_version(experiment_id, args.registered_model, args.models_dir / f"{name}.keras", tags)
    client = mlflow.MlflowClient()
    tracking.with_retry(
        client.set_registered_model_alias, args.registered_model, CHAMPION_ALIAS, versions[winner].version
    )
    if best_mlp is not None:
        version = versions[best_mlp].version
        tracking.with_retry(client.set_registered_model_alias, args.registered_model, MLP_ALIAS, version)
    elif MLP_ALIAS in (tracking.with_retry(client.get_registered_model, args.registered_model).aliases or {}):
        tracking.with_retry(client.delete_registered_model_alias, args.registered_model, MLP_ALIAS)

    ranking = sorted(candidates.values(), key=rank_key)
    # The version numbers and run ids depend on what the MLflow store held before, not on the
    # pipeline's inputs, so they stay in MLflow (models:/<name>@champion); the model's hash,
    # also the run's model_sha256 tag, names the same run in a way a rerun reproduces.
    write_json(args.out, summary(candidates, kinds, winner, best_mlp, args.registered_model, args.models_dir))
    if args.champion_out:
        with atomic_output(args.champion_out) as tmp:
            shutil.copyfile(args.models_dir / f"{winner}.keras", tmp)
    print(
        f"register: {winner} ({kinds[winner]}) is {args.registered_model}@{CHAMPION_ALIAS} "
        f"(version {versions[winner].version}); "
        + (f"{best_mlp} is @{MLP_ALIAS} (version {versions[best_mlp].version})" if best_mlp else "no MLP, no @best-mlp")
        + f"; ranking {', '.join(m['model'] for m in ranking)}"
    )


def summary(
    candidates: dict[str, dict],
    kinds: dict[str, str],
    winner: str,
    best_mlp: str | None,
    registered_model: str,
    models_dir: Path,
) -> dict:
    """champion.json: who holds each alias, why, and every candidate with its kind; no version numbers."""
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

    champion = entry(winner, CHAMPION_ALIAS, order)
    mlps = ", ".join(m["model"] for m in ranking if registry.get(kinds[m["model"]]).best_mlp)
    return {
        "champion": winner,
        "kind": kinds[winner],
        "registered_model": registered_model,
        "alias": CHAMPION_ALIAS,
        "model_sha256": champion["model_sha256"],
        "reason": champion["reason"],
        "best_mlp": entry(best_mlp, MLP_ALIAS, f"the MLPs {mlps}") if best_mlp else None,
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
