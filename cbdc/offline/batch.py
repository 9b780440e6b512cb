"""Authenticating many uploaded offline payments at once, in a form that crosses processes.

The ledger checks signatures of large uploads in worker processes (PyNaCl releases the GIL only
around the curve arithmetic, so threads gain little). :func:`authenticate_many` is a plain
top-level function taking and returning picklable values: for each envelope either an
:class:`Authenticated` (the payment's hash, message and signature, and which certificate it
travelled with) or a :class:`Refusal` (the error code and what could be read of the claim).
The ledger then pairs each authenticated payment with the device certificate it holds, so the
certificate objects never need to cross back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cbdc.domain.errors import CbdcError
from cbdc.offline.verification import authenticate_offline_payment, best_effort_hash


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A payment signed by the device its certificate chain (to the pinned root) certifies."""

    payment_hash: str
    message: dict[str, Any]
    signature: bytes
    certificate_serial: str
    certificate_signature: bytes


@dataclass(frozen=True, slots=True)
class Refusal:
    """An envelope that does not authenticate, or is for another ledger. ``digest`` names it
    (its payment hash if the message can be hashed at all); ``payer_device``, ``counter`` and
    ``amount_fen`` are what the envelope claims, when they can be read."""

    code: str
    detail: str
    digest: str
    payer_device: str | None
    counter: int | None
    amount_fen: int


def authenticate_many(
    envelopes: Sequence[Any], root_public_key: bytes, ledger_id: str
) -> list[Authenticated | Refusal]:
    """Steps 1-4 of docs/offline-protocol.md section 6 and the ledger check, for each envelope;
    each distinct certificate chain is verified once per call."""
    chains: set[tuple[bytes, bytes]] = set()
    results: list[Authenticated | Refusal] = []
    for envelope in envelopes:
        try:
            payment = authenticate_offline_payment(
                envelope, root_public_key, verified_chains=chains
            )
        except CbdcError as error:
            results.append(_refusal(envelope, error.code, error.detail))
            continue
        if payment.message["ledger_id"] != ledger_id:
            results.append(
                _refusal(envelope, "offline_wrong_ledger",
                         f"payment is for ledger {payment.message['ledger_id']}, not {ledger_id}")
            )
            continue
        results.append(
            Authenticated(
                payment_hash=payment.payment_hash,
                message=dict(payment.message),
                signature=payment.signature,
                certificate_serial=payment.certificate.serial,
                certificate_signature=payment.certificate.signature,
            )
        )
    return results


def _refusal(envelope: Any, code: str, detail: str) -> Refusal:
    message = envelope.get("message") if isinstance(envelope, Mapping) else None
    message = message if isinstance(message, Mapping) else {}
    device = message.get("payer_device")
    counter = message.get("counter")
    amount = message.get("amount_fen")
    return Refusal(
        code=code,
        detail=detail,
        digest=best_effort_hash(envelope, message),
        payer_device=device if isinstance(device, str) else None,
        counter=counter if isinstance(counter, int) and not isinstance(counter, bool) else None,
        amount_fen=amount if isinstance(amount, int) and not isinstance(amount, bool) else 0,
    )
