"""Stage `register`: register the model with the best *validation* accuracy as the MLflow champion.

Candidates are compared on the validation split only (the accuracy of the
epoch whose weights were kept, from each metrics JSON); test accuracy is
reported, never used to choose. The winner becomes a new version of the registered
model, as a pyfunc that takes pictures (fashion_mlp.serving), and the alias
`champion` points at it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fashion_mlp.config import add_section_flags, section_from_args, validate_section
from fashion_mlp.io import read_json, sha256_file, write_json

ALIAS = "champion"


def choose(candidates: dict[str, dict]) -> str:
    """Name of the candidate with the highest validation accuracy (ties: the first listed)."""
    return max(candidates, key=lambda name: candidates[name]["val_accuracy"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp register", description=__doc__.splitlines()[0])
    add_section_flags(parser, "mlflow")
    parser.add_argument("--metrics", type=Path, nargs="+", required=True, help="reports/metrics/<model>.json")
    parser.add_argument("--models_dir", type=Path, required=True, help="where <model>.keras files are")
    parser.add_argument("--out", type=Path, required=True, help="JSON naming the champion and why")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    validate_section("mlflow", section_from_args(args, "mlflow"))
    candidates = {m["model"]: m for m in (read_json(path) for path in args.metrics)}
    winner = choose(candidates)

    import mlflow

    from fashion_mlp import tracking

    experiment_id = tracking.init(args.experiment)
    model_path = args.models_dir / f"{winner}.keras"
    model_sha = sha256_file(model_path)
    run = tracking.find_run_by_tag(experiment_id, "model_sha256", model_sha)
    if run is None:
        from fashion_mlp import PipelineError

        raise PipelineError(f"no MLflow run logged {model_path}; rerun its train stage to register it")
    # The registered version is the winner's .keras file wrapped as a pyfunc that takes pictures
    # (fashion_mlp.serving), logged into the run that trained it: `mlflow models serve` on the alias
    # answers image bytes with class names. The run's own Keras-flavour model stays as it was.
    from fashion_mlp import serving

    client = mlflow.MlflowClient()
    with tracking.resume_run(run.info.run_id):
        logged = serving.log_model(model_path)
    version = tracking.with_retry(mlflow.register_model, logged.model_uri, args.registered_model)
    tracking.with_retry(client.set_registered_model_alias, args.registered_model, ALIAS, version.version)
    tracking.with_retry(
        client.set_model_version_tag,
        args.registered_model,
        version.version,
        "val_accuracy",
        str(candidates[winner]["val_accuracy"]),
    )
    tracking.with_retry(client.set_model_version_tag, args.registered_model, version.version, "model_sha256", model_sha)
    ranking = sorted(candidates.values(), key=lambda m: -m["val_accuracy"])
    # The version number and run id depend on what the MLflow store held before, not on the
    # pipeline's inputs, so they stay in MLflow (models:/<name>@champion); the model's hash,
    # also the run's model_sha256 tag, names the same run in a way a rerun reproduces.
    write_json(
        args.out,
        {
            "champion": winner,
            "registered_model": args.registered_model,
            "alias": ALIAS,
            "model_sha256": model_sha,
            "reason": f"highest validation accuracy ({candidates[winner]['val_accuracy']:.4f}) among "
            + ", ".join(m["model"] for m in ranking),
            "candidates": [
                {"model": m["model"], "val_accuracy": m["val_accuracy"], "test_accuracy": m["accuracy"]}
                for m in ranking
            ],
        },
    )
    print(
        f"register: {winner} is {args.registered_model}@{ALIAS} (version {version.version}, "
        f"MLflow run {run.info.run_id})"
    )


if __name__ == "__main__":
    main()
