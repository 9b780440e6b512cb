"""The offline public-key infrastructure: central bank root -> operators -> devices.

The central bank's root key (pinned in every device and in the ledger) certifies operator keys;
an operator certifies the devices of its wallets. A device certificate binds the device id and
public key to a wallet, its class, the issuing operator and the device's offline caps, for a
validity window. The root also publishes a numbered, dated revocation list of certificate
serials. Nothing here reads a clock or draws randomness: times and keys are passed in.

Offline caps per wallet class (:data:`DEFAULT_OFFLINE_CAPS`, overridable per deployment):
the e-CNY pilots' hardware wallets are reported to allow up to 500 CNY and 10 payments before
a device must go online. Classes 1-3 get exactly that, with a single payment capped at the
whole allowance.
Class 4 wallets are anonymous (phone number only), so a stolen or cloned anonymous card must
expose less: 200 CNY offline balance, 100 CNY per payment, 5 payments between syncs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Self

import nacl.signing

from cbdc.domain import signing
from cbdc.domain.errors import (
    CertificateRefused,
    FieldInvalid,
    InvalidKey,
    InvalidRequest,
    InvalidSignature,
)
from cbdc.domain.money import yuan
from cbdc.offline import messages
from cbdc.offline.messages import (
    CERTIFICATE,
    CURRENCY,
    LOAD_RECEIPT,
    REVOCATION_LIST,
    ROLE_DEVICE,
    ROLE_OPERATOR,
    SYNC_RECEIPT,
    VERSION,
    format_time,
    parse_time,
)


@dataclass(frozen=True, slots=True)
class OfflineCaps:
    """What one device may hold and spend offline before it has to go online."""

    balance_fen_max: int
    payment_fen_max: int
    payments_max: int

    def __post_init__(self) -> None:
        if not 0 < self.payment_fen_max <= self.balance_fen_max:
            raise ValueError("need 0 < payment_fen_max <= balance_fen_max")
        if self.payments_max < 1:
            raise ValueError("payments_max must be at least 1")


_STANDARD_CAPS = OfflineCaps(yuan(500), yuan(500), 10)
#: Offline caps per wallet class; see the module docstring for why class 4 is smaller.
DEFAULT_OFFLINE_CAPS: Mapping[int, OfflineCaps] = MappingProxyType(
    {
        1: _STANDARD_CAPS,
        2: _STANDARD_CAPS,
        3: _STANDARD_CAPS,
        4: OfflineCaps(yuan(200), yuan(100), 5),
    }
)


def offline_caps_for(
    wallet_class: int, caps_by_class: Mapping[int, OfflineCaps] = DEFAULT_OFFLINE_CAPS
) -> OfflineCaps:
    try:
        return caps_by_class[wallet_class]
    except KeyError:
        raise InvalidRequest(
            f"no offline caps for wallet class {wallet_class!r}", code="wallet_class_invalid"
        ) from None


# --- certificates -------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _validated_time(text: str) -> datetime:
    """A certificate's validity bound (already validated when the certificate was built);
    checked for every payment a ledger classifies, so parsed once per distinct string."""
    return parse_time(text)


@dataclass(frozen=True, slots=True)
class Certificate:
    """A signed certificate message (operator or device); its fields are validated on creation."""

    message: Mapping[str, Any]
    signature: bytes

    def __post_init__(self) -> None:
        self._check_role(self.message)
        object.__setattr__(self, "message", messages.validate(CERTIFICATE, self.message))

    @classmethod
    def _check_role(cls, message: Any) -> None:
        role = message.get("role") if isinstance(message, Mapping) else None
        if role != cls.role_expected():
            raise FieldInvalid(
                f"expected a certificate of role {cls.role_expected()!r}", field="role"
            )

    @staticmethod
    def role_expected() -> str:
        raise NotImplementedError

    @classmethod
    def from_envelope(cls, envelope: Any) -> Self:
        message, signature = messages.open_envelope(CERTIFICATE, envelope)
        # open_envelope validated the message; validating a validated message again (as
        # __post_init__ would) returns an equal copy, so only the role is left to check.
        cls._check_role(message)
        certificate = object.__new__(cls)
        object.__setattr__(certificate, "message", message)
        object.__setattr__(certificate, "signature", signature)
        return certificate

    def to_envelope(self) -> dict[str, Any]:
        return {"message": dict(self.message), "signature": self.signature.hex()}

    @property
    def serial(self) -> str:
        return str(self.message["serial"])

    @property
    def subject(self) -> str:
        return str(self.message["subject"])

    @property
    def issuer(self) -> str:
        return str(self.message["issuer"])

    @property
    def ledger_id(self) -> str:
        return str(self.message["ledger_id"])

    @property
    def public_key(self) -> bytes:
        return bytes.fromhex(self.message["public_key"])

    @property
    def issuer_key(self) -> bytes:
        return bytes.fromhex(self.message["issuer_key"])

    @property
    def not_before(self) -> datetime:
        return _validated_time(self.message["not_before"])

    @property
    def not_after(self) -> datetime:
        return _validated_time(self.message["not_after"])

    def check_signed_by(self, issuer_key: bytes) -> None:
        """Raise CertificateRefused (certificate_invalid) unless ``issuer_key`` signed this."""
        if self.issuer_key != issuer_key:
            raise CertificateRefused(
                f"certificate {self.serial} names another issuer key",
                code="certificate_chain_invalid",
                serial=self.serial,
            )
        try:
            signing.verify(issuer_key, CERTIFICATE, self.message, self.signature)
        except InvalidSignature as exc:
            raise CertificateRefused(
                f"certificate {self.serial}: signature does not verify",
                code="certificate_invalid",
                serial=self.serial,
            ) from exc

    def check_valid_at(self, moment: datetime) -> None:
        """Validity is the half-open window ``[not_before, not_after)``."""
        if moment < self.not_before:
            raise CertificateRefused(
                f"certificate {self.serial} is not valid before {self.message['not_before']}",
                code="certificate_not_yet_valid",
                serial=self.serial,
            )
        if moment >= self.not_after:
            raise CertificateRefused(
                f"certificate {self.serial} expired at {self.message['not_after']}",
                code="certificate_expired",
                serial=self.serial,
            )


@dataclass(frozen=True, slots=True)
class OperatorCertificate(Certificate):
    """An operator's key, certified by the central bank's root key."""

    @staticmethod
    def role_expected() -> str:
        return ROLE_OPERATOR

    @property
    def operator_id(self) -> str:
        return self.subject


@dataclass(frozen=True, slots=True)
class DeviceCertificate(Certificate):
    """A device's key bound to its wallet and offline caps, certified by an operator."""

    @staticmethod
    def role_expected() -> str:
        return ROLE_DEVICE

    @property
    def device_id(self) -> str:
        return self.subject

    @property
    def operator_id(self) -> str:
        return self.issuer

    @property
    def wallet(self) -> str:
        return str(self.message["wallet"])

    @property
    def wallet_class(self) -> int:
        return int(self.message["wallet_class"])

    @property
    def caps(self) -> OfflineCaps:
        return OfflineCaps(
            balance_fen_max=self.message["offline_balance_fen_max"],
            payment_fen_max=self.message["offline_payment_fen_max"],
            payments_max=self.message["offline_payments_max"],
        )


# --- revocation ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevocationSnapshot:
    """A verified revocation list as a device or the ledger holds it. Number 0 is "none yet"."""

    number: int
    issued_at: datetime | None
    revoked: frozenset[str]
    envelope: Mapping[str, Any] | None = None

    def is_revoked(self, serial: str) -> bool:
        return serial in self.revoked


NO_REVOCATIONS = RevocationSnapshot(number=0, issued_at=None, revoked=frozenset())


#: Revocation lists verified lately, by root key, ledger and signature. Every device handed the
#: same list shares its one (immutable) snapshot: a list names every revoked certificate, so a
#: copy per device would grow with the devices times the revocations.
_VERIFIED_LISTS_MAX = 16
_verified_lists: dict[tuple[bytes, str, str], RevocationSnapshot] = {}


def verify_revocation_list(
    envelope: Any, root_public_key: bytes, ledger_id: str
) -> RevocationSnapshot:
    """Check a revocation list's shape, ledger and root signature; return it as a snapshot.
    A list equal to one verified lately under the same root key and ledger is not verified
    again: its snapshot is returned (shared, never changed)."""
    key = _list_key(envelope, root_public_key, ledger_id)
    known = _verified_lists.get(key) if key is not None else None
    if known is not None and known.envelope == envelope:
        return known
    message = messages.verify_envelope(REVOCATION_LIST, envelope, root_public_key)
    if message["ledger_id"] != ledger_id:
        raise CertificateRefused(
            "revocation list is for another ledger", code="certificate_mismatch"
        )
    snapshot = RevocationSnapshot(
        number=message["number"],
        issued_at=parse_time(message["issued_at"]),
        revoked=frozenset(message["revoked"]),
        # A deep copy: the snapshot is shared, so nothing the caller holds may change it.
        envelope={"message": copy.deepcopy(message), "signature": envelope["signature"]},
    )
    if key is not None:
        if len(_verified_lists) >= _VERIFIED_LISTS_MAX:
            _verified_lists.clear()
        _verified_lists[key] = snapshot
    return snapshot


def _list_key(
    envelope: Any, root_public_key: bytes, ledger_id: str
) -> tuple[bytes, str, str] | None:
    signature = envelope.get("signature") if isinstance(envelope, Mapping) else None
    return (root_public_key, ledger_id, signature) if isinstance(signature, str) else None


# --- chain --------------------------------------------------------------------------------


def verify_chain(
    device_certificate: DeviceCertificate,
    operator_certificate: OperatorCertificate,
    root_public_key: bytes,
    *,
    operator_verified: bool = False,
) -> None:
    """Check the signatures and links of root -> operator -> device (no time, no revocation).

    Order: the operator certificate is signed by the pinned root (skipped when the caller has
    already verified this very certificate under this root: ``operator_verified``); the device
    certificate names that operator and is signed by its key; both are for the same ledger.
    """
    if not operator_verified:
        operator_certificate.check_signed_by(root_public_key)
    if (
        device_certificate.issuer != operator_certificate.operator_id
        or device_certificate.ledger_id != operator_certificate.ledger_id
    ):
        raise CertificateRefused(
            f"device certificate {device_certificate.serial} was not issued by operator "
            f"{operator_certificate.operator_id} of ledger {operator_certificate.ledger_id}",
            code="certificate_chain_invalid",
            serial=device_certificate.serial,
        )
    device_certificate.check_signed_by(operator_certificate.public_key)


def check_chain_usable(
    device_certificate: DeviceCertificate,
    operator_certificate: OperatorCertificate,
    revocations: RevocationSnapshot,
    moment: datetime,
) -> None:
    """Both certificates valid at ``moment`` (operator first) and neither revoked."""
    operator_certificate.check_valid_at(moment)
    device_certificate.check_valid_at(moment)
    for certificate in (operator_certificate, device_certificate):
        if revocations.is_revoked(certificate.serial):
            raise CertificateRefused(
                f"certificate {certificate.serial} is revoked "
                f"(revocation list {revocations.number})",
                code="certificate_revoked",
                serial=certificate.serial,
            )


# --- authorities --------------------------------------------------------------------------


def public_key_hex(signing_key: nacl.signing.SigningKey) -> str:
    return bytes(signing_key.verify_key).hex()


class RootAuthority:
    """The central bank's root of the offline PKI: certifies operators, revokes certificates."""

    def __init__(self, ledger_id: str, authority_id: str, signing_key: nacl.signing.SigningKey):
        self.ledger_id = ledger_id
        self.authority_id = authority_id
        self._signing_key = signing_key

    @property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    def certify_operator(
        self,
        *,
        serial: str,
        operator_id: str,
        operator_public_key: bytes,
        not_before: datetime,
        not_after: datetime,
    ) -> OperatorCertificate:
        message = {
            "version": VERSION,
            "domain": CERTIFICATE,
            "ledger_id": self.ledger_id,
            "serial": serial,
            "role": ROLE_OPERATOR,
            "subject": operator_id,
            "public_key": operator_public_key.hex(),
            "issuer": self.authority_id,
            "issuer_key": public_key_hex(self._signing_key),
            "not_before": format_time(not_before),
            "not_after": format_time(not_after),
        }
        envelope = messages.seal(self._signing_key, CERTIFICATE, message)
        return OperatorCertificate.from_envelope(envelope)

    def publish_revocation_list(
        self, *, number: int, issued_at: datetime, revoked: set[str] | frozenset[str]
    ) -> dict[str, Any]:
        message = {
            "version": VERSION,
            "domain": REVOCATION_LIST,
            "ledger_id": self.ledger_id,
            "issuer": self.authority_id,
            "number": number,
            "issued_at": format_time(issued_at),
            "revoked": sorted(revoked),
        }
        return messages.seal(self._signing_key, REVOCATION_LIST, message)


class OperatorAuthority:
    """An operator (bank): certifies its customers' devices, signs their load and sync receipts."""

    def __init__(self, signing_key: nacl.signing.SigningKey, certificate: OperatorCertificate):
        if certificate.public_key != bytes(signing_key.verify_key):
            raise InvalidKey("the operator certificate is for another key")
        self._signing_key = signing_key
        self.certificate = certificate

    @property
    def operator_id(self) -> str:
        return self.certificate.operator_id

    @property
    def ledger_id(self) -> str:
        return self.certificate.ledger_id

    @property
    def public_key(self) -> bytes:
        return self.certificate.public_key

    def certify_device(
        self,
        *,
        serial: str,
        device_id: str,
        device_public_key: bytes,
        wallet: str,
        wallet_class: int,
        not_before: datetime,
        not_after: datetime,
        caps: OfflineCaps | None = None,
    ) -> DeviceCertificate:
        caps = caps or offline_caps_for(wallet_class)
        message = {
            "version": VERSION,
            "domain": CERTIFICATE,
            "ledger_id": self.ledger_id,
            "serial": serial,
            "role": ROLE_DEVICE,
            "subject": device_id,
            "public_key": device_public_key.hex(),
            "issuer": self.operator_id,
            "issuer_key": self.public_key.hex(),
            "wallet": wallet,
            "wallet_class": wallet_class,
            "offline_balance_fen_max": caps.balance_fen_max,
            "offline_payment_fen_max": caps.payment_fen_max,
            "offline_payments_max": caps.payments_max,
            "not_before": format_time(not_before),
            "not_after": format_time(not_after),
        }
        envelope = messages.seal(self._signing_key, CERTIFICATE, message)
        return DeviceCertificate.from_envelope(envelope)

    def sign_load_receipt(
        self,
        *,
        load_id: str,
        device_id: str,
        wallet: str,
        amount_fen: int,
        load_counter: int,
        created_at: datetime,
    ) -> dict[str, Any]:
        """The receipt for value moved from ``wallet`` into the device's escrow on the ledger."""
        message = {
            "version": VERSION,
            "domain": LOAD_RECEIPT,
            "ledger_id": self.ledger_id,
            "load_id": load_id,
            "operator": self.operator_id,
            "device": device_id,
            "wallet": wallet,
            "amount_fen": amount_fen,
            "currency": CURRENCY,
            "load_counter": load_counter,
            "created_at": format_time(created_at),
        }
        return messages.seal(self._signing_key, LOAD_RECEIPT, message)

    def sign_sync_receipt(
        self,
        *,
        sync_id: str,
        device_id: str,
        synced_counter: int,
        settled: set[str] | frozenset[str],
        created_at: datetime,
    ) -> dict[str, Any]:
        """Acknowledge a device's upload: its payments through ``synced_counter`` are recorded
        and the received payments ``settled`` (by payment hash) are credited to its wallet."""
        message = {
            "version": VERSION,
            "domain": SYNC_RECEIPT,
            "ledger_id": self.ledger_id,
            "sync_id": sync_id,
            "operator": self.operator_id,
            "device": device_id,
            "synced_counter": synced_counter,
            "settled": sorted(settled),
            "created_at": format_time(created_at),
        }
        return messages.seal(self._signing_key, SYNC_RECEIPT, message)
