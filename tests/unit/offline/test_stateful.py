"""Hypothesis stateful test: devices load, pay, receive, unload, sync and get cloned at random.

The model is the ledger's view: every payment some payee accepted offline is collected per payer
device, as the settlement service will collect them from uploads. After every step:
- no device (genuine or clone) has a negative balance or one above its certificate's cap;
- a genuine device's balance is exactly loaded - paid - unloaded;
- the genuine device's own payments (as the ledger collects them from its uploads: the device
  itself forgets them once a sync receipt acknowledges them) are never accused, and sum to at
  most what was loaded; the device holds exactly those above its synced counter;
- over everything collected, the payments the ledger would treat as honest fit in the escrow,
  every counter accepted twice with different content is named a double spend, and a device
  that was never cloned has no findings at all.
"""

from __future__ import annotations

from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from cbdc.domain.errors import CbdcError, OfflineRefused
from cbdc.domain.money import yuan
from cbdc.offline import FindingCode, SecureElement
from cbdc.offline.messages import OFFLINE_PAYMENT, message_hash
from tests.unit.offline.world import World

DEVICES = ("d0", "d1", "d2")
CLONES_MAX = 3


class OfflineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.devices = {
            "d0": self.world.device("d0", wallet_class=2),
            "d1": self.world.device("d1", wallet_class=2),
            "d2": self.world.device("d2", wallet_class=4),
        }
        self.clones: list[tuple[str, SecureElement]] = []
        self.collected: dict[str, list[dict[str, Any]]] = {name: [] for name in DEVICES}
        self.made: dict[str, list[dict[str, Any]]] = {name: [] for name in DEVICES}
        self.cloned: set[str] = set()

    # --- rules -----------------------------------------------------------------------------

    @initialize(amounts_yuan=st.lists(st.integers(1, 200), min_size=3, max_size=3))
    def load_everyone(self, amounts_yuan: list[int]) -> None:
        for name, amount_yuan in zip(DEVICES, amounts_yuan, strict=True):
            self.load(name, amount_yuan)

    @rule(name=st.sampled_from(DEVICES), amount_yuan=st.integers(1, 500))
    def load(self, name: str, amount_yuan: int) -> None:
        device = self.devices[name]
        state = device.state()
        assert state.caps is not None
        amount_fen = min(yuan(amount_yuan), state.caps.balance_fen_max - state.balance_fen)
        if amount_fen > 0:
            self.world.load(device, amount_fen)

    @rule(
        payer=st.sampled_from(DEVICES),
        payee=st.sampled_from(DEVICES),
        amount_fen=st.integers(1, yuan(300)),
    )
    def pay(self, payer: str, payee: str, amount_fen: int) -> None:
        self._pay_and_deliver(self.devices[payer], payer, payee, amount_fen)

    @precondition(lambda self: self.clones)
    @rule(index=st.integers(0, CLONES_MAX - 1), payee=st.sampled_from(DEVICES),
          amount_fen=st.integers(1, yuan(300)))
    def clone_pays(self, index: int, payee: str, amount_fen: int) -> None:
        origin, clone = self.clones[index % len(self.clones)]
        self._pay_and_deliver(clone, origin, payee, amount_fen)

    @precondition(lambda self: len(self.clones) < CLONES_MAX)
    @rule(name=st.sampled_from(DEVICES))
    def clone(self, name: str) -> None:
        self.clones.append((name, self.devices[name].clone()))
        self.cloned.add(name)

    @rule(name=st.sampled_from(DEVICES))
    def unload(self, name: str) -> None:
        self.world.unload(self.devices[name])

    @rule(name=st.sampled_from(DEVICES))
    def sync(self, name: str) -> None:
        device = self.devices[name]
        receipt = self.world.operator().sign_sync_receipt(
            sync_id=f"sync-{name}-{device.state().counter}",
            device_id=name,
            synced_counter=device.state().counter,
            settled={p.payment_hash for p in device.pending_received()},
            created_at=self.world.now,
        )
        device.sync_done(receipt)
        assert device.pending_received() == () and device.state().payments_since_sync == 0
        # What the ledger now holds is forgotten: the device's storage does not grow.
        assert device.payments_made() == () and device.payments_received() == ()

    @rule(minutes=st.integers(1, 600))
    def time_passes(self, minutes: int) -> None:
        self.world.tick(minutes)

    def _pay_and_deliver(
        self, payer: SecureElement, origin: str, payee: str, amount_fen: int
    ) -> None:
        before = payer.state()
        try:
            envelope = payer.pay(payee, f"w-{payee}", amount_fen, self.world.now)
        except OfflineRefused as refusal:
            assert payer.state() == before, refusal.code
            return
        after = payer.state()
        assert after.balance_fen == before.balance_fen - amount_fen
        assert after.counter == before.counter + 1
        if payer is self.devices[origin]:
            self.made[origin].append(envelope)
        try:
            self.devices[payee].receive(envelope, self.world.now)
        except CbdcError as refusal:
            # Only clones get payments refused (the payee saw the other branch first), and only
            # by the rules that catch them; the payer has already spent: that value is lost to
            # whoever holds the refused branch, never created.
            assert origin in self.cloned, refusal.code
            assert refusal.code in {"offline_counter_replayed", "offline_chain_broken"}
            return
        self.collected[origin].append(envelope)

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def balances_within_caps(self) -> None:
        for element in [*self.devices.values(), *(clone for _, clone in self.clones)]:
            state = element.state()
            assert state.caps is not None
            assert 0 <= state.balance_fen <= state.caps.balance_fen_max
            assert 0 <= state.payments_since_sync <= state.caps.payments_max

    @invariant()
    def genuine_devices_conserve_value_and_are_never_accused(self) -> None:
        for name, device in self.devices.items():
            state = device.state()
            assert state.balance_fen == (
                state.loaded_fen_total - state.paid_fen_total - state.unloaded_fen_total
            )
            verdict = self.world.classify(name, self.made[name])
            assert verdict.findings == ()
            assert verdict.honest_paid_fen == state.paid_fen_total <= state.loaded_fen_total
            assert list(device.payments_made()) == [
                envelope for envelope in self.made[name]
                if envelope["message"]["counter"] > state.synced_counter
            ]

    @invariant()
    def the_ledger_names_every_clone_double_spend(self) -> None:
        for name in DEVICES:
            collected = self.collected[name]
            verdict = self.world.classify(name, collected)
            assert verdict.honest_paid_fen <= verdict.escrow_fen
            hashes_by_counter: dict[int, set[str]] = {}
            for envelope in collected:
                digest = message_hash(OFFLINE_PAYMENT, envelope["message"])
                hashes_by_counter.setdefault(envelope["message"]["counter"], set()).add(digest)
            expected = {c for c, hashes in hashes_by_counter.items() if len(hashes) > 1}
            named = {
                counter
                for finding in verdict.of(FindingCode.DOUBLE_SPEND)
                for counter in finding.counters
            }
            assert named == expected
            for code in verdict.codes() if currently_in_test_context() else ():
                event(f"finding {code}")
            if name not in self.cloned:
                assert verdict.findings == ()
                assert verdict.honest_paid_fen == sum(
                    envelope["message"]["amount_fen"] for envelope in collected
                )


# At least this much exploration; a larger profile (HYPOTHESIS_PROFILE=soak) explores more.
assert settings.default is not None  # Optional to mypy, but a profile is always loaded
OfflineMachine.TestCase.settings = settings(
    settings.default,
    max_examples=max(settings.default.max_examples, 80),
    stateful_step_count=max(settings.default.stateful_step_count, 40),
    deadline=None,
)
test_offline_machine = OfflineMachine.TestCase


def test_the_machine_sees_a_clone_double_spend() -> None:
    # One hand-driven run, so the invariants are known to bite on the case they exist for.
    machine = OfflineMachine()
    machine.load("d0", 300)
    machine.clone("d0")
    machine.pay("d0", "d1", yuan(300))
    machine.clone_pays(0, "d2", yuan(100))
    machine.time_passes(5)
    machine.balances_within_caps()
    machine.genuine_devices_conserve_value_and_are_never_accused()
    machine.the_ledger_names_every_clone_double_spend()
    verdict = machine.world.classify("d0", machine.collected["d0"])
    assert [f.counters for f in verdict.of(FindingCode.DOUBLE_SPEND)] == [(1,)]
