"""The seam between the driver and a ledger: commands, outcomes, and the port both adapters fill.

The driver decides *what* happens (who pays whom, how much, which cheat) and hands the ledger a
batch of commands, each with the simulated moment it happens at; an adapter turns them into
service calls (:mod:`cbdc.simulation.inprocess`) or HTTP requests
(:mod:`cbdc.simulation.http`) and answers with one :class:`Outcome` per command, in order. The
driver never learns more than a real client would: what was settled or refused, with which code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

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

Envelope = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Holder:
    """The identity evidence an operator checked (synthetic, derived from the seed)."""

    phone: str
    id_document: str | None = None
    bank_account: str | None = None
    in_person: bool = False


@dataclass(frozen=True, slots=True)
class OpenWallet:
    wallet_id: str
    operator_code: str
    zone: str
    wallet_class: int
    holder: Holder
    public_key_hex: str
    merchant_category_code: str | None = None


@dataclass(frozen=True, slots=True)
class TopUp:
    entry_id: str
    wallet_id: str
    amount_fen: int


@dataclass(frozen=True, slots=True)
class Withdraw:
    entry_id: str
    wallet_id: str
    amount_fen: int


@dataclass(frozen=True, slots=True)
class Pay:
    """A signed payment (person to person, or paying a payment request)."""

    payment: Envelope


@dataclass(frozen=True, slots=True)
class PresentRequest:
    """A merchant-presented QR code: the merchant's signed payment request, recorded first."""

    request: Envelope


@dataclass(frozen=True, slots=True)
class Capture:
    """The merchant captures a customer-presented payment code."""

    code: Envelope
    capture: Envelope


@dataclass(frozen=True, slots=True)
class Refund:
    refund: Envelope


Command = OpenWallet | TopUp | Withdraw | Pay | PresentRequest | Capture | Refund


@dataclass(frozen=True, slots=True)
class Timed:
    at: datetime
    command: Command


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the ledger answered. ``replayed``: an earlier result given again (nothing moved).
    ``topped_up_fen``/``swept_fen``: reverse waterfall into the payer, waterfall out of the
    payee, which a wallet app learns from its receipt."""

    ok: bool
    code: str | None = None
    replayed: bool = False
    topped_up_fen: int = 0
    swept_fen: int = 0

    @staticmethod
    def refused(code: str) -> Outcome:
        return Outcome(ok=False, code=code)


@dataclass(frozen=True, slots=True)
class Verdicts:
    """The ledger's own checks at the end: audit and supply report, as plain data."""

    audit_ok: bool
    audit: dict[str, Any]
    supply_balanced: bool
    supply: dict[str, Any]


class LedgerPort(Protocol):
    """What the driver needs from a ledger, in-process or over HTTP."""

    ledger_id: str

    def set_time(self, moment: datetime) -> None:
        """Simulated time for what follows (in-process: the injected ManualClock)."""
        ...

    def ensure_empty(self) -> None:
        """Refuse to run on a ledger that already holds entries (the final hash would differ)."""
        ...

    def run_issuance(self, plan: Plan) -> RunReport: ...

    def submit(self, batch: Sequence[Timed]) -> list[Outcome]:
        """Apply the commands in order; one outcome each. A refusal changes nothing."""
        ...

    def supply(self, hour: int) -> SupplySample: ...

    def verdicts(self) -> Verdicts: ...

    def final_state_hash(self) -> str: ...

    def close(self) -> None: ...


@runtime_checkable
class OfflineLedgerPort(Protocol):
    """What offline payments need from a ledger, in batches (devices go online together):
    certify devices, load them (wallet -> escrow, operator-signed receipts), take devices'
    uploads (settling what they hold, opening fraud cases) and list the fraud cases. Each batch
    is one unit of work at the port's time (or joins the session's); each item is answered as
    if the items before it had been sent one by one, a refusal as the
    :class:`~cbdc.domain.errors.CbdcError` in its place (it changes nothing)."""

    def offline_session(self) -> AbstractContextManager[None]:
        """Group the batches sent inside it (in-process: one unit of work, which the ledger
        commands sent meanwhile, such as top-ups, join)."""
        ...

    def provision_devices(
        self, requests: Sequence[DeviceRequest]
    ) -> list[ProvisionedDevice | CbdcError]: ...

    def load_devices(self, loads: Sequence[DeviceLoad]) -> list[dict[str, Any] | CbdcError]: ...

    def upload_offline(self, uploads: Sequence[Upload]) -> list[UploadReport | CbdcError]: ...

    def fraud_devices(self) -> dict[str, int]:
        """Device id -> number of fraud cases opened against it."""
        ...
