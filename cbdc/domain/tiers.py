"""Wallet classes (tiers), the identity evidence each needs, and their limits.

A wallet's class decides how much it may hold and spend. The figures are configuration
(:class:`WalletClasses`); the defaults (also in README.md) are:

=====  ==================================  =========  ===========  ========  =========
class  identity evidence                   balance    one payment  daily     annual
=====  ==================================  =========  ===========  ========  =========
1      in person, ID, phone, bank account  500,000    50,000       100,000   500,000
2      ID, phone, bank account             500,000    50,000       100,000   -
3      ID, phone                           20,000     5,000        10,000    -
4      phone only                          10,000     2,000        5,000     50,000
=====  ==================================  =========  ===========  ========  =========

(CNY; ``-``/``None`` is no cap. Class 1 uses the 2020 bank-agreement figures; the 2021 white
paper lifts them, which is a configuration change.)

Outgoing caps count calendar days and years in Asia/Shanghai, whatever the server's zone. They
are enforced against running counters (:class:`Usage`) that the ledger keeps on the wallet row and
updates in the same transaction as the posting, so no check ever sums history. Everything here is
pure: times come in as arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from cbdc.domain.errors import ClassChangeRefused, InvalidRequest, LimitExceeded
from cbdc.domain.money import format_yuan, yuan

#: The zone whose calendar days and years the outgoing caps count.
LIMITS_ZONE = ZoneInfo("Asia/Shanghai")

WALLET_CLASS_NUMBERS = (1, 2, 3, 4)
#: Kinds of identity evidence an operator can hold for a wallet's holder.
EVIDENCE_KINDS = ("phone", "id_document", "bank_account", "in_person")

BALANCE_LIMIT_EXCEEDED = "balance_limit_exceeded"
SINGLE_PAYMENT_LIMIT_EXCEEDED = "single_payment_limit_exceeded"
DAILY_LIMIT_EXCEEDED = "daily_limit_exceeded"
ANNUAL_LIMIT_EXCEEDED = "annual_limit_exceeded"


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps in fen; ``None`` means no cap."""

    balance_fen_max: int | None
    payment_fen_max: int | None
    daily_outgoing_fen_max: int | None
    annual_outgoing_fen_max: int | None

    def tightened(self, other: Limits) -> Limits:
        """The stricter of the two caps, field by field (``None`` is the loosest)."""
        return Limits(
            _tighter(self.balance_fen_max, other.balance_fen_max),
            _tighter(self.payment_fen_max, other.payment_fen_max),
            _tighter(self.daily_outgoing_fen_max, other.daily_outgoing_fen_max),
            _tighter(self.annual_outgoing_fen_max, other.annual_outgoing_fen_max),
        )

    def as_dict(self) -> dict[str, int | None]:
        return {f.name: getattr(self, f.name) for f in fields(Limits)}


NO_LIMITS = Limits(None, None, None, None)


def _tighter(first: int | None, second: int | None) -> int | None:
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)


@dataclass(frozen=True, slots=True)
class WalletClass:
    number: int
    evidence_required: frozenset[str]
    limits: Limits

    @property
    def links_bank_account(self) -> bool:
        """Classes whose holder proved a bank account may link it (waterfalls need one)."""
        return "bank_account" in self.evidence_required


@dataclass(frozen=True, slots=True)
class WalletClasses:
    """The configured classes, by number."""

    classes: Mapping[int, WalletClass] = field(default_factory=lambda: DEFAULT_CLASSES)

    def get(self, number: int) -> WalletClass:
        if isinstance(number, bool) or number not in self.classes:
            raise InvalidRequest(
                f"wallet class must be one of {sorted(self.classes)}, got {number!r}",
                code="wallet_class_invalid",
            )
        return self.classes[number]

    def with_limits(self, number: int, limits: Limits) -> WalletClasses:
        """A copy with class ``number``'s limits replaced (configuration, tests)."""
        changed = dict(self.classes)
        changed[number] = replace(self.get(number), limits=check_limits(limits))
        return WalletClasses(changed)


def _class(number: int, evidence: Iterable[str], *caps_yuan: int | None) -> WalletClass:
    limits = Limits(*(None if cap is None else yuan(cap) for cap in caps_yuan))
    return WalletClass(number, frozenset(evidence), limits)


DEFAULT_CLASSES: Mapping[int, WalletClass] = {
    1: _class(1, ("in_person", "id_document", "phone", "bank_account"),
              500_000, 50_000, 100_000, 500_000),
    2: _class(2, ("id_document", "phone", "bank_account"), 500_000, 50_000, 100_000, None),
    3: _class(3, ("id_document", "phone"), 20_000, 5_000, 10_000, None),
    4: _class(4, ("phone",), 10_000, 2_000, 5_000, 50_000),
}


def wallet_classes_from_config(config: Mapping[str, Mapping[str, Any]]) -> WalletClasses:
    """Build classes from configuration such as ``{"3": {"balance_fen_max": 3_000_000}}``.

    Classes or caps the configuration leaves out keep their defaults; ``None`` lifts a cap."""
    classes = WalletClasses()
    for key, overrides in config.items():
        number = int(key)
        current = classes.get(number).limits.as_dict()
        unknown = set(overrides) - set(current)
        if unknown:
            raise InvalidRequest(
                f"unknown limit {sorted(unknown)[0]!r} for class {number}", code="config_invalid"
            )
        classes = classes.with_limits(number, Limits(**{**current, **overrides}))
    return classes


def check_limits(limits: Limits) -> Limits:
    """Every cap is a positive int of fen or None."""
    for f in fields(Limits):
        cap = getattr(limits, f.name)
        if cap is None:
            continue
        if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
            raise InvalidRequest(
                f"{f.name} must be a positive integer of fen or None, got {cap!r}",
                code="limits_invalid",
            )
    return limits


def check_sub_wallet_caps(parent: Limits, caps: Limits) -> Limits:
    """A sub-wallet's own caps may only be as strict as its parent's, or stricter."""
    check_limits(caps)
    for f in fields(Limits):
        parent_cap, cap = getattr(parent, f.name), getattr(caps, f.name)
        if parent_cap is not None and (cap is None or cap > parent_cap):
            raise InvalidRequest(
                f"sub-wallet {f.name} {cap!r} is above the parent's {parent_cap}",
                code="sub_wallet_caps_invalid",
            )
    return caps


def local_day(moment: datetime) -> date:
    """The calendar day in Asia/Shanghai that contains ``moment`` (an aware datetime)."""
    if moment.tzinfo is None:
        raise ValueError("limits are counted from timezone-aware times only")
    return moment.astimezone(LIMITS_ZONE).date()


@dataclass(frozen=True, slots=True)
class Usage:
    """Running outgoing totals of one wallet for one Shanghai day and year."""

    day: date
    spent_day_fen: int
    year: int
    spent_year_fen: int

    @classmethod
    def fresh(cls, moment: datetime) -> Usage:
        today = local_day(moment)
        return cls(today, 0, today.year, 0)

    def at(self, moment: datetime) -> Usage:
        """These counters as seen at ``moment``: a later day or year starts again from zero.

        A clock that went back keeps the counters (never resets to the caller's advantage)."""
        today = local_day(moment)
        if today <= self.day:
            return self
        if today.year > self.year:
            return Usage(today, 0, today.year, 0)
        return Usage(today, 0, self.year, self.spent_year_fen)

    def plus(self, amount_fen: int) -> Usage:
        return replace(
            self,
            spent_day_fen=self.spent_day_fen + amount_fen,
            spent_year_fen=self.spent_year_fen + amount_fen,
        )


def check_outgoing(limits: Limits, usage: Usage, amount_fen: int) -> None:
    """Refuse an outgoing payment of ``amount_fen`` that breaks a cap. ``usage`` must already be
    rolled to the payment's time (:meth:`Usage.at`). Checked in a fixed order: single payment,
    day, year."""
    if limits.payment_fen_max is not None and amount_fen > limits.payment_fen_max:
        raise LimitExceeded(
            f"{format_yuan(amount_fen)} CNY is above the single-payment cap of "
            f"{format_yuan(limits.payment_fen_max)} CNY",
            code=SINGLE_PAYMENT_LIMIT_EXCEEDED,
            limit_fen=limits.payment_fen_max,
            amount_fen=amount_fen,
        )
    _check_running(limits.daily_outgoing_fen_max, usage.spent_day_fen, amount_fen,
                   DAILY_LIMIT_EXCEEDED, "today")
    _check_running(limits.annual_outgoing_fen_max, usage.spent_year_fen, amount_fen,
                   ANNUAL_LIMIT_EXCEEDED, "this year")


def _check_running(cap: int | None, spent: int, amount_fen: int, code: str, period: str) -> None:
    if cap is not None and spent + amount_fen > cap:
        raise LimitExceeded(
            f"{format_yuan(spent)} CNY spent {period}; {format_yuan(amount_fen)} CNY more is "
            f"above the cap of {format_yuan(cap)} CNY",
            code=code,
            limit_fen=cap,
            spent_fen=spent,
            amount_fen=amount_fen,
        )


def balance_excess(limits: Limits, balance_fen: int, amount_fen: int) -> int:
    """How much of an incoming ``amount_fen`` would sit above the balance cap (0 if none)."""
    if limits.balance_fen_max is None:
        return 0
    return max(0, balance_fen + amount_fen - max(limits.balance_fen_max, balance_fen))


def check_incoming(limits: Limits, balance_fen: int, amount_fen: int) -> None:
    """Refuse an incoming amount that would take the balance above the cap (no waterfall)."""
    if balance_excess(limits, balance_fen, amount_fen) > 0:
        assert limits.balance_fen_max is not None
        raise LimitExceeded(
            f"a balance of {format_yuan(balance_fen)} CNY plus {format_yuan(amount_fen)} CNY "
            f"is above the cap of {format_yuan(limits.balance_fen_max)} CNY",
            code=BALANCE_LIMIT_EXCEEDED,
            limit_fen=limits.balance_fen_max,
            balance_fen=balance_fen,
            amount_fen=amount_fen,
        )


def check_evidence(wallet_class: WalletClass, evidence: Iterable[str]) -> None:
    """Refuse a class whose required identity evidence the operator does not hold."""
    missing = wallet_class.evidence_required - set(evidence)
    if missing:
        raise InvalidRequest(
            f"class {wallet_class.number} needs identity evidence: {', '.join(sorted(missing))}",
            code="identity_evidence_missing",
            missing=sorted(missing),
        )


def check_class_change(limits: Limits, balance_fen: int, usage: Usage) -> None:
    """Refuse moving a wallet to ``limits`` when what it holds or has spent already breaks them.

    ``usage`` must be rolled to now. The refusal names the cap that would be broken."""
    broken: tuple[str, int, int] | None = None
    if limits.balance_fen_max is not None and balance_fen > limits.balance_fen_max:
        broken = (BALANCE_LIMIT_EXCEEDED, balance_fen, limits.balance_fen_max)
    elif (limits.daily_outgoing_fen_max is not None
          and usage.spent_day_fen > limits.daily_outgoing_fen_max):
        broken = (DAILY_LIMIT_EXCEEDED, usage.spent_day_fen, limits.daily_outgoing_fen_max)
    elif (limits.annual_outgoing_fen_max is not None
          and usage.spent_year_fen > limits.annual_outgoing_fen_max):
        broken = (ANNUAL_LIMIT_EXCEEDED, usage.spent_year_fen, limits.annual_outgoing_fen_max)
    if broken is not None:
        limit, value, cap = broken
        raise ClassChangeRefused(
            f"{limit}: {format_yuan(value)} CNY is above the new class's cap of "
            f"{format_yuan(cap)} CNY",
            limit=limit,
            value_fen=value,
            limit_fen=cap,
        )
