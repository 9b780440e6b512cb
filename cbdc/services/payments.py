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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from cbdc.domain.errors import (
    Conflict,
    Forbidden,
    InsufficientFunds,
    InvalidRequest,
    NotFound,
    StatusRefused,
)
from cbdc.domain.messages import PAYMENT, Envelope, Message, parse_time, verify_envelope
from cbdc.domain.postings import EntryDraft, canonical_json, transfer
from cbdc.domain.receipts import LedgerKey, sign_receipt
from cbdc.domain.settlement import TransferPlan, plan_transfer
from cbdc.services.context import LedgerContext
from cbdc.services.wallets import check_active, party, wallet_account_code
from cbdc.storage.journal import PostedEntry, post_entries
from cbdc.storage.payments import (
    NewPayment,
    find_payment,
    insert_payment,
    save_key_sequence,
    save_usage,
)
from cbdc.storage.tables import payment_requests, wallets
from cbdc.storage.wallets import KeyRow, WalletRow, load_key, load_wallets


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
    message = verify_envelope(envelope, PAYMENT)
    check_ledger(context, message)
    if message["payer"] == message["payee"]:
        raise InvalidRequest("a wallet cannot pay itself", code="payee_invalid", field="payee")
    payment = signed(message, envelope)
    try:
        with context.write() as connection:
            return _settle_payment(context, connection, payment)
    except IntegrityError:
        # A concurrent settlement under the same id or (key, sequence) won the race for a unique
        # key that our locks did not cover: answer as if we had come second.
        return answer_after_race(context, message["payment_id"], payment.message_hash,
                                 "payment")


def _settle_payment(context: LedgerContext, connection: Connection, payment: Signed) -> Settlement:
    message = payment.message
    rows = load_wallets(connection, [message["payer"], message["payee"]], lock=True)
    payer, payee = rows[message["payer"]], rows[message["payee"]]
    key = load_key(connection, message["public_key"], lock=True)
    first = recorded(connection, message["payment_id"], payment.message_hash, "payment")
    if first is not None:
        return first
    key = check_signing_key(key, payer)
    if message["sequence"] <= key.last_sequence:
        raise Conflict(
            f"sequence {message['sequence']} is not above {key.last_sequence}, the last this "
            "key used",
            code="sequence_not_fresh",
            last_sequence=key.last_sequence,
        )
    check_active(payer)
    check_active(payee)
    now = context.now()
    request_row_id = _check_request(connection, message, now)
    plan = plan_transfer(party(context, payer, now), party(context, payee, now),
                         message["amount_fen"])
    settlement, payment_row_id = settle(
        context,
        connection,
        kind="payment",
        payment_id=message["payment_id"],
        payer=payer,
        payee=payee,
        plan=plan,
        key=key,
        sequence=message["sequence"],
        signed=payment,
    )
    save_key_sequence(connection, key.id, message["sequence"])
    if request_row_id is not None:
        connection.execute(
            update(payment_requests)
            .where(payment_requests.c.id == request_row_id)
            .values(status="paid", paid_payment_id=payment_row_id)
        )
    return settlement


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


def _check_request(connection: Connection, message: Message, now: datetime) -> int | None:
    request_id = message.get("request_id")
    if request_id is None:
        return None
    row = connection.execute(
        select(
            payment_requests.c.id,
            payment_requests.c.amount_fen,
            payment_requests.c.status,
            payment_requests.c.expires_at,
            wallets.c.wallet_id.label("merchant"),
        )
        .join(wallets, wallets.c.id == payment_requests.c.merchant_wallet_id)
        .where(payment_requests.c.request_id == request_id)
    ).first()
    if row is None:
        raise NotFound(f"no payment request {request_id!r}", code="payment_request_not_found")
    if row.merchant != message["payee"] or row.amount_fen != message["amount_fen"]:
        raise InvalidRequest(
            f"payment request {request_id} is for {row.amount_fen} fen to {row.merchant}",
            code="payment_request_mismatch",
        )
    if row.status != "open":
        raise Conflict(f"payment request {request_id} is already paid",
                       code="payment_request_paid")
    if now >= as_utc(row.expires_at):
        raise StatusRefused(f"payment request {request_id} has expired",
                            code="payment_request_expired")
    return int(row.id)


def recorded(
    connection: Connection, payment_id: str, digest: str, kind: str
) -> Settlement | None:
    """The first result for ``payment_id`` if it settled from the same message; None if it never
    settled; a ``<kind>_conflict`` if it settled from another message."""
    row = find_payment(connection, payment_id)
    if row is None:
        return None
    if row.message_hash != digest or row.kind != kind:
        raise Conflict(
            f"{payment_id} already settled from another message",
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
    if counts_as_spending:
        save_usage(connection, payer.id, payer.usage.at(now).plus(plan.amount_fen))
    row_id = insert_payment(
        connection,
        NewPayment(
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
        ),
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
    return settlement, row_id


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

