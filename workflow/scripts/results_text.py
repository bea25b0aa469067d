"""Wording shared by the results blocks (results_blocks.py, results_explain.py): lists, spans, counts."""

from __future__ import annotations


def join_and(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def value_span(values: list[float], spec: str) -> str:
    """'0.51' when the values print alike, else '0.51 to 0.55'."""
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low} to {high}"


def every_model(count: int, total: int) -> str:
    return "every model" if count == total else f"{count} of {total} models"


NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def number_word(n: int) -> str:
    return NUMBERS[n] if n < len(NUMBERS) else str(n)


def percent(share: float) -> str:
    return f"{100 * share:.0f} %"
