"""Funding a wallet from the bank side, and back: top-up and withdrawal at the operator.

A top-up is the operator exchanging a holder's deposit (or cash) for e-CNY: it debits the
operator's float and credits the wallet. A withdrawal is the reverse. Neither touches supply (the
float already holds issued e-CNY) and neither counts as spending against the outgoing caps; a
top-up may not take a wallet above its balance cap (no waterfall: the holder asked for exactly
this amount). Frozen and closed wallets can do neither.
"""

from __future__ import annotations

from sqlalchemy import Connection

from cbdc.domain.money import check_amount
from cbdc.domain.postings import EntryDraft, transfer
from cbdc.domain.tiers import check_incoming
from cbdc.services.context import LedgerContext
from cbdc.services.wallets import check_active, effective_limits
from cbdc.storage.journal import PostedEntry, post_entry, recorded_entry
from cbdc.storage.wallets import WalletRow, load_wallet


def top_up(context: LedgerContext, entry_id: str, wallet_id: str, amount_fen: int) -> PostedEntry:
    """Credit ``amount_fen`` to the wallet from its operator's float (deposit -> e-CNY).

    Idempotent on ``entry_id``."""
    check_amount(amount_fen)
    with context.write() as connection:
        row = load_wallet(connection, wallet_id, lock=True)
        draft = transfer(entry_id, "top_up", debit_account_id=row.operator_float_account_id,
                         credit_account_id=row.account_id, amount_fen=amount_fen,
                         metadata={"wallet": wallet_id})
        return _post(context, connection, row, draft, incoming_fen=amount_fen)


def withdraw(context: LedgerContext, entry_id: str, wallet_id: str, amount_fen: int) -> PostedEntry:
    """Move ``amount_fen`` from the wallet back to its operator's float (e-CNY -> deposit).

    Idempotent on ``entry_id``; ``insufficient_funds`` when the wallet holds less."""
    check_amount(amount_fen)
    with context.write() as connection:
        row = load_wallet(connection, wallet_id, lock=True)
        draft = transfer(entry_id, "withdrawal", debit_account_id=row.account_id,
                         credit_account_id=row.operator_float_account_id, amount_fen=amount_fen,
                         metadata={"wallet": wallet_id})
        return _post(context, connection, row, draft, incoming_fen=0)


def _post(
    context: LedgerContext,
    connection: Connection,
    row: WalletRow,
    draft: EntryDraft,
    *,
    incoming_fen: int,
) -> PostedEntry:
    first = recorded_entry(connection, draft)
    if first is not None:
        return first
    check_active(row)
    if incoming_fen:
        check_incoming(effective_limits(context, row), row.balance_fen, incoming_fen)
    return post_entry(connection, draft, now=context.now())
