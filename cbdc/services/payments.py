"""Signed payments: verify a wallet-signed ``cbdc/v1/payment`` and settle it in one transaction.

Checks run in this order, and the first failure is the answer, so the same bad payment always
gets the same error code:

 1. the envelope and message (shape, version, domain tag, fields): ``envelope_invalid``,
    ``field_missing``, ``field_invalid``, ... (:mod:`cbdc.domain.messages`);
 2. the signature, with the key the message names: ``signature_invalid``;
 3. the message is for this ledger (``ledger_id_mismatch``) and pays someone else
    (``payee_invalid``);
 4. -- the transaction opens; payer and payee wallets are locked (ascending id), then the key --
    both wallets exist: ``wallet_not_found``;
 5. a payment id already settled: the same message returns the first result (the stored receipt,
    ``replayed=True``) whatever has changed since; another message is ``payment_conflict``;
 6. the key is enrolled (``public_key_not_enrolled``), for the payer
    (``public_key_wallet_mismatch``), and not revoked (``public_key_revoked``);
 7. the sequence is above the key's last one: ``sequence_not_fresh`` (a replay under a new id);
 8. the payer, then the payee, is active: ``wallet_frozen``, ``wallet_closed``;
 9. the payment request it names, if any: exists (``payment_request_not_found``), is the payee's
    for this amount (``payment_request_mismatch``), unpaid (``payment_request_paid``), unexpired
    (``payment_request_expired``);
10. the payer's caps: ``single_payment_limit_exceeded``, ``daily_limit_exceeded``,
    ``annual_limit_exceeded``;
11. the payee's balance cap: swept to its linked bank account (waterfall), else
    ``balance_limit_exceeded``;
12. funds: a shortfall topped up from the payer's linked bank account when the holder enabled the
    reverse waterfall, else ``insufficient_funds``.

A settled payment posts up to three journal entries in that one transaction (``reverse_waterfall``
from the payer operator's float, the ``payment`` itself, ``waterfall`` to the payee operator's
float), bumps the payer's running limit counters and the key's sequence, records the payment row
(whose unique keys -- payment id and ``(key, sequence)`` -- refuse replays forever, in the
database) and a receipt signed with the ledger's key. A refusal changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from cbdc.domain.errors import (
    CbdcError,
    Conflict,
    Forbidden,
    InsufficientFunds,
    InvalidRequest,
    InvalidSignature,
    NotFound,
    StatusRefused,
)
from cbdc.domain.messages import (
    PAYMENT,
    Envelope,
    Message,
    PreparedEnvelope,
    parse_time,
    prepare_envelope,
)
from cbdc.domain.postings import EntryDraft, canonical_json, transfer
from cbdc.domain.receipts import LedgerKey, sign_receipt
from cbdc.domain.settlement import Party, TransferPlan, plan_transfer
from cbdc.domain.tiers import Limits, Usage
from cbdc.services.context import LedgerContext
from cbdc.services.wallets import check_active, effective_limits, wallet_account_code
from cbdc.storage.journal import PostedEntry, post_entries
from cbdc.storage.payments import (
    NewPayment,
    PaymentRecord,
    find_payment,
    find_payments,
    insert_payment,
    insert_payments,
    save_key_sequences,
    save_usage,
    save_usages,
)
from cbdc.storage.tables import accounts, payment_requests, wallets
from cbdc.storage.wallets import KeyRow, WalletRow, load_keys, load_wallets, wallet_not_found


@dataclass(frozen=True, slots=True)
class Settlement:
    """A settled payment, capture or refund, with the ledger-signed receipt."""

    payment_id: str
    kind: str
    payer: str
    payee: str
    amount_fen: int
    entry_seq: int
    entry_hash: str
    settled_at: datetime
    topped_up_fen: int
    swept_fen: int
    receipt: Envelope
    replayed: bool = False


def settle_payment(context: LedgerContext, envelope: Mapping[str, Any]) -> Settlement:
    """Verify and settle a signed payment (order of checks: see the module docstring)."""
    (result,) = settle_payments(context, [envelope])
    if isinstance(result, CbdcError):
        raise result
    return result


def settle_payments(
    context: LedgerContext, envelopes: Sequence[Mapping[str, Any]]
) -> list[Settlement | CbdcError]:
    """Verify and settle many signed payments, in order, in one transaction.

    Each answer is what :func:`settle_payment` would have answered for that payment had the
    ones before it been settled one by one: the checks run in the same order against the batch's
    running state (balances, counters, sequences, requests paid). Refused payments change
    nothing; the others are posted together, which is what makes batches fast.

    Signatures (step 2) are checked on a second thread while this one runs steps 4-12
    optimistically; nothing is written until every verdict is in, and a payment whose signature
    fails is answered ``signature_invalid`` (step 2 comes first) and the batch is re-checked
    without it."""
    results: list[Settlement | CbdcError | None] = [None] * len(envelopes)
    candidates: list[tuple[int, Signed]] = []
    prepared: list[tuple[int, PreparedEnvelope, CbdcError | None]] = []
    for index, envelope in enumerate(envelopes):
        try:
            item = prepare_envelope(envelope, PAYMENT)
        except CbdcError as error:
            results[index] = error
            continue
        later = _step_three(context, item.message)
        prepared.append((index, item, later))
        if later is None:
            candidates.append((index, signed(item.message, envelope)))
    verdicts = _verify_signatures([(index, item) for index, item, _ in prepared])
    if candidates:
        try:
            with context.write() as connection:
                _settle_batch(context, connection, candidates, results, verdicts)
        except IntegrityError:
            # A concurrent settlement won the race for a unique key our locks did not cover
            # (same payment id or key sequence from other wallets). Settle one by one, each
            # answering as if it had come second where it did.
            for index, payment in candidates:
                if verdicts.result()[index]:
                    results[index] = _settle_alone(context, payment)
    invalid = {index for index, valid in verdicts.result().items() if not valid}
    for index, _, later in prepared:
        if index in invalid:
            results[index] = InvalidSignature("signature does not verify")
        elif later is not None:
            results[index] = later
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]


def _step_three(context: LedgerContext, message: Message) -> CbdcError | None:
    """Step 3, answered only once the signature is known to be good."""
    try:
        check_ledger(context, message)
    except CbdcError as error:
        return error
    if message["payer"] == message["payee"]:
        return InvalidRequest("a wallet cannot pay itself", code="payee_invalid", field="payee")
    return None


#: Batches at least this long check their signatures on a second thread: PyNaCl releases the
#: GIL while it verifies, so the check overlaps this thread's own work.
PARALLEL_VERIFY_MIN = 16
_VERIFIER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cbdc-verify")


Verdicts = Future[dict[int, bool]]


def _verify_signatures(items: list[tuple[int, PreparedEnvelope]]) -> Verdicts:
    """Each envelope's signature verdict, by its index in the batch."""

    def run() -> dict[int, bool]:
        return {index: item.signature_valid() for index, item in items}

    if len(items) >= PARALLEL_VERIFY_MIN:
        return _VERIFIER.submit(run)
    return _settled_verdicts(run())


def _settled_verdicts(verdicts: dict[int, bool]) -> Verdicts:
    done: Verdicts = Future()
    done.set_result(verdicts)
    return done


def _settle_alone(context: LedgerContext, payment: Signed) -> Settlement | CbdcError:
    results: list[Settlement | CbdcError | None] = [None]
    try:
        with context.write() as connection:
            _settle_batch(context, connection, [(0, payment)], results,
                          _settled_verdicts({0: True}))
    except IntegrityError:
        try:
            return answer_after_race(
                context, payment.message["payment_id"], payment.message_hash, "payment"
            )
        except CbdcError as error:
            return error
    assert results[0] is not None
    return results[0]


@dataclass
class _Batch:
    """The running state of one batch: rows as the batch has changed them so far."""

    wallets: dict[str, WalletRow]
    keys: dict[str, KeyRow]
    recorded: dict[str, PaymentRecord]
    requests: dict[str, Any]
    floats: dict[int, int]
    in_batch: dict[str, tuple[str, int]] = field(default_factory=dict)
    requests_paid: dict[str, str] = field(default_factory=dict)
    # What the batch has changed so far, by wallet id or public key (rows stay as loaded).
    balances: dict[str, int] = field(default_factory=dict)
    usages: dict[str, Usage] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)
    limits: dict[str, Limits] = field(default_factory=dict)

    def party(self, context: LedgerContext, row: WalletRow, now: datetime) -> Party:
        limits = self.limits.get(row.wallet_id)
        if limits is None:
            limits = self.limits[row.wallet_id] = effective_limits(context, row)
        return Party(
            wallet_id=row.wallet_id,
            balance_fen=self.balances.get(row.wallet_id, row.balance_fen),
            limits=limits,
            usage=self.usages.get(row.wallet_id, row.usage).at(now),
            bank_account_linked=row.bank_account_ref is not None,
            reverse_waterfall=row.reverse_waterfall,
        )


@dataclass(frozen=True, slots=True)
class _Accepted:
    index: int
    payment: Signed
    payer: WalletRow
    payee: WalletRow
    key: KeyRow
    plan: TransferPlan
    drafts: list[EntryDraft]


def _settle_batch(
    context: LedgerContext,
    connection: Connection,
    verified: list[tuple[int, Signed]],
    results: list[Settlement | CbdcError | None],
    verdicts: Verdicts,
) -> None:
    """Steps 4-12 for each payment against the batch's running state, then one posting, once
    every signature in ``verdicts`` (by index) is known to be good."""
    messages = [payment.message for _, payment in verified]
    batch = _Batch(
        wallets=load_wallets(
            connection,
            [m["payer"] for m in messages] + [m["payee"] for m in messages],
            lock=True,
            require_all=False,
        ),
        keys=load_keys(connection, [m["public_key"] for m in messages], lock=True),
        recorded=find_payments(connection, sorted({m["payment_id"] for m in messages})),
        requests=_load_requests(connection, {m["request_id"] for m in messages
                                             if "request_id" in m}),
        floats={},
    )
    batch.floats = _float_balances(connection, batch.wallets.values())
    now = context.now()
    accepted: list[_Accepted] = []
    for index, payment in verified:
        try:
            outcome = _check_and_apply(context, batch, index, payment, now)
        except CbdcError as error:
            results[index] = error
            continue
        if isinstance(outcome, _Accepted):
            accepted.append(outcome)
        elif outcome is not None:
            results[index] = outcome
    valid = verdicts.result()
    if not all(valid[index] for index, _ in verified):
        # Rare: forged payments in the batch. Check again without them (nothing is written yet).
        for index, _ in verified:
            results[index] = None
        valid_only = [(index, payment) for index, payment in verified if valid[index]]
        _settle_batch(context, connection, valid_only, results,
                      _settled_verdicts({index: True for index, _ in valid_only}))
        return
    if accepted:
        _record(context, connection, batch, accepted, results, now)
    for index, payment in verified:  # repeats of a payment settled earlier in this batch
        if results[index] is None:
            first_index = batch.in_batch[payment.message["payment_id"]][1]
            first = results[first_index]
            assert isinstance(first, Settlement)
            results[index] = replace(first, replayed=True)


def _check_and_apply(
    context: LedgerContext, batch: _Batch, index: int, payment: Signed, now: datetime
) -> _Accepted | Settlement | None:
    """Steps 4-12 for one payment; on success the batch's state moves as the payment would move
    it. Returns a Settlement for a payment recorded before, None for a repeat within the batch."""
    message = payment.message
    payer, payee = batch.wallets.get(message["payer"]), batch.wallets.get(message["payee"])
    if payer is None or payee is None:
        raise wallet_not_found(message["payer"] if payer is None else message["payee"])
    payment_id = message["payment_id"]
    record = batch.recorded.get(payment_id)
    if record is not None:
        return from_record(record, payment.message_hash, "payment")
    if payment_id in batch.in_batch:
        if batch.in_batch[payment_id][0] != payment.message_hash:
            raise Conflict(f"{payment_id} already settled from another message",
                           code="payment_conflict")
        return None
    key = check_signing_key(batch.keys.get(message["public_key"]), payer)
    last_sequence = batch.sequences.get(key.public_key, key.last_sequence)
    if message["sequence"] <= last_sequence:
        raise Conflict(
            f"sequence {message['sequence']} is not above {last_sequence}, the last this "
            "key used",
            code="sequence_not_fresh",
            last_sequence=last_sequence,
        )
    check_active(payer)
    check_active(payee)
    request_id = message.get("request_id")
    if request_id is not None:
        _check_request(batch, message, now)
    payer_party = batch.party(context, payer, now)
    plan = plan_transfer(payer_party, batch.party(context, payee, now), message["amount_fen"])
    if plan.topped_up_fen > batch.floats[payer.operator_float_account_id]:
        raise InsufficientFunds(
            f"the linked bank account could not cover the {plan.topped_up_fen} fen shortfall",
            wallet=payer.wallet_id,
            shortfall_fen=plan.topped_up_fen,
        )
    amount = plan.amount_fen
    batch.floats[payer.operator_float_account_id] -= plan.topped_up_fen
    batch.floats[payee.operator_float_account_id] += plan.swept_fen
    batch.balances[payer.wallet_id] = payer_party.balance_fen + plan.topped_up_fen - amount
    batch.usages[payer.wallet_id] = payer_party.usage.plus(amount)
    batch.balances[payee.wallet_id] = (
        batch.balances.get(payee.wallet_id, payee.balance_fen) + amount - plan.swept_fen
    )
    batch.sequences[key.public_key] = message["sequence"]
    batch.in_batch[payment_id] = (payment.message_hash, index)
    if request_id is not None:
        batch.requests_paid[request_id] = payment_id
    return _Accepted(index, payment, payer, payee, key, plan,
                     settlement_drafts("payment", payment_id, payer, payee, plan))


def _record(
    context: LedgerContext,
    connection: Connection,
    batch: _Batch,
    accepted: list[_Accepted],
    results: list[Settlement | CbdcError | None],
    now: datetime,
) -> None:
    """Post every accepted payment's entries, then write rows, counters and sequences."""
    drafts = [draft for item in accepted for draft in item.drafts]
    posted = post_entries(connection, drafts, now=now, atomic=True)
    entries = {entry.entry_id: entry for entry in posted if isinstance(entry, PostedEntry)}
    new_rows = []
    for item in accepted:
        payment_id = item.payment.message["payment_id"]
        entry = entries[f"payment:{payment_id}"]
        settlement, row = settled_row(
            context, kind="payment", payment_id=payment_id, payer=item.payer,
            payee=item.payee, plan=item.plan, key=item.key, signed=item.payment,
            sequence=item.payment.message["sequence"], entry=entry,
        )
        results[item.index] = settlement
        new_rows.append(row)
    row_ids = insert_payments(connection, new_rows)
    save_usages(connection, {batch.wallets[w].id: usage for w, usage in batch.usages.items()})
    save_key_sequences(
        connection, {batch.keys[k].id: sequence for k, sequence in batch.sequences.items()}
    )
    for request_id, payment_id in batch.requests_paid.items():
        connection.execute(
            update(payment_requests)
            .where(payment_requests.c.id == batch.requests[request_id].id)
            .values(status="paid", paid_payment_id=row_ids[payment_id])
        )


def _float_balances(connection: Connection, rows: Iterable[WalletRow]) -> dict[int, int]:
    """Balances of the operator floats that waterfalls may draw on or sweep to."""
    account_ids = sorted({row.operator_float_account_id for row in rows})
    if not account_ids:
        return {}
    found = connection.execute(
        select(accounts.c.id, accounts.c.balance_fen).where(accounts.c.id.in_(account_ids))
    )
    return {int(row.id): int(row.balance_fen) for row in found}


def check_ledger(context: LedgerContext, message: Message) -> None:
    if message["ledger_id"] != context.ledger_id:
        raise InvalidRequest(
            f"message is for ledger {message['ledger_id']!r}, this is {context.ledger_id!r}",
            code="ledger_id_mismatch",
            field="ledger_id",
        )


@dataclass(frozen=True, slots=True)
class Signed:
    """A verified message as the ledger keeps it: as JSON (re-verifiable later: its JCS is what
    was signed), its fingerprint, and its signature."""

    message: Message
    message_json: str
    message_hash: str
    signature: str


def signed(message: Message, envelope: Mapping[str, Any]) -> Signed:
    """The fingerprint is sha256 of sorted-key, ASCII-escaped JSON, not of the JCS bytes that
    were signed (the pure-Python JCS encoder costs as much as a database write): a validated
    message holds only strings and integers, so equal messages always hash equal."""
    text = canonical_json(message)
    return Signed(message, text.decode("ascii"), hashlib.sha256(text).hexdigest(),
                  str(envelope["signature"]))


def check_signing_key(key: KeyRow | None, signer: WalletRow) -> KeyRow:
    """The key that signed must be enrolled, belong to ``signer``, and not be revoked."""
    if key is None:
        raise Forbidden("the signing key is not enrolled", code="public_key_not_enrolled")
    if key.wallet_row_id != signer.id:
        raise Forbidden(f"the signing key is not one of wallet {signer.wallet_id}'s",
                        code="public_key_wallet_mismatch")
    if key.status != "active":
        raise StatusRefused("the signing key was revoked", code="public_key_revoked")
    return key


def _load_requests(connection: Connection, request_ids: set[str]) -> dict[str, Any]:
    if not request_ids:
        return {}
    rows = connection.execute(
        select(
            payment_requests.c.id,
            payment_requests.c.request_id,
            payment_requests.c.amount_fen,
            payment_requests.c.status,
            payment_requests.c.expires_at,
            wallets.c.wallet_id.label("merchant"),
        )
        .join(wallets, wallets.c.id == payment_requests.c.merchant_wallet_id)
        .where(payment_requests.c.request_id.in_(sorted(request_ids)))
    )
    return {row.request_id: row for row in rows}


def _check_request(batch: _Batch, message: Message, now: datetime) -> None:
    request_id = message["request_id"]
    row = batch.requests.get(request_id)
    if row is None:
        raise NotFound(f"no payment request {request_id!r}", code="payment_request_not_found")
    if row.merchant != message["payee"] or row.amount_fen != message["amount_fen"]:
        raise InvalidRequest(
            f"payment request {request_id} is for {row.amount_fen} fen to {row.merchant}",
            code="payment_request_mismatch",
        )
    if row.status != "open" or request_id in batch.requests_paid:
        raise Conflict(f"payment request {request_id} is already paid",
                       code="payment_request_paid")
    if now >= as_utc(row.expires_at):
        raise StatusRefused(f"payment request {request_id} has expired",
                            code="payment_request_expired")


def recorded(
    connection: Connection, payment_id: str, digest: str, kind: str
) -> Settlement | None:
    """The first result for ``payment_id`` if it settled from the same message; None if it never
    settled; a ``<kind>_conflict`` if it settled from another message."""
    row = find_payment(connection, payment_id)
    return None if row is None else from_record(row, digest, kind)


def from_record(row: PaymentRecord, digest: str, kind: str) -> Settlement:
    """The first result of a recorded settlement, or ``<kind>_conflict`` for another message."""
    if row.message_hash != digest or row.kind != kind:
        raise Conflict(
            f"{row.payment_id} already settled from another message",
            code=f"{kind}_conflict",
        )
    receipt: Envelope = json.loads(row.receipt_json)
    body = receipt["message"]
    return Settlement(
        payment_id=row.payment_id,
        kind=row.kind,
        payer=body["payer"],
        payee=body["payee"],
        amount_fen=row.amount_fen,
        entry_seq=row.entry_seq,
        entry_hash=body["entry_hash"],
        settled_at=parse_time(body["settled_at"]),
        topped_up_fen=row.topped_up_fen,
        swept_fen=row.swept_fen,
        receipt=receipt,
        replayed=True,
    )


def answer_after_race(
    context: LedgerContext, payment_id: str, digest: str, kind: str
) -> Settlement:
    with context.read() as connection:
        first = recorded(connection, payment_id, digest, kind)
    if first is None:
        raise Conflict(
            f"{payment_id}: a concurrent settlement used the same key and sequence",
            code="sequence_not_fresh",
        )
    return first


def settle(
    context: LedgerContext,
    connection: Connection,
    *,
    kind: str,
    payment_id: str,
    payer: WalletRow,
    payee: WalletRow,
    plan: TransferPlan,
    key: KeyRow,
    signed: Signed,
    sequence: int | None = None,
    original_id: int | None = None,
    counts_as_spending: bool = True,
) -> tuple[Settlement, int]:
    """Post the entries for ``plan``, bump the payer's counters, record the row and receipt.
    The caller has locked both wallets and checked everything; returns the row id too."""
    now = context.now()
    try:
        posted = post_entries(
            connection, settlement_drafts(kind, payment_id, payer, payee, plan), now=now
        )
    except InsufficientFunds as error:
        if error.extra.get("account") == wallet_account_code(payer.wallet_id):
            raise
        # The operator's float could not fund the reverse waterfall: say so without telling
        # the payer what the bank holds.
        raise InsufficientFunds(
            f"the linked bank account could not cover the {plan.topped_up_fen} fen shortfall",
            wallet=payer.wallet_id,
            shortfall_fen=plan.topped_up_fen,
        ) from None
    entry = next(p for p in posted if isinstance(p, PostedEntry) and p.kind == kind)
    if counts_as_spending:
        save_usage(connection, payer.id, payer.usage.at(now).plus(plan.amount_fen))
    settlement, row = settled_row(
        context, kind=kind, payment_id=payment_id, payer=payer, payee=payee, plan=plan,
        key=key, signed=signed, sequence=sequence, original_id=original_id, entry=entry,
    )
    return settlement, insert_payment(connection, row)


def settled_row(
    context: LedgerContext,
    *,
    kind: str,
    payment_id: str,
    payer: WalletRow,
    payee: WalletRow,
    plan: TransferPlan,
    key: KeyRow,
    signed: Signed,
    entry: PostedEntry,
    sequence: int | None = None,
    original_id: int | None = None,
) -> tuple[Settlement, NewPayment]:
    """The ledger-signed receipt for a posted settlement, its answer, and its payment row."""
    receipt = sign_receipt(
        ledger_key(context),
        ledger_id=context.ledger_id,
        receipt_for=payment_id,
        kind=kind,
        payer=payer.wallet_id,
        payee=payee.wallet_id,
        amount_fen=plan.amount_fen,
        entry_seq=entry.seq,
        entry_hash=entry.entry_hash,
        settled_at=entry.created_at,
    )
    row = NewPayment(
        payment_id=payment_id,
        kind=kind,
        payer_wallet_row_id=payer.id,
        payee_wallet_row_id=payee.id,
        amount_fen=plan.amount_fen,
        key_id=key.id,
        sequence=sequence,
        message_json=signed.message_json,
        message_hash=signed.message_hash,
        signature=signed.signature,
        entry_seq=entry.seq,
        original_id=original_id,
        topped_up_fen=plan.topped_up_fen,
        swept_fen=plan.swept_fen,
        receipt_json=canonical_json(receipt).decode("ascii"),
        settled_at=entry.created_at,
    )
    settlement = Settlement(
        payment_id=payment_id,
        kind=kind,
        payer=payer.wallet_id,
        payee=payee.wallet_id,
        amount_fen=plan.amount_fen,
        entry_seq=entry.seq,
        entry_hash=entry.entry_hash,
        settled_at=entry.created_at,
        topped_up_fen=plan.topped_up_fen,
        swept_fen=plan.swept_fen,
        receipt=receipt,
    )
    return settlement, row


def settlement_drafts(
    kind: str, payment_id: str, payer: WalletRow, payee: WalletRow, plan: TransferPlan
) -> list[EntryDraft]:
    """Reverse waterfall (if any), the movement itself, waterfall (if any): applied in order."""
    entry_id = f"{kind}:{payment_id}"
    drafts = []
    if plan.topped_up_fen:
        drafts.append(transfer(
            f"{entry_id}:reverse-waterfall", "reverse_waterfall",
            debit_account_id=payer.operator_float_account_id,
            credit_account_id=payer.account_id,
            amount_fen=plan.topped_up_fen,
            metadata={"wallet": payer.wallet_id, "for": payment_id},
        ))
    drafts.append(transfer(
        entry_id, kind,
        debit_account_id=payer.account_id,
        credit_account_id=payee.account_id,
        amount_fen=plan.amount_fen,
        metadata={"payer": payer.wallet_id, "payee": payee.wallet_id, "payment_id": payment_id},
    ))
    if plan.swept_fen:
        drafts.append(transfer(
            f"{entry_id}:waterfall", "waterfall",
            debit_account_id=payee.account_id,
            credit_account_id=payee.operator_float_account_id,
            amount_fen=plan.swept_fen,
            metadata={"wallet": payee.wallet_id, "for": payment_id},
        ))
    return drafts


_LEDGER_KEYS: dict[bytes, LedgerKey] = {}


def ledger_key(context: LedgerContext) -> LedgerKey:
    """The ledger's receipt-signing key, made once per seed."""
    seed = context.ledger_signing_seed
    key = _LEDGER_KEYS.get(seed)
    if key is None:
        key = _LEDGER_KEYS[seed] = LedgerKey.from_seed(seed)
    return key


def ledger_public_key_hex(context: LedgerContext) -> str:
    """What wallets verify receipts with."""
    return ledger_key(context).public_key_hex


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

