"""Simulated payments per second for the default scenario (`cbdc simulate`, on SQLite), next to the
in-process signed-payment settlement rates of the payments benchmark measured in the same run:
pre-signed payments between funded wallets settled by
:func:`cbdc.services.payments.settle_payment`, one per unit of work, and by
:func:`cbdc.services.payments.settle_payments` in batches. The ratio says what the simulation adds
over the engine (drawing, signing on the client side, merchant flows with two signed messages
each, offline devices, metrics, hourly supply samples); the goal is set against the batch rate,
since the simulation settles in batches too.

Two more rows divide the gap: the same payments per second of the time spent inside the ledger's
calls during the payments phase (what the engine manages on the simulation's own traffic, with
its payment requests, code captures, top-ups and offline uploads), against the batch rate; and
the payments phase against that, which is the share of the phase the ledger took (the rest is
the simulation's own work).

``CBDC_BENCH_SIMULATION_SCALE_PERCENT`` (default 100) runs a smaller share of the default
scenario, for a quick look.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Row, print_rows
from benchmarks.payments import Population, batched_rate, single_rate
from cbdc.simulation.runner import in_process_port, simulate
from cbdc.simulation.scenario import Scenario, default_scenario


def baseline() -> tuple[float, float]:
    """(one per unit of work, in batches) signed payments settled per second."""
    population = Population()
    try:
        return single_rate(population), batched_rate(population)
    finally:
        population.context.dispose()


def scenario() -> Scenario:
    share = int(os.environ.get("CBDC_BENCH_SIMULATION_SCALE_PERCENT", "100"))
    full = default_scenario()
    if share >= 100:
        return full
    return full.with_counts(
        wallets=max(2, full.wallet_count * share // 100),
        merchants=max(1, full.merchant_count * share // 100),
        payments=full.payment_count * share // 100,
    )


@dataclass(frozen=True)
class Measured:
    sent: int  # payments attempted, cheats included
    phase_rate: float  # per second of the payments phase
    ledger_rate: float  # per second of the ledger's calls in the payments phase
    whole_rate: float  # per second of the whole run


def ours() -> Measured:
    pilot = scenario()
    folder = Path(tempfile.mkdtemp(prefix="cbdc-bench-sim-"))
    url = f"sqlite:///{folder / 'ledger.sqlite3'}"
    result = simulate(pilot, 42, port=in_process_port(pilot, 42, url)).result
    assert result.ok, result.invariants
    metrics = result.metrics
    sent = metrics.attempted_count + metrics.injections.injected
    return Measured(sent, sent / metrics.phase_seconds["payments"],
                    sent / metrics.ledger_seconds["payments"], sent / result.wall_seconds)


def main() -> list[Row]:
    single, batched = baseline()
    measured = ours()
    phase = f"cbdc simulate, payments phase ({measured.sent:,} payments)"
    in_ledger = "the ledger's calls alone in that phase"
    rows = [
        Row(phase, measured.phase_rate, "settle_payment, one per tx", single),
        Row(phase, measured.phase_rate, "settle_payments, batched", batched, goal=0.5),
        Row(in_ledger, measured.ledger_rate, "settle_payments, batched", batched),
        Row(phase, measured.phase_rate, in_ledger, measured.ledger_rate),
        Row("cbdc simulate, whole run (issuance, wallets, report data)", measured.whole_rate,
            "settle_payments, batched", batched),
    ]
    print_rows("Simulation on SQLite (payments per second)", rows)
    return rows


if __name__ == "__main__":
    main()
