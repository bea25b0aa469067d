"""The MLflow model registry: its aliases, one version per model file, and the promotion gate.

`register` asks two things here. Which version holds a model file: the one already tagged with the
file's SHA-256, so a rerun that makes the same model adds no version. And whether this run's best
may take an alias from the version that holds it: the gate. The gate compares validation accuracy,
never test accuracy, and only between models trained on the same data (their runs' data_sha256).
A model trained on other data was scored on another validation split, so the figures say nothing
of each other: the holder keeps the alias unless the run is forced. MLflow does the comparison
(`validate_evaluation_results` with a `MetricThreshold`).
"""

from __future__ import annotations

from dataclasses import dataclass

CHAMPION_ALIAS = "champion"  # the best model by validation accuracy, of any kind
MLP_ALIAS = "best-mlp"  # the best pure MLP by the same rule
DECISION_TAG = "promotion"  # on a version: what the gate decided when it was a candidate, and why


@dataclass(frozen=True)
class Model:
    """A version, or a candidate for one: what the gate compares."""

    name: str  # the model's name in params.yaml (baseline, tuned, ...)
    val_accuracy: float
    model_sha256: str
    data_sha256: str | None  # of the train.npz it was fitted on; None for an old version without the tag
    version: str | None = None


@dataclass(frozen=True)
class Decision:
    alias: str
    outcome: str  # promoted, kept, unchanged, forced, or held (a temporary DVC experiment's: see held)
    reason: str  # one sentence with both figures

    @property
    def moves(self) -> bool:
        return self.outcome in ("promoted", "forced")

    def line(self, candidate: Model) -> str:
        return f"@{self.alias}: {candidate.name} {self.outcome}: {self.reason}"


def held(decision: Decision, experiment: str) -> Decision:
    """The decision of a DVC experiment that runs in a temporary copy: no alias moves, since the copy's
    outputs reach the workspace only when the experiment is applied; the reason says what the gate decided."""
    if not decision.moves:
        return decision
    return Decision(
        decision.alias,
        "held",
        f"DVC experiment {experiment!r} ran in a temporary copy, which moves no alias (the gate: {decision.outcome}, "
        f"{decision.reason}); after `dvc exp apply {experiment}`, `dvc repro -f -s register` asks the gate again",
    )


def decide(alias: str, candidate: Model, holder: Model | None, tolerance: float, force: bool = False) -> Decision:
    """May `candidate` take `alias` from `holder`? Not if its validation accuracy is lower by more than
    `tolerance`, nor if they were trained on other data; `force` overrides either, and says so."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation import EvaluationResult

    if holder is None:
        return Decision(alias, "promoted", f"no version held @{alias}")
    both = (
        f"validation accuracy {candidate.val_accuracy:.4f} against {holder.val_accuracy:.4f} "
        f"of {holder.name} (version {holder.version})"
    )
    if holder.model_sha256 == candidate.model_sha256:
        if holder.version == candidate.version:
            return Decision(
                alias, "unchanged", f"the same model file already holds @{alias} (version {holder.version})"
            )
        # The same file in a new version: the holder was a pickled pyfunc, re-logged as code (register_version).
        return Decision(alias, "promoted", f"the same model file as version {holder.version}, logged again as code")
    if force:
        return Decision(alias, "forced", f"--force, whatever the gate says; {both}")
    if holder.data_sha256 != candidate.data_sha256:
        return Decision(
            alias,
            "kept",
            f"{holder.name} (version {holder.version}) was trained on other data (data_sha256 "
            f"{str(holder.data_sha256)[:12]} against {str(candidate.data_sha256)[:12]}), so their validation "
            "figures cannot be compared; rerun with --force to promote anyway",
        )
    floor = holder.val_accuracy - tolerance
    threshold = {"val_accuracy": MetricThreshold(threshold=floor, greater_is_better=True)}
    try:
        mlflow.validate_evaluation_results(threshold, EvaluationResult({"val_accuracy": candidate.val_accuracy}, {}))
    except MlflowException as exc:
        if "threshold check failed" not in str(exc):
            raise
        return Decision(alias, "kept", f"{both}: below the holder's by more than the tolerance {tolerance}")
    return Decision(alias, "promoted", f"{both}: within the tolerance {tolerance} or better")


# --- what the registry holds ------------------------------------------------------------------


def holder(registered_model: str, alias: str) -> Model | None:
    """The version that holds `alias`, as the gate sees it, or None (no such model or alias)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from fashion_mlp import tracking

    client = mlflow.MlflowClient()
    try:
        version = tracking.with_retry(client.get_model_version_by_alias, registered_model, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or "not found" in str(exc):
            return None
        raise
    tags = version.tags or {}
    run_tags = tracking.with_retry(client.get_run, version.run_id).data.tags if version.run_id else {}
    return Model(
        name=tags.get("model", "?"),
        val_accuracy=float(tags.get("val_accuracy", "nan")),
        model_sha256=tags.get("model_sha256", ""),
        data_sha256=run_tags.get("data_sha256"),
        version=str(version.version),
    )


CODE_LOADER = "mlflow.pyfunc.loaders.code_model"  # a pyfunc logged as code (serving.py), not a pickle


def version_of(registered_model: str, model_sha256: str, current_only: bool = False):
    """The newest version of `registered_model` tagged with this model file's SHA-256, or None; with
    `current_only`, only a version logged as register logs one today (is_current_model)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from fashion_mlp import tracking

    client = mlflow.MlflowClient()
    query = f"name = '{registered_model}' and tags.model_sha256 = '{model_sha256}'"
    try:
        versions = tracking.with_retry(client.search_model_versions, query)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    for version in sorted(versions, key=lambda v: -int(v.version)):
        if not current_only or is_current_model(registered_model, version.version):
            return version
    return None


def is_current_model(registered_model: str, version: str) -> bool:
    """Whether the version's pyfunc loads from code (models from code), which runs no pickle, and
    carries the ONNX export that serves without TensorFlow (versions logged before either lack it)."""
    import mlflow

    from fashion_mlp.onnx_model import ONNX_ARTIFACT

    pyfunc = mlflow.models.get_model_info(f"models:/{registered_model}/{version}").flavors.get("python_function", {})
    return pyfunc.get("loader_module") == CODE_LOADER and ONNX_ARTIFACT in (pyfunc.get("artifacts") or {})
