"""A params.yaml section as `--key value` flags, exactly as DVC renders `${section}`, and those flags,
typed from the schema, back into the section (the stages' argparse)."""

from __future__ import annotations

import argparse
import shlex

from fashion_mlp.config.schema import accepted, load_schema, resolve, section_schema


def cli_flags(section: dict, _prefix: str = "") -> str:
    """Render a params section as `--key value` flags, exactly as DVC does for `${section}`.

    DVC's dict unpacking: a list becomes `--key a b`, true becomes a bare
    `--key`, false is left out, null becomes `None`, strings are shell-quoted
    and a nested mapping becomes `--outer.inner value`. The Snakefile uses this so
    both engines run the same command line (tests/engines/test_dag_equality.py checks).
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
