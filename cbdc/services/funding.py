"""Funding a wallet from the bank side, and back: top-up and withdrawal at the operator.

A top-up is the operator exchanging a holder's deposit (or cash) for e-CNY: it debits the
operator's float and credits the wallet. A withdrawal is the reverse. Neither touches supply (the
float already holds issued e-CNY) and neither counts as spending against the outgoing caps (no
limit counter moves); a top-up may not take a wallet above its balance cap (no waterfall: the
holder asked for exactly this amount). Frozen and closed wallets can do neither.

Checks run in this order, and the first failure is the answer: the amount (``amount_invalid``),
the wallet (``wallet_not_found``), a repeated entry id (the first result, ``replayed=True``, or
``entry_conflict``), the wallet's status (``wallet_frozen``, ``wallet_closed``), the balance cap
(``balance_limit_exceeded``, top-ups only), then the journal's own (``insufficient_funds`` in the
wallet or, for a top-up, in the operator's float).

Many movements go in one unit of work (:func:`top_ups`, :func:`withdrawals`), each answered as
if the ones before it had been made one by one. They are checked and posted in rounds in which
no wallet and no entry id appears twice, so each round's checks read the balances that the
rounds before left (one round, one :func:`~cbdc.storage.journal.post_entries` call, unless a
wallet comes back within the batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection

from cbdc.domain.errors import CbdcError
from cbdc.domain.money import check_amount
from cbdc.domain.postings import EntryDraft, check_caller_entry_id, transfer
from cbdc.domain.tiers import check_incoming
from cbdc.services.batches import only
from cbdc.services.context import LedgerContext
from cbdc.services.wallets import check_active, effective_limits
from cbdc.storage.journal import PostedEntry, post_entries, recorded_entries
from cbdc.storage.wallets import WalletRow, load_wallets, wallet_not_found

Direction = Literal["top_up", "withdrawal"]
FundingResult = PostedEntry | CbdcError


@dataclass(frozen=True, slots=True)
class Funding:
    """One movement of a batch: ``amount_fen`` into (top-up) or out of (withdrawal) the wallet,
    as journal entry ``entry_id`` (the idempotency key)."""

    entry_id: str
    wallet_id: str
    amount_fen: int


def top_up(context: LedgerContext, entry_id: str, wallet_id: str, amount_fen: int) -> PostedEntry:
    """Credit ``amount_fen`` to the wallet from its operator's float (deposit -> e-CNY).

    Idempotent on ``entry_id``."""
    return only(top_ups(context, [Funding(entry_id, wallet_id, amount_fen)]))


def withdraw(context: LedgerContext, entry_id: str, wallet_id: str, amount_fen: int) -> PostedEntry:
    """Move ``amount_fen`` from the wallet back to its operator's float (e-CNY -> deposit).

    Idempotent on ``entry_id``; ``insufficient_funds`` when the wallet holds less."""
    return only(withdrawals(context, [Funding(entry_id, wallet_id, amount_fen)]))


def top_ups(
    context: LedgerContext, items: Sequence[Funding], *, operator_code: str | None = None
) -> list[FundingResult]:
    """Many top-ups in one unit of work; each answer is what :func:`top_up` would have given.
    With ``operator_code``, a wallet another operator serves is ``wallet_not_found`` (as over
    HTTP, where an operator reaches only its own wallets)."""
    return _fund(context, items, "top_up", operator_code)


def withdrawals(
    context: LedgerContext, items: Sequence[Funding], *, operator_code: str | None = None
) -> list[FundingResult]:
    """Many withdrawals in one unit of work; each answer is what :func:`withdraw` would have
    given. ``operator_code``: as for :func:`top_ups`."""
    return _fund(context, items, "withdrawal", operator_code)


def _fund(
    context: LedgerContext, items: Sequence[Funding], direction: Direction,
    operator_code: str | None,
) -> list[FundingResult]:
    results: list[FundingResult | None] = [None] * len(items)
    pending: list[tuple[int, Funding]] = []
    for index, item in enumerate(items):
        try:
            check_caller_entry_id(item.entry_id)
            check_amount(item.amount_fen)
        except CbdcError as error:
            results[index] = error
            continue
        pending.append((index, item))
    if pending:
        with context.write() as connection:
            # Every wallet of the batch is locked before the first posting locks the chain head.
            rows = load_wallets(connection, [item.wallet_id for _, item in pending], lock=True,
                                require_all=False)
            for number, round_ in enumerate(_rounds(pending)):
                if number:
                    rows = load_wallets(connection, [item.wallet_id for _, item in round_],
                                        require_all=False)
                if operator_code is not None:
                    rows = {wallet_id: row for wallet_id, row in rows.items()
                            if row.operator_code == operator_code}
                _fund_round(context, connection, rows, round_, direction, results)
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]


def _rounds(pending: list[tuple[int, Funding]]) -> Iterator[list[tuple[int, Funding]]]:
    """Consecutive runs of ``pending`` in which no wallet and no entry id appears twice."""
    round_: list[tuple[int, Funding]] = []
    wallet_ids: set[str] = set()
    entry_ids: set[str] = set()
    for index, item in pending:
        if item.wallet_id in wallet_ids or item.entry_id in entry_ids:
            yield round_
            round_, wallet_ids, entry_ids = [], set(), set()
        round_.append((index, item))
        wallet_ids.add(item.wallet_id)
        entry_ids.add(item.entry_id)
    if round_:
        yield round_


def _fund_round(
    context: LedgerContext,
    connection: Connection,
    rows: dict[str, WalletRow],
    round_: list[tuple[int, Funding]],
    direction: Direction,
    results: list[FundingResult | None],
) -> None:
    drafted: list[tuple[int, Funding, WalletRow, EntryDraft]] = []
    for index, item in round_:
        row = rows.get(item.wallet_id)
        if row is None:
            results[index] = wallet_not_found(item.wallet_id)
        else:
            drafted.append((index, item, row, _draft(direction, item, row)))
    firsts = recorded_entries(connection, [draft for *_, draft in drafted])
    to_post: list[tuple[int, EntryDraft]] = []
    for (index, item, row, draft), first in zip(drafted, firsts, strict=True):
        if first is not None:
            results[index] = first
            continue
        try:
            _check(context, row, item.amount_fen if direction == "top_up" else 0)
        except CbdcError as error:
            results[index] = error
            continue
        to_post.append((index, draft))
    if to_post:
        posted = post_entries(connection, [draft for _, draft in to_post], now=context.now(),
                              atomic=False)
        for (index, _), result in zip(to_post, posted, strict=True):
            results[index] = result


def _check(context: LedgerContext, row: WalletRow, incoming_fen: int) -> None:
    """The wallet's own rules, after the repeat check and before the journal's."""
    check_active(row)
    if incoming_fen:
        check_incoming(effective_limits(context, row), row.balance_fen, incoming_fen)


def _draft(direction: Direction, item: Funding, row: WalletRow) -> EntryDraft:
    wallet, float_ = row.account_id, row.operator_float_account_id
    return transfer(
        item.entry_id,
        direction,
        debit_account_id=float_ if direction == "top_up" else wallet,
        credit_account_id=wallet if direction == "top_up" else float_,
        amount_fen=item.amount_fen,
        metadata={"wallet": item.wallet_id},
    )
