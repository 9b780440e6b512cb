"""Authenticating many uploaded offline payments at once, in a form that crosses processes.

For envelopes whose certificates the ledger must verify, the ledger checks large uploads in
worker processes (PyNaCl releases the GIL only around the curve arithmetic, so threads gain
little on the whole path). :func:`authenticate_many` is a plain
top-level function taking and returning picklable values: for each envelope either an
:class:`Authenticated` (the payment's hash, message and signature, and which certificate it
travelled with) or a :class:`Refusal` (the error code and what could be read of the claim).
The ledger then pairs each authenticated payment with the device certificate it holds, so the
certificate objects never need to cross back.

Most uploads carry exactly the certificates the ledger issued itself. For those,
:func:`prepare_trusted` does steps 1 and 3 and the ledger check with no chain verification (the
ledger signed that chain), leaving only the payment's signature: a compact
``(public key, signed bytes, signature)`` triple, checked by the ledger's verifier process
(:mod:`cbdc.services.verifier`) or :func:`cbdc.domain.signing.verify_many`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cbdc.domain import signing
from cbdc.domain.errors import CbdcError, InvalidSignature
from cbdc.domain.messages import unchecked_message
from cbdc.offline import messages
from cbdc.offline.certificates import DeviceCertificate, OperatorCertificate
from cbdc.offline.messages import OFFLINE_PAYMENT
from cbdc.offline.verification import (
    ENVELOPE_KEYS,
    VerifiedPayment,
    authenticate_offline_payment,
    best_effort_hash,
    check_names_certified,
    claimed_amount_fen,
    claimed_counter,
)


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A payment signed by the device its certificate chain (to the pinned root) certifies."""

    payment_hash: str
    message: dict[str, Any]
    signature: bytes
    certificate_serial: str
    certificate_signature: bytes
    #: The message's canonical JSON (``cbdc.domain.postings.canonical_json``), when known.
    message_json: str | None = None


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


_SAFE = 2**53 - 1


@dataclass(frozen=True, slots=True)
class TrustedChain:
    """A device's certificate pair exactly as the ledger issued it (envelopes as stored)."""

    certificate: DeviceCertificate
    certificate_envelope: Mapping[str, Any]
    operator_certificate_envelope: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A payment travelling with a trusted chain, checked up to its signature."""

    payment_hash: str
    message: dict[str, Any]
    signature: bytes
    signed: bytes
    certificate: DeviceCertificate

    @property
    def message_json(self) -> str | None:
        """The signed JSON text, which is the ledger's canonical JSON of the message too when
        it is ASCII and the message flat with only strings and safe integers (both encoders
        then write exactly the same bytes)."""
        text = self.signed[len(OFFLINE_PAYMENT) + 1:]
        if not text.isascii() or not all(
            type(value) is str or (type(value) is int and -_SAFE <= value <= _SAFE)
            for value in self.message.values()
        ):
            return None
        return text.decode("ascii")

    def triple(self) -> tuple[bytes, bytes, bytes]:
        return (self.certificate.public_key, self.signed, self.signature)


def same_json(left: Any, right: Any) -> bool:
    """Equal as JSON values, types included (``1``, ``1.0`` and ``true`` all differ)."""
    kind = type(left)
    if kind is not type(right):
        return False
    if kind is dict:
        if left.keys() != right.keys():
            return False
        for key, value in left.items():
            other = right[key]
            inner = type(value)
            if inner is not type(other):
                return False
            if inner is dict or inner is list:
                if not same_json(value, other):
                    return False
            elif value != other:
                return False
        return True
    if kind is list:
        return len(left) == len(right) and all(map(same_json, left, right))
    return bool(left == right)


def prepare_trusted(
    envelope: Any, chains: Mapping[str, TrustedChain]
) -> Prepared | Refusal | None:
    """Steps 1 and 3 for an envelope whose two certificates are exactly those the ledger issued
    to the device its message names (so step 2 holds); None for any other envelope, which then
    goes through :func:`authenticate_many` in full. Errors come with the codes, and in the
    order, of :func:`authenticate_offline_payment`."""
    if not isinstance(envelope, Mapping) or set(envelope) != ENVELOPE_KEYS:
        return None
    message = envelope["message"]
    device = message.get("payer_device") if isinstance(message, Mapping) else None
    chain = chains.get(device) if isinstance(device, str) else None
    if chain is None or not (
        same_json(envelope["certificate"], chain.certificate_envelope)
        and same_json(envelope["operator_certificate"], chain.operator_certificate_envelope)
    ):
        return None
    try:
        opened, signature = messages.open_envelope(
            OFFLINE_PAYMENT, {"message": message, "signature": envelope["signature"]}
        )
        check_names_certified(opened, chain.certificate)
        signed = signing.signed_bytes(OFFLINE_PAYMENT, opened)
    except CbdcError as error:
        return _refusal(envelope, error.code, error.detail)
    return Prepared(hashlib.sha256(signed).hexdigest(), opened, signature, signed,
                    chain.certificate)


def conclude(
    envelope: Any, prepared: Prepared, signature_valid: bool, ledger_id: str
) -> Authenticated | Refusal:
    """A prepared payment's result once its signature is judged, then the ledger check."""
    if not signature_valid:
        error = InvalidSignature("signature does not verify")
        return _refusal(envelope, error.code, error.detail)
    if prepared.message["ledger_id"] != ledger_id:
        return _refusal(envelope, "offline_wrong_ledger",
                        f"payment is for ledger {prepared.message['ledger_id']}, not {ledger_id}")
    return Authenticated(
        payment_hash=prepared.payment_hash,
        message=prepared.message,
        signature=prepared.signature,
        certificate_serial=prepared.certificate.serial,
        certificate_signature=prepared.certificate.signature,
        message_json=prepared.message_json,
    )


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
    if not signing.verify_raw(certificate.public_key, signed, signature):
        raise InvalidSignature("signature does not verify")
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
    message = unchecked_message(envelope)
    device = message.get("payer_device")
    return Refusal(
        code=code,
        detail=detail,
        digest=best_effort_hash(envelope, message),
        payer_device=device if isinstance(device, str) else None,
        counter=claimed_counter(message),
        amount_fen=claimed_amount_fen(message),
    )
