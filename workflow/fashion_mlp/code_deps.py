"""Which source files a stage's outputs depend on: the package modules its command imports.

Both engines rerun a stage when one of its code dependencies changes. The Snakefile takes them
from `stage_code()` (the import closure of the stage's module, read with `ast`, without importing
anything); dvc.yaml lists the same files by hand, and tests/engines/test_code_deps.py checks that its lists
cover the closure, so that an edit to a shared module can never leave an output stale.

A module is left out only if it cannot change what a stage writes; NEUTRAL says why, one line each.
Light on purpose, like fashion_mlp.config: the Snakefile imports it while it is parsed.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "fashion_mlp"
PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent  # workflow/: paths below are relative to the repository as workflow/...

# Modules in every closure that no tracked output depends on, with the reason.
NEUTRAL = {
    "fashion_mlp/__init__.py": "PipelineError and the version string; no stage writes either",
    "fashion_mlp/cli.py": "picks the stage's module by command name; the module itself is a dependency",
    "fashion_mlp/tracking/__init__.py": "the MLflow experiment, and the runs a stage opens or reopens: nothing either "
    "engine tracks",
    "fashion_mlp/tracking/store.py": "where the MLflow store is, and retries on it (their jitter has a generator of "
    "its own, so it cannot shift a seed: tests/libraries/test_tracking.py)",
    "fashion_mlp/tracking/owners.py": "the host and process tags of a run, and closing the runs whose process is gone",
    "fashion_mlp/tracking/lineage.py": "the invocation id, DVC's experiment name and the datasets a run read: MLflow "
    "tags and inputs only",
}
# A subpackage's __init__.py holding only a docstring is neutral too (checked, not assumed: is_docstring_only).


def module_path(name: str) -> Path | None:
    """fashion_mlp.a.b -> the file that defines it (a module or a package's __init__.py), or None."""
    parts = name.split(".")
    base = SOURCE_ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every fashion_mlp module `path` imports, at its top or inside a function, with the packages on the way."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            names.add(node.module)
            # `from fashion_mlp.pkg import mod` imports a module; `import name` of a function does not.
            names |= {f"{node.module}.{a.name}" for a in node.names if module_path(f"{node.module}.{a.name}")}
    parents = {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 1)}
    return names | parents


@cache
def closure(module: str) -> frozenset[str]:
    """Every fashion_mlp module that importing and running `module` can execute, itself included, but
    what only a NEUTRAL module imports: what cannot change an output cannot pass a change on either
    (tracking tags runs with machine.py's CPU; machine.py also writes the summary's preset lines)."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = module_path(name)
        if path is None:
            raise ValueError(f"{name}: no such module under {SOURCE_ROOT}")
        seen.add(name)
        if name == module or relative(path) not in NEUTRAL:
            pending += sorted(imported_modules(path) - seen)
    return frozenset(seen)


def is_docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def relative(path: Path) -> str:
    return path.relative_to(SOURCE_ROOT).as_posix()


def stage_code(module: str) -> list[str]:
    """The source files, as workflow/fashion_mlp/..., that the stage run by `module` depends on (sorted)."""
    files = []
    for name in closure(module):
        path = module_path(name)
        if relative(path) in NEUTRAL or (path.name == "__init__.py" and is_docstring_only(path)):
            continue
        files.append(f"workflow/{relative(path)}")
    return sorted(files)
