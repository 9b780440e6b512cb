"""Offline payments in the simulation: people's cards and merchants' tills as secure elements.

The devices are the client side (:class:`~cbdc.offline.SecureElement`, keys derived from the
seed); the ledger side is an :class:`~cbdc.simulation.ports.OfflineLedgerPort` (provisioning,
loads, uploads, fraud cases: the services the API's offline routes call).

An hour's offline slots are played when the hour closes, one simulated microsecond apart (the
ledger's clock never goes backwards): the payer's card, provisioned on first use and loaded from
its wallet when short (after uploading what it spent, so the escrow holds only its balance), pays
the merchant's till, which verifies it offline. Each till goes online after a delay drawn from
the scenario (``sync_delay_hours``) and uploads what it received (an hour's offline work is one
session of the port: in-process, one unit of work); a card uploads its own payments
when it must (before a load, or when its payments-between-syncs cap is reached). At the end every
device syncs. A payment counts as settled, with its settlement delay, when an upload reports it
``settled`` or ``operator_paid`` (the latter is a fraud loss borne by the operator).

A cloned card (a cheat) is an extracted copy of a loaded card spending the same value at another
merchant; it must end in a fraud case against the card, else the injection ledger says
``accepted``.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import nacl.signing

from cbdc.domain.errors import CbdcError
from cbdc.offline import DeviceCertificate, OperatorCertificate, SecureElement
from cbdc.offline.messages import OFFLINE_PAYMENT, message_hash
from cbdc.simulation.ports import OfflineLedgerPort, TopUp

if TYPE_CHECKING:
    from cbdc.simulation.driver import Driver

#: Offline events at an hour's close are this far apart in simulated time.
TICK = timedelta(microseconds=1)
#: Upload outcomes that pay the payee.
SETTLED = ("settled", "operator_paid")


@dataclass(frozen=True, slots=True)
class _Paid:
    kind: str
    at: datetime
    payer: int
    payee: int
    amount_fen: int


class OfflineDesk:
    def __init__(self, driver: Driver, port: OfflineLedgerPort) -> None:
        self.driver = driver
        self.port = port
        self.intents: list[str] = []
        self.cards: dict[int, SecureElement] = {}
        self.generation: dict[int, int] = {}
        self.tills: dict[int, SecureElement] = {}
        self.due: list[tuple[datetime, str]] = []
        self.scheduled: set[str] = set()
        self.devices: dict[str, SecureElement] = {}
        self.paid: dict[str, _Paid] = {}
        self.clones: list[str] = []
        self.now = driver.start

    # -- what the driver calls ----------------------------------------------------------------

    def intend(self, kind: str) -> None:
        self.intents.append(kind)

    def close_hour(self, end: datetime) -> None:
        """Play the hour's offline slots, then upload the tills whose sync is due."""
        self.now = max(self.now, end)
        intents, self.intents = self.intents, []
        with self.port.offline_session():
            for kind in intents:
                if kind == "cloned_card":
                    self._clone()
                else:
                    self._pay()
            while self.due and self.due[0][0] <= self.now:
                _, device_id = heapq.heappop(self.due)
                self.scheduled.discard(device_id)
                self._upload(self.devices[device_id])

    def finish(self, end: datetime) -> None:
        """Every device syncs (cards first, then tills, twice: what waited on a card's earlier
        payment is payable then); then each clone is checked against the fraud cases."""
        self.close_hour(end)
        with self.port.offline_session():
            for _ in range(2):
                for card in list(self.cards.values()):
                    self._sync_card(card)
                for till in self.tills.values():
                    self._upload(till)
        cases = self.port.fraud_devices()
        metrics = self.driver.metrics
        metrics.fraud_cases = sum(cases.values())
        for device_id in self.clones:
            outcome = "detected" if device_id in cases else "accepted"
            metrics.injections.record("cloned_card", device_id, outcome,
                                      "offline_double_spend" if device_id in cases else None)
        if self.paid:
            metrics.note(f"{len(self.paid)} offline payment(s) were still unsettled at the end "
                         "(refused by the ledger when uploaded)")

    # -- slots ----------------------------------------------------------------------------------

    def _pay(self) -> None:
        driver = self.driver
        payer = driver._payer()
        merchant = driver._merchant_near(payer)
        amount = driver.amounts.draw(driver.rng)
        driver.metrics.attempts_by_kind["offline"] += 1
        try:
            card = self._funded_card(payer, amount)
            self._spend(card, payer, merchant, min(amount, _caps(card).payment_fen_max))
        except CbdcError as error:
            driver.metrics.rejected(driver.hour, error.code)
            return
        if _caps(card).payments_max <= card.state().payments_since_sync:
            self._sync_card(card)

    def _clone(self) -> None:
        """An attacker extracts a loaded card and spends its value a second time elsewhere."""
        driver = self.driver
        payer = driver._payer()
        first, second = driver._merchant_near(payer), driver._merchant_near(payer)
        if first == second:
            second = driver.population.people + (
                (first - driver.population.people + 1) % driver.scenario.merchant_count)
        try:
            card = self._funded_card(payer, 1)
        except CbdcError as error:
            driver.metrics.cheat_rejections[error.code] += 1
            driver.metrics.injections.record("cloned_card", f"card-of-{payer}", "refused",
                                             error.code)
            return
        amount = min(card.state().balance_fen, _caps(card).payment_fen_max)
        device_id = _device_id(card)
        twin = card.clone()
        try:
            self._spend(card, payer, first, amount, "cloned_card")
            self._spend(twin, payer, second, amount, "cloned_card")
        except CbdcError as error:  # a till that already knows the card is revoked
            driver.metrics.cheat_rejections[error.code] += 1
            driver.metrics.injections.record("cloned_card", device_id, "refused", error.code)
            return
        self.clones.append(device_id)
        driver.metrics.attempts_by_kind["cloned_card"] += 2  # the card's payment and its twin's

    def _spend(self, card: SecureElement, payer: int, merchant: int, amount_fen: int,
               kind: str = "offline") -> None:
        population = self.driver.population
        till = self._till(merchant)
        self._tick()
        envelope = card.pay(_device_id(till), population.wallet_id(merchant), amount_fen,
                            self.now)
        self.paid[message_hash(OFFLINE_PAYMENT, envelope["message"])] = _Paid(
            kind, self.now, payer, merchant, amount_fen)
        till.receive(envelope, self.now)  # a refusal here leaves it to the card's own upload
        if _device_id(till) not in self.scheduled:
            low, high = self.driver.scenario.sync_delay_hours
            delay = timedelta(seconds=self.driver.rng.randint(low * 3600, high * 3600))
            heapq.heappush(self.due, (self.now + delay, _device_id(till)))
            self.scheduled.add(_device_id(till))

    # -- devices ----------------------------------------------------------------------------

    def _funded_card(self, person: int, amount_fen: int) -> SecureElement:
        card = self.cards.get(person) or self._provision_card(person)
        if card.state().balance_fen < min(amount_fen, _caps(card).payment_fen_max):
            self._load(person, card)
        return card

    def _provision_card(self, person: int) -> SecureElement:
        generation = self.generation.get(person, 0) + 1
        self.generation[person] = generation
        card = self._provision(f"card-{self.driver.population.wallet_id(person)}-{generation}",
                               person)
        self.cards[person] = card
        return card

    def _till(self, merchant: int) -> SecureElement:
        till = self.tills.get(merchant)
        if till is None:
            till = self._provision(f"till-{self.driver.population.wallet_id(merchant)}",
                                   merchant)
            self.tills[merchant] = till
        return till

    def _provision(self, device_id: str, owner: int) -> SecureElement:
        driver = self.driver
        seed = hashlib.sha256(f"cbdc simulation device:{driver.seed}:{device_id}".encode())
        self._tick()
        issued = self.port.provision_device(device_id, driver.population.wallet_id(owner),
                                            _public_key(seed.digest()))
        element = SecureElement(seed=seed.digest(), ledger_id=driver.port.ledger_id,
                                root_public_key=issued.root_public_key)
        element.install_certificate(DeviceCertificate.from_envelope(issued.certificate),
                                    OperatorCertificate.from_envelope(issued.operator_certificate),
                                    self.now)
        self.devices[device_id] = element
        return element

    def _load(self, person: int, card: SecureElement) -> None:
        """Sync what the card spent, top the wallet up if short, load the card to its cap."""
        driver = self.driver
        self._sync_card(card)
        state = card.state()
        amount = min(driver.scenario.offline_load_fen, _caps(card).balance_fen_max
                     - state.balance_fen)
        if amount <= 0:
            return
        if driver.population.balance_fen[person] < amount:
            driver._flush()
            self._tick()
            top_up = driver.scenario.top_up_to(driver.population.wallet_class[person]) + amount
            driver._add(self.now, TopUp(f"sim:top-up:{driver._next_id()}",
                                        driver.population.wallet_id(person), top_up),
                        driver._on_top_up(person, top_up))
            driver._flush()
        self._tick()
        receipt = self.port.load_device(f"sim:load:{driver._next_id()}", _device_id(card),
                                        amount)
        card.apply_load(receipt)
        driver.population.balance_fen[person] -= amount
        driver.metrics.offline_loaded.add(amount)

    def _sync_card(self, card: SecureElement) -> None:
        synced = card.state().synced_counter
        unsynced = [envelope for envelope in card.payments_made()
                    if envelope["message"]["counter"] > synced]
        if unsynced:
            self._upload(card, unsynced)

    def _upload(self, element: SecureElement, envelopes: list[Any] | None = None) -> None:
        if envelopes is None:
            envelopes = [payment.to_envelope() for payment in element.pending_received()]
            if not envelopes:
                return
        self._tick()
        report = self.port.upload_offline(envelopes, _device_id(element))
        element.sync_done(report.sync_receipt)
        if report.revocation_list is not None:
            element.install_revocation_list(report.revocation_list)
        for outcome in report.outcomes:
            if outcome.status in SETTLED and outcome.payment_hash in self.paid:
                self._settled(self.paid.pop(outcome.payment_hash), outcome.status)
        for device_id in report.revoked:
            for person, card in list(self.cards.items()):
                if _device_id(card) == device_id:
                    del self.cards[person]

    def _settled(self, paid: _Paid, status: str) -> None:
        driver = self.driver
        population, metrics = driver.population, driver.metrics
        population.balance_fen[paid.payee] += paid.amount_fen
        metrics.settled(driver.hour, paid.kind, population.wallet_class[paid.payer],
                        population.zone_code(paid.payer), paid.amount_fen)
        metrics.offline_delay(int((self.now - paid.at).total_seconds()))
        if status == "operator_paid":
            metrics.fraud_losses_fen += paid.amount_fen

    def _tick(self) -> None:
        self.now += TICK
        self.driver.port.set_time(self.now)


def _caps(element: SecureElement) -> Any:
    caps = element.state().caps
    assert caps is not None, "a provisioned device has caps"
    return caps


def _device_id(element: SecureElement) -> str:
    device_id = element.state().device_id
    assert device_id is not None, "a provisioned device has an id"
    return device_id


def _public_key(seed: bytes) -> str:
    return bytes(nacl.signing.SigningKey(seed).verify_key).hex()
