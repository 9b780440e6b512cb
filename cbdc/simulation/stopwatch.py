"""How much of a run the ledger took: a port that adds up the time spent inside the port it wraps.

The driver wraps its port in a :class:`LedgerStopwatch` and reads :attr:`~LedgerStopwatch.seconds`
at the edges of each phase, so a report can say how a phase's wall time divides between the
ledger (in-process: the services and the database; over HTTP: the server and the network) and
the simulation itself (drawing traffic, the simulated wallets and offline devices, metrics).
Inside an offline session only the calls and the session's own opening and closing count, not
what the devices do between them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, TypeVar

from cbdc.domain.errors import CbdcError
from cbdc.services.issuance_run import Plan, RunReport
from cbdc.services.offline import (
    DeviceLoad,
    DeviceRequest,
    ProvisionedDevice,
    Upload,
    UploadReport,
)
from cbdc.simulation.metrics import SupplySample
from cbdc.simulation.ports import LedgerPort, OfflineLedgerPort, Outcome, Timed, Verdicts

_R = TypeVar("_R")


class LedgerStopwatch:
    """``port`` itself, with the seconds spent inside its calls added up in :attr:`seconds`
    (read from ``counter``, :func:`time.perf_counter` unless a test gives another). The offline
    calls may be made only if ``port`` is an
    :class:`~cbdc.simulation.ports.OfflineLedgerPort`."""

    def __init__(self, port: LedgerPort, counter: Callable[[], float] = time.perf_counter,
                 ) -> None:
        self.port = port
        self.ledger_id = port.ledger_id
        self.seconds = 0.0
        self._counter = counter

    def _timed(self, call: Callable[..., _R], *args: Any) -> _R:
        started = self._counter()
        try:
            return call(*args)
        finally:
            self.seconds += self._counter() - started

    @property
    def _offline(self) -> OfflineLedgerPort:
        assert isinstance(self.port, OfflineLedgerPort), "the port offers no offline services"
        return self.port

    def set_time(self, moment: datetime) -> None:
        self._timed(self.port.set_time, moment)

    def ensure_empty(self) -> None:
        self._timed(self.port.ensure_empty)

    def run_issuance(self, plan: Plan) -> RunReport:
        return self._timed(self.port.run_issuance, plan)

    def submit(self, batch: Sequence[Timed]) -> list[Outcome]:
        return self._timed(self.port.submit, batch)

    def supply(self, hour: int) -> SupplySample:
        return self._timed(self.port.supply, hour)

    def verdicts(self) -> Verdicts:
        return self._timed(self.port.verdicts)

    def final_state_hash(self) -> str:
        return self._timed(self.port.final_state_hash)

    def close(self) -> None:
        self._timed(self.port.close)

    def offline_session(self) -> AbstractContextManager[None]:
        return self._session()

    @contextmanager
    def _session(self) -> Iterator[None]:
        session = self._timed(self._offline.offline_session)
        self._timed(session.__enter__)
        try:
            yield
        except BaseException as error:
            if not self._timed(session.__exit__, type(error), error, error.__traceback__):
                raise
        else:
            self._timed(session.__exit__, None, None, None)

    def provision_devices(
        self, requests: Sequence[DeviceRequest]
    ) -> list[ProvisionedDevice | CbdcError]:
        return self._timed(self._offline.provision_devices, requests)

    def load_devices(self, loads: Sequence[DeviceLoad]) -> list[dict[str, Any] | CbdcError]:
        return self._timed(self._offline.load_devices, loads)

    def upload_offline(self, uploads: Sequence[Upload]) -> list[UploadReport | CbdcError]:
        return self._timed(self._offline.upload_offline, uploads)

    def fraud_devices(self) -> dict[str, int]:
        return self._timed(self._offline.fraud_devices)
