"""Uploads: a device online hands the ledger the offline payments it holds, in batches.

Either side uploads: a payer its own payments, a payee what it received, both in any order and
as often as they like. For each batch, in order:

1. every envelope is authenticated (shape, certificate chain to the root, payer's signature,
   this ledger). An envelope carrying exactly the certificates the ledger issued to the device
   it names needs no chain verification (the ledger signed that chain): it is checked here and
   its signature verified on two threads, chunk by chunk while the next chunk is prepared
   (PyNaCl releases the GIL while it verifies). Any other envelope goes through
   :func:`cbdc.offline.batch.authenticate_many` in full, on two worker processes for large
   batches. Forged or altered ones are refused, each named in an ``offline_forged`` fraud case
   against the device it claims (a forgery proves nothing against that device's key, so it is
   not revoked for it);
2. one unit of work: the devices involved (payers, the uploader) are locked in ascending id
   order; each new payment is stored once, by payment hash (a duplicate changes nothing);
3. a :class:`~cbdc.services.offline_settlement.SettlementRun` over every payer device in the
   batch: classification, fraud cases, revocations, and payment of what may be paid, exactly
   once (docs/offline-protocol.md, "Settlement as implemented");
4. a new revocation list is published if a device was revoked; the uploader is handed it, and
   a sync receipt signed by its operator: its own payments through ``synced_counter`` are on
   the ledger, and the received payments it uploaded that are now paid.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, update
from sqlalchemy.exc import IntegrityError

from cbdc.domain.postings import canonical_json
from cbdc.offline import DeviceCertificate
from cbdc.offline.batch import (
    Authenticated,
    Prepared,
    Refusal,
    TrustedChain,
    authenticate_many,
    conclude,
    prepare_trusted,
    verify_signatures,
)
from cbdc.offline.messages import parse_time
from cbdc.services.context import LedgerContext
from cbdc.services.offline_devices import publish_pending_revocations
from cbdc.services.offline_keys import operator_authority, root_public_key
from cbdc.services.offline_settlement import SettlementRun
from cbdc.storage.journal import post_entries
from cbdc.storage.offline import (
    DeviceRow,
    device_not_found,
    known_payments,
    load_devices,
    load_revocations,
)
from cbdc.storage.tables import offline_devices, offline_payments

#: Batches (and chunks) at least this long are verified on :data:`VERIFY_WORKERS` threads
#: (envelopes with the ledger's certificates) or processes (the others).
PARALLEL_VERIFY_MIN = 256
VERIFY_WORKERS = 2
#: Envelopes per task sent to a worker: small enough to keep both workers busy to the end.
VERIFY_CHUNK = 500
#: Concurrent uploads may race to publish the same revocation list number (PostgreSQL);
#: the loser starts its unit of work again.
UPLOAD_ATTEMPTS = 3
NOT_FORGERIES = frozenset({"offline_wrong_ledger"})
PAID = frozenset({"settled", "operator_paid"})


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    """What became of one uploaded envelope: ``status`` is ``settled`` (paid from the payer's
    escrow), ``operator_paid`` (paid by the certifying operator), ``pending`` (kept, not yet
    payable: ``code`` says why), ``unpaid`` (kept, never payable: ``code`` says why) or
    ``refused`` (not stored: ``code`` is the error). ``duplicate`` is true when the ledger
    already held the payment."""

    index: int
    status: str
    code: str | None
    payment_hash: str | None
    payer_device: str | None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class UploadReport:
    outcomes: tuple[UploadOutcome, ...]
    revoked: tuple[str, ...]
    sync_receipt: dict[str, Any]
    revocation_list: dict[str, Any] | None

    def with_status(self, status: str) -> tuple[UploadOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes if outcome.status == status)


def upload_offline_payments(
    context: LedgerContext, envelopes: Sequence[Any], *, uploaded_by_device_id: str
) -> UploadReport:
    """Store, classify and settle a batch of offline payment envelopes uploaded by a device
    (its own payments, those it received, or both). Order: see the module docstring."""
    results = authenticate(context, envelopes)
    for attempt in range(UPLOAD_ATTEMPTS):
        try:
            with context.write() as connection:
                return _record(context, connection, results, uploaded_by_device_id)
        except IntegrityError:
            if attempt == UPLOAD_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


_POOL: ProcessPoolExecutor | None = None
_VERIFIERS = ThreadPoolExecutor(max_workers=VERIFY_WORKERS,
                                thread_name_prefix="cbdc-offline-verify")


def _pool() -> ProcessPoolExecutor:
    """The workers for envelopes with certificates the ledger did not issue as they stand,
    started once per process (spawned: a fork would copy the database connections and threads
    of the parent)."""
    global _POOL
    if _POOL is None:
        _POOL = ProcessPoolExecutor(max_workers=VERIFY_WORKERS,
                                    mp_context=multiprocessing.get_context("spawn"))
    return _POOL


def authenticate(
    context: LedgerContext, envelopes: Sequence[Any]
) -> list[Authenticated | Refusal]:
    """Each envelope's :class:`Authenticated` or :class:`Refusal`, in order. Envelopes with the
    very certificates the ledger issued to the device they name are checked here and their
    signatures verified on threads, chunk by chunk while the next chunk is prepared; any other
    envelope is authenticated in full, on worker processes for large batches."""
    chains = _trusted_chains(context, envelopes)
    results: list[Authenticated | Refusal | None] = [None] * len(envelopes)
    prepared: list[tuple[int, Prepared]] = []
    others: list[int] = []
    chunks: list[tuple[list[tuple[int, Prepared]], Future[list[bool]]]] = []
    for index, envelope in enumerate(envelopes):
        outcome = prepare_trusted(envelope, chains)
        if outcome is None:
            others.append(index)
        elif isinstance(outcome, Refusal):
            results[index] = outcome
        else:
            prepared.append((index, outcome))
            if len(prepared) == VERIFY_CHUNK:
                chunks.append(_submit(prepared))
                prepared = []
    if prepared:
        chunks.append(_submit(prepared))
    full = _authenticate_in_full(context, [envelopes[i] for i in others])
    for index, result in zip(others, full, strict=True):
        results[index] = result
    for items, verdicts in chunks:
        for (index, item), valid in zip(items, verdicts.result(), strict=True):
            results[index] = conclude(envelopes[index], item, valid, context.ledger_id)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def _submit(
    items: list[tuple[int, Prepared]]
) -> tuple[list[tuple[int, Prepared]], Future[list[bool]]]:
    triples = [item.triple() for _, item in items]
    if len(items) < PARALLEL_VERIFY_MIN:
        done: Future[list[bool]] = Future()
        done.set_result(verify_signatures(triples))
        return items, done
    return items, _VERIFIERS.submit(verify_signatures, triples)


def _trusted_chains(context: LedgerContext, envelopes: Sequence[Any]) -> dict[str, TrustedChain]:
    """The certificate pairs the ledger issued to the devices the envelopes name."""
    named = {envelope["message"].get("payer_device") for envelope in envelopes
             if isinstance(envelope, Mapping) and isinstance(envelope.get("message"), Mapping)}
    with context.read() as connection:
        devices = load_devices(connection, {d for d in named if isinstance(d, str)})
    chains = {}
    for device in devices.values():
        stored = json.loads(device.certificate_json)
        authority = operator_authority(context, device.operator_code,
                                       device.operator_registered_at)
        chains[device.device_id] = TrustedChain(
            DeviceCertificate.from_envelope(stored), stored,
            authority.certificate.to_envelope())
    return chains


def _authenticate_in_full(
    context: LedgerContext, envelopes: list[Any]
) -> list[Authenticated | Refusal]:
    root = root_public_key(context)
    if len(envelopes) < PARALLEL_VERIFY_MIN:
        return authenticate_many(envelopes, root, context.ledger_id)
    chunks = [envelopes[start:start + VERIFY_CHUNK]
              for start in range(0, len(envelopes), VERIFY_CHUNK)]
    pool = _pool()
    futures = [pool.submit(authenticate_many, chunk, root, context.ledger_id) for chunk in chunks]
    return [result for future in futures for result in future.result()]


def _record(
    context: LedgerContext,
    connection: Connection,
    results: list[Authenticated | Refusal],
    uploader_id: str,
) -> UploadReport:
    now = context.now()
    claimed = {r.message["payer_device"] if isinstance(r, Authenticated) else r.payer_device
               for r in results}
    devices = load_devices(connection, {d for d in claimed if d} | {uploader_id}, lock=True)
    uploader = devices.get(uploader_id)
    if uploader is None:
        raise device_not_found(uploader_id)
    outcomes: list[UploadOutcome | None] = [None] * len(results)
    stored = _store_new(connection, results, devices, outcomes, uploader, now)
    involved = {devices[r.message["payer_device"]].device_id for _, r in stored}
    forged = [(i, r) for i, r in enumerate(results) if isinstance(r, Refusal)
              and r.code not in NOT_FORGERIES and r.payer_device in devices]
    involved |= {r.payer_device for _, r in forged if r.payer_device}
    run = SettlementRun(context, connection, {d: devices[d] for d in involved}, now)
    run.load({r.payment_hash: (r.message, r.signature) for _, r in stored})
    run.lock_wallets()
    for _, refusal in forged:
        assert refusal.payer_device is not None
        run.open_case(run.books[refusal.payer_device], "offline_forged",
                      () if refusal.counter is None else (refusal.counter,), (refusal.digest,),
                      lambda _, amount=refusal.amount_fen: amount,
                      f"not a payment of a certified device: {refusal.code}: {refusal.detail}")
    run.decide()
    run.write(post_entries(connection, run.drafts(), now=now))
    revocation_envelope = publish_pending_revocations(context, connection)
    statuses = run.final_statuses()
    for index, result in stored:
        status, reason = statuses[result.payment_hash]
        previous = outcomes[index]
        outcomes[index] = UploadOutcome(index, status, reason, result.payment_hash,
                                        result.message["payer_device"],
                                        duplicate=previous is not None and previous.duplicate)
    receipt = _sync(context, connection, uploader, results, statuses, run, now)
    assert all(outcome is not None for outcome in outcomes)
    return UploadReport(
        outcomes=tuple(o for o in outcomes if o is not None),
        revoked=tuple(run.revoked),
        sync_receipt=receipt,
        revocation_list=revocation_envelope,
    )


def _store_new(
    connection: Connection,
    results: list[Authenticated | Refusal],
    devices: dict[str, DeviceRow],
    outcomes: list[UploadOutcome | None],
    uploader: DeviceRow,
    now: datetime,
) -> list[tuple[int, Authenticated]]:
    """Refuse what cannot be stored; insert each new payment once; return the stored ones
    (new and duplicates) by index."""
    known = known_payments(connection, [r.payment_hash for r in results
                                        if isinstance(r, Authenticated)])
    stored: list[tuple[int, Authenticated]] = []
    rows: dict[str, dict[str, Any]] = {}
    certificates = {device.device_id: json.loads(device.certificate_json)["signature"]
                    for device in devices.values()}
    for index, result in enumerate(results):
        if isinstance(result, Refusal):
            outcomes[index] = UploadOutcome(index, "refused", result.code, None,
                                            result.payer_device)
            continue
        payer = devices.get(result.message["payer_device"])
        code = _refusal_code(result, payer, certificates)
        if code is not None:
            outcomes[index] = UploadOutcome(index, "refused", code, result.payment_hash,
                                            result.message["payer_device"])
            continue
        assert payer is not None
        duplicate = result.payment_hash in known or result.payment_hash in rows
        if duplicate:
            outcomes[index] = UploadOutcome(index, "pending", None, result.payment_hash,
                                            payer.device_id, duplicate=True)
        else:
            rows[result.payment_hash] = _payment_row(result, payer, uploader, now)
        stored.append((index, result))
    if rows:
        connection.execute(insert(offline_payments), list(rows.values()))
    return stored


def _refusal_code(
    result: Authenticated, payer: DeviceRow | None, certificates: dict[str, str]
) -> str | None:
    """An authentic payment the ledger still cannot take: from a device it never provisioned,
    or travelling with another certificate than the one it issued to the device."""
    if payer is None:
        return "offline_device_unknown"
    if (result.certificate_serial != payer.certificate_serial
            or result.certificate_signature.hex() != certificates[payer.device_id]):
        return "certificate_mismatch"
    return None


def _payment_row(
    result: Authenticated,
    payer: DeviceRow,
    uploader: DeviceRow,
    now: datetime,
) -> dict[str, Any]:
    message = result.message
    return {
        "payment_hash": result.payment_hash,
        "payer_device_id": payer.id,
        "counter": message["counter"],
        "payee_device": message["payee_device"],
        "payee_wallet": message["payee_wallet"],
        "amount_fen": message["amount_fen"],
        "signed_at": parse_time(message["created_at"]),
        "message_json": result.message_json or canonical_json(message).decode("ascii"),
        "signature": result.signature.hex(),
        "uploaded_by_device_id": uploader.id,
        "uploaded_at": now,
        "status": "pending",
        "reason": None,
    }


def _sync(
    context: LedgerContext,
    connection: Connection,
    uploader: DeviceRow,
    results: list[Authenticated | Refusal],
    statuses: dict[str, tuple[str, str | None]],
    run: SettlementRun,
    now: datetime,
) -> dict[str, Any]:
    """The uploader's sync receipt: its payments are on the ledger up to the highest counter it
    uploaded itself, as far as the ledger holds them without a gap; the payments it received
    (and uploaded here) that are paid."""
    # A payment naming the uploader as both payer and payee can only come from a clone of it
    # (an honest device never pays itself): it says nothing of what the uploader itself spent.
    own = [r.message["counter"] for r in results if isinstance(r, Authenticated)
           and r.message["payer_device"] == uploader.device_id
           and r.message["payee_device"] != uploader.device_id]
    synced = uploader.synced_counter
    book = run.books.get(uploader.device_id)
    if own and book is not None:
        held = {payment.counter for payment in book.payments}
        while synced + 1 in held and synced + 1 <= max(own):
            synced += 1
    settled = {
        r.payment_hash for r in results if isinstance(r, Authenticated)
        and r.message["payee_device"] == uploader.device_id
        and statuses.get(r.payment_hash, ("", None))[0] in PAID
    }
    digest = hashlib.sha256(
        f"{uploader.device_id}|{synced}|{sorted(settled)}|{now.isoformat()}".encode()
    ).hexdigest()[:40]
    authority = operator_authority(context, uploader.operator_code,
                                   uploader.operator_registered_at)
    receipt = authority.sign_sync_receipt(sync_id=f"sync-{digest}",
                                          device_id=uploader.device_id, synced_counter=synced,
                                          settled=settled, created_at=now)
    connection.execute(
        update(offline_devices).where(offline_devices.c.id == uploader.id).values(
            synced_counter=synced, last_sync_at=now,
            revocation_number=load_revocations(connection).latest_number,
        )
    )
    return receipt

