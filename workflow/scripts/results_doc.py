#!/usr/bin/env python3
"""Fill the marked result blocks of README.md and docs/*.md from the committed reports.

A document quotes a pipeline result only inside a block that this script writes:

    <!-- results:models-table -->
    (generated: never edit by hand)
    <!-- /results -->

The block's name says what goes in it (BLOCKS in results_blocks.py, beside this script).
Every figure comes from a file git keeps: reports/metrics/<model>.json and
reports/explain/<model>.json for each model of params.yaml (its `train:` entries, then
`tuned`), reports/presets/*.json, and the published anchors of fashion_mlp.summary.anchors.
Nothing is read from DVC-tracked files (predictions, champion.json), so a fresh clone can
check its documents before any run or `dvc pull`; which differences between models are
significant is left to reports/summary.md, which `report` computes from the predictions.
Regenerate after a run:

    python workflow/scripts/results_doc.py          # or: make docs
    python workflow/scripts/results_doc.py --check  # exit 1 naming every stale file and block

tests/documents/test_docs.py runs the check. An unknown block name, a block never closed, a closing
marker without an opening one, or a marker that is not alone on its line is an error
naming the file and the line (exit 2). A marker quoted in a sentence or inside fenced code
is text, not a block.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from fashion_mlp import PipelineError
from fashion_mlp.io import write_text

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_blocks.py, beside this script
from results_blocks import (  # noqa: E402
    BLOCKS,
    Reports,
    load,
)

OPEN = re.compile(r"<!-- results:([a-z0-9-]+) -->")
CLOSE = "<!-- /results -->"
MARK = re.compile(r"<!--\s*/?\s*results\b")  # a line that starts like a marker must be one
FENCE = re.compile(r"^\s*(```|~~~)")


class DocError(PipelineError, ValueError):
    """A document's markers are wrong; the message names the file and the line."""


# --- documents ----------------------------------------------------------------------------------


@dataclass
class Block:
    name: str
    start: int  # 0-based index of the opening marker's line
    end: int  # of the closing marker's line


def blocks(text: str, path: Path | str) -> list[Block]:
    """The marked blocks of a document, in order; a bad marker is a DocError naming the file and line."""
    found, opened, fenced = [], None, False
    for index, line in enumerate(text.splitlines()):
        where = f"{path}:{index + 1}"
        if FENCE.match(line):
            fenced = not fenced
        stripped = line.strip()
        if fenced or not MARK.match(stripped):  # a marker quoted inside a sentence is text
            continue
        start = OPEN.fullmatch(stripped)
        if start:
            if opened:
                raise DocError(
                    f"{where}: block '{start[1]}' opens inside block '{opened.name}' (line {opened.start + 1})"
                )
            if start[1] not in BLOCKS:
                raise DocError(f"{where}: unknown results block '{start[1]}'; known: {', '.join(BLOCKS)}")
            opened = Block(start[1], index, -1)
        elif stripped == CLOSE:
            if not opened:
                raise DocError(f"{where}: {CLOSE} closes no block")
            opened.end = index
            found.append(opened)
            opened = None
        else:
            raise DocError(f"{where}: a results marker must be alone on its line, as <!-- results:NAME --> or {CLOSE}")
    if opened:
        raise DocError(f"{path}:{opened.start + 1}: block '{opened.name}' is never closed ({CLOSE})")
    return found


def render(text: str, path: Path | str, reports: Reports) -> tuple[str, list[tuple[Block, str]]]:
    """The document with every block regenerated, and the blocks that differed (with a first difference)."""
    lines = text.splitlines(keepends=True)
    out, stale, done = [], [], 0
    for block in blocks(text, path):
        generated = [line + "\n" for line in BLOCKS[block.name](reports)]
        current = lines[block.start + 1 : block.end]
        if current != generated:
            stale.append((block, _first_difference(current, generated, block.start + 2)))
        out += [*lines[done : block.start + 1], *generated]
        done = block.end
    out += lines[done:]
    return "".join(out), stale


def _first_difference(current: list[str], generated: list[str], first_line: int) -> str:
    for offset, (has, wants) in enumerate(zip(current, generated, strict=False)):
        if has != wants:
            return f"line {first_line + offset} reads {has.strip()[:90]!r}; generated: {wants.strip()[:90]!r}"
    if len(current) > len(generated):
        return (
            f"line {first_line + len(generated)} and on should not be there: {current[len(generated)].strip()[:90]!r}"
        )
    return f"a line is missing at line {first_line + len(current)}: {generated[len(current)].strip()[:90]!r}"


def documents(root: Path = REPO) -> list[Path]:
    """The documents searched for blocks by default: the README and every page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _shown(path: Path) -> str:
    """The path from the current directory when it is below it, else in full."""
    path = Path(path).absolute()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if any block is out of date, write nothing")
    parser.add_argument("--root", type=Path, default=REPO, help="the repository whose reports and params are read")
    parser.add_argument("files", nargs="*", type=Path, help="Markdown files (default: README.md and docs/*.md)")
    args = parser.parse_args(argv)
    try:
        reports = load(args.root)
        results = []
        for path in args.files or documents(args.root):
            text = path.read_text()
            results.append((path, text, *render(text, _shown(path), reports)))
    except (PipelineError, OSError) as exc:
        print(f"results_doc: {exc}", file=sys.stderr)
        return 2
    stale = [(path, block, why) for path, _, _, found in results for block, why in found]
    if args.check:
        for path, block, why in stale:
            print(
                f"{_shown(path)}: block '{block.name}' (line {block.start + 1}) is out of date: {why}; run `make docs`",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path, text, page, _ in results:
        if page != text:
            write_text(path, page)
            print(f"results_doc: rewrote {_shown(path)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
