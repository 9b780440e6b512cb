"""The driver: runs a scenario against a ledger port, deterministically, and measures it.

Phases, in simulated time (the scenario's local zone):

1. the evening before day one: the central bank's issuance run (operators, quotas, reserves,
   one issuance order per operator and zone, through :mod:`cbdc.services.issuance_run`);
2. the same evening: every wallet and merchant opened with its key enrolled, people topped up;
3. each simulated hour: its share of the traffic (the scenario's hourly rhythm), drawn slot by slot
   from an urn holding exactly the scenario's count of each payment kind and each cheat, sent in
   batches; supply and holdings sampled at the end of the hour; at the end of each day merchants
   sweep their takings to the bank.

Everything random comes from one ``random.Random(seed)``; every wallet key is derived from the
seed; the ledger's clock is set to each command's simulated moment. So the same scenario and seed
give the same commands, the same signatures, the same journal and the same final state hash.

Honest wallets behave like apps: they know their balance from their receipts and top up from the
bank before paying more than they hold. Cheats are recorded in the run's injection ledger with
what the ledger answered.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Any

from cbdc.client import (
    build_capture,
    build_payment,
    build_payment_code,
    build_payment_for_request,
    build_payment_request,
    build_refund,
)
from cbdc.domain.messages import PAYMENT
from cbdc.domain.signing import signed_bytes
from cbdc.domain.tiers import DEFAULT_CLASSES
from cbdc.services.issuance_run import Order, Plan, PlannedOperator, RunReport
from cbdc.simulation.amounts import AmountDistribution, apportion, part_of
from cbdc.simulation.metrics import Metrics
from cbdc.simulation.offline import OfflineDesk
from cbdc.simulation.population import Population
from cbdc.simulation.ports import (
    Capture,
    Command,
    LedgerPort,
    OfflineLedgerPort,
    Outcome,
    Pay,
    PresentRequest,
    Refund,
    Timed,
    TopUp,
    Verdicts,
    Withdraw,
)
from cbdc.simulation.scenario import PAYMENT_KINDS, Scenario
from cbdc.simulation.sealing import LaterSeals
from cbdc.simulation.stopwatch import LedgerStopwatch

CHEATS = ("replay", "over_cap", "forged_signature", "cloned_card")
REPLAY_MEMORY = 256
REFUNDABLE_MEMORY = 4_096
Progress = Callable[[str, int, int], None]


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    metrics: Metrics
    issuance: RunReport
    verdicts: Verdicts
    invariants: dict[str, bool]
    final_state_hash: str
    wall_seconds: float
    offline_run: bool

    @property
    def ok(self) -> bool:
        return all(self.invariants.values())


@dataclass
class _Pending:
    """What the driver does with a command's outcome once the batch is answered."""

    on_outcome: Callable[[Outcome], None]


@dataclass
class _Batch:
    commands: list[Timed] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)

    @property
    def opened_at(self) -> datetime:
        return self.commands[0].at

    def add(self, at: datetime, command: Command, on_outcome: Callable[[Outcome], None]) -> None:
        self.commands.append(Timed(at, command))
        self.pending.append(_Pending(on_outcome))

    def __len__(self) -> int:
        return len(self.commands)


class Driver:
    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        port: LedgerPort,
        *,
        progress: Progress | None = None,
        offline_available: bool = False,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.port = LedgerStopwatch(port)  # the ledger's share of each phase (metrics)
        self.rng = random.Random(seed)
        self.progress = progress or (lambda _phase, _done, _total: None)
        self.metrics = Metrics(hours=scenario.hours)
        self.amounts = AmountDistribution(scenario.amount_buckets)
        zone = scenario.zone_info
        self.start = datetime.combine(scenario.start_date, clock_time(0), tzinfo=zone)
        self.offline: OfflineDesk | None = None
        if offline_available and isinstance(port, OfflineLedgerPort):
            self.offline = OfflineDesk(self, self.port)
        self.offline_available = self.offline is not None
        self.population = Population(scenario, self.rng, seed)
        self.seals = LaterSeals()  # the wallets sign on the worker process, meanwhile
        self.sealers = [self.seals.key(key) for key in self.population.keys]
        self.batch = _Batch()
        self.recent_replayable: deque[tuple[str, Any]] = deque(maxlen=REPLAY_MEMORY)
        self.refundable: deque[tuple[str, int, int, int]] = deque(maxlen=REFUNDABLE_MEMORY)
        self.counter = 0
        self.hour = 0

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> RunResult:
        started = time.perf_counter()
        self.port.ensure_empty()
        if not self.offline_available:
            self.metrics.note("offline payments (and cloned-card cheats) were not run in this "
                              "simulation; their slots are counted as not run")
        issuance = self._timed("issuance", self._issue)
        self._timed("wallets", self._open_wallets)
        self._timed("payments", self._payments)
        verdicts = self._timed("verdicts", self.port.verdicts)
        state_hash = self._timed("final_state_hash", self.port.final_state_hash)
        invariants = self._invariants(issuance, verdicts)
        return RunResult(
            scenario=self.scenario, seed=self.seed, metrics=self.metrics, issuance=issuance,
            verdicts=verdicts, invariants=invariants, final_state_hash=state_hash,
            wall_seconds=time.perf_counter() - started, offline_run=self.offline_available,
        )

    def _timed(self, phase: str, work: Callable[[], Any]) -> Any:
        started, in_ledger = time.perf_counter(), self.port.seconds
        try:
            return work()
        finally:
            self.metrics.phase_seconds[phase] = time.perf_counter() - started
            self.metrics.ledger_seconds[phase] = self.port.seconds - in_ledger

    def _invariants(self, issuance: RunReport, verdicts: Verdicts) -> dict[str, bool]:
        injections = self.metrics.injections
        wallets_fen = verdicts.supply["total"].get("wallets_fen")
        return {
            "issuance_run_complete": issuance.complete,
            "audit_passed": verdicts.audit_ok,
            "supply_balanced": verdicts.supply_balanced,
            "every_cheat_refused_or_detected": injections.caught == injections.injected,
            "client_books_match_ledger": wallets_fen == sum(self.population.balance_fen),
        }

    # -- phase 1: issuance ------------------------------------------------------------------

    def issuance_plan(self) -> Plan:
        """One order per operator and zone, sized to the wallets the operator serves there."""
        scenario, population = self.scenario, self.population
        operators: list[PlannedOperator] = []
        orders: list[Order] = []
        for number, spec in enumerate(scenario.operators):
            by_zone = population.served_by(number)
            issued = sum(by_zone) * scenario.issuance_per_wallet_fen
            if issued == 0:
                continue
            quota = issued + part_of(issued, scenario.quota_headroom_percent, 100)
            operators.append(PlannedOperator(spec.code, spec.name, quota, issued))
            for zone, count in zip(population.zone_codes, by_zone, strict=True):
                if count:
                    orders.append(Order(len(orders) + 1, spec.code, zone,
                                        count * scenario.issuance_per_wallet_fen))
        return Plan(run_id=self.scenario.run_id, operators=tuple(operators), orders=tuple(orders))

    def _issue(self) -> RunReport:
        self.port.set_time(self.start - timedelta(hours=4))
        self.progress("issuance", 0, 1)
        report = self.port.run_issuance(self.issuance_plan())
        self.progress("issuance", 1, 1)
        return report

    # -- phase 2: wallets ---------------------------------------------------------------------

    def _open_wallets(self) -> None:
        population, scenario = self.population, self.scenario
        at = self.start - timedelta(hours=3)
        for index in range(population.size):
            opening = population.opening(index)
            self._add(at, opening, self._on_opened(index))
            if not population.is_merchant(index):
                amount = scenario.top_up_to(population.wallet_class[index])
                self._add(at, TopUp(f"sim:top-up:{self._next_id()}", opening.wallet_id, amount),
                          self._on_top_up(index, amount))
            if len(self.batch) >= scenario.batch_size:
                self._flush()
                self.progress("wallets", index + 1, population.size)
        self._flush()
        self.progress("wallets", population.size, population.size)

    def _on_opened(self, index: int) -> Callable[[Outcome], None]:
        def handle(outcome: Outcome) -> None:
            if outcome.ok:
                population = self.population
                if population.is_merchant(index):
                    name = self.scenario.categories[population.category[index]].name
                    self.metrics.merchants_opened[name] += 1
                else:
                    self.metrics.wallets_opened[population.wallet_class[index]] += 1
            else:
                self.metrics.honest_rejections[outcome.code or "unknown"] += 1
        return handle

    def _on_top_up(self, index: int, amount_fen: int) -> Callable[[Outcome], None]:
        self.population.balance_fen[index] += amount_fen

        def handle(outcome: Outcome) -> None:
            if outcome.ok:
                self.metrics.top_ups.add(amount_fen)
            else:
                self.population.balance_fen[index] -= amount_fen
                self.metrics.honest_rejections[outcome.code or "unknown"] += 1
        return handle

    # -- phase 3: payments --------------------------------------------------------------------

    def _urn(self) -> dict[str, int]:
        scenario = self.scenario
        counts = dict(zip(PAYMENT_KINDS,
                          apportion(scenario.payment_count, [s for _, s in scenario.mix]),
                          strict=True))
        cheats = scenario.misbehaviour
        total = scenario.payment_count
        counts["replay"] = int(total * cheats.replay_percent / 100)
        counts["over_cap"] = int(total * cheats.over_cap_percent / 100)
        counts["forged_signature"] = int(total * cheats.forged_signature_percent / 100)
        counts["cloned_card"] = int(counts["offline"] * cheats.cloned_card_percent / 100)
        return counts

    def _payments(self) -> None:
        scenario = self.scenario
        urn = self._urn()
        slots = sum(urn.values())
        per_hour = apportion(slots, list(scenario.hourly_weights) * scenario.days)
        window = timedelta(seconds=scenario.batch_seconds)
        done = 0
        for hour, count in enumerate(per_hour):
            self.hour = hour
            begins = self.start + timedelta(hours=hour)
            for slot in range(count):
                at = begins + timedelta(microseconds=slot * 3_600_000_000 // count)
                if self.batch and at - self.batch.opened_at > window:
                    self._flush()
                self._slot(self._draw(urn), at)
                if len(self.batch) >= scenario.batch_size:
                    self._flush()
                done += 1
            closes = begins + timedelta(minutes=59, seconds=59)
            if hour % 24 == 23:
                self._sweep(closes)
            self._flush()
            if self.offline is not None:
                self.offline.close_hour(closes)
            self.metrics.supply.append(self.port.supply(hour))
            self.progress("payments", done, slots)
        if self.offline is not None:
            self.offline.finish(self.start + timedelta(hours=len(per_hour)))

    def _draw(self, urn: dict[str, int]) -> str:
        """Take one slot's kind out of the urn (so the totals are exact, the order random)."""
        pick = self.rng.randrange(sum(urn.values()))
        for kind, left in urn.items():
            if pick < left:
                urn[kind] -= 1
                return kind
            pick -= left
        raise AssertionError("the urn is empty")

    def _slot(self, kind: str, at: datetime) -> None:
        if kind in ("offline", "cloned_card"):
            if self.offline is None:
                self.metrics.not_run[kind] += 1
            else:
                self.offline.intend(kind)
            return
        handler = {
            "merchant_qr": self._merchant_qr,
            "customer_code": self._customer_code,
            "person_to_person": self._person_to_person,
            "refund": self._refund,
            "replay": self._cheat_replay,
            "over_cap": self._cheat_over_cap,
            "forged_signature": self._cheat_forged,
        }.get(kind)
        if handler is None:
            raise AssertionError(f"no handler for {kind}")
        handler(at)

    # -- honest traffic ---------------------------------------------------------------------

    def _payer(self) -> int:
        return self.rng.randrange(self.population.people)

    def _merchant_near(self, payer: int) -> int:
        population = self.population
        zone = population.zone[payer]
        if self.rng.randrange(100) >= self.scenario.home_zone_percent:
            zone = self.rng.randrange(len(population.zone_codes))
        candidates = population.merchants_by_zone[zone] or population.merchants_by_zone[
            self.rng.randrange(len(population.zone_codes))
        ]
        if not candidates:
            return population.people + self.rng.randrange(self.scenario.merchant_count)
        return candidates[self.rng.randrange(len(candidates))]

    def _ensure_funds(self, payer: int, amount_fen: int, at: datetime) -> None:
        """Like a careful app: top up from the bank before paying more than the wallet holds."""
        population = self.population
        held = population.balance_fen[payer]
        if held >= amount_fen:
            return
        top_up = self.scenario.top_up_to(population.wallet_class[payer]) + amount_fen - held
        self._add(at, TopUp(f"sim:top-up:{self._next_id()}", population.wallet_id(payer),
                            top_up), self._on_top_up(payer, top_up))

    def _purchase(self, at: datetime) -> tuple[int, int, int, int]:
        """A customer, a merchant near them, a price and the purchase's number; the customer's
        app tops up first if the wallet holds less than the price."""
        payer = self._payer()
        merchant = self._merchant_near(payer)
        amount = self.amounts.draw(self.rng)
        self._ensure_funds(payer, amount, at)
        return payer, merchant, amount, self._next_id()

    def _merchant_qr(self, at: datetime) -> None:
        population, scenario = self.population, self.scenario
        payer, merchant, amount, number = self._purchase(at)
        request = build_payment_request(
            self.sealers[merchant], ledger_id=self.port.ledger_id, request_id=f"rq{number}",
            merchant=population.wallet_id(merchant), amount_fen=amount,
            reference=f"order-{number}", created_at=at,
            expires_at=at + timedelta(seconds=scenario.request_valid_seconds),
        )
        self._add(at, PresentRequest(request), self._honest_step)
        payment = build_payment_for_request(
            self.sealers[payer], request["message"], payment_id=f"pay{number}",
            payer=population.wallet_id(payer), sequence=population.next_sequence(payer),
            created_at=at,
        )
        self._add(at, Pay(payment), self._on_paid("merchant_qr", payer, merchant, amount,
                                                   f"pay{number}", ("request", request)))

    def _customer_code(self, at: datetime) -> None:
        population, scenario = self.population, self.scenario
        payer, merchant, amount, number = self._purchase(at)
        code = build_payment_code(
            self.sealers[payer], ledger_id=self.port.ledger_id, code_id=f"code{number}",
            payer=population.wallet_id(payer), max_amount_fen=amount, created_at=at,
            expires_at=at + timedelta(seconds=scenario.request_valid_seconds),
        )
        capture = build_capture(
            self.sealers[merchant], ledger_id=self.port.ledger_id,
            capture_id=f"cap{number}", code_id=f"code{number}",
            merchant=population.wallet_id(merchant), amount_fen=amount, created_at=at,
        )
        self._add(at, Capture(code, capture),
                  self._on_paid("customer_code", payer, merchant, amount, f"cap{number}",
                                ("code", (code, merchant))))

    def _person_to_person(self, at: datetime) -> None:
        population = self.population
        payer = self._payer()
        zone_people = population.people_by_zone[population.zone[payer]]
        payee = zone_people[self.rng.randrange(len(zone_people))]
        if payee == payer:
            payee = (payer + 1) % population.people
        amount = self.amounts.draw(self.rng)
        self._ensure_funds(payer, amount, at)
        payment = self._payment(payer, payee, amount, at)
        self._add(at, Pay(payment), self._on_paid("person_to_person", payer, payee, amount,
                                                   payment["message"]["payment_id"],
                                                   ("payment", payment)))

    def _payment(self, payer: int, payee: int, amount_fen: int, at: datetime) -> Any:
        population = self.population
        return build_payment(
            self.sealers[payer], ledger_id=self.port.ledger_id,
            payment_id=f"pay{self._next_id()}", payer=population.wallet_id(payer),
            payee=population.wallet_id(payee), amount_fen=amount_fen,
            sequence=population.next_sequence(payer), created_at=at,
        )

    def _refund(self, at: datetime) -> None:
        if not self.refundable:
            self.metrics.not_run["refund"] += 1
            self.metrics.note("a refund slot came before any merchant payment settled")
            return
        index = self.rng.randrange(len(self.refundable))
        original_id, merchant, customer, paid = self.refundable[index]
        del self.refundable[index]
        amount = paid if self.rng.randrange(100) < self.scenario.full_refund_percent else max(
            1, paid // 2)
        population = self.population
        envelope = build_refund(
            self.sealers[merchant], ledger_id=self.port.ledger_id,
            refund_id=f"ref{self._next_id()}", payment_id=original_id,
            merchant=population.wallet_id(merchant), amount_fen=amount, created_at=at,
        )
        self._add(at, Refund(envelope), self._on_paid("refund", merchant, customer, amount,
                                                       None, None))

    def _on_paid(
        self, kind: str, payer: int, payee: int, amount_fen: int, refundable_id: str | None,
        replayable: tuple[str, Any] | None,
    ) -> Callable[[Outcome], None]:
        population = self.population
        population.balance_fen[payer] -= amount_fen
        population.balance_fen[payee] += amount_fen
        hour = self.hour
        self.metrics.attempts_by_kind[kind] += 1

        def handle(outcome: Outcome) -> None:
            if not outcome.ok:
                population.balance_fen[payer] += amount_fen
                population.balance_fen[payee] -= amount_fen
                self.metrics.rejected(hour, outcome.code or "unknown")
                return
            population.balance_fen[payer] += outcome.topped_up_fen
            population.balance_fen[payee] -= outcome.swept_fen
            customer = payee if kind == "refund" else payer
            self.metrics.settled(hour, kind, population.wallet_class[customer],
                                 population.zone_code(customer), amount_fen)
            if refundable_id is not None and population.is_merchant(payee):
                self.refundable.append((refundable_id, payee, payer, amount_fen))
            if replayable is not None:
                self.recent_replayable.append(replayable)
        return handle

    def _honest_step(self, outcome: Outcome) -> None:
        """A preparatory step (a payment request presented): its refusal is the payment's too."""
        if not outcome.ok:
            self.metrics.honest_rejections[f"request:{outcome.code}"] += 1

    def _sweep(self, at: datetime) -> None:
        """End of day: merchants move their takings above what they keep to their bank."""
        population, keep = self.population, self.scenario.merchant_keep_fen
        for merchant in range(population.people, population.size):
            amount = population.balance_fen[merchant] - keep
            if amount > 0:
                population.balance_fen[merchant] -= amount
                self._add(at, Withdraw(f"sim:sweep:{self._next_id()}",
                                       population.wallet_id(merchant), amount),
                          self._on_withdrawn(merchant, amount))
                if len(self.batch) >= self.scenario.batch_size:
                    self._flush()

    def _on_withdrawn(self, merchant: int, amount_fen: int) -> Callable[[Outcome], None]:
        def handle(outcome: Outcome) -> None:
            if outcome.ok:
                self.metrics.withdrawals.add(amount_fen)
            else:
                self.population.balance_fen[merchant] += amount_fen
                self.metrics.honest_rejections[outcome.code or "unknown"] += 1
        return handle

    # -- cheats -------------------------------------------------------------------------------

    def _cheat_replay(self, at: datetime) -> None:
        """Submit again what was already settled: the same payment (answered with its first
        result), a paid payment request paid by someone else, a captured code captured again."""
        if not self.recent_replayable:
            self._cheat_over_cap(at)  # nothing settled yet to replay: cheat another way
            return
        kind, thing = self.recent_replayable[self.rng.randrange(len(self.recent_replayable))]
        population = self.population
        if kind == "payment":
            self._inject("replay", thing["message"]["payment_id"], at, Pay(thing),
                         replay_of=thing)
        elif kind == "request":
            payer = self._payer()
            payment = build_payment_for_request(
                self.sealers[payer], thing["message"], payment_id=f"pay{self._next_id()}",
                payer=population.wallet_id(payer), sequence=population.next_sequence(payer),
                created_at=at,
            )
            self._inject("replay", payment["message"]["payment_id"], at, Pay(payment),
                         moves=(payer, self._index_of(thing["message"]["merchant"]),
                                thing["message"]["amount_fen"]))
        else:
            code, merchant = thing
            capture = build_capture(
                self.sealers[merchant], ledger_id=self.port.ledger_id,
                capture_id=f"cap{self._next_id()}", code_id=code["message"]["code_id"],
                merchant=population.wallet_id(merchant),
                amount_fen=code["message"]["max_amount_fen"], created_at=at,
            )
            self._inject("replay", capture["message"]["capture_id"], at, Capture(code, capture),
                         moves=(self._index_of(code["message"]["payer"]), merchant,
                                code["message"]["max_amount_fen"]))

    def _cheat_over_cap(self, at: datetime) -> None:
        """A wallet pays more than its class allows in one payment."""
        payer = self._payer()
        cap = DEFAULT_CLASSES[self.population.wallet_class[payer]].limits.payment_fen_max
        if cap is None:
            cap = DEFAULT_CLASSES[4].limits.payment_fen_max
            assert cap is not None
        merchant = self._merchant_near(payer)
        amount = cap + 1 + self.rng.randrange(cap // 10)
        payment = self._payment(payer, merchant, amount, at)
        self._inject("over_cap", payment["message"]["payment_id"], at, Pay(payment),
                     moves=(payer, merchant, amount))

    def _cheat_forged(self, at: datetime) -> None:
        """A payment altered after signing, one signed by a thief's key in the victim's name,
        or a thief's own key used for the victim's wallet."""
        population = self.population
        victim, thief = self._payer(), self._payer()
        merchant = self._merchant_near(victim)
        amount = self.amounts.draw(self.rng)
        genuine = self._payment(victim, merchant, amount, at)
        self.seals.settle()  # the forger starts from the victim's signature
        variant = self.rng.randrange(3)
        message = dict(genuine["message"])
        if variant == 0:  # altered in flight: the amount raised, the victim's signature kept
            message["amount_fen"] = amount * 10
            forged = {"message": message, "signature": genuine["signature"]}
        elif variant == 1:  # signed by another key, claiming the victim's public key
            signature = population.keys[thief].sign_bytes(signed_bytes(PAYMENT, message))
            forged = {"message": message, "signature": signature.hex()}
        else:  # the thief's own valid signature on a payment from the victim's wallet
            message["public_key"] = population.keys[thief].public_key_hex
            message["sequence"] = population.next_sequence(thief)
            signature = population.keys[thief].sign_bytes(signed_bytes(PAYMENT, message))
            forged = {"message": message, "signature": signature.hex()}
        self._inject("forged_signature", message["payment_id"], at, Pay(forged),
                     moves=(victim, merchant, message["amount_fen"]))

    def _index_of(self, wallet_id: str) -> int:
        number = int(wallet_id[1:])
        return number if wallet_id[0] == "p" else self.population.people + number

    def _inject(
        self, kind: str, subject_id: str, at: datetime, command: Command, *,
        moves: tuple[int, int, int] | None = None, replay_of: Any = None,
    ) -> None:
        """Send a cheat and record in the injection ledger how the ledger answered it."""

        def handle(outcome: Outcome) -> None:
            injections = self.metrics.injections
            if not outcome.ok:
                self.metrics.cheat_rejections[outcome.code or "unknown"] += 1
                injections.record(kind, subject_id, "refused", outcome.code)
            elif replay_of is not None and outcome.replayed:
                injections.record(kind, subject_id, "detected", "replayed")
            else:
                injections.record(kind, subject_id, "accepted", None)
                if moves is not None:  # the money did move: keep the books true to the ledger
                    payer, payee, amount = moves
                    self.population.balance_fen[payer] -= amount
                    self.population.balance_fen[payee] += amount
        self._add(at, command, handle)

    # -- plumbing -----------------------------------------------------------------------------

    def _next_id(self) -> int:
        self.counter += 1
        return self.counter

    def _add(self, at: datetime, command: Command, on_outcome: Callable[[Outcome], None]) -> None:
        self.batch.add(at.astimezone(UTC), command, on_outcome)

    def _flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, _Batch()
        self.seals.settle()
        outcomes = self.port.submit(batch.commands)
        assert len(outcomes) == len(batch.pending)
        for pending, outcome in zip(batch.pending, outcomes, strict=True):
            pending.on_outcome(outcome)

