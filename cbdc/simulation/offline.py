"""Offline payments in the simulation: people's cards and merchants' tills as secure elements.

The devices are the client side (:class:`~cbdc.offline.SecureElement`, keys derived from the
seed); the ledger side is an :class:`~cbdc.simulation.ports.OfflineLedgerPort` (provisioning,
loads, uploads, fraud cases: the services the API's offline routes call, in batches).

Some people carry an offline card (``card_holders_percent`` of them, chosen from the seed); the
offline payments are theirs, each at a merchant's till. An hour's offline slots are played when
the hour closes, one simulated microsecond apart (the ledger's clock never goes backwards), in
rounds: a slot whose card can pay pays the till, which verifies it offline; a slot whose holder
has no card yet, whose card is short or has made its payments-between-syncs, or whose merchant
has no till yet, waits while the devices concerned go online together: new cards and tills are
certified in one batch, the cards sync (one upload each, in one batch), wallets short of the
load are topped up, and the cards are loaded to their cap (``offline.load`` at most) in one
batch; then the waiting slots are played again, in their order. Each till goes online after a
delay drawn from the scenario (``sync_delay_hours``) and uploads all it received; the tills due
at an hour's close upload in one batch. At the end every device syncs. A payment counts as
settled, with its settlement delay, when an upload reports it ``settled`` or ``operator_paid``
(the latter is a fraud loss borne by the operator).

A cloned card (a cheat) is an extracted copy of a loaded card spending the same value at another
merchant; it must end in a fraud case against the card (which is revoked: its holder gets a new
card), else the injection ledger says ``accepted``.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import nacl.signing

from cbdc.domain.errors import CbdcError
from cbdc.offline import DeviceCertificate, OfflineCaps, OperatorCertificate, SecureElement
from cbdc.offline.messages import OFFLINE_PAYMENT, message_hash
from cbdc.services.offline import DeviceLoad, DeviceRequest, Upload, UploadReport
from cbdc.simulation.ports import OfflineLedgerPort, TopUp

if TYPE_CHECKING:
    from cbdc.simulation.driver import Driver

#: Offline events at an hour's close are this far apart in simulated time.
TICK = timedelta(microseconds=1)
#: Upload outcomes that pay the payee.
SETTLED = ("settled", "operator_paid")
#: Envelopes in one batch of uploads (as many as the API takes in one upload).
UPLOAD_ENVELOPES_MAX = 1_000
#: Rounds of an hour's close after which a slot still waiting is refused (a card that cannot
#: be made to pay: its loads refused, say), so an hour always ends.
ROUNDS_MAX = 8


@dataclass(frozen=True, slots=True)
class _Paid:
    kind: str
    at: datetime
    payer: int
    payee: int
    amount_fen: int


@dataclass(slots=True)
class _Slot:
    """One offline slot of the hour, drawn once; ``second``: a clone's other merchant."""

    kind: str
    payer: int
    merchant: int
    amount_fen: int
    second: int | None = None
    waiting_for: str | None = None


@dataclass(slots=True)
class _Online:
    """What goes online before the next round: holders and merchants, in the order first
    needed, and the refusals met on the way (by person)."""

    people: dict[int, None] = field(default_factory=dict)
    merchants: dict[int, None] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)


class OfflineDesk:
    def __init__(self, driver: Driver, port: OfflineLedgerPort) -> None:
        self.driver = driver
        self.port = port
        self.intents: list[str] = []
        self.holders: list[int] | None = None
        self.cards: dict[int, SecureElement] = {}
        self.generation: dict[int, int] = {}
        self.tills: dict[int, SecureElement] = {}
        self.due: list[tuple[datetime, str]] = []
        self.scheduled: set[str] = set()
        self.devices: dict[str, SecureElement] = {}
        self.owner: dict[str, int] = {}
        self.paid: dict[str, _Paid] = {}
        self.clones: list[str] = []
        self.now = driver.start

    # -- what the driver calls ----------------------------------------------------------------

    def intend(self, kind: str) -> None:
        self.intents.append(kind)

    def close_hour(self, end: datetime) -> None:
        """Play the hour's offline slots in rounds; between two rounds the devices concerned go
        online, and the tills whose sync is due with the first of them (one session of the
        port: in-process, one unit of work)."""
        self.now = max(self.now, end)
        intents, self.intents = self.intents, []
        with self.port.offline_session():
            self._rounds([self._draw(kind) for kind in intents])

    def _rounds(self, waiting: list[_Slot]) -> None:
        for round_number in range(ROUNDS_MAX):
            online = _Online()
            waiting = [slot for slot in waiting if not self._play(slot, online)]
            tills = self._due_tills() if round_number == 0 else []
            if not waiting and not tills:
                return
            self._go_online(online, tills)
            waiting = [slot for slot in waiting if not self._refused(slot, online)]
            if not waiting:
                return
        for slot in waiting:
            self._refuse(slot, slot.waiting_for or "offline_payments_exhausted")

    def _due_tills(self) -> list[SecureElement]:
        due: dict[str, None] = {}
        while self.due and self.due[0][0] <= self.now:
            _, device_id = heapq.heappop(self.due)
            self.scheduled.discard(device_id)
            due[device_id] = None
        return [self.devices[device_id] for device_id in due]

    def finish(self, end: datetime) -> None:
        """Every device syncs (cards, then tills, twice: what waited on a card's earlier
        payment is payable then); then each clone is checked against the fraud cases."""
        self.close_hour(end)
        with self.port.offline_session():
            for _ in range(2):
                self._upload([*self.cards.values(), *self.tills.values()])
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

    def _draw(self, kind: str) -> _Slot:
        driver = self.driver
        holders = self._holders()
        payer = holders[driver.rng.randrange(len(holders))]
        merchant = driver._merchant_near(payer)
        if kind == "cloned_card":
            second = driver._merchant_near(payer)
            if second == merchant:
                people = driver.population.people
                second = people + (merchant - people + 1) % driver.scenario.merchant_count
            return _Slot(kind, payer, merchant, 1, second)
        driver.metrics.attempts_by_kind["offline"] += 1
        return _Slot(kind, payer, merchant, driver.amounts.draw(driver.rng))

    def _holders(self) -> list[int]:
        """The people who carry a card, chosen once from the seed."""
        if self.holders is None:
            people = self.driver.population.people
            count = max(1, people * self.driver.scenario.card_holders_percent // 100)
            pick = random.Random(f"cbdc simulation card holders:{self.driver.seed}")
            self.holders = sorted(pick.sample(range(people), count))
        return self.holders

    def _play(self, slot: _Slot, online: _Online) -> bool:
        """Pay now if the devices can; else mark what must go online first. True when done."""
        card = self.cards.get(slot.payer)
        merchants = [slot.merchant] if slot.second is None else [slot.merchant, slot.second]
        missing = [merchant for merchant in merchants if merchant not in self.tills]
        for merchant in missing:
            online.merchants[merchant] = None
        reason = ("offline_device_uncertified" if card is None or slot.payer in online.people
                  else _cannot_pay(card, slot.amount_fen))
        if reason is not None:
            slot.waiting_for = reason
            online.people[slot.payer] = None
            return False
        if missing:
            slot.waiting_for = "offline_device_uncertified"
            return False
        assert card is not None
        if slot.kind == "cloned_card":
            self._clone(slot, card)
        else:
            self._pay(slot, card)
        return True

    def _pay(self, slot: _Slot, card: SecureElement) -> None:
        driver = self.driver
        try:
            self._spend(card, slot.payer, slot.merchant,
                        min(slot.amount_fen, _caps(card).payment_fen_max))
        except CbdcError as error:
            driver.metrics.rejected(driver.hour, error.code)

    def _clone(self, slot: _Slot, card: SecureElement) -> None:
        """An attacker extracts a loaded card and spends its value a second time elsewhere."""
        driver = self.driver
        assert slot.second is not None
        amount = min(card.state().balance_fen, _caps(card).payment_fen_max)
        device_id = _device_id(card)
        twin = card.clone()
        try:
            self._spend(card, slot.payer, slot.merchant, amount, "cloned_card")
            self._spend(twin, slot.payer, slot.second, amount, "cloned_card")
        except CbdcError as error:  # a till that already knows the card is revoked
            driver.metrics.cheat_rejections[error.code] += 1
            driver.metrics.injections.record("cloned_card", device_id, "refused", error.code)
            return
        self.clones.append(device_id)
        driver.metrics.attempts_by_kind["cloned_card"] += 2  # the card's payment and its twin's

    def _refused(self, slot: _Slot, online: _Online) -> bool:
        """A slot whose holder's card could not be made ready is refused with the reason."""
        code = online.refused.get(slot.payer)
        if code is None:
            return False
        self._refuse(slot, code)
        return True

    def _refuse(self, slot: _Slot, code: str) -> None:
        driver = self.driver
        if slot.kind == "cloned_card":
            driver.metrics.cheat_rejections[code] += 1
            driver.metrics.injections.record("cloned_card", f"card-of-{slot.payer}", "refused",
                                             code)
        else:
            driver.metrics.rejected(driver.hour, code)

    def _spend(self, card: SecureElement, payer: int, merchant: int, amount_fen: int,
               kind: str = "offline") -> None:
        """The card (or a clone's twin) pays the merchant's till; the card keeps the payment
        to upload when it next syncs."""
        population = self.driver.population
        till = self.tills[merchant]
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

    # -- devices online -------------------------------------------------------------------------

    def _go_online(self, online: _Online, tills: list[SecureElement]) -> None:
        """New cards and tills certified; the holders' cards synced and the due ``tills``
        uploaded; wallets topped up where short, the cards loaded: one batch each."""
        self._provision(online)
        people = [person for person in online.people if person not in online.refused]
        self._upload([*(self.cards[person] for person in people if person in self.cards),
                      *tills], online)
        self._load([person for person in people
                    if person in self.cards and person not in online.refused], online)

    def _provision(self, online: _Online) -> None:
        population = self.driver.population
        wanted: list[tuple[str, int, bool]] = []
        for person in online.people:
            if person not in self.cards:
                generation = self.generation.get(person, 0) + 1
                self.generation[person] = generation
                wanted.append((f"card-{population.wallet_id(person)}-{generation}", person,
                               True))
        wanted += [(f"till-{population.wallet_id(merchant)}", merchant, False)
                   for merchant in online.merchants if merchant not in self.tills]
        if not wanted:
            return
        seeds = {device_id: self._seed(device_id) for device_id, _, _ in wanted}
        self._tick()
        answers = self.port.provision_devices([
            DeviceRequest(device_id, population.wallet_id(owner), _public_key(seeds[device_id]))
            for device_id, owner, _ in wanted])
        for (device_id, owner, is_card), answer in zip(wanted, answers, strict=True):
            if isinstance(answer, CbdcError):
                if is_card:
                    online.refused[owner] = answer.code
                continue
            element = SecureElement(seed=seeds[device_id], ledger_id=self.driver.port.ledger_id,
                                    root_public_key=answer.root_public_key)
            element.install_certificate(
                DeviceCertificate.from_envelope(answer.certificate),
                OperatorCertificate.from_envelope(answer.operator_certificate), self.now)
            self.devices[device_id] = element
            self.owner[device_id] = owner
            (self.cards if is_card else self.tills)[owner] = element

    def _seed(self, device_id: str) -> bytes:
        return hashlib.sha256(
            f"cbdc simulation device:{self.driver.seed}:{device_id}".encode()).digest()

    def _load(self, people: list[int], online: _Online) -> None:
        """Top up the wallets short of their card's load (one driver batch), then load every
        card to its cap, ``offline.load`` at most (one batch)."""
        driver = self.driver
        population = driver.population
        wanted = []
        for person in people:
            card = self.cards[person]
            amount = min(driver.scenario.offline_load_fen,
                         _caps(card).balance_fen_max - card.state().balance_fen)
            if amount > 0:
                wanted.append((person, card, amount))
        if not wanted:
            return
        short = [(person, amount) for person, _, amount in wanted
                 if population.balance_fen[person] < amount]
        if short:
            driver._flush()
            self._tick()
            for person, amount in short:
                top_up = driver.scenario.top_up_to(population.wallet_class[person]) + amount
                driver._add(self.now, TopUp(f"sim:top-up:{driver._next_id()}",
                                            population.wallet_id(person), top_up),
                            driver._on_top_up(person, top_up))
            driver._flush()
        self._tick()
        receipts = self.port.load_devices([
            DeviceLoad(f"sim:load:{driver._next_id()}", _device_id(card), amount)
            for _, card, amount in wanted])
        for (person, card, amount), receipt in zip(wanted, receipts, strict=True):
            if isinstance(receipt, CbdcError):
                online.refused[person] = receipt.code
                continue
            card.apply_load(receipt)
            population.balance_fen[person] -= amount
            driver.metrics.offline_loaded.add(amount)

    def _upload(self, elements: list[SecureElement], online: _Online | None = None) -> None:
        """The devices go online together: each uploads what it holds for the ledger (a card
        its payments since its last sync, a till what it received and is still pending).
        Their uploads go in batches of about :data:`UPLOAD_ENVELOPES_MAX` envelopes, at one
        moment: a batch answers as one-by-one uploads would, so the ledger ends the same as
        with one batch, and only one batch's envelopes are in memory at a time. A device
        holding more than one upload takes (the API's limit) uploads them in turn."""
        batch: list[tuple[SecureElement, Upload]] = []
        held = 0
        ticked = False
        for element in elements:
            envelopes = [*element.payments_made(),
                         *(payment.to_envelope() for payment in element.pending_received())]
            for start in range(0, len(envelopes), UPLOAD_ENVELOPES_MAX):
                chunk = envelopes[start:start + UPLOAD_ENVELOPES_MAX]
                batch.append((element, Upload(_device_id(element), chunk)))
                held += len(chunk)
                if held >= UPLOAD_ENVELOPES_MAX:
                    ticked = self._upload_batch(batch, online, ticked)
                    batch, held = [], 0
        if batch:
            self._upload_batch(batch, online, ticked)

    def _upload_batch(self, uploads: list[tuple[SecureElement, Upload]],
                      online: _Online | None, ticked: bool) -> bool:
        if not ticked:
            self._tick()
        reports = self.port.upload_offline([upload for _, upload in uploads])
        for (element, _), report in zip(uploads, reports, strict=True):
            if isinstance(report, CbdcError):
                owner = self.owner[_device_id(element)]
                if online is not None and owner in online.people:
                    online.refused[owner] = report.code
                continue
            self._synced(element, report)
        return True

    def _synced(self, element: SecureElement, report: UploadReport) -> None:
        element.sync_done(report.sync_receipt)  # the device forgets what the ledger holds
        if report.revocation_list is not None:
            element.install_revocation_list(report.revocation_list)
        for outcome in report.outcomes:
            if outcome.status in SETTLED and outcome.payment_hash in self.paid:
                self._settled(self.paid.pop(outcome.payment_hash), outcome.status)
        for device_id in report.revoked:
            person = self.owner.get(device_id, -1)
            card = self.cards.get(person)
            if card is not None and _device_id(card) == device_id:
                del self.cards[person]  # its holder gets a new card when next paying offline

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


def _cannot_pay(card: SecureElement, amount_fen: int) -> str | None:
    """Why the card cannot make this payment now (the device's own refusal code), if it
    cannot."""
    state = card.state()
    caps = _caps(card)
    if state.payments_since_sync >= caps.payments_max:
        return "offline_payments_exhausted"
    if state.balance_fen < max(1, min(amount_fen, caps.payment_fen_max)):
        return "offline_balance_insufficient"
    return None


def _caps(element: SecureElement) -> OfflineCaps:
    certificate = element.certificate
    assert certificate is not None, "a provisioned device has caps"
    return certificate.caps


def _device_id(element: SecureElement) -> str:
    return element.device_id  # the device's certificate names it


def _public_key(seed: bytes) -> str:
    return bytes(nacl.signing.SigningKey(seed).verify_key).hex()
