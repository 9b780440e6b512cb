"""Read-only lookups the API needs next to the use cases: a settlement by its id, and a wallet's
history, newest first, a page at a time.

History pages use keyset pagination on the journal's ``seq`` (the cursor is the last ``seq``
seen), so a page costs the same however deep it is and entries posted meanwhile never shift
what a cursor points at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select

from cbdc.domain.errors import NotFound
from cbdc.services.context import LedgerContext
from cbdc.services.payments import Settlement, from_record
from cbdc.services.wallets import Wallet
from cbdc.storage.offline import load_device as load_offline_device
from cbdc.storage.payments import find_payment
from cbdc.storage.tables import institutions, journal_entries, payments, postings, wallets
from cbdc.storage.wallets import load_wallet

HISTORY_PAGE_MAX = 200


@dataclass(frozen=True, slots=True)
class FoundSettlement:
    settlement: Settlement
    #: The operators serving the payer and the payee: who may look this settlement up.
    operator_codes: frozenset[str]


_PAYER, _PAYEE = wallets.alias("payer"), wallets.alias("payee")
_PAYER_OPERATOR, _PAYEE_OPERATOR = institutions.alias("po"), institutions.alias("qo")
#: The codes of the operators serving a settlement's payer and payee (built once: a fresh alias
#: of a wide table costs more per call than the query).
_OPERATOR_CODES = (
    select(_PAYER_OPERATOR.c.code, _PAYEE_OPERATOR.c.code)
    .select_from(payments)
    .join(_PAYER, _PAYER.c.id == payments.c.payer_wallet_id)
    .join(_PAYEE, _PAYEE.c.id == payments.c.payee_wallet_id)
    .join(_PAYER_OPERATOR, _PAYER_OPERATOR.c.id == _PAYER.c.operator_id)
    .join(_PAYEE_OPERATOR, _PAYEE_OPERATOR.c.id == _PAYEE.c.operator_id)
    .where(payments.c.id == bindparam("row_id"))
)


def find_settlement(context: LedgerContext, payment_id: str) -> FoundSettlement:
    """A settled payment, capture or refund by its id; ``payment_not_found`` otherwise."""
    with context.read() as connection:
        row = find_payment(connection, payment_id)
        if row is None:
            raise NotFound(f"no settlement {payment_id!r}", code="payment_not_found")
        codes = connection.execute(_OPERATOR_CODES, {"row_id": row.id}).one()
    return FoundSettlement(from_record(row, row.message_hash, row.kind), frozenset(codes))


@dataclass(frozen=True, slots=True)
class HistoryItem:
    entry_seq: int
    entry_id: str
    kind: str
    #: Positive: money came in; negative: money went out.
    amount_fen: int
    created_at: datetime
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    wallet_id: str
    items: list[HistoryItem]
    #: Pass as ``before_seq`` for the next (older) page; ``None`` on the last page.
    next_before_seq: int | None


def wallet_history(
    context: LedgerContext, wallet_id: str, *, before_seq: int | None = None, limit: int = 50
) -> HistoryPage:
    """The wallet's postings, newest first: at most ``limit`` entries before ``before_seq``."""
    limit = max(1, min(limit, HISTORY_PAGE_MAX))
    with context.read() as connection:
        wallet = load_wallet(connection, wallet_id)
        query = (
            select(journal_entries.c.seq, journal_entries.c.entry_id, journal_entries.c.kind,
                   journal_entries.c.created_at, journal_entries.c.metadata_json,
                   postings.c.amount_fen)
            .join(journal_entries, journal_entries.c.seq == postings.c.entry_seq)
            .where(postings.c.account_id == wallet.account_id)
            .order_by(postings.c.entry_seq.desc())
            .limit(limit + 1)
        )
        if before_seq is not None:
            query = query.where(postings.c.entry_seq < before_seq)
        rows = connection.execute(query).all()
    items = [
        HistoryItem(
            entry_seq=row.seq, entry_id=row.entry_id, kind=row.kind, amount_fen=row.amount_fen,
            created_at=row.created_at if row.created_at.tzinfo else
            row.created_at.replace(tzinfo=UTC),
            metadata=json.loads(row.metadata_json),
        )
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    return HistoryPage(wallet_id, items, items[-1].entry_seq if more else None)


@dataclass(frozen=True, slots=True)
class LimitsLeft:
    """What a wallet can still do now; ``None`` where no cap applies."""

    daily_outgoing_left_fen: int | None
    annual_outgoing_left_fen: int | None
    balance_room_fen: int | None
    #: The largest single payment it could make now from its balance (no reverse waterfall).
    payable_now_fen: int


def limits_left(wallet: Wallet) -> LimitsLeft:
    limits, usage = wallet.limits, wallet.usage
    daily = _left(limits.daily_outgoing_fen_max, usage.spent_day_fen)
    annual = _left(limits.annual_outgoing_fen_max, usage.spent_year_fen)
    room = _left(limits.balance_fen_max, wallet.balance_fen)
    caps = [cap for cap in (limits.payment_fen_max, daily, annual) if cap is not None]
    return LimitsLeft(daily, annual, room, min([wallet.balance_fen, *caps]))


def _left(cap: int | None, used: int) -> int | None:
    return None if cap is None else max(0, cap - used)


def device_operator(context: LedgerContext, device_id: str) -> str:
    """The code of the operator that certified ``device_id``; ``offline_device_not_found``."""
    with context.read() as connection:
        return load_offline_device(connection, device_id).operator_code
