"""What a simulation measures: aggregates only, so memory stays flat however many payments run.

Counts and sums are kept per simulated hour, per payment kind, per wallet class and per zone;
rejections by reason code (separately for honest traffic and injected cheats); the offline
settlement delay as a histogram; supply and holdings sampled once per simulated hour. The only
per-item record is the ledger of injected cheats (a fraction of a percent of the traffic), which
the invariants and the tests count against what the ledger answered.

:func:`final_state_hash` condenses the ledger's final state (chain head, then every account's
balance in account-code order) into one sha256: the same scenario and seed give the same hash.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from cbdc.services.context import LedgerContext
from cbdc.storage.tables import accounts, ledger_head

#: How an injected cheat ended. ``refused``: the ledger said no (with a code); ``detected``: it
#: was recognised without moving money (an exact replay answered with its first result, a clone
#: opening a fraud case); ``accepted``: it moved money, which must never happen.
CHEAT_OUTCOMES = ("refused", "detected", "accepted")
#: Upper bounds (hours) of the offline settlement delay histogram's buckets; the last is open.
DELAY_BUCKETS_HOURS = (1, 2, 4, 8, 12, 24, 48, 72)


@dataclass(slots=True)
class Tally:
    count: int = 0
    volume_fen: int = 0

    def add(self, amount_fen: int) -> None:
        self.count += 1
        self.volume_fen += amount_fen

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "volume_fen": self.volume_fen}


@dataclass(frozen=True, slots=True)
class Injection:
    kind: str
    subject_id: str
    outcome: str
    code: str | None


@dataclass(frozen=True, slots=True)
class SupplySample:
    """The supply report at one simulated hour, in fen."""

    hour: int
    outstanding_fen: int
    reserves_fen: int
    floats_fen: int
    wallets_fen: int
    escrow_fen: int


@dataclass
class InjectionLedger:
    """The simulation's own record of every cheat it injected and how the ledger answered."""

    entries: list[Injection] = field(default_factory=list)

    def record(self, kind: str, subject_id: str, outcome: str, code: str | None) -> None:
        assert outcome in CHEAT_OUTCOMES, outcome
        self.entries.append(Injection(kind, subject_id, outcome, code))

    def by_kind(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CHEAT_OUTCOMES, 0))
        for entry in self.entries:
            table[entry.kind][entry.outcome] += 1
        return {kind: table[kind] for kind in sorted(table)}

    @property
    def injected(self) -> int:
        return len(self.entries)

    @property
    def caught(self) -> int:
        return sum(1 for entry in self.entries if entry.outcome != "accepted")


@dataclass
class Metrics:
    hours: int
    settled_by_hour: list[int] = field(default_factory=list)
    volume_by_hour_fen: list[int] = field(default_factory=list)
    rejected_by_hour: list[int] = field(default_factory=list)
    by_kind: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    by_class: dict[int, Tally] = field(default_factory=lambda: defaultdict(Tally))
    by_zone: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    attempts_by_kind: Counter[str] = field(default_factory=Counter)
    not_run: Counter[str] = field(default_factory=Counter)
    honest_rejections: Counter[str] = field(default_factory=Counter)
    cheat_rejections: Counter[str] = field(default_factory=Counter)
    top_ups: Tally = field(default_factory=Tally)
    withdrawals: Tally = field(default_factory=Tally)
    wallets_opened: Counter[int] = field(default_factory=Counter)
    merchants_opened: Counter[str] = field(default_factory=Counter)
    offline_delay_hours: Counter[int] = field(default_factory=Counter)
    offline_loaded: Tally = field(default_factory=Tally)
    fraud_cases: int = 0
    fraud_losses_fen: int = 0
    supply: list[SupplySample] = field(default_factory=list)
    injections: InjectionLedger = field(default_factory=InjectionLedger)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # Of each phase's wall time, the seconds spent inside the ledger's port.
    ledger_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for series in (self.settled_by_hour, self.volume_by_hour_fen, self.rejected_by_hour):
            if not series:
                series.extend([0] * self.hours)

    def settled(self, hour: int, kind: str, wallet_class: int, zone: str, amount_fen: int) -> None:
        self.settled_by_hour[hour] += 1
        self.volume_by_hour_fen[hour] += amount_fen
        self.by_kind[kind].add(amount_fen)
        self.by_class[wallet_class].add(amount_fen)
        self.by_zone[zone].add(amount_fen)

    def rejected(self, hour: int, code: str) -> None:
        self.rejected_by_hour[hour] += 1
        self.honest_rejections[code] += 1

    def note(self, text: str) -> None:
        """Remember a remark for the report, once however often it happens."""
        if text not in self.notes:
            self.notes.append(text)

    def offline_delay(self, delay_seconds: int) -> None:
        for bucket in DELAY_BUCKETS_HOURS:
            if delay_seconds <= bucket * 3600:
                self.offline_delay_hours[bucket] += 1
                return
        self.offline_delay_hours[0] += 1  # 0 stands for "more than the last bucket"

    @property
    def settled_count(self) -> int:
        return sum(self.settled_by_hour)

    @property
    def settled_volume_fen(self) -> int:
        return sum(self.volume_by_hour_fen)

    @property
    def attempted_count(self) -> int:
        return sum(self.attempts_by_kind.values())

    def as_dict(self) -> dict[str, Any]:
        attempted = self.attempted_count
        return {
            "payments": {
                "attempted": attempted,
                "settled": self.settled_count,
                "rejected": sum(self.honest_rejections.values()),
                "settled_volume_fen": self.settled_volume_fen,
                "settlement_rate": _rate(self.settled_count, attempted),
                "attempted_by_kind": dict(sorted(self.attempts_by_kind.items())),
                "settled_by_kind": _tallies(self.by_kind),
                "not_run_by_kind": dict(sorted(self.not_run.items())),
            },
            "by_wallet_class": _tallies(self.by_class),
            "by_zone": _tallies(self.by_zone),
            "by_hour": {
                "settled": self.settled_by_hour,
                "volume_fen": self.volume_by_hour_fen,
                "rejected": self.rejected_by_hour,
            },
            "rejections": {
                "honest": dict(sorted(self.honest_rejections.items())),
                "cheats": dict(sorted(self.cheat_rejections.items())),
            },
            "funding": {"top_ups": self.top_ups.as_dict(),
                        "withdrawals": self.withdrawals.as_dict()},
            "wallets_opened_by_class": {str(k): v for k, v in sorted(self.wallets_opened.items())},
            "merchants_opened_by_category": dict(sorted(self.merchants_opened.items())),
            "offline": {
                "loaded": self.offline_loaded.as_dict(),
                "settlement_delay_hours": {
                    (f"<={bucket}" if bucket else f">{DELAY_BUCKETS_HOURS[-1]}"): count
                    for bucket, count in sorted(self.offline_delay_hours.items(),
                                                key=lambda item: item[0] or 10**9)
                },
            },
            "fraud": {"cases": self.fraud_cases, "losses_fen": self.fraud_losses_fen},
            "cheats": {
                "injected": self.injections.injected,
                "caught": self.injections.caught,
                "by_kind": self.injections.by_kind(),
            },
            "supply_by_hour": [
                {"hour": s.hour, "outstanding_fen": s.outstanding_fen,
                 "reserves_fen": s.reserves_fen, "floats_fen": s.floats_fen,
                 "wallets_fen": s.wallets_fen, "escrow_fen": s.escrow_fen}
                for s in self.supply
            ],
            "phase_seconds": {name: round(value, 3) for name, value in self.phase_seconds.items()},
            "ledger_seconds": {name: round(value, 3)
                               for name, value in self.ledger_seconds.items()},
            "notes": self.notes,
        }


def _rate(part: int, whole: int) -> str:
    """A rate as an exact decimal string with four places (no float in the report's numbers)."""
    if whole == 0:
        return "0.0000"
    scaled = part * 10_000 // whole
    return f"{scaled // 10_000}.{scaled % 10_000:04d}"


def _tallies(tallies: dict[Any, Tally]) -> dict[str, dict[str, int]]:
    return {str(key): tallies[key].as_dict() for key in sorted(tallies)}


def final_state_hash(context: LedgerContext) -> str:
    """sha256 over the chain head (seq and hash) and every account's code and balance, in code
    order, read in one snapshot and streamed (memory does not grow with the ledger)."""
    digest = hashlib.sha256()
    with context.read() as connection:
        head = connection.execute(
            select(ledger_head.c.last_seq, ledger_head.c.last_hash).where(ledger_head.c.id == 1)
        ).one()
        digest.update(f"head {head.last_seq} {head.last_hash}\n".encode("ascii"))
        # Byte order on both engines (PostgreSQL's default collation would sort differently).
        collation = "BINARY" if connection.dialect.name == "sqlite" else "C"
        rows = connection.execution_options(yield_per=5_000).execute(
            select(accounts.c.code, accounts.c.balance_fen)
            .order_by(accounts.c.code.collate(collation))
        )
        for code, balance_fen in rows:
            digest.update(f"{code} {balance_fen}\n".encode())
    return digest.hexdigest()
