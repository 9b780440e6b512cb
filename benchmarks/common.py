"""Shared helpers: fresh migrated databases and a small timing loop."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cbdc.storage import migrate

console = Console(width=120)


def fresh_sqlite(directory: Path | None = None, name: str = "bench.sqlite3") -> str:
    folder = directory or Path(tempfile.mkdtemp(prefix="cbdc-bench-"))
    path = folder / name
    migrate.upgrade(f"sqlite:///{path}")
    return f"sqlite:///{path}"


def rate(operation: Callable[[], int], *, repeats: int = 3) -> float:
    """Median items per second over ``repeats`` runs of ``operation`` (which returns its item
    count)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        items = operation()
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates)


@dataclass
class Row:
    what: str
    ours: float
    baseline_name: str
    baseline: float
    goal: float | None = None

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline


def print_rows(title: str, rows: list[Row]) -> None:
    table = Table(title=title)
    for column in ("measured", "per second", "baseline", "per second", "ratio", "goal"):
        table.add_column(column, justify="right" if column != "measured" else "left")
    for row in rows:
        goal = "" if row.goal is None else f">= {row.goal:.0%}"
        verdict = "" if row.goal is None else (" ok" if row.ratio >= row.goal else " BELOW")
        table.add_row(row.what, f"{row.ours:,.0f}", row.baseline_name, f"{row.baseline:,.0f}",
                      f"{row.ratio:.0%}{verdict}", goal)
    console.print(table)
