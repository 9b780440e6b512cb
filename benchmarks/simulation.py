"""Simulated payments per second for the default scenario (`cbdc simulate`, on SQLite), next to the
in-process signed-payment settlement rate measured in the same run: pre-signed payments between
funded wallets, each settled by :func:`cbdc.services.payments.settle_payment` in its own unit of
work. The ratio says what the simulation adds over the engine (drawing, signing on the client
side, merchant flows with two signed messages each, metrics, hourly supply samples).

``CBDC_BENCH_SIMULATION_SCALE_PERCENT`` (default 100) runs a smaller share of the default
scenario, for a quick look.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import Row, fresh_sqlite, print_rows
from cbdc.client import WalletKey, build_payment
from cbdc.clock import ManualClock
from cbdc.domain.identity import IdentityEvidence
from cbdc.domain.money import yuan
from cbdc.services import funding, issuance, keys, payments, wallets
from cbdc.services.context import open_ledger
from cbdc.simulation.runner import in_process_port, simulate
from cbdc.simulation.scenario import Scenario, default_scenario

BASELINE_WALLETS = 100
BASELINE_PAYMENTS = 3_000


def baseline() -> float:
    """Signed payments settled per second, one per unit of work, signatures made beforehand."""
    clock = ManualClock(datetime(2026, 3, 2, 2, tzinfo=UTC))
    context = open_ledger(fresh_sqlite(), clock=clock, ledger_id="bench")
    try:
        issuance.create_operator(context, "BANK", "Bank", quota_fen=yuan(10_000_000))
        issuance.deposit_reserve(context, "reserve", "BANK", yuan(10_000_000))
        issuance.issue(context, "issue", "BANK", yuan(10_000_000))
        root = b"\x07" * 32
        signers = []
        for n in range(BASELINE_WALLETS):
            wallet_id = f"w{n:04d}"
            wallets.open_wallet(
                context, wallet_id, operator_code="BANK", zone="bench", wallet_class=1,
                evidence=IdentityEvidence(phone=f"+86138{n:08d}", id_document=f"ID{n:08d}",
                                          bank_account=f"BA{n:010d}", in_person=True),
            )
            key = WalletKey.derive(root, wallet_id)
            keys.enrol_key(context, wallet_id, key.public_key_hex)
            funding.top_up(context, f"top-up-{n}", wallet_id, yuan(100_000))
            signers.append((wallet_id, key))
        pick = random.Random(5)
        sequences = [0] * BASELINE_WALLETS
        envelopes = []
        for number in range(BASELINE_PAYMENTS):
            payer, payee = pick.sample(range(BASELINE_WALLETS), 2)
            sequences[payer] += 1
            envelopes.append(build_payment(
                signers[payer][1], ledger_id="bench", payment_id=f"p{number}",
                payer=signers[payer][0], payee=signers[payee][0],
                amount_fen=pick.randrange(100, 50_000), sequence=sequences[payer],
                created_at=clock.now(),
            ))
        clock.advance(timedelta(seconds=1))
        started = time.perf_counter()
        for envelope in envelopes:
            payments.settle_payment(context, envelope)
        return BASELINE_PAYMENTS / (time.perf_counter() - started)
    finally:
        context.dispose()


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


def ours() -> tuple[float, float, int]:
    """(payments per second of the payments phase, of the whole run, payments attempted)."""
    pilot = scenario()
    folder = Path(tempfile.mkdtemp(prefix="cbdc-bench-sim-"))
    url = f"sqlite:///{folder / 'ledger.sqlite3'}"
    result = simulate(pilot, 42, port=in_process_port(pilot, 42, url)).result
    assert result.ok, result.invariants
    metrics = result.metrics
    sent = metrics.attempted_count + metrics.injections.injected
    return sent / metrics.phase_seconds["payments"], sent / result.wall_seconds, sent


def main() -> list[Row]:
    engine_rate = baseline()
    phase_rate, whole_rate, sent = ours()
    rows = [
        Row(f"cbdc simulate, payments phase ({sent:,} payments)", phase_rate,
            "settle_payment, pre-signed", engine_rate, goal=0.5),
        Row("cbdc simulate, whole run (issuance, wallets, report data)", whole_rate,
            "settle_payment, pre-signed", engine_rate),
    ]
    print_rows("Simulation on SQLite (payments per second)", rows)
    return rows


if __name__ == "__main__":
    main()
