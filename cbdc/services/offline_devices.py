"""Offline devices online: provisioning, loading, unloading, revocation lists and fraud cases.

* :func:`provision_device` certifies a device's key for a wallet (by its operator) and opens its
  escrow account, held at that operator. Caps follow the wallet class
  (:data:`cbdc.offline.DEFAULT_OFFLINE_CAPS`) unless the operator passes others.
* :func:`load_device` moves value from the wallet into the device's escrow and returns the
  operator-signed load receipt. Loading is **not spending**: it moves the holder's money between
  two of the holder's own holdings (like a withdrawal to cash), so it does not count against the
  wallet's outgoing caps; offline spending is bounded by the device's own caps instead. The
  ledger refuses a load that would take the escrow (not only the device's balance, which it
  cannot see: payments not yet uploaded are still in the escrow) above the device's offline
  balance cap, so the device can always apply a receipt the ledger issued.
* :func:`unload_device` accepts a device-signed statement and returns the unspent balance from
  the escrow to the wallet; it closes the counter range it covers, so payments later signed in
  that range are ``offline_after_unload``.

Every command locks the device row first, then wallet rows (ascending id), then posts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, insert, select, update

from cbdc.domain import signing
from cbdc.domain.errors import (
    AlreadyExists,
    CbdcError,
    CertificateRefused,
    Conflict,
    InsufficientFunds,
    InvalidRequest,
    OfflineRefused,
)
from cbdc.domain.messages import check_id
from cbdc.domain.money import check_amount
from cbdc.domain.postings import EntryDraft, canonical_json, transfer
from cbdc.offline import OfflineCaps, offline_caps_for
from cbdc.offline.messages import UNLOAD, message_hash, open_envelope
from cbdc.services.batches import only
from cbdc.services.context import LedgerContext
from cbdc.services.offline_keys import operator_authority, root_authority, root_public_key
from cbdc.services.offline_settlement import FraudCaseView, SettlementRun
from cbdc.services.wallets import check_active, wallet_account_code
from cbdc.storage.journal import PostedEntry, as_utc, post_entries
from cbdc.storage.offline import DeviceRow, device_not_found, load_revocations
from cbdc.storage.offline import load_device as load_device_row
from cbdc.storage.offline import load_devices as load_device_rows
from cbdc.storage.tables import (
    accounts,
    institutions,
    offline_devices,
    offline_fraud_cases,
    offline_loads,
    offline_revocation_lists,
    offline_revocations,
    offline_unloads,
    wallets,
)
from cbdc.storage.wallets import WalletRow, load_wallets, wallet_not_found

DEVICE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,60}$")
DEVICE_CERTIFICATE_VALIDITY = timedelta(days=365)


def escrow_account_code(device_id: str) -> str:
    return f"escrow:{device_id}"


def certificate_serial(device_id: str) -> str:
    return f"dev:{device_id}"


class ProvisionedDevice(NamedTuple):
    """What a newly certified device installs: its certificate, its operator's certificate
    (both as envelopes) and the central bank's root key to pin."""

    certificate: dict[str, Any]
    operator_certificate: dict[str, Any]
    root_public_key: bytes


def provision_device(
    context: LedgerContext,
    device_id: str,
    wallet_id: str,
    device_public_key_hex: str,
    *,
    valid_for: timedelta = DEVICE_CERTIFICATE_VALIDITY,
    caps: OfflineCaps | None = None,
) -> ProvisionedDevice:
    """Certify ``device_public_key_hex`` as device ``device_id`` of ``wallet_id``, by the
    wallet's operator, valid from now for ``valid_for``; open the device's escrow account.

    Order: the device id (``offline_device_id_invalid``) and key; a device with this id or key
    (the first provisioned): the same wallet and key return the certificate issued first,
    anything else is ``offline_device_exists`` (or ``offline_device_key_exists`` for a key
    another device holds); the wallet exists and is active."""
    return only(provision_devices(
        context, [DeviceRequest(device_id, wallet_id, device_public_key_hex)],
        valid_for=valid_for, caps=caps))


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """A wallet asks its operator to certify a device's key."""

    device_id: str
    wallet_id: str
    device_public_key_hex: str


class _KnownDevice(NamedTuple):
    order: int
    device_id: str
    public_key: str
    certificate_json: str
    wallet_id: str
    operator_code: str
    registered_at: datetime


def provision_devices(
    context: LedgerContext,
    requests: Sequence[DeviceRequest],
    *,
    valid_for: timedelta = DEVICE_CERTIFICATE_VALIDITY,
    caps: OfflineCaps | None = None,
) -> list[ProvisionedDevice | CbdcError]:
    """Many :func:`provision_device` calls in one unit of work: each answer (an error in
    place of a refusal, which changes nothing) is what the call would have answered had the
    requests before it been made one by one. Escrow accounts and device rows are written in
    two statements each."""
    answers: list[ProvisionedDevice | CbdcError | None] = [None] * len(requests)
    keys: dict[int, str] = {}
    for index, request in enumerate(requests):
        try:
            _check_device_id(request.device_id)
            keys[index] = signing.public_key_from_hex(request.device_public_key_hex).hex()
        except CbdcError as error:
            answers[index] = error
    if keys:
        with context.write() as connection:
            _provision_all(context, connection, requests, keys, answers, valid_for, caps)
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def _check_device_id(device_id: str) -> None:
    if not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
        raise InvalidRequest(f"device id must be 1-60 of A-Z a-z 0-9 . _ : -, got {device_id!r}",
                             code="offline_device_id_invalid")


def _provision_all(
    context: LedgerContext,
    connection: Connection,
    requests: Sequence[DeviceRequest],
    keys: dict[int, str],
    answers: list[ProvisionedDevice | CbdcError | None],
    valid_for: timedelta,
    caps: OfflineCaps | None,
) -> None:
    now = context.now()
    known = _known_devices(connection, {requests[i].device_id for i in keys}, set(keys.values()))
    by_id = {device.device_id: device for device in known}
    by_key = {device.public_key: device for device in known}
    order = max((device.order for device in known), default=0)
    found = load_wallets(connection, {requests[i].wallet_id for i in keys}, lock=True,
                         require_all=False)
    registered = _registered_at(connection, {wallet.operator_id for wallet in found.values()})
    accounts_rows: list[dict[str, Any]] = []
    device_rows: list[dict[str, Any]] = []
    for index, public_key_hex in keys.items():
        request = requests[index]
        try:
            existing = min((d for d in (by_id.get(request.device_id), by_key.get(public_key_hex))
                            if d is not None), default=None)
            if existing is not None:
                answers[index] = _provisioned(context, existing, request.device_id,
                                              request.wallet_id, public_key_hex)
                continue
            wallet = found.get(request.wallet_id)
            if wallet is None:
                raise wallet_not_found(request.wallet_id)
            check_active(wallet)
        except CbdcError as error:
            answers[index] = error
            continue
        authority = operator_authority(context, wallet.operator_code,
                                       registered[wallet.operator_id])
        certificate = authority.certify_device(
            serial=certificate_serial(request.device_id), device_id=request.device_id,
            device_public_key=bytes.fromhex(public_key_hex), wallet=request.wallet_id,
            wallet_class=wallet.wallet_class, not_before=now, not_after=now + valid_for,
            caps=caps or offline_caps_for(wallet.wallet_class),
        )
        certificate_json = json.dumps(certificate.to_envelope(), sort_keys=True)
        order += 1
        by_id[request.device_id] = by_key[public_key_hex] = _KnownDevice(
            order, request.device_id, public_key_hex, certificate_json, request.wallet_id,
            wallet.operator_code, registered[wallet.operator_id])
        accounts_rows.append({"code": escrow_account_code(request.device_id), "kind": "escrow",
                              "institution_id": wallet.operator_id, "created_at": now})
        device_caps = certificate.caps
        device_rows.append({
            "device_id": request.device_id, "wallet_id": wallet.id,
            "operator_id": wallet.operator_id, "public_key": public_key_hex,
            "certificate_serial": certificate.serial, "certificate_json": certificate_json,
            "offline_balance_fen_max": device_caps.balance_fen_max,
            "offline_payment_fen_max": device_caps.payment_fen_max,
            "offline_payments_max": device_caps.payments_max,
            "not_after": certificate.not_after, "status": "active", "created_at": now,
        })
        answers[index] = ProvisionedDevice(certificate.to_envelope(),
                                           authority.certificate.to_envelope(),
                                           root_public_key(context))
    if device_rows:
        connection.execute(insert(accounts), accounts_rows)
        escrows = _account_ids(connection, [row["code"] for row in accounts_rows])
        for row, account in zip(device_rows, accounts_rows, strict=True):
            row["escrow_account_id"] = escrows[account["code"]]
        connection.execute(insert(offline_devices), device_rows)


def _known_devices(
    connection: Connection, device_ids: set[str], public_keys_hex: set[str]
) -> list[_KnownDevice]:
    """The devices holding one of these ids or keys, in the order they were provisioned."""
    query = (
        select(offline_devices.c.id, offline_devices.c.device_id, offline_devices.c.public_key,
               offline_devices.c.certificate_json, wallets.c.wallet_id,
               institutions.c.code.label("operator_code"),
               institutions.c.created_at.label("registered_at"))
        .join(wallets, wallets.c.id == offline_devices.c.wallet_id)
        .join(institutions, institutions.c.id == offline_devices.c.operator_id)
    )
    rows: dict[int, Any] = {}
    for column, values in ((offline_devices.c.device_id, sorted(device_ids)),
                           (offline_devices.c.public_key, sorted(public_keys_hex))):
        for start in range(0, len(values), 900):  # SQLite's bound-parameter limit
            for row in connection.execute(query.where(column.in_(values[start:start + 900]))):
                rows[row.id] = row
    return [_KnownDevice(row.id, row.device_id, row.public_key, row.certificate_json,
                         row.wallet_id, row.operator_code, row.registered_at)
            for _, row in sorted(rows.items())]


def _registered_at(connection: Connection, operator_ids: set[int]) -> dict[int, datetime]:
    if not operator_ids:
        return {}
    return {int(row.id): row.created_at for row in connection.execute(
        select(institutions.c.id, institutions.c.created_at)
        .where(institutions.c.id.in_(sorted(operator_ids))))}


def _account_ids(connection: Connection, codes: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(codes), 900):  # SQLite's bound-parameter limit
        found.update({row.code: int(row.id) for row in connection.execute(
            select(accounts.c.code, accounts.c.id)
            .where(accounts.c.code.in_(codes[start:start + 900])))})
    return found


def _provisioned(
    context: LedgerContext, existing: _KnownDevice, device_id: str, wallet_id: str,
    public_key_hex: str
) -> ProvisionedDevice:
    if (existing.device_id, existing.wallet_id, existing.public_key) == (
        device_id, wallet_id, public_key_hex
    ):
        authority = operator_authority(context, existing.operator_code, existing.registered_at)
        return ProvisionedDevice(json.loads(existing.certificate_json),
                                 authority.certificate.to_envelope(), root_public_key(context))
    if existing.device_id == device_id:
        raise AlreadyExists(f"device {device_id} exists for another wallet or key",
                            code="offline_device_exists")
    raise AlreadyExists(f"device {existing.device_id} holds this key",
                        code="offline_device_key_exists")


def load_device(
    context: LedgerContext, load_id: str, device_id: str, amount_fen: int
) -> dict[str, Any]:
    """Move ``amount_fen`` from the device's wallet into its escrow; return the operator-signed
    load receipt (the device's next ``load_counter``).

    Order: ``load_id`` and amount; the device exists (``offline_device_not_found``); a repeat of
    ``load_id`` returns the first receipt (another device or amount: ``offline_load_conflict``);
    the device is active (``offline_device_revoked``) and its certificate unexpired
    (``certificate_expired``); the wallet is active; the escrow stays within the device's
    balance cap (``offline_balance_cap_exceeded``); the wallet holds the amount
    (``insufficient_funds``)."""
    return only(load_devices(context, [DeviceLoad(load_id, device_id, amount_fen)]))


@dataclass(frozen=True, slots=True)
class DeviceLoad:
    """A wallet loads one of its devices."""

    load_id: str
    device_id: str
    amount_fen: int


@dataclass
class _LoadState:
    """A device's load counter and totals, and its wallet's balance, as a batch moves them."""

    device: DeviceRow
    load_counter: int
    loaded_fen: int


def load_devices(
    context: LedgerContext, loads: Sequence[DeviceLoad]
) -> list[dict[str, Any] | CbdcError]:
    """Many :func:`load_device` calls in one unit of work: each answer (an error in place of a
    refusal, which changes nothing) is what the call would have answered had the loads before
    it been made one by one. The entries are posted together; devices, then wallets, are
    locked in ascending id order first."""
    answers: list[dict[str, Any] | CbdcError | None] = [None] * len(loads)
    valid: list[int] = []
    for index, load in enumerate(loads):
        try:
            check_id("load_id", load.load_id)
            check_amount(load.amount_fen)
        except CbdcError as error:
            answers[index] = error
            continue
        valid.append(index)
    if valid:
        with context.write() as connection:
            _load_all(context, connection, loads, valid, answers)
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def _load_all(
    context: LedgerContext,
    connection: Connection,
    loads: Sequence[DeviceLoad],
    valid: list[int],
    answers: list[dict[str, Any] | CbdcError | None],
) -> None:
    now = context.now()
    devices = load_device_rows(connection, {loads[i].device_id for i in valid}, lock=True)
    recorded = _recorded_loads(connection, [loads[i].load_id for i in valid])
    found = load_wallets(connection, {device.wallet_id for device in devices.values()},
                         lock=True, require_all=False)
    balances = {wallet_id: wallet.balance_fen for wallet_id, wallet in found.items()}
    states = {device_id: _LoadState(device, device.load_counter, device.loaded_fen)
              for device_id, device in devices.items()}
    drafts: list[EntryDraft] = []
    rows: list[dict[str, Any]] = []
    for index in valid:
        load = loads[index]
        try:
            state = states.get(load.device_id)
            if state is None:
                raise device_not_found(load.device_id)
            first = recorded.get(load.load_id)
            if first is not None:
                if (first[0], first[1]) != (state.device.id, load.amount_fen):
                    raise Conflict(f"load {load.load_id} was for another device or amount",
                                   code="offline_load_conflict")
                answers[index] = dict(json.loads(first[2]))
                continue
            wallet = found[state.device.wallet_id]
            _check_load(state, wallet, balances[wallet.wallet_id], load, now)
        except CbdcError as error:
            answers[index] = error
            continue
        receipt = _accept_load(context, state, wallet, load, now, drafts, rows)
        balances[wallet.wallet_id] -= load.amount_fen
        recorded[load.load_id] = (state.device.id, load.amount_fen,
                                  json.dumps(receipt, sort_keys=True))
        answers[index] = receipt
    if not drafts:
        return
    posted = post_entries(connection, drafts, now=now)
    for row, entry in zip(rows, posted, strict=True):
        assert isinstance(entry, PostedEntry)
        row["entry_seq"] = entry.seq
    connection.execute(insert(offline_loads), rows)
    connection.execute(
        update(offline_devices).where(offline_devices.c.id == bindparam("device_row_id"))
        .values(load_counter=bindparam("load_counter"), loaded_fen=bindparam("loaded_fen")),
        [{"device_row_id": state.device.id, "load_counter": state.load_counter,
          "loaded_fen": state.loaded_fen}
         for state in states.values() if state.load_counter != state.device.load_counter],
    )


def _check_load(
    state: _LoadState, wallet: WalletRow, balance_fen: int, load: DeviceLoad, now: datetime
) -> None:
    device = state.device
    _check_usable(device, now)
    check_active(wallet)
    escrow_expected_fen = state.loaded_fen - device.settled_fen - device.unloaded_fen
    if escrow_expected_fen + load.amount_fen > device.caps.balance_fen_max:
        raise OfflineRefused(
            f"device {device.device_id} has {escrow_expected_fen} fen loaded and not yet "
            f"settled or unloaded; {load.amount_fen} fen more would exceed its offline cap of "
            f"{device.caps.balance_fen_max} fen (sync it first)",
            code="offline_balance_cap_exceeded",
        )
    if balance_fen < load.amount_fen:  # as post_entries would refuse it
        code = wallet_account_code(wallet.wallet_id)
        raise InsufficientFunds(f"account {code} holds {balance_fen} fen, {load.amount_fen} fen "
                                "requested", account=code, balance_fen=balance_fen,
                                shortfall_fen=load.amount_fen - balance_fen)


def _accept_load(
    context: LedgerContext,
    state: _LoadState,
    wallet: WalletRow,
    load: DeviceLoad,
    now: datetime,
    drafts: list[EntryDraft],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    device = state.device
    drafts.append(transfer(
        f"offline-load:{load.load_id}", "offline_load", debit_account_id=wallet.account_id,
        credit_account_id=device.escrow_account_id, amount_fen=load.amount_fen,
        metadata={"device": device.device_id, "wallet": wallet.wallet_id,
                  "load_id": load.load_id},
    ))
    authority = operator_authority(context, device.operator_code, device.operator_registered_at)
    state.load_counter += 1
    state.loaded_fen += load.amount_fen
    receipt = authority.sign_load_receipt(
        load_id=load.load_id, device_id=device.device_id, wallet=device.wallet_id,
        amount_fen=load.amount_fen, load_counter=state.load_counter, created_at=now,
    )
    rows.append({"load_id": load.load_id, "device_id": device.id,
                 "load_counter": state.load_counter, "amount_fen": load.amount_fen,
                 "receipt_json": json.dumps(receipt, sort_keys=True), "created_at": now})
    return receipt


def _device(connection: Connection, device_id: str) -> DeviceRow:
    return load_device_row(connection, device_id, lock=True)


def _recorded_loads(connection: Connection, load_ids: list[str]) -> dict[str, tuple[int, int, str]]:
    """The loads already recorded under these ids: device row id, amount, receipt JSON."""
    wanted = sorted(set(load_ids))
    found: dict[str, tuple[int, int, str]] = {}
    for start in range(0, len(wanted), 900):  # SQLite's bound-parameter limit
        for row in connection.execute(
            select(offline_loads.c.load_id, offline_loads.c.device_id,
                   offline_loads.c.amount_fen, offline_loads.c.receipt_json)
            .where(offline_loads.c.load_id.in_(wanted[start:start + 900]))
        ):
            found[row.load_id] = (int(row.device_id), int(row.amount_fen), row.receipt_json)
    return found


def _check_usable(device: DeviceRow, now: datetime) -> None:
    if device.status != "active":
        raise OfflineRefused(f"device {device.device_id} is revoked",
                             code="offline_device_revoked")
    if now >= device.not_after:
        raise CertificateRefused(f"device {device.device_id}'s certificate has expired",
                                 code="certificate_expired", serial=device.certificate_serial)


@dataclass(frozen=True, slots=True)
class UnloadResult:
    """An accepted unload: the statement's amount, what the escrow returned (less only when the
    escrow had been drained by fraud), what went on to the bank account (waterfall)."""

    device_id: str
    unload_counter: int
    amount_fen: int
    returned_fen: int
    swept_fen: int
    entry_seq: int | None
    replayed: bool = False


def unload_device(context: LedgerContext, statement_envelope: Any) -> UnloadResult:
    """Accept a device-signed unload statement and return its balance from escrow to wallet.

    Order: shape (section 2 codes); the device exists; its signature (``signature_invalid``);
    for this ledger (``offline_wrong_ledger``) and the device's wallet
    (``certificate_mismatch``); a statement already accepted returns the first result (another
    statement with its number: ``offline_unload_conflict``); the next ``unload_counter``
    (``offline_unload_out_of_order``); consistent with the ledger's loads and earlier unloads
    (``offline_unload_invalid``); the wallet active and within its balance cap (waterfall to
    the linked bank account where it has one, else ``balance_limit_exceeded``).

    The statement closes the counter range it covers: the device's payments are classified
    again at once and every payment outside it is named ``offline_after_unload``. A revoked
    device may still unload: what its escrow holds belongs to its wallet."""
    message, signature = open_envelope(UNLOAD, statement_envelope)
    with context.write() as connection:
        device = _device(connection, message["device"])
        signing.verify(bytes.fromhex(device.public_key), UNLOAD, message, signature)
        if message["ledger_id"] != context.ledger_id:
            raise OfflineRefused(f"statement is for ledger {message['ledger_id']}",
                                 code="offline_wrong_ledger")
        if message["wallet"] != device.wallet_id:
            raise CertificateRefused("statement names another wallet than the device's",
                                     code="certificate_mismatch")
        digest = message_hash(UNLOAD, message)
        first = _recorded_unload(connection, device, message["unload_counter"], digest)
        if first is not None:
            return first
        _check_statement(connection, device, message)
        return _unload(context, connection, device, message, signature, digest)


def _recorded_unload(
    connection: Connection, device: DeviceRow, unload_counter: int, digest: str
) -> UnloadResult | None:
    row = connection.execute(
        select(offline_unloads).where(offline_unloads.c.device_id == device.id,
                                      offline_unloads.c.unload_counter == unload_counter)
    ).first()
    if row is None:
        return None
    if row.statement_hash != digest:
        raise Conflict(f"unload {unload_counter} of {device.device_id} was another statement",
                       code="offline_unload_conflict")
    return UnloadResult(device.device_id, unload_counter, row.amount_fen, row.returned_fen,
                        row.swept_fen, row.entry_seq, replayed=True)


def _check_statement(connection: Connection, device: DeviceRow, message: dict[str, Any]) -> None:
    if message["unload_counter"] != device.unload_counter + 1:
        raise OfflineRefused(
            f"unload {message['unload_counter']} of {device.device_id}: the next is "
            f"{device.unload_counter + 1}",
            code="offline_unload_out_of_order",
        )
    loaded = connection.execute(
        select(offline_loads.c.amount_fen).where(
            offline_loads.c.device_id == device.id,
            offline_loads.c.load_counter <= message["load_counter"],
        )
    ).scalars().all()
    if (
        message["load_counter"] > device.load_counter
        or message["loaded_fen_total"] != sum(loaded)
        or message["counter"] < device.closed_counter
    ):
        raise OfflineRefused(
            f"unload statement of {device.device_id} does not match the ledger's loads "
            f"({device.load_counter} loads, {sum(loaded)} fen up to load "
            f"{message['load_counter']}) or closes less than an earlier unload",
            code="offline_unload_invalid",
        )


def _unload(
    context: LedgerContext,
    connection: Connection,
    device: DeviceRow,
    message: dict[str, Any],
    signature: bytes,
    digest: str,
) -> UnloadResult:
    now = context.now()
    run = SettlementRun(context, connection, {device.device_id: device}, now)
    run.load()
    run.lock_wallets(extra=[device.wallet_id])
    book = run.books[device.device_id]
    available = book.row.loaded_fen - book.settled_fen - book.unloaded_fen
    returned = max(0, min(message["amount_fen"], available))
    drafts: list[EntryDraft] = []
    swept = 0
    entry_id = f"offline-unload:{device.device_id}:{message['unload_counter']}"
    if returned:
        wallet = run.wallets[device.wallet_id]
        check_active(wallet)
        plan = run.plan_for(wallet, returned)
        swept = plan.swept_fen
        drafts.append(transfer(entry_id, "offline_unload",
                               debit_account_id=device.escrow_account_id,
                               credit_account_id=wallet.account_id, amount_fen=returned,
                               metadata={"device": device.device_id, "wallet": wallet.wallet_id}))
        if swept:
            drafts.append(transfer(f"{entry_id}:waterfall", "waterfall",
                                   debit_account_id=wallet.account_id,
                                   credit_account_id=wallet.operator_float_account_id,
                                   amount_fen=swept, metadata={"wallet": wallet.wallet_id}))
        run.credit(wallet.wallet_id, returned - swept)
        book.unloaded_fen += returned
    book.unloads.append(message)
    if returned < message["amount_fen"]:
        shortfall = message["amount_fen"] - returned
        run.open_case(book, "offline_overspend", (), (digest,), lambda _: shortfall,
                      f"unload {message['unload_counter']} asks {message['amount_fen']} fen; "
                      f"the escrow held {available} fen: paid beyond what was loaded")
        run.revoke(book, "offline_overspend")
    run.decide()
    posted = post_entries(connection, [*drafts, *run.drafts()], now=now)
    run.write(posted)
    seq = next((p.seq for p in posted if isinstance(p, PostedEntry) and p.entry_id == entry_id),
               None)
    connection.execute(insert(offline_unloads).values(
        device_id=device.id, unload_counter=message["unload_counter"], statement_hash=digest,
        statement_json=canonical_json(message).decode("ascii"), signature=signature.hex(),
        closed_counter=message["counter"], amount_fen=message["amount_fen"],
        returned_fen=returned, swept_fen=swept, entry_seq=seq, created_at=now,
    ))
    connection.execute(update(offline_devices).where(offline_devices.c.id == device.id).values(
        unload_counter=message["unload_counter"],
        closed_counter=max(device.closed_counter, message["counter"]),
        unloaded_fen=offline_devices.c.unloaded_fen + returned,
        last_sync_at=now,
    ))
    publish_pending_revocations(context, connection)
    return UnloadResult(device.device_id, message["unload_counter"], message["amount_fen"],
                        returned, swept, seq)


# --- revocation ---------------------------------------------------------------------------


def publish_pending_revocations(
    context: LedgerContext, connection: Connection, *, always: bool = False
) -> dict[str, Any] | None:
    """Publish a new root-signed list if some revocation is not on the latest one yet (or,
    with ``always``, if none was ever published); return the latest list."""
    revocations = load_revocations(connection)
    if not revocations.unpublished and (revocations.lists or not always):
        latest = revocations.lists.get(revocations.latest_number)
        return None if latest is None else dict(latest.envelope or {})
    number = revocations.latest_number + 1
    now = context.now()
    envelope = root_authority(context).publish_revocation_list(
        number=number, issued_at=now, revoked=revocations.current.revoked
    )
    connection.execute(insert(offline_revocation_lists).values(
        number=number, issued_at=now, envelope_json=json.dumps(envelope, sort_keys=True)
    ))
    connection.execute(
        update(offline_revocations).where(offline_revocations.c.list_number.is_(None))
        .values(list_number=number)
    )
    return envelope


def revocation_list(context: LedgerContext) -> dict[str, Any]:
    """The latest revocation list, signed by the central bank's root key; publishes a new one
    first if a device was revoked since (or list 1 if none was ever published)."""
    with context.write() as connection:
        envelope = publish_pending_revocations(context, connection, always=True)
    assert envelope is not None
    return envelope


# --- fraud cases --------------------------------------------------------------------------


def fraud_cases(context: LedgerContext, operator: str | None = None) -> list[FraudCaseView]:
    """Every fraud case, or those of one operator's devices, oldest first."""
    query = (
        select(offline_fraud_cases, offline_devices.c.device_id.label("device_text_id"),
               wallets.c.wallet_id.label("wallet_text_id"),
               institutions.c.code.label("operator_code"))
        .join(offline_devices, offline_devices.c.id == offline_fraud_cases.c.device_id)
        .join(wallets, wallets.c.id == offline_fraud_cases.c.wallet_id)
        .join(institutions, institutions.c.id == offline_fraud_cases.c.operator_id)
        .order_by(offline_fraud_cases.c.id)
    )
    if operator is not None:
        query = query.where(institutions.c.code == operator)
    with context.read() as connection:
        return [
            FraudCaseView(
                device_id=row.device_text_id, wallet_id=row.wallet_text_id,
                operator_code=row.operator_code, code=row.code,
                counters=tuple(json.loads(row.counters_json)),
                payment_hashes=tuple(json.loads(row.payment_hashes_json)),
                amount_fen=row.amount_fen, detail=row.detail,
                opened_at=as_utc(row.opened_at), updated_at=as_utc(row.updated_at),
            )
            for row in connection.execute(query)
        ]
