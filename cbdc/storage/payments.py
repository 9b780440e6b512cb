"""The settlement hot path's writes and reads around the journal: the payment row (whose unique
keys refuse replays), the payer's running limit counters and the key's sequence.

Statements are written once and sent straight to the driver, as in :mod:`cbdc.storage.journal`:
one payment runs several of them, and compiling Core constructs per call would cost more than
SQLite spends executing them. Nothing here commits or locks; the service has locked the wallet
and key rows these statements touch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from cbdc.domain.tiers import Usage
from cbdc.storage.wallets import driver_sql

_FIND_PAYMENT = (
    "SELECT id, payment_id, kind, amount_fen, message_hash, entry_seq, topped_up_fen,"
    " swept_fen, receipt_json FROM payments WHERE payment_id = ?"
)
_INSERT_PAYMENT = (
    "INSERT INTO payments (payment_id, kind, payer_wallet_id, payee_wallet_id, amount_fen,"
    " key_id, sequence, message_json, message_hash, signature, entry_seq, original_id,"
    " refunded_fen, topped_up_fen, swept_fen, receipt_json, settled_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?) RETURNING id"
)
_SAVE_USAGE = (
    "UPDATE wallets SET usage_day = ?, spent_day_fen = ?, usage_year = ?, spent_year_fen = ?"
    " WHERE id = ?"
)
_SAVE_SEQUENCE = "UPDATE wallet_keys SET last_sequence = ? WHERE id = ?"
_ADD_REFUNDED = "UPDATE payments SET refunded_fen = refunded_fen + ? WHERE id = ?"


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


def find_payment(connection: Connection, payment_id: str) -> PaymentRecord | None:
    row = connection.exec_driver_sql(driver_sql(connection, _FIND_PAYMENT), (payment_id,)).first()
    return None if row is None else PaymentRecord(*row)


def find_payments(connection: Connection, payment_ids: Sequence[str]) -> dict[str, PaymentRecord]:
    """The recorded settlements among ``payment_ids``, by payment id (one query)."""
    if not payment_ids:
        return {}
    marks = ", ".join("?" for _ in payment_ids)
    sql = _FIND_PAYMENT.replace("payment_id = ?", f"payment_id IN ({marks})")
    rows = connection.exec_driver_sql(driver_sql(connection, sql), tuple(payment_ids))
    return {row.payment_id: PaymentRecord(*row) for row in rows}


def insert_payments(connection: Connection, new: Sequence[NewPayment]) -> dict[str, int]:
    """Record many settlements with one statement; returns their row ids by payment id."""
    if not new:
        return {}
    sql = _INSERT_PAYMENT.removesuffix(" RETURNING id")
    connection.exec_driver_sql(
        driver_sql(connection, sql), [_values(connection, payment) for payment in new]
    )
    marks = ", ".join("?" for _ in new)
    sql = f"SELECT payment_id, id FROM payments WHERE payment_id IN ({marks})"
    rows = connection.exec_driver_sql(
        driver_sql(connection, sql), tuple(payment.payment_id for payment in new)
    )
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


def insert_payment(connection: Connection, payment: NewPayment) -> int:
    """Record a settlement; a second row for the same payment id or ``(key, sequence)`` is
    refused by the database (IntegrityError), whatever the services did."""
    return int(
        connection.exec_driver_sql(
            driver_sql(connection, _INSERT_PAYMENT), _values(connection, payment)
        ).scalar_one()
    )


def _values(connection: Connection, payment: NewPayment) -> tuple[Any, ...]:
    return (
        payment.payment_id, payment.kind, payment.payer_wallet_row_id,
        payment.payee_wallet_row_id, payment.amount_fen, payment.key_id, payment.sequence,
        payment.message_json, payment.message_hash, payment.signature, payment.entry_seq,
        payment.original_id, payment.topped_up_fen, payment.swept_fen, payment.receipt_json,
        _stored_time(connection, payment.settled_at),
    )


def save_usage(connection: Connection, wallet_row_id: int, usage: Usage) -> None:
    connection.exec_driver_sql(
        driver_sql(connection, _SAVE_USAGE),
        (usage.day.isoformat(), usage.spent_day_fen, usage.year, usage.spent_year_fen,
         wallet_row_id),
    )


def save_key_sequence(connection: Connection, key_id: int, sequence: int) -> None:
    connection.exec_driver_sql(driver_sql(connection, _SAVE_SEQUENCE), (sequence, key_id))


def add_refunded(connection: Connection, payment_row_id: int, amount_fen: int) -> None:
    """Raise the refunded total; the CHECK ``refunded_fen <= amount_fen`` has the last word."""
    connection.exec_driver_sql(driver_sql(connection, _ADD_REFUNDED), (amount_fen, payment_row_id))


def _stored_time(connection: Connection, moment: datetime) -> datetime | str:
    # SQLite keeps datetimes as text in SQLAlchemy's own format, which its reader parses back.
    if connection.dialect.name == "sqlite":
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment
