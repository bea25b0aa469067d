"""The documentation stays short, true and connected: no stale parameter table, no broken link,
no result that the reports do not say (workflow/scripts/results_doc.py writes every quoted result)."""

from __future__ import annotations

import importlib.util
import re
import sys
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


def results_doc():
    spec = importlib.util.spec_from_file_location("results_doc", REPO / "workflow/scripts/results_doc.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def results_blocks():
    """The blocks' generators (workflow/scripts/results_blocks.py), as results_doc imports them."""
    results_doc()
    return sys.modules["results_blocks"]


def test_results_quoted_in_the_docs_are_generated_from_the_reports(capsys):
    """Every table and sentence of README.md and docs/ that quotes a result sits in a block that
    workflow/scripts/results_doc.py writes from the git-tracked reports; a stale block fails here."""
    code = results_doc().main(["--check"])
    assert code == 0, (
        f"results quoted in the docs have drifted from reports/: run `make docs`\n{capsys.readouterr().err}"
    )


# Where the docs quote results: each of these blocks must be there (an empty page would pass the check).
RESULT_BLOCKS = {
    "README.md": ["models-table", "goals", "calibration-summary", "explain-summary"],
    "docs/explain.md": ["lrp-conservation", "explain-table", "explain-methods", "explain-findings"],
    "docs/statistics.md": ["intervals-table", "calibration-summary"],
    "docs/models.md": ["probes", "presets", "val-test-gap"],
}


@pytest.mark.parametrize("page", sorted(RESULT_BLOCKS))
def test_the_docs_hold_their_result_blocks(page):
    path = REPO / page
    assert [block.name for block in results_doc().blocks(path.read_text(), path)] == RESULT_BLOCKS[page]


def test_readme_results_table_has_a_row_per_metrics_file_and_preset_record():
    """One row per reports/metrics/*.json (a file params.yaml no longer names is not left out silently) and per
    reports/presets/*.json (`<model> (preset <name>)`), then the published anchors."""
    module, generators = results_doc(), results_blocks()
    text = README.read_text()
    (block,) = [b for b in module.blocks(text, README) if b.name == "models-table"]
    rows = [line.split("|")[1].strip() for line in text.splitlines()[block.start + 3 : block.end]]
    metrics = sorted(path.stem for path in (REPO / "reports/metrics").glob("*.json"))
    records = sorted((REPO / "reports/presets").glob("*.json"))
    presets = [f"{generators.read_json(p)['model']} (preset {p.stem})" for p in records]
    models = [row for row in rows if not row.startswith("*")]
    assert sorted(models) == sorted(metrics + presets)
    assert len(rows) - len(models) == len(generators.ANCHORS)


def test_a_changed_digit_makes_the_check_fail_naming_the_file_and_block(tmp_path, capsys):
    """What makes the check above fail: one digit of the README's table typed by hand."""
    module = results_doc()
    text = README.read_text()
    table = text.index("<!-- results:models-table -->")
    accuracy = re.compile(r"\*\*0\.(\d{4})\*\*")
    found = accuracy.search(text, table)
    digit = found.group(1)[-1]
    edited = text[: found.end(1) - 1] + str((int(digit) + 1) % 10) + text[found.end(1) :]
    copy = tmp_path / "README.md"
    copy.write_text(edited)
    assert module.main(["--check", str(copy)]) == 1
    err = capsys.readouterr().err
    assert f"{copy.name}: block 'models-table'" in err and "run `make docs`" in err, err
    assert err.count("block '") == 1, err  # only the edited block is named
    assert module.main([str(copy)]) == 0  # regenerating puts the reports' digit back
    assert copy.read_text() == text
    assert module.main(["--check", str(copy)]) == 0


@pytest.mark.parametrize(
    ("page", "line", "message"),
    [
        ("a\n<!-- results:no-such-block -->\n<!-- /results -->\n", 2, "unknown results block 'no-such-block'"),
        ("a\n\n<!-- results:goals -->\ntext\n", 3, "block 'goals' is never closed"),
        ("<!-- /results -->\n", 1, "<!-- /results --> closes no block"),
        (
            "<!-- results:goals -->\n<!-- results:presets -->\n<!-- /results -->\n",
            2,
            "block 'presets' opens inside block 'goals'",
        ),
        ("<!-- results:goals --> and text\n<!-- /results -->\n", 1, "a results marker must be alone on its line"),
    ],
)
def test_a_bad_marker_is_an_error_naming_the_file_and_line(tmp_path, capsys, page, line, message):
    doc = tmp_path / "doc.md"
    doc.write_text(page)
    assert results_doc().main(["--check", str(doc)]) == 2
    err = capsys.readouterr().err
    assert f"doc.md:{line}: {message}" in err, err
    assert doc.read_text() == page


def test_markers_quoted_in_text_or_code_are_not_blocks():
    page = "Write `<!-- results:goals -->` to quote.\n```\n<!-- results:unknown -->\n```\n"
    assert results_doc().blocks(page, "doc.md") == []


def test_generated_prose_follows_the_numbers():
    """The sentences say what the figures say: a missed goal, a model scaling makes worse, a passed check."""
    import copy

    module = results_blocks()
    reports = copy.deepcopy(module.load())
    reports.metrics["baseline"]["accuracy"] = 0.85
    reports.metrics["tuned"]["calibration"] |= {
        "temperature": 0.9,
        "ece_scaled": 2 * reports.metrics["tuned"]["calibration"]["ece"],
    }
    for name in reports.models:  # the verdicts turned round: the sentences must follow
        reports.explain[name]["shap"]["randomization"]["verdict"] = "FAILS"
        reports.explain[name]["lrp"]["randomization"]["verdict"] = "FAILS" if name == "regularized" else "passes"
    goals = module.goals(reports)[0]
    assert "baseline's (≥ 0.880, at 0.8500)" in goals and "goals of baseline" not in goals, goals
    calibration = module.calibration_summary(reports)[0]
    assert (
        "Of the models, baseline, regularized and cnn are over-confident (T > 1), tuned is under-confident"
        in calibration
        and "does not lower that of tuned" in calibration
    ), calibration
    summary = module.explain_summary(reports)[0]  # the figures are the reports' own; the verdict is what turned
    shap_fails = r"SHAP fails on every model, with ρ -?[\d.]+ to -?[\d.]+ against -?[\d.]+ for noise"
    assert re.search(shap_fails, summary), summary
    findings = "\n".join(module.explain_findings(reports))
    assert "SHAP fails on every model and LRP fails on 1 of 4 models (regularized). ρ of |maps| on the" in findings
    reports.metrics["cnn"]["val_accuracy"] = 0.9
    gap = module.val_test_gap(reports)[0]
    assert "Every model" not in gap and "cnn scores as high on test as on validation, or higher" in gap, gap
    reports.presets[0]["machine"] = {"cpu": "AMD EPYC", "family": "26", "model": "2", "vector": "AVX-512", "cores": 2}
    line = module.presets(reports)[0]
    assert "on AMD EPYC (family 26, model 2; AVX-512; 2 cores), " in line, line


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
MODULE_SPAN = re.compile(r"(?:tests/(?:\w+/)?)?(test_\w+\.py)")
NAME_SPAN = re.compile(r"(test_\w+?)(…)?")  # `test_download_…` cites every test whose name starts so


def cited_tests(text: str) -> list[tuple[str, str, bool]]:
    """(module, test name or "", whether the name is a prefix) for each test a page cites: `module.py::name`,
    or `module.py` followed on its line by backticked names (`test_x.py`: `test_a`, `test_b`)."""
    cited = []
    for line in text.splitlines():
        module = None
        for span in BACKTICKED.findall(line):
            cited += [(m, name, False) for m, name in TEST_NAME.findall(span)]
            if whole := MODULE_SPAN.fullmatch(span):
                module = whole[1]
            elif module and (bare := NAME_SPAN.fullmatch(span)):
                cited.append((module, bare[1], bool(bare[2])))
    return cited


def test_cited_tests_are_read_in_both_forms():
    line = "| x | `test_a.py::test_one`; `test_b.py`: `test_two`, `test_three_…` (`--flag`) |\n`test_accuracy` alone"
    assert cited_tests(line) == [
        ("test_a.py", "test_one", False),
        ("test_b.py", "", False),
        ("test_b.py", "test_two", False),
        ("test_b.py", "test_three_", True),
    ]


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_test_the_docs_cite_exists(page):
    """A guarantee cites the test that proves it; a renamed, moved or deleted test must not leave it unproved."""
    for module, name, prefix in cited_tests(page.read_text()):
        found = list((REPO / "tests").glob(f"**/{module}"))
        assert found, f"{page.name} cites {module}, which is in no folder of tests/"
        path = found[0]
        if name:
            pattern = rf"^def {name}" + ("" if prefix else r"\(")
            assert re.search(pattern, path.read_text(), re.M), f"{page.name} cites {module}: {name}"


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
        name = path.stem if room in ("stages", "experiments", "summary") else path.name  # listed without .py
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
