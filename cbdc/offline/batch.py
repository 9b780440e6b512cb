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

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from cbdc.domain import signing
from cbdc.domain.errors import CbdcError, InvalidSignature
from cbdc.offline import messages
from cbdc.offline.certificates import DeviceCertificate, OperatorCertificate
from cbdc.offline.messages import OFFLINE_PAYMENT
from cbdc.offline.verification import (
    ENVELOPE_KEYS,
    VerifiedPayment,
    authenticate_offline_payment,
    best_effort_hash,
    check_names_certified,
)


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
    """Steps 1-4 of docs/offline-protocol.md section 6 and the ledger check, for each envelope.

    A batch carries each device's certificates many times over: the first envelope with a given
    pair of certificate envelopes (compared as exact JSON text, so ``1`` and ``true`` differ)
    goes through :func:`authenticate_offline_payment` in full; later ones reuse its verified
    certificates and check only the payment's shape, names and signature, in the same order
    and with the same codes."""
    chains: dict[str, tuple[DeviceCertificate, OperatorCertificate]] = {}
    results: list[Authenticated | Refusal] = []
    for envelope in envelopes:
        try:
            payment = _authenticate(envelope, root_public_key, chains)
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


def _authenticate(
    envelope: Any,
    root_public_key: bytes,
    chains: dict[str, tuple[DeviceCertificate, OperatorCertificate]],
) -> VerifiedPayment:
    key = _chain_key(envelope)
    cached = None if key is None else chains.get(key)
    if cached is None:
        payment = authenticate_offline_payment(envelope, root_public_key)
        if key is not None:
            chains[key] = (payment.certificate, payment.operator_certificate)
        return payment
    certificate, operator_certificate = cached
    message, signature = messages.open_envelope(
        OFFLINE_PAYMENT, {"message": envelope["message"], "signature": envelope["signature"]}
    )
    check_names_certified(message, certificate)
    signed = signing.signed_bytes(OFFLINE_PAYMENT, message)
    try:
        nacl.signing.VerifyKey(certificate.public_key).verify(signed, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as exc:
        raise InvalidSignature("signature does not verify") from exc
    return VerifiedPayment(hashlib.sha256(signed).hexdigest(), message, signature,
                           certificate, operator_certificate)


def _chain_key(envelope: Any) -> str | None:
    """The exact JSON text of the envelope's two certificates, or None if it has no such
    pair (then the full path judges it)."""
    if not isinstance(envelope, Mapping) or set(envelope) != ENVELOPE_KEYS:
        return None
    try:
        return json.dumps([envelope["certificate"], envelope["operator_certificate"]],
                          sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None


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
