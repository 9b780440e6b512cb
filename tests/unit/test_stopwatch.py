"""The simulation's stopwatch around the ledger's port: it counts the time inside the port's calls
(an offline session's opening and closing included) and nothing the driver does between them,
and passes every call, answer and error through unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from cbdc.domain.errors import InsufficientFunds
from cbdc.simulation.ports import LedgerPort, OfflineLedgerPort, Outcome
from cbdc.simulation.stopwatch import LedgerStopwatch

WORK = 5.0  # what each of the fake ledger's calls "takes", on the fake clock


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FakeLedger:
    """Records its calls; each one advances the clock by :data:`WORK`."""

    ledger_id = "fake"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.session_exits: list[type[BaseException] | None] = []

    def _work(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        self.clock.now += WORK

    def set_time(self, moment: datetime) -> None:
        self._work("set_time", moment)

    def ensure_empty(self) -> None:
        self._work("ensure_empty")

    def run_issuance(self, plan: Any) -> Any:
        self._work("run_issuance", plan)
        return "report"

    def submit(self, batch: Any) -> list[Outcome]:
        self._work("submit", batch)
        if batch == ["short"]:
            raise InsufficientFunds("not enough")
        return [Outcome(ok=True)]

    def supply(self, hour: int) -> Any:
        self._work("supply", hour)
        return "sample"

    def verdicts(self) -> Any:
        self._work("verdicts")
        return "verdicts"

    def final_state_hash(self) -> str:
        self._work("final_state_hash")
        return "hash"

    def close(self) -> None:
        self._work("close")

    @contextmanager
    def offline_session(self) -> Iterator[None]:
        self._work("session opens")
        try:
            yield
        except BaseException as error:
            self.session_exits.append(type(error))
            self._work("session rolls back")
            raise
        self.session_exits.append(None)
        self._work("session commits")

    def provision_devices(self, requests: Any) -> list[Any]:
        self._work("provision_devices", requests)
        return ["device"]

    def load_devices(self, loads: Any) -> list[Any]:
        self._work("load_devices", loads)
        return [{"load": 1}]

    def upload_offline(self, uploads: Any) -> list[Any]:
        self._work("upload_offline", uploads)
        return ["report"]

    def fraud_devices(self) -> dict[str, int]:
        self._work("fraud_devices")
        return {"card": 1}


def stopwatch() -> tuple[LedgerStopwatch, FakeLedger, Clock]:
    clock = Clock()
    ledger = FakeLedger(clock)
    return LedgerStopwatch(ledger, counter=clock), ledger, clock


def test_it_is_a_port_with_offline_services_that_answers_as_the_port_does() -> None:
    watch, ledger, _ = stopwatch()
    assert isinstance(watch, OfflineLedgerPort)
    typed: LedgerPort = watch  # mypy checks that it is one
    port: Any = typed  # the fake answers plain values
    moment = datetime(2026, 3, 1, tzinfo=UTC)
    port.set_time(moment)
    port.ensure_empty()
    assert port.run_issuance("plan") == "report"
    assert port.submit(["pay"]) == [Outcome(ok=True)]
    assert port.supply(3) == "sample"
    assert port.verdicts() == "verdicts"
    assert port.final_state_hash() == "hash"
    assert port.provision_devices(["request"]) == ["device"]
    assert port.load_devices(["load"]) == [{"load": 1}]
    assert port.upload_offline(["upload"]) == ["report"]
    assert port.fraud_devices() == {"card": 1}
    port.close()
    assert ledger.calls == [
        ("set_time", (moment,)), ("ensure_empty", ()), ("run_issuance", ("plan",)),
        ("submit", (["pay"],)), ("supply", (3,)), ("verdicts", ()), ("final_state_hash", ()),
        ("provision_devices", (["request"],)), ("load_devices", (["load"],)),
        ("upload_offline", (["upload"],)), ("fraud_devices", ()), ("close", ()),
    ]
    assert watch.seconds == 12 * WORK
    assert watch.ledger_id == "fake"


def test_only_the_time_inside_the_calls_counts() -> None:
    watch, ledger, clock = stopwatch()
    watch.submit([])
    clock.now += 100  # the driver drawing the next batch
    watch.submit([])
    with watch.offline_session():
        clock.now += 1_000  # the devices paying each other between two calls
        watch.upload_offline([])
        clock.now += 1_000
    assert [name for name, _ in ledger.calls] == [
        "submit", "submit", "session opens", "upload_offline", "session commits"]
    assert watch.seconds == 5 * WORK


def test_a_refusal_is_raised_as_it_came_and_its_time_counted() -> None:
    watch, _, _ = stopwatch()
    with pytest.raises(InsufficientFunds, match="not enough"):
        watch.submit(["short"])  # type: ignore[list-item]
    assert watch.seconds == WORK


def test_an_error_inside_an_offline_session_reaches_the_session_and_the_caller() -> None:
    watch, ledger, _ = stopwatch()
    with pytest.raises(RuntimeError, match="driver failed"), watch.offline_session():
        watch.fraud_devices()
        raise RuntimeError("the driver failed")
    assert ledger.session_exits == [RuntimeError]
    assert [name for name, _ in ledger.calls] == [
        "session opens", "fraud_devices", "session rolls back"]
    assert watch.seconds == 3 * WORK


def test_offline_calls_need_a_port_with_offline_services() -> None:
    class OnlineOnly:
        ledger_id = "online"

    watch = LedgerStopwatch(OnlineOnly())  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="no offline services"):
        watch.fraud_devices()
