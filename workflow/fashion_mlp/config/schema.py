"""params.schema.yaml: loaded with the model kinds' rules, checked, and put in plain English (what a key
accepts, and a validation error as one line naming its key) for the error messages and the flags' --help.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from fashion_mlp.models import kinds

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "params.schema.yaml"


def resolve(schema: dict, root: dict) -> dict:
    """Follow a local `$ref` (`#/$defs/...`) to the schema it names."""
    while "$ref" in schema:
        target = root
        for part in schema["$ref"].split("#/", 1)[1].split("/"):
            target = target[part]
        schema = target
    return schema


def _key(prefix: str, path: Iterable) -> str:
    """("train", ["baseline", "hidden", 0]) -> "train.baseline.hidden[0]"."""
    parts = [prefix] if prefix else []
    for item in path:
        parts.append(f"[{item}]" if isinstance(item, int) else str(item))
    return ".".join(parts).replace(".[", "[") or "(top level)"


def describe_error(error, prefix: str, root: dict) -> str:
    """One jsonschema error as a line naming the key (under `prefix`) and what it accepts."""
    key = _key(prefix, error.absolute_path)
    schema = error.schema
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(str(name), allowed, n=1)
            where = f"{key}.{name}" if key != "(top level)" else str(name)
            hint = f"unknown key '{where}'"
            if close:
                hint += f" (did you mean '{close[0]}'?)"
            hints.append(hint)
        return "; ".join(hints) + f"; allowed keys here: {', '.join(allowed)}"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        where = f"{key}.{missing}" if key != "(top level)" else missing
        sub = schema.get("properties", {}).get(missing, {})
        if "description" in schema:  # a key one model kind needs (the schema's allOf of if/then)
            return f"missing key '{where}' (expected {accepted(sub, root)}): {schema['description']}"
        return f"missing key '{where}' (expected {accepted(sub, root)})"
    if error.validator == "not" and "description" in schema:  # a key of another model kind
        return f"key '{key}' is not allowed here: {schema['description']}"
    if error.validator == "pattern" and error.schema_path and "propertyNames" in error.schema_path:
        return f"bad model name '{error.instance}' under '{key}': use lower-case letters, digits and _"
    if error.validator in ("minItems", "maxItems") and isinstance(error.instance, list):
        return f"'{key}' has {len(error.instance)} items; expected {accepted(schema, root)}"
    if error.validator == "minProperties":
        return f"'{key}' is empty; it needs at least one entry"
    return f"'{key}' = {error.instance!r} is not allowed; expected {accepted(schema, root)}"


def accepted(schema: dict, root: dict) -> str:
    """A short English description of what a (sub)schema accepts."""
    if "$ref" in schema:
        return accepted(resolve(schema, root), root)
    if "oneOf" in schema:
        return " or ".join(accepted(s, root) for s in schema["oneOf"])
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return "null"
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        if "pattern" in schema:
            return f"a string matching {schema['pattern']}"
        return "a non-empty string" if schema.get("minLength") else "a string"
    if kind == "array":
        items = accepted(schema.get("items", {}), root)
        size = ""
        if schema.get("minItems") == schema.get("maxItems", -1):
            size = f" of {schema['minItems']} items"
        elif "minItems" in schema and "maxItems" in schema:
            size = f" of {schema['minItems']} to {schema['maxItems']} items"
        elif "minItems" in schema:
            size = f" of at least {schema['minItems']} item(s)"
        return f"a list{size}, each {items}"
    if kind == "object":
        return "a mapping with keys " + ", ".join(sorted(schema.get("properties", {})))
    if kind in ("integer", "number"):
        noun = "an integer" if kind == "integer" else "a number"
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if low is None and high is None:
            return noun
        left = "(" if "exclusiveMinimum" in schema else "["
        right = ")" if "exclusiveMaximum" in schema else "]"
        if high is None:
            return f"{noun} {'>' if left == '(' else '>='} {low}"
        if low is None:
            return f"{noun} {'<' if right == ')' else '<='} {high}"
        return f"{noun} in {left}{low}, {high}{right}"
    return "a valid value"


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """params.schema.yaml, with the model kinds' names and rules added from their registry."""
    with open(SCHEMA_PATH) as fh:
        return kinds.with_kinds(yaml.safe_load(fh))


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


def schema_problems(instance: Any, schema: dict, root: dict, prefix: str = "") -> list[str]:
    """Every way `instance` breaks `schema` (a part of `root`, whose $defs it may use), each as one line
    naming its key under `prefix`; none when it conforms."""
    from referencing import Registry, Resource

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
