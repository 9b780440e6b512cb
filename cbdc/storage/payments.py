"""The settlement hot path's writes and reads around the journal: the payment row (whose unique
keys refuse replays), the payer's running limit counters and the key's sequence, the payment
requests paid and the payment codes captured.

Statements are written once and sent straight to the driver, as in :mod:`cbdc.storage.journal`:
one payment runs several of them, and compiling Core constructs per call would cost more than
SQLite spends executing them. Nothing here commits or locks; the service has locked the wallet
and key rows these statements touch.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from cbdc.domain.tiers import Usage
from cbdc.storage.journal import as_utc, stored_time
from cbdc.storage.wallets import driver_sql

_FIND_PAYMENT = (
    "SELECT id, payment_id, kind, amount_fen, message_hash, entry_seq, topped_up_fen,"
    " swept_fen, receipt_json FROM payments WHERE payment_id = ?"
)
_FIND_PAYMENTS = _FIND_PAYMENT.replace("payment_id = ?", "payment_id IN ({marks})")
_PAYMENT_ROW_IDS = "SELECT payment_id, id FROM payments WHERE payment_id IN ({marks})"
#: A second row for the same payment id or ``(key, sequence)`` is refused by the database
#: (IntegrityError), whatever the services did.
_INSERT_PAYMENT = (
    "INSERT INTO payments (payment_id, kind, payer_wallet_id, payee_wallet_id, amount_fen,"
    " key_id, sequence, message_json, message_hash, signature, entry_seq, original_id,"
    " refunded_fen, topped_up_fen, swept_fen, receipt_json, settled_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)"
)
_SAVE_USAGE = (
    "UPDATE wallets SET usage_day = ?, spent_day_fen = ?, usage_year = ?, spent_year_fen = ?"
    " WHERE id = ?"
)
_SAVE_SEQUENCE = "UPDATE wallet_keys SET last_sequence = ? WHERE id = ?"
_ADD_REFUNDED = "UPDATE payments SET refunded_fen = refunded_fen + ? WHERE id = ?"
_FIND_ORIGINALS = (
    "SELECT p.id, p.payment_id, p.kind, p.amount_fen, payer.wallet_id AS payer,"
    " payee.wallet_id AS payee FROM payments p"
    " JOIN wallets payer ON payer.id = p.payer_wallet_id"
    " JOIN wallets payee ON payee.id = p.payee_wallet_id"
    " WHERE p.payment_id IN ({marks})"
)
_REFUNDED = "SELECT id, refunded_fen FROM payments WHERE id IN ({marks})"
_FIND_REQUESTS = (
    "SELECT r.id, r.request_id, w.wallet_id AS merchant, r.amount_fen, r.reference,"
    " r.expires_at, r.status, r.message_hash, r.envelope_json"
    " FROM payment_requests r JOIN wallets w ON w.id = r.merchant_wallet_id"
    " WHERE r.request_id IN ({marks})"
)
_INSERT_REQUEST = (
    "INSERT INTO payment_requests (request_id, merchant_wallet_id, key_id, amount_fen,"
    " reference, expires_at, message_hash, envelope_json, status, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?)"
)
_MARK_REQUEST_PAID = "UPDATE payment_requests SET status = 'paid', paid_payment_id = ? WHERE id = ?"
_USED_CODES = "SELECT code_id FROM payment_codes WHERE code_id IN ({marks})"
_INSERT_CODE = (
    "INSERT INTO payment_codes (code_id, payer_wallet_id, merchant_wallet_id, key_id,"
    " max_amount_fen, expires_at, message_json, message_hash, signature, captured_payment_id,"
    " captured_fen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ACCOUNT_BALANCES = "SELECT id, balance_fen FROM accounts WHERE id IN ({marks})"


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    id: int
    payment_id: str
    kind: str
    amount_fen: int
    message_hash: str
    entry_seq: int
    topped_up_fen: int
    swept_fen: int
    receipt_json: str


@dataclass(frozen=True, slots=True)
class NewPayment:
    payment_id: str
    kind: str
    payer_wallet_row_id: int
    payee_wallet_row_id: int
    amount_fen: int
    key_id: int
    sequence: int | None
    message_json: str
    message_hash: str
    signature: str
    entry_seq: int
    original_id: int | None
    topped_up_fen: int
    swept_fen: int
    receipt_json: str
    settled_at: datetime


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A recorded payment request."""

    id: int
    request_id: str
    merchant: str
    amount_fen: int
    reference: str
    expires_at: datetime
    status: str
    message_hash: str
    envelope_json: str


@dataclass(frozen=True, slots=True)
class NewRequest:
    request_id: str
    merchant_wallet_row_id: int
    key_id: int
    amount_fen: int
    reference: str
    expires_at: datetime
    message_hash: str
    envelope_json: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewCode:
    """A captured payment code: its unique code id refuses a second capture, forever."""

    code_id: str
    payer_wallet_row_id: int
    merchant_wallet_row_id: int | None
    key_id: int
    max_amount_fen: int
    expires_at: datetime
    message_json: str
    message_hash: str
    signature: str
    captured_payment_row_id: int
    captured_fen: int


@dataclass(frozen=True, slots=True)
class OriginalRecord:
    """A settlement as a refund of it needs it: what never changes once it is recorded."""

    id: int
    payment_id: str
    kind: str
    amount_fen: int
    payer: str  # wallet ids
    payee: str


def find_payment(connection: Connection, payment_id: str) -> PaymentRecord | None:
    row = connection.exec_driver_sql(driver_sql(connection, _FIND_PAYMENT), (payment_id,)).first()
    return None if row is None else PaymentRecord(*row)


def find_payments(connection: Connection, payment_ids: Sequence[str]) -> dict[str, PaymentRecord]:
    """The recorded settlements among ``payment_ids``, by payment id (one query)."""
    if not payment_ids:
        return {}
    rows = _select_in(connection, _FIND_PAYMENTS, list(payment_ids))
    return {row.payment_id: PaymentRecord(*row) for row in rows}


def insert_payments(connection: Connection, new: Sequence[NewPayment]) -> dict[str, int]:
    """Record many settlements with one statement; returns their row ids by payment id."""
    if not new:
        return {}
    connection.exec_driver_sql(
        driver_sql(connection, _INSERT_PAYMENT), [_values(connection, payment) for payment in new]
    )
    rows = _select_in(connection, _PAYMENT_ROW_IDS, [payment.payment_id for payment in new])
    return {row.payment_id: int(row.id) for row in rows}


def save_usages(connection: Connection, usages: Mapping[int, Usage]) -> None:
    """Store the running limit counters of many wallets (by wallet row id) in one statement."""
    if usages:
        connection.exec_driver_sql(
            driver_sql(connection, _SAVE_USAGE),
            [
                (usage.day.isoformat(), usage.spent_day_fen, usage.year, usage.spent_year_fen,
                 wallet_row_id)
                for wallet_row_id, usage in sorted(usages.items())
            ],
        )


def save_key_sequences(connection: Connection, sequences: Mapping[int, int]) -> None:
    if sequences:
        connection.exec_driver_sql(
            driver_sql(connection, _SAVE_SEQUENCE),
            [(sequence, key_id) for key_id, sequence in sorted(sequences.items())],
        )


def _values(connection: Connection, payment: NewPayment) -> tuple[Any, ...]:
    return (
        payment.payment_id, payment.kind, payment.payer_wallet_row_id,
        payment.payee_wallet_row_id, payment.amount_fen, payment.key_id, payment.sequence,
        payment.message_json, payment.message_hash, payment.signature, payment.entry_seq,
        payment.original_id, payment.topped_up_fen, payment.swept_fen, payment.receipt_json,
        stored_time(connection, payment.settled_at),
    )


def find_originals(
    connection: Connection, payment_ids: Collection[str]
) -> dict[str, OriginalRecord]:
    """The recorded settlements among ``payment_ids`` that refunds name, by payment id."""
    if not payment_ids:
        return {}
    rows = _select_in(connection, _FIND_ORIGINALS, sorted(payment_ids))
    return {row.payment_id: OriginalRecord(*row) for row in rows}


def refunded_amounts(connection: Connection, payment_row_ids: Collection[int]) -> dict[int, int]:
    """How much of each settlement (by row id) has been refunded so far. Read it under the
    lock of the merchant's wallet, which every refund of the settlement takes."""
    if not payment_row_ids:
        return {}
    rows = _select_in(connection, _REFUNDED, sorted(payment_row_ids))
    return {int(row.id): int(row.refunded_fen) for row in rows}


def add_refunds(connection: Connection, amounts: Mapping[int, int]) -> None:
    """Raise the refunded totals of many settlements (by row id); the CHECK
    ``refunded_fen <= amount_fen`` has the last word."""
    if amounts:
        connection.exec_driver_sql(
            driver_sql(connection, _ADD_REFUNDED),
            [(amount_fen, row_id) for row_id, amount_fen in sorted(amounts.items())],
        )


def find_requests(
    connection: Connection, request_ids: Collection[str]
) -> dict[str, RequestRecord]:
    """The recorded payment requests among ``request_ids``, by request id (one query)."""
    if not request_ids:
        return {}
    rows = _select_in(connection, _FIND_REQUESTS, sorted(request_ids))
    return {
        row.request_id: RequestRecord(
            row.id, row.request_id, row.merchant, row.amount_fen, row.reference,
            _loaded_time(row.expires_at), row.status, row.message_hash, row.envelope_json,
        )
        for row in rows
    }


def insert_requests(connection: Connection, new: Sequence[NewRequest]) -> None:
    if new:
        connection.exec_driver_sql(driver_sql(connection, _INSERT_REQUEST), [
            (request.request_id, request.merchant_wallet_row_id, request.key_id,
             request.amount_fen, request.reference, stored_time(connection, request.expires_at),
             request.message_hash, request.envelope_json,
             stored_time(connection, request.created_at))
            for request in new
        ])


def mark_requests_paid(connection: Connection, paid: Mapping[int, int]) -> None:
    """Payment request row id -> the row id of the payment that paid it."""
    if paid:
        connection.exec_driver_sql(
            driver_sql(connection, _MARK_REQUEST_PAID),
            [(payment_row_id, request_row_id) for request_row_id, payment_row_id in paid.items()],
        )


def used_codes(connection: Connection, code_ids: Collection[str]) -> set[str]:
    """Which of ``code_ids`` were captured already."""
    if not code_ids:
        return set()
    return {row.code_id for row in _select_in(connection, _USED_CODES, sorted(code_ids))}


def insert_codes(connection: Connection, new: Sequence[NewCode]) -> None:
    if new:
        connection.exec_driver_sql(driver_sql(connection, _INSERT_CODE), [
            (code.code_id, code.payer_wallet_row_id, code.merchant_wallet_row_id, code.key_id,
             code.max_amount_fen, stored_time(connection, code.expires_at), code.message_json,
             code.message_hash, code.signature, code.captured_payment_row_id, code.captured_fen)
            for code in new
        ])


def account_balances(connection: Connection, account_ids: Collection[int]) -> dict[int, int]:
    """Balances by account id (no lock: :func:`cbdc.storage.journal.post_entries` locks what it
    changes and refuses an overdraft whatever was read here)."""
    if not account_ids:
        return {}
    rows = _select_in(connection, _ACCOUNT_BALANCES, sorted(account_ids))
    return {int(row.id): int(row.balance_fen) for row in rows}


def _select_in(connection: Connection, sql: str, values: list[Any]) -> Any:
    marks = ", ".join("?" for _ in values)
    return connection.exec_driver_sql(driver_sql(connection, sql.format(marks=marks)),
                                      tuple(values))


def _loaded_time(value: datetime | str) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back the text it keeps)."""
    return as_utc(value if isinstance(value, datetime) else datetime.fromisoformat(value))
