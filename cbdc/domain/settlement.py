"""How one movement between two wallets settles under their limits: pure arithmetic.

Given what the ledger knows of payer and payee (balances, limits in force, usage counters rolled
to now, linked bank account, reverse-waterfall opt-in), :func:`plan_transfer` checks, in this
fixed order, so the same bad movement always gets the same error:

1. the payer's outgoing caps (single payment, day, year), when the movement counts as spending;
2. the payee's balance cap: the excess is swept to the payee's linked bank account (*waterfall*)
   when it has one, else the movement is refused (``balance_limit_exceeded``);
3. funds: a shortfall is topped up from the payer's linked bank account (*reverse waterfall*)
   when the holder enabled it and the movement allows it, else ``insufficient_funds``.

It returns how much to top up first and sweep after; the service turns that into journal entries
in one transaction. Through the bank side, both waterfalls go via the operator's float: a top-up
is the bank converting deposits into e-CNY (debit float, credit wallet), a sweep the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

from cbdc.domain.errors import InsufficientFunds
from cbdc.domain.money import format_yuan
from cbdc.domain.tiers import Limits, Usage, balance_excess, check_incoming, check_outgoing


@dataclass(frozen=True, slots=True)
class Party:
    """What the rules need of one wallet. ``usage`` is already rolled to the movement's time."""

    wallet_id: str
    balance_fen: int
    limits: Limits
    usage: Usage
    bank_account_linked: bool = False
    reverse_waterfall: bool = False


@dataclass(frozen=True, slots=True)
class TransferPlan:
    amount_fen: int
    topped_up_fen: int = 0
    swept_fen: int = 0


def plan_transfer(
    payer: Party,
    payee: Party,
    amount_fen: int,
    *,
    counts_as_spending: bool = True,
    reverse_waterfall_allowed: bool = True,
) -> TransferPlan:
    """Check a movement of ``amount_fen`` from ``payer`` to ``payee``; say what to top up and
    sweep. Raises LimitExceeded or InsufficientFunds; changes nothing."""
    if counts_as_spending:
        check_outgoing(payer.limits, payer.usage, amount_fen)
    swept = balance_excess(payee.limits, payee.balance_fen, amount_fen)
    if swept and not payee.bank_account_linked:
        check_incoming(payee.limits, payee.balance_fen, amount_fen)
    shortfall = max(0, amount_fen - payer.balance_fen)
    if shortfall and not (reverse_waterfall_allowed and payer.reverse_waterfall):
        raise InsufficientFunds(
            f"wallet {payer.wallet_id} holds {format_yuan(payer.balance_fen)} CNY, "
            f"{format_yuan(amount_fen)} CNY needed",
            wallet=payer.wallet_id,
            balance_fen=payer.balance_fen,
            shortfall_fen=shortfall,
        )
    return TransferPlan(amount_fen, topped_up_fen=shortfall, swept_fen=swept)
