"""One call that runs a simulation end to end: open the ledger (or the API), drive, report.

The CLI, the tests and the benchmark all come through :func:`simulate`, so what they measure is
what a user runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path

from cbdc.clock import ManualClock
from cbdc.services.context import open_ledger
from cbdc.simulation.driver import Driver, Progress, RunResult
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
    offline_available: bool = False,
) -> Simulation:
    """Run ``scenario`` with ``seed`` against ``port``; write the report to ``out`` if given."""
    try:
        result = Driver(scenario, seed, port, progress=progress,
                        offline_available=offline_available).run()
    finally:
        port.close()
    written = write_report(result, out) if out is not None else None
    return Simulation(result=result, written=written)
