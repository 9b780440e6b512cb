"""Scenarios: what a simulated pilot looks like, read from TOML.

A scenario fixes the cast (central bank, operators, pilot zones, wallets per class, merchants per
category), the calendar (start date, days, an hourly rhythm) and the traffic (payment mix, amount
distribution, cheats). ``examples/scenario.toml`` documents every field; the built-in default is
that same file shipped inside the package (``default_scenario.toml``, kept byte-identical by a
test).

Money is written as yuan strings and turned into integer fen here, once; rates and shares are
exact (integers, or percentages read as :class:`fractions.Fraction` from their decimal text), so
counts derived from them never depend on float rounding.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cbdc.domain.errors import InvalidAmount, InvalidRequest
from cbdc.domain.money import parse_yuan

HOURS_PER_DAY = 24
WALLET_CLASSES = (1, 2, 3, 4)
PAYMENT_KINDS = ("merchant_qr", "customer_code", "person_to_person", "offline", "refund")
CHEAT_KINDS = ("replay", "over_cap", "forged_signature", "cloned_card")
SCALE_MAX = 1_000
#: Counts after scaling. The simulation keeps each wallet and merchant in memory (--scale 10,
#: 100,000 wallets, peaks at about 580 MiB), so a million wallets would need about 6 GiB if
#: memory grows with them as it does up to there (not measured beyond).
WALLETS_MAX = 1_000_000
MERCHANTS_MAX = 100_000
PAYMENTS_MAX = 100_000_000


def _invalid(detail: str) -> InvalidRequest:
    return InvalidRequest(detail, code="scenario_invalid")


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    code: str
    name: str
    share: int


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    code: str
    share: int


@dataclass(frozen=True, slots=True)
class MerchantCategory:
    name: str
    mcc: str
    share: int


@dataclass(frozen=True, slots=True)
class AmountBucket:
    """Amounts from ``low_fen`` (inclusive) to ``high_fen`` (exclusive), picked by ``weight``."""

    low_fen: int
    high_fen: int
    weight: int


@dataclass(frozen=True, slots=True)
class Misbehaviour:
    """Cheat rates in percent: of payments, except clones (of offline payments)."""

    replay_percent: Fraction
    over_cap_percent: Fraction
    forged_signature_percent: Fraction
    cloned_card_percent: Fraction


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    ledger_id: str
    start_date: date
    time_zone: str
    days: int
    central_bank_name: str
    run_id: str
    issuance_per_wallet_fen: int
    quota_headroom_percent: int
    operators: tuple[OperatorSpec, ...]
    zones: tuple[ZoneSpec, ...]
    wallet_count: int
    class_shares: tuple[tuple[int, int], ...]
    top_up_to_fen: tuple[tuple[int, int], ...]
    home_zone_percent: int
    merchant_count: int
    merchant_class: int
    merchant_keep_fen: int
    categories: tuple[MerchantCategory, ...]
    payment_count: int
    hourly_weights: tuple[int, ...]
    mix: tuple[tuple[str, int], ...]
    batch_size: int
    batch_seconds: int
    request_valid_seconds: int
    full_refund_percent: int
    amount_buckets: tuple[AmountBucket, ...]
    card_holders_percent: int
    offline_load_fen: int
    sync_delay_hours: tuple[int, int]
    misbehaviour: Misbehaviour

    @property
    def zone_info(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def hours(self) -> int:
        return self.days * HOURS_PER_DAY

    def mix_share(self, kind: str) -> int:
        return dict(self.mix)[kind]

    def top_up_to(self, wallet_class: int) -> int:
        return dict(self.top_up_to_fen)[wallet_class]

    def scaled(self, factor: int) -> Scenario:
        """The same pilot with ``factor`` times the wallets, merchants and payments."""
        if isinstance(factor, bool) or not isinstance(factor, int) or not 1 <= factor <= SCALE_MAX:
            raise _invalid(f"scale must be an integer from 1 to {SCALE_MAX}, got {factor!r}")
        scaled = replace(
            self,
            wallet_count=self.wallet_count * factor,
            merchant_count=self.merchant_count * factor,
            payment_count=self.payment_count * factor,
        )
        _check_counts(scaled)
        return scaled

    def with_counts(
        self, *, wallets: int | None = None, merchants: int | None = None,
        payments: int | None = None,
    ) -> Scenario:
        """A copy with other counts (small scenarios for tests)."""
        scenario = replace(
            self,
            wallet_count=self.wallet_count if wallets is None else wallets,
            merchant_count=self.merchant_count if merchants is None else merchants,
            payment_count=self.payment_count if payments is None else payments,
        )
        _check_counts(scenario)
        return scenario


DEFAULT_SCENARIO_RESOURCE = "default_scenario.toml"


def default_scenario_text() -> str:
    return (resources.files("cbdc.simulation") / DEFAULT_SCENARIO_RESOURCE).read_text("utf-8")


def default_scenario() -> Scenario:
    """The built-in pilot week (identical to ``examples/scenario.toml``)."""
    return parse_scenario(tomllib.loads(default_scenario_text()))


def load_scenario(path: Path) -> Scenario:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise _invalid(f"cannot read scenario {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise _invalid(f"scenario {path} is not valid TOML: {exc}") from exc
    return parse_scenario(document)


class _Reader:
    """Typed access to one TOML table, naming the table in every error."""

    def __init__(self, table: Mapping[str, Any], where: str) -> None:
        if not isinstance(table, Mapping):
            raise _invalid(f"{where} must be a table")
        self.table = table
        self.where = where
        self.read: set[str] = set()
        self.children: list[_Reader] = []

    def _get(self, key: str) -> Any:
        if key not in self.table:
            raise _invalid(f"{self.where}: {key} is required")
        self.read.add(key)
        return self.table[key]

    def check_all_read(self) -> None:
        """A key the scenario does not know (a misspelt one, most likely) is refused, not
        ignored: the run would silently use the default in its place."""
        unknown = sorted(set(self.table) - self.read)
        if unknown:
            raise _invalid(f"{self.where}: unknown {'keys' if len(unknown) > 1 else 'key'} "
                           f"{', '.join(map(repr, unknown))}")
        for child in self.children:
            child.check_all_read()

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value:
            raise _invalid(f"{self.where}: {key} must be a non-empty string")
        return value

    def integer(self, key: str, *, low: int = 0, high: int | None = None) -> int:
        return _integer(self._get(key), f"{self.where}: {key}", low=low, high=high)

    def fen(self, key: str) -> int:
        return _fen(self._get(key), f"{self.where}: {key}")

    def percent(self, key: str) -> Fraction:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(f"{self.where}: {key} must be a number (a percentage)")
        exact = Fraction(str(value))  # the decimal as written, not its binary approximation
        if not 0 <= exact <= 100:
            raise _invalid(f"{self.where}: {key} must be between 0 and 100")
        return exact

    def sub(self, key: str) -> _Reader:
        child = _Reader(self._get(key), f"[{key}]" if self.where == "scenario" else
                        f"{self.where}.{key}")
        self.children.append(child)
        return child

    def tables(self, key: str) -> list[_Reader]:
        items = self._get(key)
        if not isinstance(items, list) or not items:
            raise _invalid(f"{self.where}: [[{key}]] must be a non-empty array of tables")
        children = [_Reader(item, f"{key} #{n}") for n, item in enumerate(items, start=1)]
        self.children += children
        return children

    def per_class(self, key: str, parse: Any) -> tuple[tuple[int, int], ...]:
        table = self._get(key)
        if not isinstance(table, Mapping) or set(table) != {str(n) for n in WALLET_CLASSES}:
            raise _invalid(f"{self.where}: {key} needs exactly the classes \"1\" to \"4\"")
        return tuple((n, parse(table[str(n)], f"{self.where}: {key}.{n}"))
                     for n in WALLET_CLASSES)


def _integer(value: Any, where: str, *, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{where} must be an integer")
    if value < low or (high is not None and value > high):
        raise _invalid(f"{where} must be between {low} and {high if high is not None else 'inf'}")
    return value


def _fen(value: Any, where: str) -> int:
    if not isinstance(value, str):
        raise _invalid(f"{where} must be a quoted yuan string like \"12.34\"")
    try:
        return parse_yuan(value)
    except InvalidAmount as exc:
        raise _invalid(f"{where}: {exc.detail}") from exc


def _share(value: Any, where: str) -> int:
    return _integer(value, where, low=0)


def parse_scenario(document: Mapping[str, Any]) -> Scenario:
    root = _Reader(document, "scenario")
    time_zone = root.text("time_zone")
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _invalid(f"unknown time zone {time_zone!r}") from exc
    try:
        start = date.fromisoformat(root.text("start_date"))
    except ValueError as exc:
        raise _invalid("start_date must be YYYY-MM-DD") from exc
    bank = root.sub("central_bank")
    wallets = root.sub("wallets")
    merchants = root.sub("merchants")
    payments = root.sub("payments")
    offline = root.sub("offline")
    cheats = root.sub("misbehaviour")
    scenario = Scenario(
        name=root.text("name"),
        ledger_id=root.text("ledger_id"),
        start_date=start,
        time_zone=time_zone,
        days=root.integer("days", low=1, high=366),
        central_bank_name=bank.text("name"),
        run_id=bank.text("run_id"),
        issuance_per_wallet_fen=bank.fen("issuance_per_wallet"),
        quota_headroom_percent=bank.integer("quota_headroom_percent", high=1000),
        operators=tuple(
            OperatorSpec(item.text("code"), item.text("name"), item.integer("share"))
            for item in root.tables("operators")
        ),
        zones=tuple(ZoneSpec(item.text("code"), item.integer("share"))
                    for item in root.tables("zones")),
        wallet_count=wallets.integer("count", low=2),
        class_shares=wallets.per_class("class_shares", _share),
        top_up_to_fen=wallets.per_class("top_up_to", _fen),
        home_zone_percent=wallets.integer("home_zone_percent", high=100),
        merchant_count=merchants.integer("count", low=1),
        merchant_class=merchants.integer("wallet_class", low=1, high=4),
        merchant_keep_fen=merchants.fen("keep"),
        categories=tuple(
            MerchantCategory(item.text("name"), item.text("mcc"), item.integer("share"))
            for item in merchants.tables("categories")
        ),
        payment_count=payments.integer("count"),
        hourly_weights=_hourly_weights(payments),
        mix=_mix(payments),
        batch_size=payments.integer("batch_size", low=1, high=10_000),
        batch_seconds=payments.integer("batch_seconds", low=0, high=3_600),
        request_valid_seconds=payments.integer("request_valid_seconds", low=1),
        full_refund_percent=payments.integer("full_refund_percent", high=100),
        amount_buckets=_buckets(root.sub("amounts")),
        card_holders_percent=offline.integer("card_holders_percent", low=1, high=100),
        offline_load_fen=offline.fen("load"),
        sync_delay_hours=_pair(offline, "sync_delay_hours"),
        misbehaviour=Misbehaviour(
            replay_percent=cheats.percent("replay_percent"),
            over_cap_percent=cheats.percent("over_cap_percent"),
            forged_signature_percent=cheats.percent("forged_signature_percent"),
            cloned_card_percent=cheats.percent("cloned_card_percent"),
        ),
    )
    root.check_all_read()
    _check(scenario)
    return scenario


def _hourly_weights(payments: _Reader) -> tuple[int, ...]:
    weights = payments._get("hourly_weights")
    if not isinstance(weights, list) or len(weights) != HOURS_PER_DAY:
        raise _invalid(f"[payments]: hourly_weights needs {HOURS_PER_DAY} integers")
    parsed = tuple(_share(w, f"[payments]: hourly_weights[{n}]") for n, w in enumerate(weights))
    if not any(parsed):
        raise _invalid("[payments]: hourly_weights are all zero")
    return parsed


def _mix(payments: _Reader) -> tuple[tuple[str, int], ...]:
    table = payments._get("mix")
    if not isinstance(table, Mapping) or set(table) != set(PAYMENT_KINDS):
        raise _invalid(f"[payments]: mix needs exactly {', '.join(PAYMENT_KINDS)}")
    mix = tuple((kind, _share(table[kind], f"[payments]: mix.{kind}")) for kind in PAYMENT_KINDS)
    if not any(share for _, share in mix):
        raise _invalid("[payments]: the mix is all zero")
    return mix


def _buckets(amounts: _Reader) -> tuple[AmountBucket, ...]:
    rows = amounts._get("buckets")
    if not isinstance(rows, list) or not rows:
        raise _invalid("[amounts]: buckets must be a non-empty list of [low, high, weight]")
    buckets = []
    for number, row in enumerate(rows, start=1):
        where = f"[amounts]: bucket #{number}"
        if not isinstance(row, list) or len(row) != 3:
            raise _invalid(f"{where} must be [low, high, weight]")
        bucket = AmountBucket(_fen(row[0], where), _fen(row[1], where), _share(row[2], where))
        if bucket.high_fen <= bucket.low_fen:
            raise _invalid(f"{where}: high must be above low")
        buckets.append(bucket)
    if not any(bucket.weight for bucket in buckets):
        raise _invalid("[amounts]: every bucket has weight zero")
    return tuple(buckets)


def _pair(table: _Reader, key: str) -> tuple[int, int]:
    value = table._get(key)
    if not isinstance(value, list) or len(value) != 2:
        raise _invalid(f"{table.where}: {key} must be [low, high]")
    low = _integer(value[0], f"{table.where}: {key}[0]")
    high = _integer(value[1], f"{table.where}: {key}[1]", low=low)
    return low, high


def _check(scenario: Scenario) -> None:
    for label, items in (("operators", scenario.operators), ("zones", scenario.zones),
                         ("merchant categories", scenario.categories)):
        codes = [getattr(item, "code", None) or getattr(item, "name", "") for item in items]
        if len(set(codes)) != len(codes):
            raise _invalid(f"{label} must be distinct")
        if not any(item.share for item in items):
            raise _invalid(f"{label}: every share is zero")
    if not any(share for _, share in scenario.class_shares):
        raise _invalid("[wallets]: every class share is zero")
    if scenario.batch_seconds >= scenario.request_valid_seconds:
        raise _invalid("[payments]: batch_seconds must be shorter than request_valid_seconds "
                       "(a batch settles when its window closes)")
    for category in scenario.categories:
        if len(category.mcc) != 4 or not category.mcc.isdigit():
            raise _invalid(f"merchant category {category.name}: mcc must be 4 digits")
    _check_counts(scenario)


def _check_counts(scenario: Scenario) -> None:
    if scenario.wallet_count < 2 or scenario.merchant_count < 1 or scenario.payment_count < 0:
        raise _invalid("a scenario needs at least 2 wallets and 1 merchant")
    for count, most, what in ((scenario.wallet_count, WALLETS_MAX, "wallets"),
                              (scenario.merchant_count, MERCHANTS_MAX, "merchants"),
                              (scenario.payment_count, PAYMENTS_MAX, "payments")):
        if count > most:
            raise _invalid(f"a scenario has at most {most:,} {what} (the simulated wallets are "
                           f"held in memory: 100,000 of them peak at about 580 MiB), "
                           f"not {count:,}")
