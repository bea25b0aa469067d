"""The documentation stays short, true and connected: no stale parameter table, no broken link,
no result that the metrics do not say."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from conftest import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
README_MAX_LINES = 200


def params_doc():
    spec = importlib.util.spec_from_file_location("params_doc", REPO / "workflow/scripts/params_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parameter_reference_is_generated_from_params_and_schema():
    assert (REPO / "docs/parameters.md").read_text() == params_doc().render(), (
        "docs/parameters.md has drifted from params.yaml or its schema: run `make docs`"
    )


def test_parameter_reference_follows_an_edit_of_params_and_schema(tmp_path):
    """What makes the test above fail: a new value, comment or range shows up in the page."""
    params, schema = tmp_path / "params.yaml", tmp_path / "schema.yaml"
    text = (REPO / "params.yaml").read_text()
    edited = re.sub(r"(?m)^(  hyperband_iterations:) \d+ +#.*$", r"\1 7  # runs of the schedule, edited", text)
    assert edited != text
    params.write_text(edited)
    schema_text = (REPO / "workflow/schemas/params.schema.yaml").read_text()
    schema.write_text(
        schema_text.replace(
            "factor: { type: integer, minimum: 2, maximum: 10 }", "factor: { type: integer, minimum: 2, maximum: 9 }"
        )
    )
    page = params_doc().render(params, schema)
    assert "| `tune.hyperband_iterations` | `7` | integer in [1, 10] | runs of the schedule, edited |" in page
    assert "| `tune.factor` | `3` | integer in [2, 9] |" in page


def test_comments_are_read_inline_with_continuations_or_from_the_lines_above(tmp_path):
    notes = params_doc().comments(
        "# the seed\n"
        "seed: 1\n"
        "sec:\n"
        "  # introduces sec\n"
        "  a: [1, 2]   # first\n"
        "              # and more\n"
        "  # about b\n"
        "  b: x\n"
        "  c: 2\n"
    )
    assert notes == {
        "seed": "the seed",
        "sec": "introduces sec",
        "sec.a": "first and more",
        "sec.b": "about b",
        "sec.c": "",
    }


def test_readme_stays_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details to docs/"


LINK = re.compile(r"\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page."""
    headings = re.findall(r"(?m)^#+ (.+)$", re.sub(r"(?ms)^```.*?^```", "", page.read_text()))
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_points_to_a_file_that_exists(page):
    broken = []
    for match in LINK.finditer(page.read_text()):
        link = match.group(1) or match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http(s):, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = page.parent / target if target else page
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(link)
    assert not broken, f"{page.name} links to missing files or headings: {broken}"


def test_readme_results_are_the_committed_metrics():
    """The README's results table quotes reports/metrics/*.json and reports/presets/*.json (a row
    `<model> (preset <name>)`); it must say what they say."""
    rows, presets = {}, {}
    for line in README.read_text().splitlines():
        cells = [cell.strip(" *") for cell in line.strip().strip("|").split("|")]
        preset = re.fullmatch(r"\w+ \(preset ([\w-]+)\)", cells[0])
        if len(cells) >= 4 and (REPO / f"reports/metrics/{cells[0]}.json").exists():
            rows[cells[0]] = cells[1:4]
        elif len(cells) >= 4 and preset:
            presets[preset.group(1)] = cells[1:4]
    metrics = sorted(path.stem for path in (REPO / "reports/metrics").glob("*.json"))
    assert sorted(rows) == metrics, "the README's results table should have one row per model"
    recorded = sorted(path.stem for path in (REPO / "reports/presets").glob("*.json"))
    assert sorted(presets) == recorded, "the README's results table should have one row per recorded preset"
    quoted = [(f"reports/metrics/{m}.json", None, cells) for m, cells in rows.items()]
    quoted += [(f"reports/presets/{p}.json", "metrics", cells) for p, cells in presets.items()]
    for path, key, (test_accuracy, macro_f1, val_accuracy) in quoted:
        found = json.loads((REPO / path).read_text())
        found = found[key] if key else found
        assert [test_accuracy, macro_f1, val_accuracy] == [
            f"{found['accuracy']:.4f}",
            f"{found['macro_f1']:.4f}",
            f"{found['val_accuracy']:.4f}",
        ], path


def test_the_generator_writes_and_checks(tmp_path):
    out = tmp_path / "parameters.md"
    module = params_doc()
    assert module.main(["--check", "--out", str(out)]) == 1  # missing
    assert module.main(["--out", str(out)]) == 0
    assert module.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text() + "hand edit\n")
    assert module.main(["--check", "--out", str(out)]) == 1


TEST_NAME = re.compile(r"\b(test_\w+\.py)(?:::(test_\w+))?")
BACKTICKED = re.compile(r"`([^`]+)`")


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_test_the_docs_cite_exists(page):
    """A guarantee cites the test that proves it; a renamed or deleted test must not leave it unproved."""
    cited = [m for span in BACKTICKED.findall(page.read_text()) for m in TEST_NAME.findall(span)]
    for module, name in cited:
        path = REPO / "tests" / module
        assert path.is_file(), f"{page.name} cites tests/{module}, which does not exist"
        if name:
            assert re.search(rf"^def {name}\(", path.read_text(), re.M), f"{page.name} cites {module}::{name}"


def test_the_readme_layout_names_every_room_and_module_of_the_package():
    """The tree drawn in the README's Layout section cannot fall behind the package."""
    readme = (REPO / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("```", 2)[1]
    package = REPO / "workflow/fashion_mlp"
    for path in sorted(package.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        room = path.parent.relative_to(package).as_posix()
        assert room == "." or f"{room}/" in layout, f"README layout: no room {room}/"
        name = path.stem if room in (".", "stages", "summary") else path.name
        assert name in layout, f"README layout: {path.relative_to(package)} is not named"


def dag_jobs_of_dot(text: str) -> list[tuple[str, ...]]:
    """The jobs of Snakemake's `--dag` output: each node's label, its lines as a tuple ("train", "model: cnn")."""
    return sorted(tuple(label.split("\\n")) for label in re.findall(r'^\s*\d+\[label = "([^"]*)"', text, flags=re.M))


def dag_jobs_of_svg(path: Path) -> list[tuple[str, ...]]:
    """The jobs drawn in Graphviz's SVG: each node group's text lines."""
    import xml.etree.ElementTree as ET

    svg = "{http://www.w3.org/2000/svg}"
    nodes = [g for g in ET.parse(path).iter(f"{svg}g") if g.get("class") == "node"]
    return sorted(tuple(t.text or "" for t in g.iter(f"{svg}text")) for g in nodes)


def test_dag_jobs_are_read_from_both_formats() -> None:
    dot = '\t0[label = "all", color = "0 0 0"];\n\t1[label = "train\\nmodel: cnn", color = "0 0 0"];\n\t1 -> 0\n'
    assert dag_jobs_of_dot(dot) == [("all",), ("train", "model: cnn")]
    drawn = dag_jobs_of_svg(REPO / "docs/dag.svg")
    assert ("prepare",) in drawn and len(drawn) > 10, drawn


@pytest.mark.slow
def test_the_readme_picture_draws_every_job_of_a_default_run() -> None:
    """docs/dag.svg against Snakemake's own DAG of the committed params.yaml (`make dag` redraws it)."""
    import subprocess

    from conftest import engine_env

    dot = subprocess.run(
        ["snakemake", "--forceall", "--dag"], cwd=REPO, env=engine_env(), capture_output=True, text=True, check=True
    ).stdout
    expected = [job for job in dag_jobs_of_dot(dot) if job != ("all",)]
    drawn = dag_jobs_of_svg(REPO / "docs/dag.svg")
    missing = sorted(set(expected) - set(drawn)) or [j for j in expected if expected.count(j) > drawn.count(j)]
    extra = sorted(set(drawn) - set(expected)) or [j for j in drawn if drawn.count(j) > expected.count(j)]
    assert drawn == expected, f"docs/dag.svg is stale (run make dag): not drawn {missing}; drawn but no job {extra}"
