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

Payments settle in batches (:func:`settle_batch`; one payment is a batch of one), each answered
as if settled alone, in order. Merchants' captures of payment codes and their refunds are the
batches' other kinds of item: the same steps with their own in place of 4-9 (their order is in
:mod:`cbdc.services.merchants`; a refund has no reverse waterfall and does not count against the
merchant's caps), so payments, captures and refunds of one batch are posted together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection

from cbdc.domain.errors import (
    CbdcError,
    Conflict,
    Forbidden,
    InsufficientFunds,
    InvalidRequest,
    NotFound,
    StatusRefused,
)
from cbdc.domain.messages import (
    CAPTURE,
    PAYMENT,
    PAYMENT_CODE,
    REFUND,
    Envelope,
    Message,
    PreparedEnvelope,
    parse_time,
    prepare_envelope,
    unchecked_message,
)
from cbdc.domain.postings import EntryDraft, canonical_json, transfer
from cbdc.domain.receipts import LedgerKey, receipt_message, sign_receipt_json
from cbdc.domain.settlement import Party, TransferPlan, plan_transfer
from cbdc.domain.tiers import Limits, Usage
from cbdc.services.batches import (
    Answers,
    Prepared,
    Verdicts,
    all_verified,
    answer_batch,
    checked_later,
    forged_out,
    only,
)
from cbdc.services.context import LedgerContext
from cbdc.services.wallets import (
    check_active,
    check_merchant,
    effective_limits,
)
from cbdc.storage.journal import PostedEntry, post_entries
from cbdc.storage.payments import (
    NewCode,
    NewPayment,
    OriginalRecord,
    PaymentRecord,
    RequestRecord,
    account_balances,
    add_refunds,
    find_originals,
    find_payment,
    find_payments,
    find_requests,
    insert_codes,
    insert_payments,
    mark_requests_paid,
    refunded_amounts,
    save_key_sequences,
    save_usages,
    used_codes,
)
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
    return only(settle_batch(context, [envelope]))


def settle_payments(
    context: LedgerContext, envelopes: Sequence[Mapping[str, Any]]
) -> list[Settlement | CbdcError]:
    """Verify and settle many signed payments, in order, in one transaction: see
    :func:`settle_batch`."""
    return settle_batch(context, envelopes)


@dataclass(frozen=True, slots=True)
class CodeCapture:
    """A merchant's capture of a customer-presented payment code: both envelopes, as sent."""

    code: Mapping[str, Any]
    capture: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MerchantRefund:
    """A merchant-signed refund (``cbdc/v1/refund``) of a settlement it received, as sent."""

    envelope: Mapping[str, Any]


Command = Mapping[str, Any] | CodeCapture | MerchantRefund


def settle_batch(
    context: LedgerContext, commands: Sequence[Command]
) -> list[Settlement | CbdcError]:
    """Verify and settle signed payments, captures (:class:`CodeCapture`) and refunds
    (:class:`MerchantRefund`), in order, in one transaction.

    Each answer is what :func:`settle_payment` (or
    :func:`~cbdc.services.merchants.capture_payment_code`, or
    :func:`~cbdc.services.merchants.refund`) would have answered had the ones
    before it been settled one by one: the checks run in the same order against the batch's
    running state (balances, counters, sequences, requests paid, codes used). Refused commands
    change nothing; the others are posted together, in one :func:`post_entries` call, which is
    what makes batches fast. Signatures are checked on the verifier process meanwhile
    (:mod:`cbdc.services.batches`, :mod:`cbdc.services.verifier`).

    A refund that names a settlement made earlier in the same batch is answered once the
    commands before it are recorded: the batch is cut there and its rest settled after, in the
    same unit of work if the caller holds one."""
    answers: list[Settlement | CbdcError] = []
    for part in _parts(commands):
        answers += answer_batch(context, part, partial(_prepare, context),
                                partial(_settle_batch, context), partial(_after_race, context))
    return answers


def _parts(commands: Sequence[Command]) -> list[Sequence[Command]]:
    """``commands`` cut before each refund of a settlement an earlier command of its part
    makes (as far as the unchecked envelopes tell: a wrong guess only costs a cut)."""
    parts: list[Sequence[Command]] = []
    start, made = 0, set[str]()
    for index, command in enumerate(commands):
        if isinstance(command, MerchantRefund) and _named(command.envelope, "payment_id") in made:
            parts.append(commands[start:index])
            start, made = index, set[str]()
        if isinstance(command, CodeCapture):
            made.add(_named(command.capture, "capture_id"))
        elif isinstance(command, MerchantRefund):
            made.add(_named(command.envelope, "refund_id"))  # a refund of it: refund_invalid
        else:
            made.add(_named(command, "payment_id"))
    parts.append(commands[start:])
    return parts


def _named(envelope: Any, field_name: str) -> str:
    """The id an unchecked envelope names in ``field_name``; "" if it names none as a string
    (such an envelope is refused when it is checked, whatever the sender put there: a list, an
    object, a number)."""
    value = unchecked_message(envelope).get(field_name)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class _Item:
    """A payment, capture or refund of a batch, checked as far as it can be without the
    database."""

    index: int
    kind: str  # "payment", "capture" or "refund"
    signed: Signed  # the payment, capture or refund: its id is the settlement's
    settlement_id: str
    payer: str  # a refund's: the merchant it claims to be; its customer comes from the original
    payee: str
    code: Signed | None = None  # a capture's payment code
    refund_of: str | None = None  # a refund's original settlement (payment id)


def _prepare(context: LedgerContext, index: int, command: Command) -> Prepared[_Item]:
    if isinstance(command, CodeCapture):
        return _prepare_capture(context, index, command)
    if isinstance(command, MerchantRefund):
        refund = prepare_envelope(command.envelope, REFUND)
        return checked_later(index, (refund,),
                             lambda: _refund_item(context, index, refund, command))
    prepared = prepare_envelope(command, PAYMENT)
    return checked_later(index, (prepared,),
                         lambda: _payment_item(context, index, prepared, command))


def _payment_item(
    context: LedgerContext, index: int, prepared: PreparedEnvelope,
    envelope: Mapping[str, Any],
) -> _Item:
    """Step 3, answered only once the signature is known to be good."""
    message = prepared.message
    check_ledger(context, message)
    if message["payer"] == message["payee"]:
        raise InvalidRequest("a wallet cannot pay itself", code="payee_invalid", field="payee")
    return _Item(index, "payment", signed(prepared, envelope), message["payment_id"],
                 message["payer"], message["payee"])


def _refund_item(
    context: LedgerContext, index: int, prepared: PreparedEnvelope, command: MerchantRefund
) -> _Item:
    message = prepared.message
    check_ledger(context, message)
    return _Item(index, "refund", signed(prepared, command.envelope), message["refund_id"],
                 message["merchant"], "", refund_of=message["payment_id"])


def _prepare_capture(context: LedgerContext, index: int, command: CodeCapture) -> Prepared[_Item]:
    """The code's envelope, then the capture's (each signature right after its envelope), then
    the ledger ids and whether the two match (see :mod:`cbdc.services.merchants`)."""
    code = prepare_envelope(command.code, PAYMENT_CODE)
    try:
        capture = prepare_envelope(command.capture, CAPTURE)
    except CbdcError as error:  # answered only if the code's signature verifies
        return Prepared(index, (code,), later=error)

    def check() -> _Item:
        check_ledger(context, code.message)
        check_ledger(context, capture.message)
        check_capture_matches(code.message, capture.message)
        return _Item(index, "capture", signed(capture, command.capture),
                     capture.message["capture_id"], code.message["payer"],
                     capture.message["merchant"], code=signed(code, command.code))

    return checked_later(index, (code, capture), check)


def check_capture_matches(code: Message, capture: Message) -> None:
    if capture["code_id"] != code["code_id"]:
        raise InvalidRequest("the capture names another payment code", code="capture_mismatch",
                             field="code_id")
    if code.get("merchant", capture["merchant"]) != capture["merchant"]:
        raise InvalidRequest("the payment code is for another merchant", code="capture_mismatch",
                             field="merchant")
    if capture["merchant"] == code["payer"]:
        raise InvalidRequest("a wallet cannot pay itself", code="payee_invalid",
                             field="merchant")
    if capture["amount_fen"] > code["max_amount_fen"]:
        raise InvalidRequest(
            f"{capture['amount_fen']} fen is above the code's maximum {code['max_amount_fen']}",
            code="payment_code_amount_exceeded",
            field="amount_fen",
        )


def _after_race(context: LedgerContext, item: _Item) -> Settlement:
    return answer_after_race(context, item.settlement_id, item.signed.message_hash, item.kind)


@dataclass
class _Batch:
    """The running state of one batch: rows as the batch has changed them so far."""

    wallets: dict[str, WalletRow]
    keys: dict[str, KeyRow]
    recorded: dict[str, PaymentRecord]
    requests: dict[str, RequestRecord]
    codes_used: set[str]
    floats: dict[int, int]
    originals: dict[str, OriginalRecord] = field(default_factory=dict)
    refunded: dict[int, int] = field(default_factory=dict)  # by original's row id, running
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
    item: _Item
    payer: WalletRow
    payee: WalletRow
    key: KeyRow  # the key whose signature settles it: the payer's, or the capturing merchant's
    plan: TransferPlan
    drafts: list[EntryDraft]
    original_id: int | None = None  # a refund's original settlement (row id)


def _load_batch(connection: Connection, items: list[_Item]) -> _Batch:
    """Lock the wallets (ascending id), then the keys; read what the checks need. Refunds'
    originals are read first (which wallets they move money between never changes), what is
    left to refund of them once their merchants' wallets are locked."""
    messages = [item.signed.message for item in items]
    codes = [item.code.message for item in items if item.code is not None]
    originals = find_originals(connection, {item.refund_of for item in items
                                            if item.refund_of is not None})
    parties = [wallet for original in originals.values()
               for wallet in (original.payer, original.payee)]
    batch = _Batch(
        wallets=load_wallets(connection, [i.payer for i in items if i.refund_of is None]
                             + [i.payee for i in items if i.refund_of is None] + parties,
                             lock=True, require_all=False),
        keys=load_keys(connection, [m["public_key"] for m in messages + codes], lock=True),
        recorded=find_payments(connection, sorted({item.settlement_id for item in items})),
        requests=find_requests(connection, {m["request_id"] for m in messages
                                            if "request_id" in m}),
        codes_used=used_codes(connection, {code["code_id"] for code in codes}),
        floats={},
        originals=originals,
        refunded=refunded_amounts(connection, {o.id for o in originals.values()}),
    )
    batch.floats = account_balances(
        connection, {row.operator_float_account_id for row in batch.wallets.values()})
    return batch


def _settle_batch(
    context: LedgerContext,
    connection: Connection,
    items: list[_Item],
    results: Answers[Settlement],
    verdicts: Verdicts,
) -> None:
    """Steps 4-12 for each item against the batch's running state, then one posting, once
    every signature in ``verdicts`` (by index) is known to be good."""
    batch = _load_batch(connection, items)
    now = context.now()
    accepted: list[_Accepted] = []
    for item in items:
        try:
            outcome = _check_and_apply(context, batch, item, now)
        except CbdcError as error:
            results[item.index] = error
            continue
        if isinstance(outcome, _Accepted):
            accepted.append(outcome)
        elif outcome is not None:
            results[item.index] = outcome
    authentic = forged_out(items, verdicts, results)
    if authentic is not None:
        _settle_batch(context, connection, authentic, results, all_verified(authentic))
        return
    if accepted:
        _record(context, connection, batch, accepted, results, now)
    for item in items:  # repeats of a settlement made earlier in this batch
        if results[item.index] is None:
            first = results[batch.in_batch[item.settlement_id][1]]
            assert isinstance(first, Settlement)
            results[item.index] = replace(first, replayed=True)


def _check_and_apply(
    context: LedgerContext, batch: _Batch, item: _Item, now: datetime
) -> _Accepted | Settlement | None:
    """Steps 4-12 for one item; on success the batch's state moves as the item would move it.
    Returns a Settlement for one recorded before, None for a repeat within the batch."""
    original = None
    if item.refund_of is not None:
        original = _original(batch, item)
        payer, payee = batch.wallets[original.payee], batch.wallets[original.payer]
    else:
        found_payer, found_payee = batch.wallets.get(item.payer), batch.wallets.get(item.payee)
        if found_payer is None or found_payee is None:
            raise wallet_not_found(item.payer if found_payer is None else item.payee)
        payer, payee = found_payer, found_payee
    record = batch.recorded.get(item.settlement_id)
    if record is not None:
        return from_record(record, item.signed.message_hash, item.kind)
    if item.settlement_id in batch.in_batch:
        if batch.in_batch[item.settlement_id][0] != item.signed.message_hash:
            raise Conflict(f"{item.settlement_id} already settled from another message",
                           code=f"{item.kind}_conflict")
        return None
    if original is not None:
        key = _check_refund(batch, item, original, payer, payee)
    elif item.code is None:
        key = _check_payment(batch, item.signed.message, payer, payee, now)
    else:
        key = _check_capture(batch, item, payer, payee, now)
    return _apply(context, batch, item, payer, payee, key, now, original)


def _check_payment(
    batch: _Batch, message: Message, payer: WalletRow, payee: WalletRow, now: datetime
) -> KeyRow:
    """Steps 6-9 of a payment; returns the payer's key."""
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
    if "request_id" in message:
        _check_request(batch, message, now)
    return key


def _check_capture(
    batch: _Batch, item: _Item, payer: WalletRow, merchant: WalletRow, now: datetime
) -> KeyRow:
    """A capture's checks between its repeats and the payer's caps (see
    :mod:`cbdc.services.merchants`); returns the merchant's key."""
    assert item.code is not None
    code = item.code.message
    if code["code_id"] in batch.codes_used:
        raise Conflict(f"payment code {code['code_id']} was already captured",
                       code="payment_code_used")
    check_signing_key(batch.keys.get(code["public_key"]), payer)
    key = check_signing_key(batch.keys.get(item.signed.message["public_key"]), merchant)
    check_active(payer)
    check_active(merchant)
    check_merchant(merchant)
    if now >= parse_time(code["expires_at"], field_name="expires_at"):
        raise StatusRefused(f"payment code {code['code_id']} has expired",
                            code="payment_code_expired")
    return key


def _original(batch: _Batch, item: _Item) -> OriginalRecord:
    """A refund's original: recorded, not itself a refund, paid to the refunding merchant."""
    original = batch.originals.get(item.refund_of or "")
    if original is None:
        raise NotFound(f"no payment {item.refund_of!r}", code="payment_not_found")
    if original.kind == "refund":
        raise InvalidRequest("a refund cannot be refunded", code="refund_invalid")
    if original.payee != item.payer:
        raise Forbidden(f"{original.payment_id} was not paid to {item.payer}",
                        code="refund_mismatch")
    return original


def _check_refund(
    batch: _Batch, item: _Item, original: OriginalRecord, merchant: WalletRow,
    customer: WalletRow,
) -> KeyRow:
    """A refund's checks between its repeats and the customer's balance cap (see
    :mod:`cbdc.services.merchants`); returns the merchant's key."""
    message = item.signed.message
    key = check_signing_key(batch.keys.get(message["public_key"]), merchant)
    left_fen = original.amount_fen - batch.refunded[original.id]
    if message["amount_fen"] > left_fen:
        raise StatusRefused(
            f"{message['amount_fen']} fen is more than the {left_fen} fen left to refund of "
            f"{original.payment_id}",
            code="refund_exceeds_payment",
            refundable_fen=left_fen,
        )
    check_active(merchant)
    check_active(customer)
    return key


def _apply(
    context: LedgerContext, batch: _Batch, item: _Item, payer: WalletRow, payee: WalletRow,
    key: KeyRow, now: datetime, original: OriginalRecord | None,
) -> _Accepted:
    """Steps 10-12 (caps, waterfalls, funds); then move the batch's state as the item would.
    A refund does not count as the merchant's spending and has no reverse waterfall."""
    payer_party = batch.party(context, payer, now)
    message = item.signed.message
    spending = original is None
    plan = plan_transfer(payer_party, batch.party(context, payee, now), message["amount_fen"],
                         counts_as_spending=spending, reverse_waterfall_allowed=spending)
    if plan.topped_up_fen > batch.floats[payer.operator_float_account_id]:
        raise _bank_shortfall(payer, plan)
    amount = plan.amount_fen
    batch.floats[payer.operator_float_account_id] -= plan.topped_up_fen
    batch.floats[payee.operator_float_account_id] += plan.swept_fen
    batch.balances[payer.wallet_id] = payer_party.balance_fen + plan.topped_up_fen - amount
    if spending:
        batch.usages[payer.wallet_id] = payer_party.usage.plus(amount)
    batch.balances[payee.wallet_id] = (
        batch.balances.get(payee.wallet_id, payee.balance_fen) + amount - plan.swept_fen
    )
    batch.in_batch[item.settlement_id] = (item.signed.message_hash, item.index)
    if original is not None:
        batch.refunded[original.id] += amount
    elif item.code is not None:
        batch.codes_used.add(item.code.message["code_id"])
    else:
        batch.sequences[key.public_key] = message["sequence"]
        if "request_id" in message:
            batch.requests_paid[message["request_id"]] = item.settlement_id
    return _Accepted(item, payer, payee, key, plan,
                     settlement_drafts(item.kind, item.settlement_id, payer, payee, plan),
                     original_id=None if original is None else original.id)


def _record(
    context: LedgerContext,
    connection: Connection,
    batch: _Batch,
    accepted: list[_Accepted],
    results: Answers[Settlement],
    now: datetime,
) -> None:
    """Post every accepted item's entries, then write rows, counters, sequences, requests paid
    and codes used."""
    drafts = [draft for each in accepted for draft in each.drafts]
    posted = post_entries(connection, drafts, now=now, atomic=True)
    entries = {entry.entry_id: entry for entry in posted if isinstance(entry, PostedEntry)}
    new_rows = []
    for each in accepted:
        item = each.item
        settlement, row = settled_row(
            context, kind=item.kind, payment_id=item.settlement_id, payer=each.payer,
            payee=each.payee, plan=each.plan, key=each.key, signed=item.signed,
            sequence=item.signed.message.get("sequence"), original_id=each.original_id,
            entry=entries[f"{item.kind}:{item.settlement_id}"],
        )
        results[item.index] = settlement
        new_rows.append(row)
    row_ids = insert_payments(connection, new_rows)
    save_usages(connection, {batch.wallets[w].id: usage for w, usage in batch.usages.items()})
    save_key_sequences(
        connection, {batch.keys[k].id: sequence for k, sequence in batch.sequences.items()}
    )
    mark_requests_paid(connection, {batch.requests[request_id].id: row_ids[payment_id]
                                    for request_id, payment_id in batch.requests_paid.items()})
    insert_codes(connection, [_code_row(batch, each, row_ids[each.item.settlement_id])
                              for each in accepted if each.item.code is not None])
    refunds: dict[int, int] = {}
    for each in accepted:
        if each.original_id is not None:
            refunds[each.original_id] = refunds.get(each.original_id, 0) + each.plan.amount_fen
    add_refunds(connection, refunds)


def _code_row(batch: _Batch, capture: _Accepted, payment_row_id: int) -> NewCode:
    code = capture.item.code
    assert code is not None
    message = code.message
    return NewCode(
        code_id=message["code_id"],
        payer_wallet_row_id=capture.payer.id,
        merchant_wallet_row_id=capture.payee.id if "merchant" in message else None,
        key_id=batch.keys[message["public_key"]].id,
        max_amount_fen=message["max_amount_fen"],
        expires_at=parse_time(message["expires_at"], field_name="expires_at"),
        message_json=code.message_json,
        message_hash=code.message_hash,
        signature=code.signature,
        captured_payment_row_id=payment_row_id,
        captured_fen=capture.plan.amount_fen,
    )


def _bank_shortfall(payer: WalletRow, plan: TransferPlan) -> InsufficientFunds:
    """The refusal when the operator's float cannot fund the payer's reverse waterfall: it
    names the shortfall without telling the payer what the bank holds."""
    return InsufficientFunds(
        f"the linked bank account could not cover the {plan.topped_up_fen} fen shortfall",
        wallet=payer.wallet_id,
        shortfall_fen=plan.topped_up_fen,
    )


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

    def envelope_json(self) -> str:
        """The envelope as sorted-key, ASCII-escaped JSON (what ``canonical_json`` writes for
        it), written around the message's text: ``message`` sorts before ``signature``, and a
        signature is lowercase hex."""
        return f'{{"message":{self.message_json},"signature":"{self.signature}"}}'


def signed(prepared: PreparedEnvelope, envelope: Mapping[str, Any]) -> Signed:
    """The message as stored, its fingerprint and its signature. The stored text and the
    fingerprint (sha256 of the text) are of sorted-key, ASCII-escaped JSON: for a message that
    is all ASCII (nearly every one) that is byte for byte the JCS the signature covers, which
    :func:`prepare_envelope` has made already; otherwise it is encoded here. A validated message
    holds only strings and integers, so equal messages always hash equal."""
    text = prepared.message_jcs()
    if not text.isascii():
        text = canonical_json(prepared.message)
    return Signed(prepared.message, text.decode("ascii"), hashlib.sha256(text).hexdigest(),
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
    if now >= row.expires_at:
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
    """The answer of a settlement whose row the database refused: the first result if the
    concurrent winner settled the same id; else what the winner took first (a capture's code,
    a payment's key sequence)."""
    with context.read() as connection:
        first = recorded(connection, payment_id, digest, kind)
    if first is not None:
        return first
    if kind == "capture":
        raise Conflict(f"{payment_id}: a concurrent capture used the same payment code",
                       code="payment_code_used")
    if kind == "payment":
        raise Conflict(
            f"{payment_id}: a concurrent settlement used the same key and sequence",
            code="sequence_not_fresh",
        )
    # A refund carries no sequence or code: only its journal entry id can collide, and an entry
    # no refund made holds it (callers may not choose such ids; an older ledger let them).
    raise Conflict(f"{payment_id}: the refund's journal entry id is held by another entry",
                   code="refund_conflict")


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
    receipt, receipt_json = sign_receipt_json(ledger_key(context), receipt_message(
        ledger_id=context.ledger_id,
        receipt_for=payment_id,
        kind=kind,
        payer=payer.wallet_id,
        payee=payee.wallet_id,
        amount_fen=plan.amount_fen,
        entry_seq=entry.seq,
        entry_hash=entry.entry_hash,
        settled_at=entry.created_at,
    ))
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
        receipt_json=receipt_json,
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

