"""Code dependencies that cannot go stale: each stage's import closure is among its deps in dvc.yaml.

The Snakefile takes its code inputs from the same closure (fashion_mlp/code_deps.py), and
test_dag_equality.py checks that both engines list the same deps, so this covers both engines.
"""

from __future__ import annotations

import textwrap

import pytest
import yaml

from conftest import REPO
from fashion_mlp import code_deps
from fashion_mlp.cli import COMMANDS


def dvc_code_deps() -> dict[str, tuple[str, set[str]]]:
    """dvc.yaml's stages: name -> (its `fashion-mlp` command, the package files among its deps)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        words = body["cmd"].split()
        assert words[0] == "fashion-mlp", f"{name}: runs {words[0]}, not a fashion-mlp command"
        deps = {str(dep).split()[0] for dep in body.get("deps", [])}
        found[name] = (words[1], {dep for dep in deps if dep.startswith("workflow/fashion_mlp/")})
    return found


@pytest.mark.parametrize("stage", sorted(dvc_code_deps()))
def test_each_stage_depends_on_every_module_it_imports(stage):
    command, listed = dvc_code_deps()[stage]
    needed = set(code_deps.stage_code(COMMANDS[command][0]))
    assert not needed - listed, f"dvc.yaml stage {stage} misses code it runs: {sorted(needed - listed)}"
    assert not listed - needed, f"dvc.yaml stage {stage} lists code it never imports: {sorted(listed - needed)}"


def test_the_closure_follows_imports_inside_functions_and_shared_libraries():
    """train reaches the architectures only inside functions, through training.py and the kinds' registry."""
    train = code_deps.stage_code("fashion_mlp.stages.train")
    for module in ("stages/train.py", "models/training.py", "models/architectures.py", "config/flags.py", "runtime.py"):
        assert f"workflow/fashion_mlp/{module}" in train
    assert "workflow/fashion_mlp/stages/evaluate.py" not in train


def test_neutral_modules_are_left_out_and_each_has_a_reason():
    report = code_deps.stage_code("fashion_mlp.stages.register")  # imports tracking and the package root
    for path, reason in code_deps.NEUTRAL.items():
        assert (code_deps.SOURCE_ROOT / path).is_file(), f"NEUTRAL names a missing module {path}"
        assert len(reason) > 20, f"{path}: say why it cannot change a stage's outputs"
        assert f"workflow/{path}" not in report


def test_what_only_a_neutral_module_imports_is_left_out_and_counts_where_imported_otherwise():
    """tracking.py alone imports machine.py in register (its runs' `cpu` tag); report's preset lines use it."""
    assert "workflow/fashion_mlp/machine.py" not in code_deps.stage_code("fashion_mlp.stages.register")
    assert "workflow/fashion_mlp/machine.py" in code_deps.stage_code("fashion_mlp.stages.report")
    assert "fashion_mlp.machine" in code_deps.closure("fashion_mlp.tracking")  # a neutral module's own closure


def test_a_subpackage_init_counts_unless_it_holds_only_a_docstring(tmp_path, monkeypatch):
    package = tmp_path / "fashion_mlp"
    (package / "rooms").mkdir(parents=True)
    (package / "__init__.py").write_text('"""Root."""\n')
    (package / "rooms" / "__init__.py").write_text('"""Only words."""\n')
    (package / "rooms" / "stage.py").write_text(
        textwrap.dedent(
            """
            from fashion_mlp.rooms import helper

            def main():
                from fashion_mlp import lazy
            """
        )
    )
    (package / "rooms" / "helper.py").write_text("X = 1\n")
    (package / "lazy.py").write_text("from fashion_mlp.rooms.helper import X\n")
    monkeypatch.setattr(code_deps, "SOURCE_ROOT", tmp_path)
    code_deps.closure.cache_clear()
    try:
        files = code_deps.stage_code("fashion_mlp.rooms.stage")
        assert files == [  # the two __init__.py files hold only docstrings
            "workflow/fashion_mlp/lazy.py",
            "workflow/fashion_mlp/rooms/helper.py",
            "workflow/fashion_mlp/rooms/stage.py",
        ]
        (package / "rooms" / "__init__.py").write_text("SETTING = 2\n")
        code_deps.closure.cache_clear()
        assert "workflow/fashion_mlp/rooms/__init__.py" in code_deps.stage_code("fashion_mlp.rooms.stage")
    finally:
        code_deps.closure.cache_clear()


def test_no_library_imports_a_stage_or_a_room_above_it():
    """The rooms' floors: the commands (stages, experiments) import any room but each other's; summary,
    attribution, tuning and lessons import the shared libraries; the libraries at the top import no room
    (models/ is a library too)."""
    package = code_deps.SOURCE_ROOT / "fashion_mlp"
    commands = {"stages", "experiments"}
    above = {"stages": {"experiments"}, "experiments": {"stages"}, "summary": commands,
             "attribution": commands | {"summary"}, "tuning": commands | {"summary"},
             "lessons": commands | {"summary"}}  # fmt: skip
    libraries = commands | {"summary", "attribution", "tuning", "lessons"}
    for path in sorted(package.rglob("*.py")):
        room = path.relative_to(package).parts[0] if path.parent != package else None
        forbidden = above.get(room, libraries) if room != "models" else libraries
        for name in code_deps.imported_modules(path):
            parts = name.split(".")
            if len(parts) > 1 and parts[1] in forbidden:
                raise AssertionError(f"{path.relative_to(package)} imports {name}: a room above it")
