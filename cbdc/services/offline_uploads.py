"""Uploads: a device online hands the ledger the offline payments it holds, in batches.

Either side uploads: a payer its own payments, a payee what it received, both in any order and
as often as they like. For each batch, in order:

1. every envelope is authenticated (shape, certificate chain to the root, payer's signature,
   this ledger). An envelope carrying exactly the certificates the ledger issued to the device
   it names needs no chain verification (the ledger signed that chain): it is checked here and
   its signature verified by the ledger's verifier process (:mod:`cbdc.services.verifier`),
   chunk by chunk while the next chunk is prepared, unless the ledger already holds the payment
   with this very signature (verified when stored). Any other envelope goes through
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

:func:`upload_offline_batches` takes several devices' uploads at once (devices that go online
together) and answers each exactly as one-by-one uploads would; uploads that name no common
device share steps 2-4 (see its docstring).
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, update
from sqlalchemy.exc import IntegrityError

from cbdc.domain.errors import CbdcError
from cbdc.domain.messages import unchecked_message
from cbdc.domain.postings import EntryDraft, canonical_json
from cbdc.offline.batch import (
    Authenticated,
    Prepared,
    Refusal,
    TrustedChain,
    authenticate_many,
    conclude,
    prepare_trusted,
)
from cbdc.offline.messages import parse_time
from cbdc.services.batches import only
from cbdc.services.context import LedgerContext
from cbdc.services.offline_devices import publish_pending_revocations
from cbdc.services.offline_keys import issued_certificate, operator_authority, root_public_key
from cbdc.services.offline_settlement import SettlementRun
from cbdc.services.verifier import Pending
from cbdc.storage.journal import post_entries
from cbdc.storage.offline import (
    DeviceRow,
    device_not_found,
    known_payments,
    load_devices,
    load_revocations,
    stored_signatures,
)
from cbdc.storage.tables import offline_devices, offline_payments

#: Envelopes without the ledger's own certificates are authenticated in full on
#: :data:`VERIFY_WORKERS` processes when at least this many come in one batch.
PARALLEL_VERIFY_MIN = 256
VERIFY_WORKERS = 2
#: Envelopes per chunk (the ledger's certificates) or task sent to a worker (the others):
#: small enough to keep both workers busy to the end.
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
    return only(upload_offline_batches(context, [Upload(uploaded_by_device_id, envelopes)]))


@dataclass(frozen=True, slots=True)
class Upload:
    """What one device hands the ledger when it goes online."""

    uploaded_by_device_id: str
    envelopes: Sequence[Any]


def upload_offline_batches(
    context: LedgerContext, uploads: Sequence[Upload]
) -> list[UploadReport | CbdcError]:
    """Several devices' uploads, in order, in one unit of work: each answer is what
    :func:`upload_offline_payments` would have answered had the uploads before it been made one
    by one (an error in place of an upload it would have refused; that upload changes nothing).

    Every envelope is authenticated in one pass. Consecutive uploads that touch no common device
    (uploader or payer named) are settled together, in one
    :class:`~cbdc.services.offline_settlement.SettlementRun`: each upload's devices are decided
    in turn against the running balances, revocation lists are published where the upload that
    revoked would have published them, and each uploader's sync receipt is made as its own
    upload would have made it; the entries are posted and the rows written once per group."""
    flat = [envelope for upload in uploads for envelope in upload.envelopes]
    authenticated = authenticate(context, flat)
    items: list[tuple[str, list[Authenticated | Refusal]]] = []
    position = 0
    for upload in uploads:
        size = len(upload.envelopes)
        items.append((upload.uploaded_by_device_id, authenticated[position:position + size]))
        position += size
    for attempt in range(UPLOAD_ATTEMPTS):
        try:
            with context.write() as connection:
                now = context.now()
                answers: list[UploadReport | CbdcError] = []
                for group in _independent_groups(items):
                    answers += _record_group(context, connection, group, now)
                return answers
        except IntegrityError:
            if attempt == UPLOAD_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _named_devices(uploader_id: str, results: list[Authenticated | Refusal]) -> set[str]:
    """Every device an upload may change: its uploader and every payer device it names."""
    named = {r.message["payer_device"] if isinstance(r, Authenticated) else r.payer_device
             for r in results}
    return {device for device in named if device} | {uploader_id}


def _independent_groups(
    items: list[tuple[str, list[Authenticated | Refusal]]]
) -> list[list[tuple[str, list[Authenticated | Refusal]]]]:
    """Consecutive uploads split where one names a device an earlier one of its group names:
    within a group no upload reads what another changes, except what the run carries along
    (payee balances, floats, revocation lists, the payee devices' list numbers)."""
    groups: list[list[tuple[str, list[Authenticated | Refusal]]]] = []
    touched: set[str] = set()
    for item in items:
        named = _named_devices(*item)
        if not groups or named & touched:
            groups.append([])
            touched = set()
        groups[-1].append(item)
        touched |= named
    return groups


_POOL: ProcessPoolExecutor | None = None


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
    very certificates the ledger issued to the device they name are checked here, chunk by
    chunk; a payment the ledger already holds with this very signature needs no second check
    (its signed bytes and signature are those verified when it was stored), the others' are
    verified on the verifier process while the next chunk is prepared. Any other envelope is
    authenticated in full, on worker processes for large batches."""
    results: list[Authenticated | Refusal | None] = [None] * len(envelopes)
    others: list[int] = []
    chunks: list[tuple[list[tuple[int, Prepared]], _ChunkVerdicts]] = []
    with context.read() as connection:
        chains = _trusted_chains(context, connection, envelopes)
        prepared: list[tuple[int, Prepared]] = []
        for index, envelope in enumerate(envelopes):
            outcome = prepare_trusted(envelope, chains)
            if outcome is None:
                others.append(index)
            elif isinstance(outcome, Refusal):
                results[index] = outcome
            else:
                prepared.append((index, outcome))
                if len(prepared) == VERIFY_CHUNK:
                    chunks.append(_submit(connection, prepared))
                    prepared = []
        if prepared:
            chunks.append(_submit(connection, prepared))
    full = _authenticate_in_full(context, [envelopes[i] for i in others])
    for index, result in zip(others, full, strict=True):
        results[index] = result
    for items, verdicts in chunks:
        for (index, item), valid in zip(items, verdicts.result(), strict=True):
            results[index] = conclude(envelopes[index], item, valid, context.ledger_id)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def _submit(
    connection: Connection, items: list[tuple[int, Prepared]]
) -> tuple[list[tuple[int, Prepared]], _ChunkVerdicts]:
    """Verdicts on a chunk's signatures: those stored with the payment already, the others
    sent to the verifier (:mod:`cbdc.services.verifier`)."""
    stored = stored_signatures(connection, [item.payment_hash for _, item in items])
    fresh = [position for position, (_, item) in enumerate(items)
             if stored.get(item.payment_hash) != item.signature.hex()]
    triples = [items[position][1].triple() for position in fresh]
    return items, _ChunkVerdicts(len(items), fresh, Pending(triples))


@dataclass(frozen=True, slots=True)
class _ChunkVerdicts:
    """A chunk's verdicts: good for the payments held with these very signatures, the others'
    (at ``fresh`` positions) from the verifier."""

    size: int
    fresh: list[int]
    checked: Pending

    def result(self) -> list[bool]:
        answer = [True] * self.size
        for position, valid in zip(self.fresh, self.checked.result(), strict=True):
            answer[position] = valid
        return answer


def _trusted_chains(
    context: LedgerContext, connection: Connection, envelopes: Sequence[Any]
) -> dict[str, TrustedChain]:
    """The certificate pairs the ledger issued to the devices the envelopes name."""
    named = [unchecked_message(envelope).get("payer_device") for envelope in envelopes]
    devices = load_devices(connection, {d for d in named if isinstance(d, str)})
    chains = {}
    for device in devices.values():
        stored, certificate = issued_certificate(device.certificate_json)
        authority = operator_authority(context, device.operator_code,
                                       device.operator_registered_at)
        chains[device.device_id] = TrustedChain(certificate, stored,
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


@dataclass
class _Recording:
    """One upload of a group as it is being recorded."""

    uploader: DeviceRow
    results: list[Authenticated | Refusal]
    outcomes: list[UploadOutcome | None]
    stored: list[tuple[int, Authenticated]]
    forged: list[Refusal]
    involved: list[str]


def _record_group(
    context: LedgerContext,
    connection: Connection,
    group: list[tuple[str, list[Authenticated | Refusal]]],
    now: datetime,
) -> list[UploadReport | CbdcError]:
    """Record a group of uploads that name no common device (see
    :func:`upload_offline_batches`)."""
    named = set().union(*(_named_devices(*item) for item in group))
    devices = load_devices(connection, named, lock=True)
    answers: list[UploadReport | CbdcError | None] = [None] * len(group)
    recordings: list[tuple[int, _Recording]] = []
    known = known_payments(connection, [r.payment_hash for _, results in group for r in results
                                        if isinstance(r, Authenticated)])
    rows: dict[str, dict[str, Any]] = {}
    certificates = {device.device_id: issued_certificate(device.certificate_json)[0]["signature"]
                    for device in devices.values()}
    for position, (uploader_id, results) in enumerate(group):
        uploader = devices.get(uploader_id)
        if uploader is None:
            answers[position] = device_not_found(uploader_id)
            continue
        outcomes: list[UploadOutcome | None] = [None] * len(results)
        stored = _store_new(results, devices, certificates, outcomes, uploader, known, rows, now)
        recordings.append((position, _recording(results, devices, uploader, outcomes, stored)))
    if rows:
        connection.execute(insert(offline_payments), list(rows.values()))
    run = SettlementRun(context, connection, {
        device_id: devices[device_id]
        for _, recording in recordings for device_id in recording.involved
    }, now)
    run.load({r.payment_hash: (r.message, r.signature)
              for _, recording in recordings for _, r in recording.stored})
    run.lock_wallets()
    drafts: list[EntryDraft] = []
    syncs: list[dict[str, Any]] = []
    for position, recording in recordings:
        answers[position], sync = _settle(context, connection, run, recording, drafts)
        syncs.append(sync)
    run.write(post_entries(connection, drafts, now=now))
    if syncs:
        connection.execute(
            update(offline_devices).where(offline_devices.c.id == bindparam("device_row_id"))
            .values(synced_counter=bindparam("synced"), last_sync_at=bindparam("at"),
                    revocation_number=bindparam("number")),
            syncs,
        )
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def _recording(
    results: list[Authenticated | Refusal],
    devices: dict[str, DeviceRow],
    uploader: DeviceRow,
    outcomes: list[UploadOutcome | None],
    stored: list[tuple[int, Authenticated]],
) -> _Recording:
    """An upload's forgeries to name and payer devices to settle (in ascending row id)."""
    forged = [r for r in results if isinstance(r, Refusal)
              and r.code not in NOT_FORGERIES and r.payer_device in devices]
    involved = {r.message["payer_device"] for _, r in stored}
    involved |= {r.payer_device for r in forged if r.payer_device}
    return _Recording(uploader, results, outcomes, stored, forged,
                      sorted(involved, key=lambda device_id: devices[device_id].id))


def _settle(
    context: LedgerContext,
    connection: Connection,
    run: SettlementRun,
    recording: _Recording,
    drafts: list[EntryDraft],
) -> tuple[UploadReport, dict[str, Any]]:
    """One upload's turn in its group's run: name the forgeries, decide its devices, publish a
    revocation list if it revoked, make its sync receipt. Its entries join ``drafts``."""
    first_payout, first_revoked = len(run.payouts), len(run.revoked)
    for refusal in recording.forged:
        assert refusal.payer_device is not None
        run.open_case(run.books[refusal.payer_device], "offline_forged",
                      () if refusal.counter is None else (refusal.counter,), (refusal.digest,),
                      lambda _, amount=refusal.amount_fen: amount,
                      f"not a payment of a certified device: {refusal.code}: {refusal.detail}")
    run.decide(recording.involved)
    drafts += run.drafts(run.payouts[first_payout:])
    revocation_envelope = _publish(context, connection, run)
    statuses = run.statuses_of(recording.involved)
    outcomes = recording.outcomes
    for index, result in recording.stored:
        status, reason = statuses[result.payment_hash]
        previous = outcomes[index]
        outcomes[index] = UploadOutcome(index, status, reason, result.payment_hash,
                                        result.message["payer_device"],
                                        duplicate=previous is not None and previous.duplicate)
    receipt, sync = _sync(context, recording.uploader, recording.results, statuses, run)
    assert all(outcome is not None for outcome in outcomes)
    report = UploadReport(
        outcomes=tuple(o for o in outcomes if o is not None),
        revoked=tuple(run.revoked[first_revoked:]),
        sync_receipt=receipt,
        revocation_list=revocation_envelope,
    )
    return report, sync


def _publish(
    context: LedgerContext, connection: Connection, run: SettlementRun
) -> dict[str, Any] | None:
    """What :func:`publish_pending_revocations` answers after this upload: a new list if a
    revocation is unpublished (the run then sees it), else the latest list."""
    assert run.revocations is not None
    if run.write_revocations() or run.revocations.unpublished:
        envelope = publish_pending_revocations(context, connection)
        run.revocations = load_revocations(connection)
        return envelope
    latest = run.revocations.lists.get(run.revocations.latest_number)
    return None if latest is None else dict(latest.envelope or {})


def _store_new(
    results: list[Authenticated | Refusal],
    devices: dict[str, DeviceRow],
    certificates: dict[str, str],
    outcomes: list[UploadOutcome | None],
    uploader: DeviceRow,
    known: dict[str, str],
    rows: dict[str, dict[str, Any]],
    now: datetime,
) -> list[tuple[int, Authenticated]]:
    """Refuse what cannot be stored; add each new payment's row to ``rows`` once (``known``:
    the payments the ledger held before); return the stored ones (new and duplicates) by
    index."""
    stored: list[tuple[int, Authenticated]] = []
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
    uploader: DeviceRow,
    results: list[Authenticated | Refusal],
    statuses: dict[str, tuple[str, str | None]],
    run: SettlementRun,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The uploader's sync receipt: its payments are on the ledger up to the highest counter it
    uploaded itself, as far as the ledger holds them without a gap; the payments it received
    (and uploaded here) that are paid. With it, the uploader's row as it is to be updated; the
    run learns the list the uploader now holds, should it be the payee of a later upload."""
    now = run.now
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
    assert run.revocations is not None
    number = run.revocations.latest_number
    if uploader.device_id in run.payees:
        run.payees[uploader.device_id] = (run.payees[uploader.device_id][0], number)
    return receipt, {"device_row_id": uploader.id, "synced": synced, "at": now, "number": number}

