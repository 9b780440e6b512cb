"""One call that runs a simulation end to end: open the ledger (or the API), drive, report.

The CLI, the tests and the benchmark all come through :func:`simulate`, so what they measure is
what a user runs.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from cbdc.clock import ManualClock
from cbdc.domain.errors import InvalidRequest
from cbdc.services.context import open_ledger
from cbdc.simulation.driver import Driver, Progress, RunResult
from cbdc.simulation.http import HttpLedger
from cbdc.simulation.inprocess import InProcessLedger
from cbdc.simulation.ports import LedgerPort
from cbdc.simulation.report import Written, write_report
from cbdc.simulation.scenario import Scenario
from cbdc.storage import migrate
from cbdc.storage.engine import normalise_url

#: Salts drawn by services (identity evidence) come from this stream, not the OS, so a run's
#: database is reproducible byte for byte, not only its ledger.
_SALT_STREAM = 0x5A17


@dataclass(frozen=True, slots=True)
class Simulation:
    result: RunResult
    written: Written | None


#: Allocations between two youngest-generation collections during a run (CPython: 700).
_GC_THRESHOLD = 50_000


@contextmanager
def _few_collections() -> Iterator[None]:
    """Collect cyclic garbage less often while the run lasts. A batch keeps thousands of
    objects alive for a moment; at the default threshold they outlive a young collection,
    move to the old generations and are traversed again and again by full collections (about
    7 % of a default run). Nothing the run allocates depends on when collection happens."""
    saved = gc.get_threshold()
    gc.set_threshold(_GC_THRESHOLD, 20, 10)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def scenario_start(scenario: Scenario) -> datetime:
    return datetime.combine(scenario.start_date, time(0), tzinfo=scenario.zone_info)


def in_process_port(scenario: Scenario, seed: int, database_url: str) -> InProcessLedger:
    """Migrate ``database_url`` (a no-op when current) and open it with an injected clock."""
    url = normalise_url(database_url)
    migrate.upgrade(url)
    clock = ManualClock(scenario_start(scenario) - timedelta(days=1))
    context = open_ledger(url, clock=clock, ledger_id=scenario.ledger_id)
    context.random_bytes = random.Random(seed ^ _SALT_STREAM).randbytes
    return InProcessLedger(context, clock)


def api_port(
    scenario: Scenario, url: str, central_bank_key: str, operator_keys: Mapping[str, str],
    *, today: date | None = None,
) -> tuple[Scenario, HttpLedger]:
    """The scenario moved to start tomorrow (in its zone), and an adapter for the API at ``url``.

    The server judges payment requests' and codes' expiries by its own clock, so the simulated
    week must lie ahead of it; ``today`` defaults to the real date."""
    today = today or datetime.now(UTC).astimezone(scenario.zone_info).date()
    moved = replace(scenario, start_date=today + timedelta(days=1))
    return moved, HttpLedger(url, central_bank_key, operator_keys)


def parse_operator_keys(pairs: list[str]) -> dict[str, str]:
    """``CODE=KEY`` pairs (``--operator-key``) as a mapping."""
    keys: dict[str, str] = {}
    for pair in pairs:
        code, sep, key = pair.partition("=")
        if not sep or not code or not key:
            raise InvalidRequest(f"--operator-key takes CODE=KEY, not {pair!r}",
                                 code="operator_key_invalid")
        keys[code] = key
    return keys


def fresh_sqlite_url(out: Path) -> str:
    """The default database: ``ledger.sqlite3`` in the output folder, started afresh."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ledger.sqlite3"
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    return f"sqlite:///{path}"


def simulate(
    scenario: Scenario,
    seed: int,
    *,
    port: LedgerPort,
    out: Path | None = None,
    progress: Progress | None = None,
    offline_available: bool = True,
) -> Simulation:
    """Run ``scenario`` with ``seed`` against ``port``; write the report to ``out`` if given.
    Offline payments run when ``offline_available`` and the port offers the offline services
    (:class:`~cbdc.simulation.ports.OfflineLedgerPort`: in-process and over HTTP alike)."""
    try:
        with _few_collections():
            result = Driver(scenario, seed, port, progress=progress,
                            offline_available=offline_available).run()
    finally:
        port.close()
    written = write_report(result, out) if out is not None else None
    return Simulation(result=result, written=written)
