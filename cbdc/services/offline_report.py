"""Offline reconciliation: per device, per operator, in one consistent read snapshot.

* per device: the escrow account's balance against the device's books,
  ``loaded - settled - unloaded`` (a mismatch is a finding, ``escrow_mismatch``), and whether it
  has been online (uploaded or unloaded) within ``stale_after`` (else it is flagged stale: its
  holder may be carrying value the ledger has not seen for too long);
* per operator: offline value outstanding (what its devices' escrows hold), uploaded payments
  still pending by age, fraud cases, and what it has paid under the loss policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select

from cbdc.services.context import LedgerContext
from cbdc.storage.journal import as_utc
from cbdc.storage.offline import DeviceRow, all_devices
from cbdc.storage.tables import (
    institutions,
    offline_devices,
    offline_fraud_cases,
    offline_operator_losses,
    offline_payments,
)

#: Upper bounds of the pending-age buckets; the last bucket is everything older.
AGE_BUCKETS = (
    ("under 1 hour", timedelta(hours=1)),
    ("under 1 day", timedelta(days=1)),
    ("under 7 days", timedelta(days=7)),
)
OLDER = "7 days or more"


@dataclass(frozen=True, slots=True)
class DeviceReconciliation:
    device_id: str
    operator_code: str
    wallet_id: str
    status: str
    loaded_fen: int
    settled_fen: int
    unloaded_fen: int
    operator_paid_fen: int
    escrow_fen: int
    last_online_at: datetime
    stale: bool

    @property
    def expected_escrow_fen(self) -> int:
        return self.loaded_fen - self.settled_fen - self.unloaded_fen

    @property
    def balanced(self) -> bool:
        return self.escrow_fen == self.expected_escrow_fen


@dataclass(frozen=True, slots=True)
class PendingBucket:
    age: str
    payments: int
    amount_fen: int


@dataclass(frozen=True, slots=True)
class OperatorOffline:
    code: str
    devices: int
    outstanding_fen: int
    pending: tuple[PendingBucket, ...]
    oldest_pending: timedelta | None
    fraud_cases: int
    losses_fen: int
    stale_devices: tuple[str, ...]

    @property
    def pending_fen(self) -> int:
        return sum(bucket.amount_fen for bucket in self.pending)


@dataclass
class OfflineReport:
    at: datetime
    devices: list[DeviceReconciliation] = field(default_factory=list)
    operators: list[OperatorOffline] = field(default_factory=list)

    @property
    def mismatches(self) -> list[DeviceReconciliation]:
        return [device for device in self.devices if not device.balanced]

    @property
    def stale(self) -> list[DeviceReconciliation]:
        return [device for device in self.devices if device.stale]

    @property
    def ok(self) -> bool:
        return not self.mismatches


def offline_report(context: LedgerContext, *, stale_after: timedelta) -> OfflineReport:
    now = context.now()
    report = OfflineReport(at=now)
    with context.read() as connection:
        rows = all_devices(connection)
        pending = connection.execute(
            select(institutions.c.code, offline_payments.c.amount_fen,
                   offline_payments.c.uploaded_at)
            .join(offline_devices, offline_devices.c.id == offline_payments.c.payer_device_id)
            .join(institutions, institutions.c.id == offline_devices.c.operator_id)
            .where(offline_payments.c.status == "pending")
        ).all()
        cases: dict[str, int] = {code: count for code, count in connection.execute(
            select(institutions.c.code, func.count())
            .join(offline_fraud_cases, offline_fraud_cases.c.operator_id == institutions.c.id)
            .group_by(institutions.c.code)
        )}
        losses: dict[str, int | None] = {code: total for code, total in connection.execute(
            select(institutions.c.code, func.sum(offline_operator_losses.c.amount_fen))
            .join(offline_operator_losses,
                  offline_operator_losses.c.operator_id == institutions.c.id)
            .group_by(institutions.c.code)
        )}
    report.devices = [_device(row, now, stale_after) for row in rows]
    for code in sorted({row.operator_code for row in rows}):
        mine = [device for device in report.devices if device.operator_code == code]
        ages = [(now - as_utc(at), amount) for operator, amount, at in pending if operator == code]
        report.operators.append(OperatorOffline(
            code=code,
            devices=len(mine),
            outstanding_fen=sum(device.escrow_fen for device in mine),
            pending=_buckets(ages),
            oldest_pending=max((age for age, _ in ages), default=None),
            fraud_cases=int(cases.get(code, 0)),
            losses_fen=int(losses.get(code) or 0),
            stale_devices=tuple(device.device_id for device in mine if device.stale),
        ))
    return report


def _device(row: DeviceRow, now: datetime, stale_after: timedelta) -> DeviceReconciliation:
    last_online = row.last_sync_at or row.created_at
    return DeviceReconciliation(
        device_id=row.device_id, operator_code=row.operator_code, wallet_id=row.wallet_id,
        status=row.status, loaded_fen=row.loaded_fen, settled_fen=row.settled_fen,
        unloaded_fen=row.unloaded_fen, operator_paid_fen=row.operator_paid_fen,
        escrow_fen=row.escrow_balance_fen, last_online_at=last_online,
        stale=row.status == "active" and now - last_online > stale_after,
    )


def _buckets(ages: list[tuple[timedelta, int]]) -> tuple[PendingBucket, ...]:
    buckets = []
    lower = timedelta(0)
    for label, upper in AGE_BUCKETS:
        inside = [amount for age, amount in ages if lower <= age < upper]
        buckets.append(PendingBucket(label, len(inside), sum(inside)))
        lower = upper
    older = [amount for age, amount in ages if age >= lower]
    buckets.append(PendingBucket(OLDER, len(older), sum(older)))
    return tuple(buckets)
