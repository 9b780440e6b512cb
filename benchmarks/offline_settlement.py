"""Offline payments settled per second from batch uploads of 10,000 payments on SQLite, next to
the rate at which two processes verify the same payments' Ed25519 signatures (PyNaCl), measured
in the same run. Settling includes everything the ledger does: authenticating each payment and
its certificate chain on two worker processes, storing it, classifying each payer device's
payments for fraud, posting the escrow-to-payee entries and writing the settlement rows."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from typing import Any

import nacl.signing

from benchmarks.common import Row, fresh_sqlite, print_rows
from cbdc.clock import ManualClock
from cbdc.domain import signing
from cbdc.domain.identity import IdentityEvidence
from cbdc.domain.money import yuan
from cbdc.offline import DeviceCertificate, OperatorCertificate, SecureElement
from cbdc.offline.batch import authenticate_many
from cbdc.offline.messages import OFFLINE_PAYMENT
from cbdc.services import issuance, offline, offline_uploads
from cbdc.services.context import LedgerContext, open_ledger
from cbdc.services.funding import top_up
from cbdc.services.wallets import open_wallet

PAYMENTS = 10_000
PAYERS = 1_000  # ten payments each: a full offline allowance between two syncs
MERCHANTS = 50
REPEATS = 3


def _wallet(context: LedgerContext, wallet_id: str, phone: int) -> None:
    open_wallet(context, wallet_id, operator_code="BANK-A", zone="bench", wallet_class=2,
                evidence=IdentityEvidence(phone=f"+86139{phone:08d}",
                                          id_document="110101199001011234",
                                          bank_account=f"62220202{phone:08d}"))


def _setup() -> tuple[LedgerContext, list[dict[str, Any]]]:
    """A ledger with 1,000 loaded payer devices and 50 merchant devices, and 10,000 offline
    payments made between them (not yet uploaded)."""
    context = open_ledger(fresh_sqlite(), clock=ManualClock(datetime(2026, 3, 2, tzinfo=UTC)))
    issuance.create_operator(context, "BANK-A", "Bank A", quota_fen=yuan(10**8))
    issuance.deposit_reserve(context, "reserve", "BANK-A", yuan(10**8))
    issuance.issue(context, "issue", "BANK-A", yuan(10**8))
    root = offline.root_public_key(context)

    def device(device_id: str, wallet_id: str) -> SecureElement:
        element = SecureElement(seed=signing_seed(device_id), ledger_id=context.ledger_id,
                                root_public_key=root)
        issued = offline.provision_device(context, device_id, wallet_id,
                                          element.public_key.hex())
        element.install_certificate(DeviceCertificate.from_envelope(issued.certificate),
                                    OperatorCertificate.from_envelope(issued.operator_certificate),
                                    context.now())
        return element

    _wallet(context, "w-payers", 0)
    top_up(context, "fund", "w-payers", yuan(PAYERS * 500))
    merchants = []
    for n in range(MERCHANTS):
        _wallet(context, f"w-shop-{n}", n + 1)
        merchants.append(device(f"shop-{n}", f"w-shop-{n}"))
    envelopes = []
    for n in range(PAYERS):
        payer = device(f"card-{n}", "w-payers")
        payer.apply_load(offline.load_device(context, f"load-{n}", f"card-{n}", yuan(500)))
        for k in range(PAYMENTS // PAYERS):
            shop = merchants[(n + k) % MERCHANTS]
            envelopes.append(payer.pay(shop.device_id, f"w-shop-{(n + k) % MERCHANTS}",
                                       yuan(1) + k, context.now()))
    return context, envelopes


def signing_seed(device_id: str) -> bytes:
    import hashlib

    return hashlib.sha256(f"bench device:{device_id}".encode()).digest()


def settled_per_second() -> float:
    rates = []
    for _ in range(REPEATS):
        context, envelopes = _setup()
        # Warm the worker processes, as a running ledger has them.
        offline_uploads.authenticate(context, envelopes[: offline_uploads.PARALLEL_VERIFY_MIN])
        start = time.perf_counter()
        report = offline.upload_offline_payments(context, envelopes,
                                                 uploaded_by_device_id="shop-0")
        elapsed = time.perf_counter() - start
        settled = len(report.with_status("settled"))
        assert settled == PAYMENTS, f"only {settled} of {PAYMENTS} settled"
        rates.append(settled / elapsed)
        context.dispose()
    return statistics.median(rates)


def _verify_chunk(items: list[tuple[bytes, bytes, bytes]]) -> int:
    for public_key, data, signature in items:
        nacl.signing.VerifyKey(public_key).verify(data, signature)
    return len(items)


def two_process_verify_rate() -> float:
    _, envelopes = _setup()
    items = [
        (bytes.fromhex(e["certificate"]["message"]["public_key"]),
         signing.signed_bytes(OFFLINE_PAYMENT, e["message"]), bytes.fromhex(e["signature"]))
        for e in envelopes
    ]
    half = len(items) // 2
    rates = []
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        list(pool.map(_verify_chunk, [items[:10], items[10:20]]))  # warm
        for _ in range(REPEATS):
            start = time.perf_counter()
            done = sum(pool.map(_verify_chunk, [items[:half], items[half:]]))
            rates.append(done / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> list[Row]:
    baseline = two_process_verify_rate()
    ours = settled_per_second()
    rows = [Row("offline payments settled, uploads of 10,000", ours,
                "Ed25519 verify, 2 processes", baseline, goal=0.7)]
    print_rows("Offline settlement on SQLite (payments per second)", rows)
    return rows


__all__ = ["authenticate_many", "main"]

if __name__ == "__main__":
    main()
