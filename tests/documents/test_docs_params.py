"""No page repeats a value of params.yaml by hand: it names the key and links to docs/parameters.md
(generated, so always current) or to params.yaml. A value copied next to its key goes stale the day
the key changes, and nothing else would notice.

The check looks for a backticked key of params.yaml (`tune.workers`, `seed`) followed, within a few
words, by the key's current value (`tune.workers` (2), `evaluate.bootstrap_resamples` (1,000)), and
for a key written with its value inside one code span (`tune.workers: 2`, `-S tune.workers=2`, a
quoted message's `tune.workers 2`). Another value beside a key is an example, not a copy, and is
left alone (`tune.workers: 1`), as are values written before their key and words such as "off".
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PAGES = [REPO / "README.md", *(p for p in sorted((REPO / "docs").glob("*.md")) if p.name != "parameters.md")]
WINDOW = 3  # words after a key in which its value counts as stated beside it

# Keys whose value a page still quotes beside them. A test below fails when one of them is fixed, so
# that this list only shrinks: replace the value by a link to the key's section of docs/parameters.md.
KNOWN = {
    "explain.md": {
        "explain.background_size",
        "explain.images_per_class",
    },
    "statistics.md": {"evaluate.bootstrap_resamples", "evaluate.calibration_bins"},
}

SPAN = re.compile(r"`([^`]+)`")  # a code span may wrap onto the next line of its paragraph
FENCE = re.compile(r"(?ms)^```.*?^```")
NUMBER = re.compile(r"^[-+]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?([eE][-+]?\d+)?$")
SENTENCE_END = re.compile(r"\.\s|;")


def flatten(block: dict, prefix: str = "") -> dict[str, object]:
    """params.yaml as {dotted key: value}, one entry per leaf (a list is a leaf)."""
    keys = {}
    for name, value in block.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            keys.update(flatten(value, f"{key}."))
        else:
            keys[key] = value
    return keys


def checkable(value: object) -> bool:
    """Numbers, text and lists of them. true, false and null read as words ("off", "all") too often."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, list):
        return bool(value) and all(checkable(item) for item in value)
    return isinstance(value, (int, float, str))


def same(written: str, value: object) -> bool:
    """Whether the text `written` is `value` as YAML reads it (1,000 and 1000 are one number)."""
    written = written.strip().strip("`*\"'()")
    if NUMBER.match(written):
        written = written.replace(",", "")
    try:
        parsed = yaml.safe_load(written)
    except yaml.YAMLError:
        return False
    if isinstance(value, (int, float)) and not isinstance(parsed, bool) and isinstance(parsed, (int, float)):
        return float(parsed) == float(value)
    return parsed == value


def words_after(text: str, start: int) -> list[str]:
    """The first WINDOW words after `start`, within the sentence; a [list] counts as one word."""
    rest = text[start : start + 300]
    end = SENTENCE_END.search(rest)
    rest = rest[: end.start()] if end else rest
    found = re.findall(r"\[[^\]\n]*\]|[^\s\[]+", rest)
    return [word.strip(",:=") for word in found[:WINDOW]]


def stated_values(text: str, params: dict[str, object]) -> list[tuple[str, str]]:
    """(key, the words that state its value) for every value stated beside its key in `text`."""
    found = []
    # Commands in fenced blocks are examples, set apart from any key; a code span ends with its paragraph.
    for paragraph in re.split(r"\n\s*\n", FENCE.sub("", text)):
        for match in SPAN.finditer(paragraph):
            span = " ".join(match.group(1).split())
            if span in params and checkable(params[span]):
                beside = [word for word in words_after(paragraph, match.end()) if same(word, params[span])]
                found += [(span, f"`{span}` ... {word}") for word in beside]
                continue
            for key, value in params.items():
                if not checkable(value):
                    continue
                inside = re.search(rf"(?<![\w.]){re.escape(key)}\s*[:= ]\s*(\[[^\]]*\]|[^\s,;)]+)", span)
                if inside and same(inside.group(1), value):
                    found.append((key, f"`{span}`"))
    return found


def anchor(key: str) -> str:
    """The anchor of the heading of docs/parameters.md that lists `key`."""
    headings = re.findall(r"(?m)^#+ `([^`]+)`$", (REPO / "docs/parameters.md").read_text())
    owners = [h for h in headings if key == h or key.startswith(f"{h}.")]
    return max(owners, key=len).replace(".", "") if owners else "top-level"


def params() -> dict[str, object]:
    return flatten(yaml.safe_load((REPO / "params.yaml").read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_states_a_keys_current_value_beside_it(page: Path):
    stated = stated_values(page.read_text(), params())
    copies = [(key, where) for key, where in stated if key not in KNOWN.get(page.name, set())]
    assert not copies, f"{page.name} repeats values of params.yaml beside their keys: " + "; ".join(
        f"{where} (name the key, link to parameters.md#{anchor(key)})" for key, where in copies
    )


def test_the_known_copies_are_still_there():
    """A copy fixed in its page must leave KNOWN too, or the list would excuse its return."""
    gone = []
    for name, keys in KNOWN.items():
        stated = {key for key, _ in stated_values((REPO / "docs" / name).read_text(), params())}
        gone += [f"{name}: {key}" for key in sorted(keys - stated)]
    assert not gone, f"no longer repeated, remove from KNOWN in {Path(__file__).name}: {gone}"


VALUES = {"tune.workers": 2, "evaluate.bootstrap_resamples": 1000, "tune.space.units": [32, 512, 32], "seed": 42}


@pytest.mark.parametrize(
    "text",
    [
        "The search runs `tune.workers` (2) worker processes.",
        "over `evaluate.bootstrap_resamples` (1,000) resamples",
        "the space (`tune.space.units`: [32, 512, 32]) is searched",
        "set `tune.workers: 2` in params.yaml",
        "Snakemake says (`tune: --cores 1 runs 1 worker(s), not tune.workers 2`).",
        "seeded by `seed`, **42**, everywhere",
    ],
)
def test_a_value_beside_its_key_is_found(text):
    assert stated_values(text, VALUES), text


@pytest.mark.parametrize(
    "text",
    [
        "With `tune.workers: 1` it runs the whole search in one process.",
        "`dvc exp run -S tune.workers=3` tries three.",
        "The search runs `tune.workers` single-thread worker processes on the cores.",
        "`tune.workers`. Two workers ran the 2 searches.",
        "Widths up to 512 (`tune.space.units`) are searched.",
        "`evaluate.bootstrap_resamples` resamples, each about 4 ms: 1000 of them",
    ],
)
def test_an_example_value_or_a_number_further_away_is_not_a_copy(text):
    assert not stated_values(text, VALUES), text
