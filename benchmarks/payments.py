"""Signed payments settled per second in one process on SQLite (one per transaction, and in
batches through ``settle_payments``), next to the Ed25519 verify rate measured in the same run.

Payments are built and signed by the client library before the clock starts: only the ledger's
side (validate, verify, check, post, sign the receipt, record) is timed."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import nacl.signing

from benchmarks.common import Row, fresh_sqlite, print_rows, rate
from cbdc.client import Envelope, WalletKey, build_payment
from cbdc.clock import ManualClock
from cbdc.domain.identity import IdentityEvidence
from cbdc.domain.messages import PAYMENT
from cbdc.domain.money import yuan
from cbdc.domain.signing import signed_bytes
from cbdc.services import issuance
from cbdc.services.context import LedgerContext, open_ledger
from cbdc.services.funding import top_up
from cbdc.services.keys import enrol_key
from cbdc.services.payments import settle_payment, settle_payments
from cbdc.services.wallets import open_wallet

WALLETS = 200
BATCH = 500
SINGLE_PAYMENTS = 1_000
BATCHED_PAYMENTS = 10_000


class Population:
    """Funded class 1 wallets with enrolled keys, and a generator of valid payments."""

    def __init__(self) -> None:
        self.clock = ManualClock(datetime(2026, 3, 2, 1, tzinfo=UTC))
        self.context: LedgerContext = open_ledger(fresh_sqlite(), clock=self.clock)
        issuance.create_operator(self.context, "BENCH", "Bench Bank", quota_fen=yuan(10**8))
        issuance.deposit_reserve(self.context, "bench-reserve", "BENCH", yuan(10**8))
        issuance.issue(self.context, "bench-issue", "BENCH", yuan(10**8))
        self.keys: list[WalletKey] = []
        self.sequences: list[int] = []
        for n in range(WALLETS):
            wallet_id = f"bench-{n:04d}"
            open_wallet(self.context, wallet_id, operator_code="BENCH", zone="bench",
                        wallet_class=1, evidence=IdentityEvidence(
                            phone=f"+86138{n:08d}", id_document="110101199001011234",
                            bank_account="6222020200112233", in_person=True))
            key = WalletKey.derive(b"bench-seed".ljust(32, b"."), wallet_id)
            enrol_key(self.context, wallet_id, key.public_key_hex)
            top_up(self.context, f"bench-top-up-{n}", wallet_id, yuan(10_000))
            self.keys.append(key)
            self.sequences.append(0)
        self.made = 0

    def payments(self, count: int) -> list[Envelope]:
        envelopes = []
        for _ in range(count):
            self.made += 1
            payer = self.made % WALLETS
            payee = (payer + 1 + self.made // WALLETS) % WALLETS
            if payee == payer:
                payee = (payer + 1) % WALLETS
            self.sequences[payer] += 1
            envelopes.append(build_payment(
                self.keys[payer], ledger_id=self.context.ledger_id,
                payment_id=f"bench-pay-{self.made}", payer=f"bench-{payer:04d}",
                payee=f"bench-{payee:04d}", amount_fen=100 + self.made % 5_000,
                sequence=self.sequences[payer], created_at=self.clock.now()))
        return envelopes


def verify_rate(sample: Envelope, count: int = 5_000) -> float:
    key = nacl.signing.VerifyKey(bytes.fromhex(sample["message"]["public_key"]))
    data = signed_bytes(PAYMENT, sample["message"])
    signature = bytes.fromhex(sample["signature"])

    def run() -> int:
        for _ in range(count):
            key.verify(data, signature)
        return count

    return rate(run)


def single_rate(population: Population) -> float:
    envelopes = population.payments(SINGLE_PAYMENTS)
    start = time.perf_counter()
    for envelope in envelopes:
        settle_payment(population.context, envelope)
    return len(envelopes) / (time.perf_counter() - start)


def batched_rate(population: Population) -> float:
    envelopes = population.payments(BATCHED_PAYMENTS)
    start = time.perf_counter()
    for first in range(0, len(envelopes), BATCH):
        results = settle_payments(population.context, envelopes[first:first + BATCH])
        refused = [r for r in results if isinstance(r, Exception)]
        assert not refused, refused[:1]
    return len(envelopes) / (time.perf_counter() - start)


def main() -> list[Row]:
    population = Population()
    verify = verify_rate(population.payments(1)[0])
    rows = [
        Row("settle_payment, one per transaction", single_rate(population),
            "Ed25519 verify", verify),
        Row(f"settle_payments, batches of {BATCH}", batched_rate(population),
            "Ed25519 verify", verify, goal=0.5),
    ]
    print_rows("Signed payments on SQLite, one process (payments per second)", rows)
    population.context.dispose()
    return rows


if __name__ == "__main__":
    main()
