"""Offline batches answer each item exactly as one-by-one calls would.

Two ledgers start identical. Devices (people's cards, merchants' tills, clones of cards) are
provisioned, loaded, pay each other offline, unload and go online; every ledger call is made one
by one on the first ledger and as one batch on the second (``provision_devices``,
``load_devices``, ``upload_offline_batches``). A Hypothesis state machine draws the batches:
honest and repeated requests, conflicting ids and keys, unknown wallets and devices, loads past
the cap or the wallet's funds, uploads by either side in any order, duplicated, altered, from
clones, by an unknown device. Every answer (result or error code) must agree, and after every
step both ledgers must hold the same rows: accounts, the journal's head, every offline table.

Worked examples pin the two places where uploads of one batch meet although they name no common
device: a revocation list published by one upload and handed to the next, and a payee device
whose list number the previous upload's sync moved.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from cbdc.clock import ManualClock
from cbdc.domain.errors import CbdcError
from cbdc.domain.money import yuan
from cbdc.offline import DeviceCertificate, OperatorCertificate, SecureElement
from cbdc.services import offline
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext, open_ledger
from cbdc.storage.tables import (
    accounts,
    ledger_head,
    offline_devices,
    offline_fraud_cases,
    offline_loads,
    offline_operator_losses,
    offline_payments,
    offline_revocation_lists,
    offline_revocations,
    offline_settlements,
    offline_unloads,
)
from tests.conftest import ENGINES, START_OF_TESTS, fresh_database
from tests.offline_helpers import OfflineLedger, device_seed

PEOPLE = ("d0", "d1", "d2")
TILLS = ("t0", "t1")
DEVICES = PEOPLE + TILLS
WALLET_CLASSES = {"d0": 2, "d1": 4, "d2": 3, "t0": 2, "t1": 2}
CLONES_MAX = 2
TABLES = (accounts, ledger_head, offline_devices, offline_payments, offline_loads,
          offline_unloads, offline_settlements, offline_operator_losses, offline_fraud_cases,
          offline_revocations, offline_revocation_lists)


def answer(result: Any) -> Any:
    """What a caller learns: the result itself, or the refusal's code."""
    return ("refused", result.code) if isinstance(result, CbdcError) else result


def one_by_one(call: Callable[..., Any]) -> Any:
    try:
        return answer(call())
    except CbdcError as error:
        return answer(error)


def rows(ledger: LedgerContext) -> dict[str, list[tuple[Any, ...]]]:
    with ledger.read() as connection:
        return {table.name: [tuple(row) for row in connection.execute(
            select(table).order_by(*table.primary_key.columns))] for table in TABLES}


class TwinLedgers:
    """The same world on two ledgers: ``alone`` is called one by one, ``batched`` in batches."""

    def __init__(self, alone: LedgerContext, batched: LedgerContext) -> None:
        self.alone, self.batched = alone, batched
        self.worlds = [OfflineLedger(alone), OfflineLedger(batched)]
        for world in self.worlds:
            for name in DEVICES:
                world.wallet(f"w-{name}", wallet_class=WALLET_CLASSES[name],
                             funds_yuan=600 if name in PEOPLE else 0)
        root = offline.root_public_key(alone)
        self.elements = {name: SecureElement(seed=device_seed(name), ledger_id=alone.ledger_id,
                                             root_public_key=root) for name in DEVICES}

    def key(self, name: str) -> str:
        return self.elements[name].public_key.hex()

    def tick(self, minutes: int) -> None:
        for ledger in (self.alone, self.batched):
            ledger.clock.advance(timedelta(minutes=minutes))  # type: ignore[attr-defined]

    def provision(self, requests: list[offline.DeviceRequest]) -> list[Any]:
        alone = [one_by_one(lambda r=r: offline.provision_device(
            self.alone, r.device_id, r.wallet_id, r.device_public_key_hex)) for r in requests]
        batched = [answer(r) for r in offline.provision_devices(self.batched, requests)]
        assert batched == alone
        for request, result in zip(requests, alone, strict=True):
            element = self.elements.get(request.device_id)
            if (isinstance(result, offline.ProvisionedDevice) and element is not None
                    and element.certificate is None
                    and request.device_public_key_hex == element.public_key.hex()):
                element.install_certificate(
                    DeviceCertificate.from_envelope(result.certificate),
                    OperatorCertificate.from_envelope(result.operator_certificate),
                    self.alone.now())
        return alone

    def load(self, loads: list[offline.DeviceLoad]) -> list[Any]:
        alone = [one_by_one(lambda x=x: offline.load_device(
            self.alone, x.load_id, x.device_id, x.amount_fen)) for x in loads]
        batched = [answer(r) for r in offline.load_devices(self.batched, loads)]
        assert batched == alone
        for load, result in zip(loads, alone, strict=True):
            element = self.elements.get(load.device_id)
            if (isinstance(result, dict) and element is not None and element.certificate
                    and result["message"]["load_counter"] == element.state().load_counter + 1):
                element.apply_load(result)
        return alone

    def upload(self, uploads: list[tuple[SecureElement | None, offline.Upload]]) -> list[Any]:
        alone = [one_by_one(lambda u=u: offline.upload_offline_payments(
            self.alone, u.envelopes, uploaded_by_device_id=u.uploaded_by_device_id))
            for _, u in uploads]
        batched = [answer(r) for r in offline.upload_offline_batches(
            self.batched, [u for _, u in uploads])]
        assert batched == alone
        for (element, _), result in zip(uploads, alone, strict=True):
            if element is not None and isinstance(result, offline.UploadReport):
                try:
                    element.sync_done(result.sync_receipt)
                except CbdcError as refusal:  # a clone told of its twin's payments
                    assert refusal.code == "sync_receipt_invalid", refusal
                    continue
                if result.revocation_list is not None:
                    element.install_revocation_list(result.revocation_list)
        return alone

    def unload(self, name: str) -> Any:
        statement = self.elements[name].unload(self.alone.now())
        alone = one_by_one(lambda: offline.unload_device(self.alone, statement))
        assert one_by_one(lambda: offline.unload_device(self.batched, statement)) == alone
        return alone

    def same_rows(self) -> None:
        assert rows(self.batched) == rows(self.alone)


# --- the state machine ---------------------------------------------------------------------

request_strategy = st.tuples(st.sampled_from(DEVICES), st.integers(0, 9))
load_strategy = st.tuples(st.sampled_from(DEVICES), st.integers(0, yuan(250)),
                          st.integers(0, 9))
upload_strategy = st.tuples(st.integers(0, len(DEVICES) + CLONES_MAX - 1),
                            st.sampled_from(["all", "made", "received", "again"]),
                            st.booleans(),
                            st.integers(0, 9))


class TwinOfflineMachine(RuleBasedStateMachine):
    databases: Iterator[tuple[Iterator[str], Iterator[str]]]

    def __init__(self) -> None:
        super().__init__()
        self._databases = next(type(self).databases)
        alone, batched = (open_ledger(next(database), clock=ManualClock(START_OF_TESTS))
                          for database in self._databases)
        self.twins = TwinLedgers(alone, batched)
        self.clones: list[SecureElement] = []
        self.loads: list[offline.DeviceLoad] = []
        self.seen: list[dict[str, Any]] = []
        self.counter = itertools.count(1)

    def teardown(self) -> None:
        for ledger in (self.twins.alone, self.twins.batched):
            ledger.dispose()
        for database in self._databases:
            next(database, None)

    @initialize(noise=st.lists(request_strategy, max_size=4), at=st.integers(0, 5),
                amounts=st.lists(st.integers(1, yuan(200)), min_size=3, max_size=3))
    def provision_and_load(self, noise: list[tuple[str, int]], at: int,
                           amounts: list[int]) -> None:
        """Every device is certified (with some stray requests around) and each card loaded."""
        honest = [offline.DeviceRequest(name, f"w-{name}", self.twins.key(name))
                  for name in DEVICES]
        stray = [self._request(f"s{n}", roll) for n, (_, roll) in enumerate(noise)]
        self.twins.provision([*stray[:at], *honest, *stray[at:]])
        self.load([(name, amount, 0) for name, amount in zip(PEOPLE, amounts, strict=True)])

    @rule(requests=st.lists(request_strategy, min_size=1, max_size=6))
    def provision(self, requests: list[tuple[str, int]]) -> None:
        self.twins.provision([self._request(name, roll) for name, roll in requests])

    def _request(self, name: str, roll: int) -> offline.DeviceRequest:
        """Mostly a repeat of a device's own request; else another wallet or key, an unknown
        wallet, a malformed id; spare ids ``s<n>`` are new devices (of a person's wallet)."""
        known = name in DEVICES
        wallet = f"w-{name}" if known else f"w-{PEOPLE[int(name[1:]) % len(PEOPLE)]}"
        key = (self.twins.key(name) if known
               else SecureElement(seed=device_seed(name), ledger_id="x",
                                  root_public_key=bytes(32)).public_key.hex())
        if roll == 6:
            wallet = f"w-{PEOPLE[(PEOPLE.index(name) + 1) % 3] if name in PEOPLE else 'd0'}"
        elif roll == 7:
            key = self.twins.key(DEVICES[(DEVICES.index(name) + 1) % len(DEVICES)]
                                 if known else "d0")
        elif roll == 8:
            wallet = "w-nobody"
        elif roll == 9:
            name = f"{name} "  # not a device id
        return offline.DeviceRequest(name, wallet, key)

    @rule(loads=st.lists(load_strategy, min_size=1, max_size=6))
    def load(self, loads: list[tuple[str, int, int]]) -> None:
        batch = []
        for name, amount_fen, roll in loads:
            if roll == 8 and self.loads:
                earlier = self.loads[amount_fen % len(self.loads)]
                batch.append(earlier if amount_fen % 2 else
                             offline.DeviceLoad(earlier.load_id, name, amount_fen))
                continue
            load_id = "not an id!" if roll == 9 else f"load-{next(self.counter)}"
            device_id = "ghost" if roll == 7 else name
            batch.append(offline.DeviceLoad(load_id, device_id, amount_fen))
        self.loads += batch
        self.twins.load(batch)

    @rule(payments=st.lists(st.tuples(st.integers(0, len(PEOPLE) + CLONES_MAX - 1),
                                       st.sampled_from(DEVICES), st.integers(1, yuan(80))),
                             min_size=1, max_size=4))
    def pay(self, payments: list[tuple[int, str, int]]) -> None:
        """Offline, card to till or card to card; a refusing payee keeps nothing (the payer
        still uploads what it signed)."""
        elements = [self.twins.elements[name] for name in PEOPLE] + self.clones
        for payer, payee, amount_fen in payments:
            element, target = elements[payer % len(elements)], self.twins.elements[payee]
            try:
                envelope = element.pay(payee, f"w-{payee}", amount_fen, self.twins.alone.now())
            except CbdcError:
                continue
            self.seen.append(envelope)
            with contextlib.suppress(CbdcError):
                target.receive(envelope, self.twins.alone.now())

    pay_again = pay  # paying is most of what devices do: drawn twice as often

    @precondition(lambda self: len(self.clones) < CLONES_MAX)
    @rule(name=st.sampled_from(PEOPLE))
    def clone(self, name: str) -> None:
        if self.twins.elements[name].certificate is not None:
            self.clones.append(self.twins.elements[name].clone())

    @rule(uploads=st.lists(upload_strategy, min_size=1, max_size=6))
    def go_online(self, uploads: list[tuple[int, str, bool, int]]) -> None:
        elements = [self.twins.elements[name] for name in DEVICES] + self.clones
        batch: list[tuple[SecureElement | None, offline.Upload]] = []
        for which, what, duplicated, roll in uploads:
            element = elements[which % len(elements)]
            made = list(element.payments_made())
            received = [p.to_envelope() for p in element.payments_received()]
            # "again": every payment made with this device's key so far, also those a sync
            # receipt made the device forget (the ledger holds them: a re-upload changes nothing)
            again = [seen for seen in self.seen if element.certificate is not None
                     and seen["message"]["payer_device"] == element.device_id]
            held = {"all": made + received, "made": made, "received": received,
                    "again": again + received}[what]
            if duplicated:
                held = held + held[: len(held) // 2 + 1]
            if roll == 8 and self.seen:
                altered = self.seen[which % len(self.seen)]
                message = {**altered["message"], "amount_fen": altered["message"]["amount_fen"]
                           + 1}
                held = [*held, {**altered, "message": message}]
            if roll == 9 or element.certificate is None:
                batch.append((None, offline.Upload("ghost" if roll == 9 else "d0", held)))
                continue
            batch.append((element, offline.Upload(element.device_id, held)))
        self.twins.upload(batch)

    @rule(name=st.sampled_from(PEOPLE))
    def unload(self, name: str) -> None:
        if self.twins.elements[name].certificate is not None:
            self.twins.unload(name)

    @rule(minutes=st.integers(1, 600))
    def time_passes(self, minutes: int) -> None:
        self.twins.tick(minutes)

    @invariant()
    def both_ledgers_hold_the_same_rows(self) -> None:
        self.twins.same_rows()


assert settings.default is not None  # Optional to mypy, but a profile is always loaded
_SETTINGS = settings(
    settings.default,
    max_examples=min(settings.default.max_examples, 12),
    stateful_step_count=settings.default.stateful_step_count,
    deadline=None,
)


def _twin_databases(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Iterator[str], Iterator[str]]]:
    for number in itertools.count():
        folder = tmp_path / f"example-{number}"
        folder.mkdir()
        yield (fresh_database(engine, request, folder), fresh_database(engine, request, folder))


@pytest.mark.parametrize("engine", ENGINES)
def test_batches_answer_like_one_by_one(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    TwinOfflineMachine.databases = _twin_databases(engine, request, tmp_path)
    run_state_machine_as_test(TwinOfflineMachine, settings=_SETTINGS)


# --- worked examples -----------------------------------------------------------------------


@pytest.fixture(params=ENGINES)
def twins(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TwinLedgers]:
    databases = [fresh_database(request.param, request, tmp_path) for _ in range(2)]
    contexts = [open_ledger(next(database), clock=ManualClock(START_OF_TESTS))
                for database in databases]
    yield TwinLedgers(contexts[0], contexts[1])
    for context, database in zip(contexts, databases, strict=True):
        context.dispose()
        next(database, None)


def _provision_all(twins: TwinLedgers) -> dict[str, SecureElement]:
    results = twins.provision([offline.DeviceRequest(name, f"w-{name}", twins.key(name))
                               for name in DEVICES])
    assert all(isinstance(result, offline.ProvisionedDevice) for result in results)
    return twins.elements


def test_a_clone_caught_in_a_batch_of_tills_and_cards(twins: TwinLedgers) -> None:
    """Two tills upload a cloned card's two branches and a third device uploads in the same
    batch: the first till's upload is paid, the second reveals the double spend, revokes the
    card and publishes list 1, which the next upload of the batch is handed too."""
    elements = _provision_all(twins)
    loaded = twins.load([offline.DeviceLoad("load-d0", "d0", yuan(200)),
                         offline.DeviceLoad("load-d1", "d1", yuan(100))])
    assert [receipt["message"]["load_counter"] for receipt in loaded] == [1, 1]
    d0, d1, t0, t1 = (elements[name] for name in ("d0", "d1", "t0", "t1"))
    twin = d0.clone()
    now = twins.alone.now()
    t0.receive(d0.pay("t0", "w-t0", yuan(150), now), now)
    t1.receive(twin.pay("t1", "w-t1", yuan(150), now), now)
    d1.pay("t1", "w-t1", yuan(40), now)
    twins.tick(5)

    reports = twins.upload([
        (t0, offline.Upload("t0", [p.to_envelope() for p in t0.payments_received()])),
        (t1, offline.Upload("t1", [p.to_envelope() for p in t1.payments_received()])),
        (d1, offline.Upload("d1", list(d1.payments_made()))),
    ])

    first, second, third = reports
    assert [o.status for o in first.outcomes] == ["settled"]
    assert [o.status for o in second.outcomes] == ["operator_paid"]
    assert second.revoked == ("d0",) and first.revoked == third.revoked == ()
    assert first.revocation_list is None
    assert second.revocation_list is not None
    assert second.revocation_list["message"]["number"] == 1
    assert third.revocation_list == second.revocation_list
    assert [o.status for o in third.outcomes] == ["settled"]
    assert [(c.device_id, c.code) for c in offline.fraud_cases(twins.batched)] == [
        ("d0", "offline_double_spend")]
    twins.same_rows()
    assert run_audit(twins.batched).ok


def test_a_payee_told_of_a_revocation_by_an_earlier_upload_of_the_batch(
    twins: TwinLedgers,
) -> None:
    """The card d0 is revoked; till t0 has not synced since. d0, not knowing, pays t0. In one
    batch t0 goes online (and is handed the list naming d0), then d0 uploads its payment: t0
    knew of the revocation by then, so the payment is not paid, as one by one."""
    elements = _provision_all(twins)
    twins.load([offline.DeviceLoad("load-d0", "d0", yuan(200))])
    d0, d2, t0, t1 = (elements[name] for name in ("d0", "d2", "t0", "t1"))
    twin = d0.clone()
    now = twins.alone.now()
    t1.receive(d0.pay("t1", "w-t1", yuan(10), now), now)
    d2.receive(twin.pay("d2", "w-d2", yuan(20), now), now)  # the clone, same counter
    (caught,) = twins.upload([(t1, offline.Upload("t1", [
        *(p.to_envelope() for p in t1.payments_received()),
        *(p.to_envelope() for p in d2.payments_received())]))])
    assert caught.revoked == ("d0",)
    twins.tick(60)
    later = twins.alone.now()
    t0.receive(d0.pay("t0", "w-t0", yuan(30), later), later)  # t0 still holds no list

    till, card = twins.upload([
        (t0, offline.Upload("t0", [])),
        (d0, offline.Upload("d0", [d0.payments_made()[-1]])),
    ])

    assert isinstance(till, offline.UploadReport) and till.revocation_list is not None
    assert isinstance(card, offline.UploadReport)
    assert [(o.status, o.code) for o in card.outcomes] == [("unpaid", "certificate_revoked")]
    twins.same_rows()


def test_a_held_payment_is_verified_again_unless_its_signature_is_the_one_held(
    ledger: LedgerContext,
) -> None:
    """The ledger does not verify again a payment it holds with this very signature (the same
    signed bytes and signature it verified when storing it); the same message with any other
    signature is verified, refused and named forged."""
    world = OfflineLedger(ledger)
    world.wallet("w-card")
    world.wallet("w-till", funds_yuan=0)
    card, till = world.device("card", "w-card"), world.device("till", "w-till")
    world.load(card, yuan(100))
    paid = world.pay(card, till, yuan(30))
    other = world.pay(card, till, yuan(20))
    first = world.upload(card)
    assert [o.status for o in first.outcomes] == ["settled", "settled"]

    forged = {**paid, "signature": other["signature"]}
    again = offline.upload_offline_payments(ledger, [paid, forged],
                                            uploaded_by_device_id="till")

    assert [(o.status, o.code, o.duplicate) for o in again.outcomes] == [
        ("settled", None, True), ("refused", "signature_invalid", False)]
    assert [(c.device_id, c.code) for c in offline.fraud_cases(ledger)] == [
        ("card", "offline_forged")]
    assert world.balance("w-till") == yuan(50)
