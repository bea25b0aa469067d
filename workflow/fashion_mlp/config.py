"""Loading and validating params.yaml, turning a section into CLI flags, and those flags back into it.

Light on purpose: the Snakefile imports this module while it is parsed, so it
must not pull in TensorFlow, MLflow or pandas.
"""

from __future__ import annotations

import argparse
import os
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from fashion_mlp import PipelineError
from fashion_mlp.models import kinds
from fashion_mlp.schema_text import accepted, describe_error, resolve

PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = PACKAGE_DIR.parent / "schemas" / "params.schema.yaml"
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


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """params.schema.yaml, with the model kinds' names and rules added from their registry."""
    with open(SCHEMA_PATH) as fh:
        return kinds.with_kinds(yaml.safe_load(fh))


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
    problems = _schema_problems(params, schema, root=schema)
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


def section_schema(section: str, root: dict) -> dict:
    """The schema of a section: "train" (one model's block), a top-level key, or a dotted path ("lessons.backprop")."""
    if section == "train":
        return {"$ref": "#/$defs/model"}
    node = root
    for key in section.split("."):
        properties = resolve(node, root).get("properties", {})
        if key not in properties:
            raise ValueError(f"params.yaml has no section {section!r}")
        node = properties[key]
    return node


def validate_section(section: str, values: dict, source: str = "command line") -> None:
    """Check one stage's values against its part of the schema.

    `section` is a top-level key ("data", "prepare", "evaluate", "mlflow"), a dotted one
    ("lessons.backprop") or "train" for one model's block. Used by the CLI so DVC runs get the same
    checks the Snakefile applies to the whole file.
    """
    schema = load_schema()
    sub = section_schema(section, schema)
    problems = _schema_problems(values, sub, root=schema, prefix=section)
    if not problems and section == "train":
        problems = _layer_list_problems(section, values)
    if not problems and section == "prepare":
        problems = _split_problems(values)
    if not problems and section == "tune":
        problems = _space_problems(values["space"])
    if problems:
        raise ParamsError(_join(source, problems))


def cli_flags(section: dict, _prefix: str = "") -> str:
    """Render a params section as `--key value` flags, exactly as DVC does for `${section}`.

    DVC's dict unpacking: a list becomes `--key a b`, true becomes a bare
    `--key`, false is left out, null becomes `None`, strings are shell-quoted
    and a nested mapping becomes `--outer.inner value`. The Snakefile uses this so
    both engines run the same command line (tests/test_dag_equality.py checks).
    """

    def text(value) -> str:
        return shlex.quote(value) if isinstance(value, str) else str(value)

    parts = []
    for key, value in section.items():
        key = f"{_prefix}{key}"
        if isinstance(value, dict):
            parts.append(cli_flags(value, _prefix=f"{key}."))
        elif value is True:
            parts.append(f"--{key}")
        elif value is False:
            continue
        elif isinstance(value, list):
            parts.append(f"--{key} " + " ".join(text(v) for v in value))
        else:
            parts.append(f"--{key} {text(value)}")
    return " ".join(parts)


def parse_bool(text: str) -> bool:
    """argparse type for one boolean of a per-layer list (rendered True/False)."""
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _or_none(convert):
    """argparse type for a `null or value` param: DVC and cli_flags render null as None."""

    def parse(text: str):
        return None if text in ("None", "null", "") else convert(text)

    parse.__name__ = f"{convert.__name__} or None"  # argparse's message: "invalid int or None value: 'x'"
    return parse


optional_int = _or_none(int)


def add_section_flags(parser: argparse.ArgumentParser, section: str) -> None:
    """Add one flag per key of a params.yaml section, typed from the schema: the inverse of cli_flags.

    `section` is a top-level key ("data", "prepare", "tune", ...) or "train" for
    one model's block. Lists take several values (a fixed count when the schema
    fixes it), null is `None`, a boolean is a bare flag, a per-layer key
    (dropout, l2, batchnorm) takes one value or one per layer, and a nested key
    becomes `--outer.inner` stored as `args.outer_inner`. Ranges are left to
    validate_section, so a bad value's message names its params.yaml key.
    """
    label = "train.<model>" if section == "train" else section
    group = parser.add_argument_group(f"params.yaml {label}")
    for path, schema, (_kind, kwargs) in _section_flags(section):
        help_text = "; ".join(filter(None, [schema.get("description"), accepted(schema, load_schema())]))
        group.add_argument(
            f"--{'.'.join(path)}",
            dest="_".join(path),
            **kwargs,
            help=f"{label}.{'.'.join(path)}: {help_text}".replace("%", "%%"),
        )


def section_from_args(args: argparse.Namespace, section: str) -> dict:
    """The section as params.yaml spells it, from flags that add_section_flags added.

    One-element per-layer lists come back as scalars, an absent per-layer
    batchnorm as false and a bare one as true. A key some blocks leave out
    (a model kind's own keys, an optional lever) is left out when its flag is.
    """
    values: dict = {}
    absent_flags = []
    for path, _, (kind, kwargs) in _section_flags(section):
        dest = "_".join(path)
        if not hasattr(args, dest):  # an optional key whose flag was not given
            if kwargs.get("action") == "store_true":
                absent_flags.append(path)
            continue
        value = getattr(args, dest)
        if kind == "per_layer_bool" and not value:
            value = value is not None  # absent: false; a bare flag: true
        elif kind in ("per_layer", "per_layer_bool") and len(value) == 1:
            value = value[0]
        node = values
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    # cli_flags leaves a false boolean out: inside an optional mapping that is there (its other keys
    # came), it is false; a mapping none of whose keys came is absent.
    for path in absent_flags:
        node = values
        for key in path[:-1]:
            node = node.get(key)
            if not isinstance(node, dict):
                break
        else:
            if len(path) > 1:
                node[path[-1]] = False
    return values


def _section_flags(section: str, schema: dict | None = None, path: tuple = (), optional: bool = False) -> list:
    """(key path, schema, (kind, argparse keywords)) for every leaf key of a section, in schema order.

    A key outside its mapping's `required` (or inside an optional mapping) gets an optional flag
    that, when absent, leaves no attribute (argparse.SUPPRESS), so section_from_args leaves it out.
    """
    root = load_schema()
    if schema is None:
        schema = section_schema(section, root)
    schema = resolve(schema, root)
    if schema.get("type") == "object" and "properties" in schema:
        required = set(schema.get("required", ()))
        return [
            leaf
            for key, sub in schema["properties"].items()
            for leaf in _section_flags(section, sub, (*path, key), optional or key not in required)
        ]
    kind, kwargs = _flag_kind(schema, root)
    if optional:
        kwargs = {**kwargs, "required": False, "default": argparse.SUPPRESS}
    return [(path, schema, (kind, kwargs))]


def _flag_kind(schema: dict, root: dict) -> tuple[str, dict]:
    """How one key travels as a flag: a kind for section_from_args, and argparse's keywords."""
    options = [resolve(s, root) for s in schema.get("oneOf", [schema])]
    nullable = any(o.get("type") == "null" for o in options)
    options = [o for o in options if o.get("type") != "null"]
    arrays = [o for o in options if o.get("type") == "array"]
    scalars = [o for o in options if o.get("type") != "array"]
    item = resolve(arrays[0]["items"], root) if arrays else scalars[0]
    if item.get("type") == "boolean" and not arrays:
        return "plain", {"action": "store_true"}
    if "enum" in item:
        kwargs = {"metavar": "{" + ",".join(map(str, item["enum"])) + "}"}
    else:
        convert, metavar = {"integer": (int, "N"), "number": (float, "X"), "boolean": (parse_bool, "BOOL")}.get(
            item.get("type"), (str, "TEXT")
        )
        if nullable:
            convert, metavar = _or_none(convert), f"{metavar}|None"
        kwargs = {"type": convert, "metavar": metavar}
    if arrays and scalars:  # one value for every hidden layer, or one per layer
        if item.get("type") == "boolean":  # DVC renders true as a bare flag and leaves false out
            return "per_layer_bool", {**kwargs, "nargs": "*"}
        return "per_layer", {**kwargs, "nargs": "+", "required": True}
    if arrays:
        low, high = arrays[0].get("minItems", 0), arrays[0].get("maxItems")
        kwargs["nargs"] = low if low == high else ("+" if low else "*")
    return "plain", {**kwargs, "required": True}


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


# --- error messages -------------------------------------------------------------------


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


def _schema_problems(instance: Any, schema: dict, root: dict, prefix: str = "") -> list[str]:
    from referencing import Registry, Resource

    # Validate `instance` against `schema` with the root's $defs resolvable.
    wrapped = {"$ref": "urn:params#/$defs/__target__"}
    # Without $schema, jsonschema keeps our validator class (strict integers) across the $ref.
    schema = {k: v for k, v in schema.items() if k != "$schema"}
    root_with_target = dict(root, **{"$defs": dict(root.get("$defs", {}), __target__=schema)})
    root_with_target.pop("$schema", None)
    registry = Registry().with_resource(
        "urn:params", Resource.from_contents(root_with_target, default_specification=_draft())
    )
    validator = _validator_class()(wrapped, registry=registry)
    problems = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        problems.append(describe_error(error, prefix, root_with_target))
    return list(dict.fromkeys(problems))  # a model kind's keys are checked twice (the schema's allOf)


@lru_cache(maxsize=1)
def _validator_class():
    """Draft 2020-12, except that 10.0 is not an integer: the stage CLIs parse integers strictly."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(base, type_checker=checker)


def _draft():
    from referencing.jsonschema import DRAFT202012

    return DRAFT202012
