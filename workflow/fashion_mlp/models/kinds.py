"""Model kinds in one registry: everything the pipeline needs to know about an `mlp` or a `cnn`.

A train block's `kind` (mlp when absent) picks an entry. The entry says how to build the model,
which keys of the block are the kind's own (config.schema turns them into the schema's rules), which
per-layer lists follow which layers, how a saved .keras file is recognised, how the summary names
and draws it, whether it counts for the `best-mlp` alias, and whether LRP covers it. register,
report, explain, the Snakemake rules and config read it from here. Adding a kind: one entry below,
its builder in architectures.py, and its keys' types under `$defs/model` in the params schema.

Light on purpose: the Snakefile imports it while it is parsed, so Keras is imported only by `build`.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fashion_mlp import PipelineError

IMAGE_SIDE = 28


class KindError(PipelineError, ValueError):
    """An unknown kind, or a saved model that is no kind's; the message names the known kinds."""


@dataclass(frozen=True)
class Kind:
    name: str  # the value of `kind:` in a train block
    noun: str  # how the summary's sentences name a model of the kind ("an MLP")
    builder: str  # the function of architectures.py that takes (block, name) and returns the Keras model
    keys: tuple[str, ...]  # the block keys only this kind takes, all required
    per_layer: dict[str, str]  # a key taking one value or one per layer -> the list it follows
    layers: frozenset[str]  # Keras layer classes its models may hold...
    requires: frozenset[str]  # ...and must hold: together they recognise a saved model
    marker: str  # matplotlib marker and colour of its points in the summary's figure
    colour: str
    line: str  # line style of the published anchors of this kind in that figure
    priority: int  # Snakemake starts the trainings and explanations of the highest first (the longest ones)
    best_mlp: bool  # a pure MLP: competes for the `best-mlp` alias
    lrp: bool  # explain's LRP (attribution/lrp.py) covers every layer the kind builds
    problems: Callable[[str, dict], list[str]] = field(default=lambda name, block: [], repr=False)

    @property
    def label(self) -> str:
        """ "MLP": the noun without its article, for legends."""
        return self.noun.split(" ", 1)[1]

    def build(self, block: dict, name: str):
        # A plain import, not importlib: code_deps.py sees it, so an edit there reruns train.
        from fashion_mlp.models import architectures

        return getattr(architectures, self.builder)(block, name)


def _cnn_problems(name: str, block: dict) -> list[str]:
    """The conv blocks must leave at least one pixel of the 28x28 image."""
    size = IMAGE_SIDE
    for _ in block["conv"]:
        size = (size - (block["kernel"] - 1 if block["padding"] == "valid" else 0)) // 2
    if size >= 1:
        return []
    return [
        f"{name}.conv: {len(block['conv'])} conv blocks with kernel {block['kernel']} and padding "
        f"{block['padding']} shrink the 28x28 image to nothing; use fewer blocks or padding same"
    ]


_MLP_LAYERS = frozenset({"InputLayer", "Flatten", "Dense", "BatchNormalization", "Dropout"})

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            name="mlp",
            noun="an MLP",
            builder="mlp_from_block",
            keys=("hidden", "l2"),
            per_layer={"dropout": "hidden", "l2": "hidden", "batchnorm": "hidden"},
            layers=_MLP_LAYERS,
            requires=frozenset({"Dense"}),
            marker="o",
            colour="C0",
            line="--",
            priority=0,
            best_mlp=True,
            lrp=True,
        ),
        Kind(
            name="cnn",
            noun="a CNN",
            builder="cnn_from_block",
            keys=("conv", "kernel", "padding", "dense"),
            per_layer={"batchnorm": "conv", "dropout": "dense"},
            layers=_MLP_LAYERS | {"Reshape", "Conv2D", "MaxPooling2D"},
            requires=frozenset({"Conv2D"}),
            marker="s",
            colour="C1",
            line=":",
            priority=5,  # several times an MLP's time on the same images, to train and to explain
            best_mlp=False,
            lrp=True,
            problems=_cnn_problems,
        ),
    )
}
DEFAULT = "mlp"  # the kind of a block without `kind:`


def get(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise KindError(f"unknown model kind {name!r}; known kinds: {', '.join(KINDS)}") from None


def of_block(block: dict) -> Kind:
    """The kind of a train block: its `kind`, or the default when absent."""
    return get(block.get("kind", DEFAULT))


def build(block: dict, name: str):
    """The Keras model a train block describes."""
    return of_block(block).build(block, name)


def layer_classes(config: dict) -> set[str]:
    """The Keras layer classes of a saved model's config.json, nested models' layers included."""
    classes = set()
    for layer in config.get("config", {}).get("layers", []):
        if isinstance(layer.get("config"), dict) and "layers" in layer["config"]:
            classes |= layer_classes(layer)  # a nested Sequential or Functional model
        else:
            classes.add(layer["class_name"])
    return classes


def of_layers(classes: set[str], source: str) -> Kind:
    """The one kind whose models may hold exactly these layer classes; an error naming `source` otherwise."""
    matches = [kind for kind in KINDS.values() if classes <= kind.layers and kind.requires <= classes]
    if len(matches) == 1:
        return matches[0]
    described = "; ".join(
        f"{k.name}: {', '.join(sorted(k.requires))} among {', '.join(sorted(k.layers))}" for k in KINDS.values()
    )
    problem = "match no model kind" if not matches else f"match several kinds ({', '.join(k.name for k in matches)})"
    raise KindError(f"{source}: its layers ({', '.join(sorted(classes))}) {problem}; the kinds are {described}")


def of_saved(path: str | Path) -> Kind:
    """The kind of a saved .keras file, read from its config.json (no TensorFlow)."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise KindError(f"{path}: cannot read the model's config.json to tell its kind ({exc})") from None
    return of_layers(layer_classes(config), str(path))


# --- the schema's rules for train blocks, made from the entries (config.load_schema adds them) ---


def with_kinds(schema: dict) -> dict:
    """The schema as read from its file, with the kinds' names and per-kind rules of the registry added."""
    model = schema["$defs"]["model"]
    model["properties"]["kind"]["enum"] = list(KINDS)
    model["allOf"] = [schema_rule(kind) for kind in KINDS.values()]
    return schema


def schema_rule(kind: Kind) -> dict:
    """if the block is of `kind`: its own keys are required, every other kind's are refused, each by name."""
    article = kind.noun.split()[0]
    own = " and ".join([", ".join(kind.keys[:-1]), kind.keys[-1]] if len(kind.keys) > 1 else kind.keys)
    if kind.name == DEFAULT:  # kind absent or this one (an unknown kind gets the enum's error alone)
        condition = {"properties": {"kind": {"const": kind.name}}}
        block = f"{article} {kind.name} block (kind absent or {kind.name})"
    else:
        condition = {"required": ["kind"], "properties": {"kind": {"const": kind.name}}}
        block = f"a kind: {kind.name} block"
    properties = {key: {"$ref": f"#/$defs/model/properties/{key}"} for key in kind.keys}
    owners: dict[str, list[str]] = {}  # another kind's key -> every kind that takes it ("an mlp", ...)
    for other in KINDS.values():
        for key in other.keys:
            if key not in kind.keys:
                owners.setdefault(key, []).append(f"{other.noun.split()[0]} {other.name}")
    for key, names in owners.items():
        properties[key] = {"not": {}, "description": f"{key} is {' and '.join(names)} key; {block} takes {own}"}
    return {"if": condition, "then": {"description": f"{block} needs {own}", "required": list(kind.keys),
                                      "properties": properties}}  # fmt: skip
