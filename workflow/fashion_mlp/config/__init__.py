"""params.yaml: finding the project, loading and validating the file (the schema's checks, then those
no schema can state), and a model's block. The schema itself is config.schema; a section as CLI flags
and back is config.flags (both re-exported here, the package's one door).

Light on purpose: the Snakefile imports this package while it is parsed, so it
must not pull in TensorFlow, MLflow or pandas.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from fashion_mlp import PipelineError
from fashion_mlp.config.flags import add_section_flags, cli_flags, optional_int, parse_bool, section_from_args
from fashion_mlp.config.schema import SCHEMA_PATH, load_schema, schema_problems, section_schema
from fashion_mlp.models import kinds

__all__ = [
    "PACKAGE_DIR", "ROOT_MARKERS", "SCHEMA_PATH", "TUNED", "ParamsError", "add_section_flags", "cli_flags",
    "flatten", "load_params", "load_schema", "model_block", "model_names", "optional_int", "parse_bool",
    "per_layer", "project_root", "section_from_args", "section_schema", "students", "validate",
    "validate_section",
]  # fmt: skip

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # fashion_mlp/
ROOT_MARKERS = ("params.yaml", "dvc.yaml", "Snakefile")
TUNED = "tuned"  # the model `tune` retrains from the search's best trial; no train entry may take the name


class ParamsError(PipelineError, ValueError):
    """params.yaml (or a stage's flags) broke the schema; the message names every bad key."""


def project_root() -> Path:
    """The repository root, wherever the current directory is.

    Order: FASHION_MLP_ROOT (exported by the Snakefile), DVC_ROOT (set by DVC for
    stage commands), the nearest parent of the current directory holding the
    project's markers, then the checkout this package lives in.
    """
    for var in ("FASHION_MLP_ROOT", "DVC_ROOT"):
        if os.environ.get(var):
            return Path(os.environ[var]).resolve()
    candidates = [Path.cwd().resolve(), *Path.cwd().resolve().parents, *PACKAGE_DIR.parents]
    for directory in candidates:
        if all((directory / marker).exists() for marker in ROOT_MARKERS):
            return directory
    raise PipelineError(
        "cannot find the project root (a directory holding params.yaml, dvc.yaml and "
        "Snakefile); run from inside the repository or set FASHION_MLP_ROOT"
    )


def load_params(path: str | os.PathLike = "params.yaml") -> dict:
    """Read params.yaml and validate it; raise ParamsError naming every bad key."""
    path = Path(path)
    try:
        with open(path) as fh:
            params = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    validate(params, source=str(path))
    return params


def model_names(params: dict) -> list[str]:
    """Every model the pipeline makes, in order: the entries of train:, the students of distill:, then tuned."""
    return [*params["train"], *students(params), TUNED]


def students(params: dict) -> dict:
    """distill: entries (absent or empty: none), each a train block with its `teacher`."""
    return params.get("distill") or {}


def model_block(params: dict, model: str) -> tuple[dict, str]:
    """A trained model's params block and where it is set ("train.cnn", "distill.student")."""
    for section in ("train", "distill"):
        if model in (params.get(section) or {}):
            return params[section][model], f"{section}.{model}"
    raise KeyError(f"{model!r} is no entry of train: or distill: in params.yaml")


def validate(params: Any, source: str = "params.yaml") -> None:
    schema = load_schema()
    problems = schema_problems(params, schema, root=schema)
    if not problems and isinstance(params, dict):
        for model, spec in (params.get("train") or {}).items():
            problems += _layer_list_problems(f"train.{model}", spec)
        problems += _student_problems(params)
        problems += _split_problems(params["prepare"])
        problems += _space_problems(params["tune"]["space"])
        if TUNED in params["train"]:
            problems.append(f"train.{TUNED}: the name '{TUNED}' is reserved for the model the tune stage retrains")
    if problems:
        raise ParamsError(_join(source, problems))


def validate_section(section: str, values: dict, source: str = "command line") -> None:
    """Check one stage's values against its part of the schema.

    `section` is a top-level key ("data", "prepare", "evaluate", "mlflow"), a dotted one
    ("lessons.backprop") or "train" for one model's block. Used by the CLI so DVC runs get the same
    checks the Snakefile applies to the whole file.
    """
    schema = load_schema()
    sub = section_schema(section, schema)
    problems = schema_problems(values, sub, root=schema, prefix=section)
    if not problems and section == "train":
        problems = _layer_list_problems(section, values)
    if not problems and section == "prepare":
        problems = _split_problems(values)
    if not problems and section == "tune":
        problems = _space_problems(values["space"])
    if problems:
        raise ParamsError(_join(source, problems))


def per_layer(value: Any, n_layers: int, name: str, over: str = "hidden") -> list:
    """Broadcast a scalar to every layer of the list `over` (hidden, conv or dense), or check a per-layer list."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return list(value) * n_layers
        if len(value) != n_layers:
            raise ParamsError(
                f"{name} has {len(value)} values but {over} has {n_layers} layers; "
                f"give one value, or one per {over} layer"
            )
        return list(value)
    return [value] * n_layers


def flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept whole (MLflow logs them as text)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


# --- the checks no schema can state, and the messages ------------------------------


def _join(source: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return f"{source}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


def _space_problems(space: dict) -> list[str]:
    """Ranges of tune.space must run from low to high."""
    problems = []
    for key in ("layers", "units", "dropout", "learning_rate"):
        low, high = space[key][0], space[key][1]
        if low > high:
            problems.append(f"tune.space.{key}: min {low} is above max {high}")
    return problems


def _split_problems(prepare: dict) -> list[str]:
    """A stratified validation split needs at least one image per class."""
    pool = prepare["limit_train"] or 60_000
    if pool * prepare["val_fraction"] < 10:
        return [
            f"prepare.val_fraction = {prepare['val_fraction']} of {pool} training images leaves "
            "fewer than 10 validation images, one per class; raise val_fraction or limit_train"
        ]
    return []


def _student_problems(params: dict) -> list[str]:
    """A teacher is a train: entry; a student's name is its own; only students have teachers."""
    problems = [
        f"train.{model}.teacher: a model with a teacher goes under distill:, whose jobs wait for the teacher's"
        for model, spec in params["train"].items()
        if "teacher" in spec
    ]
    for model, spec in students(params).items():
        name = f"distill.{model}"
        problems += _layer_list_problems(name, spec)
        if model in params["train"] or model == TUNED:
            problems.append(f"{name}: the name '{model}' is taken (by train.{model} or the tune stage's model)")
        teacher = spec["teacher"]["model"]
        if teacher not in params["train"]:
            problems.append(
                f"{name}.teacher.model: '{teacher}' is no entry of train: (the teachers: {', '.join(params['train'])})"
            )
        problems += _views_problems(name, spec)
    return problems


def _views_problems(name: str, spec: dict) -> list[str]:
    """A table's views are the student's augmentation: no other beside them, and a mirror needs flips."""
    how = spec["teacher"]
    asked = how.get("views")
    if not asked:
        return []
    problems = []
    if any((spec.get("augment") or {}).values()):
        problems.append(f"{name}.augment: with teacher.views the views are the augmentation; set augment off")
    if how.get("mixup"):
        problems.append(f"{name}.teacher.mixup: blends need the teacher in the step; teacher.views has none")
    if asked.get("mirror") and not asked["flip"]:
        problems.append(f"{name}.teacher.views.mirror: needs teacher.views.flip (the mirror images are flipped views)")
    return problems


def _layer_list_problems(name: str, spec: dict) -> list[str]:
    """Per-layer lists match their layers, and the kind's own checks pass (a CNN keeps a pixel)."""
    kind = kinds.of_block(spec)
    problems = []
    for key, over in kind.per_layer.items():
        try:
            per_layer(spec[key], len(spec[over]), f"{name}.{key}", over=over)
        except ParamsError as exc:
            problems.append(str(exc))
    return problems + kind.problems(name, spec)
