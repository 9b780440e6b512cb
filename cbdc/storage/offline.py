"""Reading and locking offline devices, and reading what the ledger holds about their payments.

Lock order on PostgreSQL (SQLite holds its one write lock from ``BEGIN IMMEDIATE``): device rows
in ascending ``offline_devices.id``, then wallet rows in ascending ``wallets.id``
(:func:`cbdc.storage.wallets.load_wallets`), then -- inside ``post_entries`` -- the chain head
and the accounts. Every offline service that changes a device locks its row first, so the
device's running totals and counters cannot change under it; nothing here commits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from cbdc.domain.errors import NotFound
from cbdc.offline import OfflineCaps, RevocationSnapshot
from cbdc.storage.journal import as_utc
from cbdc.storage.tables import (
    accounts,
    institutions,
    offline_devices,
    offline_loads,
    offline_payments,
    offline_revocation_lists,
    offline_revocations,
    offline_unloads,
    wallets,
)

_float = accounts.alias("operator_float")
_escrow = accounts.alias("escrow")


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """A device as stored, with its wallet, operator and escrow balance next to it."""

    id: int
    device_id: str
    wallet_row_id: int
    wallet_id: str
    operator_id: int
    operator_code: str
    operator_registered_at: datetime
    operator_float_account_id: int
    escrow_account_id: int
    escrow_balance_fen: int
    public_key: str
    certificate_serial: str
    certificate_json: str
    caps: OfflineCaps
    not_after: datetime
    status: str
    load_counter: int
    unload_counter: int
    closed_counter: int
    synced_counter: int
    revocation_number: int
    loaded_fen: int
    settled_fen: int
    unloaded_fen: int
    operator_paid_fen: int
    last_sync_at: datetime | None
    created_at: datetime

    @property
    def escrow_expected_fen(self) -> int:
        """What the escrow must hold by the device's totals: loaded - settled - unloaded."""
        return self.loaded_fen - self.settled_fen - self.unloaded_fen


_DEVICE_COLUMNS = (
    offline_devices,
    wallets.c.wallet_id.label("wallet_text_id"),
    institutions.c.code.label("operator_code"),
    institutions.c.created_at.label("operator_registered_at"),
    _float.c.id.label("operator_float_account_id"),
    _escrow.c.balance_fen.label("escrow_balance_fen"),
)


def _device_query() -> Any:
    return (
        select(*_DEVICE_COLUMNS)
        .join(wallets, wallets.c.id == offline_devices.c.wallet_id)
        .join(institutions, institutions.c.id == offline_devices.c.operator_id)
        .join(
            _float,
            (_float.c.institution_id == offline_devices.c.operator_id)
            & (_float.c.kind == "float"),
        )
        .join(_escrow, _escrow.c.id == offline_devices.c.escrow_account_id)
    )


def _device(row: Any) -> DeviceRow:
    return DeviceRow(
        id=row.id,
        device_id=row.device_id,
        wallet_row_id=row.wallet_id,
        wallet_id=row.wallet_text_id,
        operator_id=row.operator_id,
        operator_code=row.operator_code,
        operator_registered_at=as_utc(row.operator_registered_at),
        operator_float_account_id=row.operator_float_account_id,
        escrow_account_id=row.escrow_account_id,
        escrow_balance_fen=row.escrow_balance_fen,
        public_key=row.public_key,
        certificate_serial=row.certificate_serial,
        certificate_json=row.certificate_json,
        caps=OfflineCaps(row.offline_balance_fen_max, row.offline_payment_fen_max,
                         row.offline_payments_max),
        not_after=as_utc(row.not_after),
        status=row.status,
        load_counter=row.load_counter,
        unload_counter=row.unload_counter,
        closed_counter=row.closed_counter,
        synced_counter=row.synced_counter,
        revocation_number=row.revocation_number,
        loaded_fen=row.loaded_fen,
        settled_fen=row.settled_fen,
        unloaded_fen=row.unloaded_fen,
        operator_paid_fen=row.operator_paid_fen,
        last_sync_at=None if row.last_sync_at is None else as_utc(row.last_sync_at),
        created_at=as_utc(row.created_at),
    )


def load_devices(
    connection: Connection, device_ids: Iterable[str], *, lock: bool = False
) -> dict[str, DeviceRow]:
    """The known devices among ``device_ids``, by device id (unknown ones are left out); with
    ``lock`` their rows are locked (PostgreSQL) in ascending id order."""
    wanted = sorted(set(device_ids))
    if not wanted:
        return {}
    query = (
        _device_query()
        .where(offline_devices.c.device_id.in_(wanted))
        .order_by(offline_devices.c.id)
    )
    if lock and connection.dialect.name != "sqlite":
        query = query.with_for_update(of=offline_devices)
    return {row.device_id: _device(row) for row in connection.execute(query)}


def load_device(connection: Connection, device_id: str, *, lock: bool = False) -> DeviceRow:
    found = load_devices(connection, [device_id], lock=lock).get(device_id)
    if found is None:
        raise device_not_found(device_id)
    return found


def all_devices(connection: Connection) -> list[DeviceRow]:
    return [_device(row) for row in connection.execute(
        _device_query().order_by(offline_devices.c.id)
    )]


def device_not_found(device_id: str) -> NotFound:
    return NotFound(f"no offline device {device_id!r}", code="offline_device_not_found",
                    device=device_id)


def payee_devices(connection: Connection, device_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
    """For each known device among ``device_ids``: its wallet id and the revocation list it was
    handed at its last sync (payees are read here, never locked)."""
    wanted = sorted(set(device_ids))
    found: dict[str, tuple[str, int]] = {}
    for start in range(0, len(wanted), 900):  # SQLite's bound-parameter limit
        rows = connection.execute(
            select(offline_devices.c.device_id, wallets.c.wallet_id,
                   offline_devices.c.revocation_number)
            .join(wallets, wallets.c.id == offline_devices.c.wallet_id)
            .where(offline_devices.c.device_id.in_(wanted[start:start + 900]))
        )
        found.update({row.device_id: (row.wallet_id, int(row.revocation_number))
                      for row in rows})
    return found


@dataclass(frozen=True, slots=True)
class StoredPayment:
    """An uploaded payment as the ledger keeps it (already authenticated when stored)."""

    id: int
    payment_hash: str
    payer_device_id: int
    counter: int
    payee_device: str
    payee_wallet: str
    amount_fen: int
    message: dict[str, Any]
    signature: bytes
    status: str
    reason: str | None


def stored_payments(
    connection: Connection,
    device_row_ids: Sequence[int],
    known: Mapping[str, tuple[dict[str, Any], bytes]] | None = None,
) -> list[StoredPayment]:
    """Every payment the ledger holds from these devices, by (counter, hash). ``known``: the
    message and signature of payments the caller already holds (say, just stored), by payment
    hash; only the others' messages are read and parsed."""
    if not device_row_ids:
        return []
    known = known or {}
    rows = connection.execute(
        select(
            offline_payments.c.id, offline_payments.c.payment_hash,
            offline_payments.c.payer_device_id, offline_payments.c.counter,
            offline_payments.c.payee_device, offline_payments.c.payee_wallet,
            offline_payments.c.amount_fen, offline_payments.c.status, offline_payments.c.reason,
        )
        .where(offline_payments.c.payer_device_id.in_(sorted(set(device_row_ids))))
        .order_by(offline_payments.c.counter, offline_payments.c.payment_hash)
    ).all()
    read = _payment_messages(connection, [row.id for row in rows
                                          if row.payment_hash not in known])
    result = []
    for row in rows:
        message, signature = known.get(row.payment_hash) or read[row.id]
        result.append(StoredPayment(row.id, row.payment_hash, row.payer_device_id, row.counter,
                                    row.payee_device, row.payee_wallet, row.amount_fen,
                                    message, signature, row.status, row.reason))
    return result


def _payment_messages(
    connection: Connection, payment_row_ids: Sequence[int]
) -> dict[int, tuple[dict[str, Any], bytes]]:
    found: dict[int, tuple[dict[str, Any], bytes]] = {}
    for start in range(0, len(payment_row_ids), 900):  # SQLite's bound-parameter limit
        for row in connection.execute(
            select(offline_payments.c.id, offline_payments.c.message_json,
                   offline_payments.c.signature)
            .where(offline_payments.c.id.in_(payment_row_ids[start:start + 900]))
        ):
            found[row.id] = (json.loads(row.message_json), bytes.fromhex(row.signature))
    return found


def known_payments(connection: Connection, payment_hashes: Sequence[str]) -> dict[str, str]:
    """Status of each already-stored payment among ``payment_hashes``."""
    return _by_payment_hash(connection, offline_payments.c.status, payment_hashes)


def stored_signatures(connection: Connection, payment_hashes: Sequence[str]) -> dict[str, str]:
    """The signature (hex) stored with each already-stored payment among ``payment_hashes``."""
    return _by_payment_hash(connection, offline_payments.c.signature, payment_hashes)


def _by_payment_hash(
    connection: Connection, column: Any, payment_hashes: Sequence[str]
) -> dict[str, Any]:
    """``column`` of each stored payment among ``payment_hashes``, by payment hash."""
    found: dict[str, Any] = {}
    hashes = sorted(set(payment_hashes))
    for start in range(0, len(hashes), 900):  # SQLite's bound-parameter limit
        rows = connection.execute(
            select(offline_payments.c.payment_hash, column)
            .where(offline_payments.c.payment_hash.in_(hashes[start:start + 900]))
        )
        found.update({payment_hash: value for payment_hash, value in rows})
    return found


def load_messages(
    connection: Connection, device_row_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """The load receipt messages issued to each device."""
    result: dict[int, list[dict[str, Any]]] = {device: [] for device in device_row_ids}
    if not device_row_ids:
        return result
    for row in connection.execute(
        select(offline_loads.c.device_id, offline_loads.c.receipt_json)
        .where(offline_loads.c.device_id.in_(sorted(set(device_row_ids))))
        .order_by(offline_loads.c.device_id, offline_loads.c.load_counter)
    ):
        result[row.device_id].append(json.loads(row.receipt_json)["message"])
    return result


def unload_messages(
    connection: Connection, device_row_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """The unload statements accepted from each device."""
    result: dict[int, list[dict[str, Any]]] = {device: [] for device in device_row_ids}
    if not device_row_ids:
        return result
    for row in connection.execute(
        select(offline_unloads.c.device_id, offline_unloads.c.statement_json)
        .where(offline_unloads.c.device_id.in_(sorted(set(device_row_ids))))
        .order_by(offline_unloads.c.device_id, offline_unloads.c.unload_counter)
    ):
        result[row.device_id].append(json.loads(row.statement_json))
    return result


@dataclass(frozen=True, slots=True)
class Revocations:
    """The ledger's revocations: every revoked serial now, and each published list."""

    current: RevocationSnapshot
    lists: dict[int, RevocationSnapshot]
    unpublished: frozenset[str]

    def as_of_list(self, number: int) -> RevocationSnapshot:
        """What a device holding list ``number`` knows (0: no list yet)."""
        if number <= 0 or number not in self.lists:
            return RevocationSnapshot(number=0, issued_at=None, revoked=frozenset())
        return self.lists[number]

    @property
    def latest_number(self) -> int:
        return max(self.lists, default=0)


def load_revocations(connection: Connection) -> Revocations:
    lists: dict[int, RevocationSnapshot] = {}
    for row in connection.execute(
        select(offline_revocation_lists).order_by(offline_revocation_lists.c.number)
    ):
        envelope = json.loads(row.envelope_json)
        lists[row.number] = RevocationSnapshot(
            number=row.number,
            issued_at=as_utc(row.issued_at),
            revoked=frozenset(envelope["message"]["revoked"]),
            envelope=envelope,
        )
    serials: set[str] = set()
    unpublished: set[str] = set()
    for row in connection.execute(
        select(offline_revocations.c.serial, offline_revocations.c.list_number)
    ):
        serials.add(row.serial)
        if row.list_number is None:
            unpublished.add(row.serial)
    latest = lists[max(lists)] if lists else None
    current = RevocationSnapshot(
        number=latest.number if latest else 0,
        issued_at=latest.issued_at if latest else None,
        revoked=frozenset(serials),
    )
    return Revocations(current=current, lists=lists, unpublished=frozenset(unpublished))
