"""Fixed-width text tables for the benchmarks' output."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

# (title, alignment and width as in a format spec: "<9" or ">8", the cell's text)
Column = tuple[str, str, Callable[[dict[str, Any]], str]]


def load_cell(row: dict[str, Any]) -> str:
    """The 1-minute load average before -> after a run."""
    return f"{row['load_before']:.1f}->{row['load_after']:.1f}"


def print_table(columns: Sequence[Column], rows: Iterable[dict[str, Any]]) -> None:
    header = "".join(f"{title:{spec}}" for title, spec, _ in columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        print("".join(f"{cell(row):{spec}}" for _, spec, cell in columns))
