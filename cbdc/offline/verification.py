"""Verifying offline payments, and classifying a device's payments for fraud.

The same verification runs on a payee device (offline, against its pinned root key, its
revocation snapshot and its own clock) and in the ledger when the payment is synchronised.
:func:`classify_device_payments` is the ledger's later, global view: given everything the ledger
has collected from one device (its payments, the loads it issued, the unloads it received), it
names each fraud the protocol can prove, with stable codes. It is pure; the settlement service
decides who is paid (docs/offline-protocol.md, "Settlement and loss policy").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cbdc.domain import signing
from cbdc.domain.errors import (
    CbdcError,
    CertificateRefused,
    InvalidEnvelope,
    InvalidRequest,
    OfflineRefused,
)
from cbdc.domain.messages import COUNTER_MAX, unchecked_message
from cbdc.domain.money import AMOUNT_FEN_MAX
from cbdc.offline import messages
from cbdc.offline.certificates import (
    DeviceCertificate,
    OperatorCertificate,
    RevocationSnapshot,
    check_chain_usable,
    verify_chain,
)
from cbdc.offline.messages import CERTIFICATE, LOAD_RECEIPT, OFFLINE_PAYMENT, UNLOAD, parse_time

#: How far a payment's ``created_at`` may lie ahead of the verifier's clock (device clocks drift).
CLOCK_SKEW = timedelta(minutes=5)
ENVELOPE_KEYS = frozenset({"message", "signature", "certificate", "operator_certificate"})


@dataclass(frozen=True, slots=True)
class VerifiedPayment:
    """An offline payment whose signature and certificate chain check out."""

    payment_hash: str
    message: Mapping[str, Any]
    signature: bytes
    certificate: DeviceCertificate
    operator_certificate: OperatorCertificate

    @property
    def payer_device(self) -> str:
        return str(self.message["payer_device"])

    @property
    def payer_wallet(self) -> str:
        return str(self.message["payer_wallet"])

    @property
    def payee_device(self) -> str:
        return str(self.message["payee_device"])

    @property
    def payee_wallet(self) -> str:
        return str(self.message["payee_wallet"])

    @property
    def counter(self) -> int:
        return int(self.message["counter"])

    @property
    def load_counter(self) -> int:
        return int(self.message["load_counter"])

    @property
    def payments_since_sync(self) -> int:
        return int(self.message["payments_since_sync"])

    @property
    def amount_fen(self) -> int:
        return int(self.message["amount_fen"])

    @property
    def created_at(self) -> datetime:
        return parse_time(self.message["created_at"])

    @property
    def prev_hash(self) -> str:
        return str(self.message["prev_hash"])

    @property
    def operator_id(self) -> str:
        return self.certificate.operator_id

    def to_envelope(self) -> dict[str, Any]:
        return payment_envelope(
            self.message, self.signature, self.certificate, self.operator_certificate
        )


def payment_envelope(
    message: Mapping[str, Any],
    signature: bytes,
    certificate: DeviceCertificate,
    operator_certificate: OperatorCertificate,
) -> dict[str, Any]:
    """The wire form: the signed payment with the payer's certificate chain alongside."""
    return {
        "message": dict(message),
        "signature": signature.hex(),
        "certificate": certificate.to_envelope(),
        "operator_certificate": operator_certificate.to_envelope(),
    }


def authenticate_offline_payment(
    envelope: Any,
    root_public_key: bytes,
    *,
    verified_chains: set[tuple[bytes, bytes]] | None = None,
) -> VerifiedPayment:
    """Prove the payment comes from a certified device, independent of time and revocation.

    ``verified_chains`` (optional, owned by the caller) remembers the chains already verified
    under ``root_public_key`` (the sha256 digests of both certificates' signed bytes and
    signature: a payee device remembers every payer's chain it met, so it keeps 64 bytes a
    chain, not the certificates), so a batch of payments from one device checks its chain once;
    and each operator certificate verified (with an empty device digest), so the root's
    signature on it is checked once too.

    Order: (1) shape of the envelope, payment and certificates (``envelope_invalid``, then
    the field codes of cbdc.domain.messages);
    (2) root -> operator -> device chain (``certificate_invalid``,
    ``certificate_chain_invalid``); (3) the payment names the certified device, wallet and
    ledger (``certificate_mismatch``); (4) the payment's signature (``signature_invalid``).
    """
    if not isinstance(envelope, Mapping) or set(envelope) != ENVELOPE_KEYS:
        raise InvalidEnvelope(f"an offline payment envelope has exactly {sorted(ENVELOPE_KEYS)}")
    message, signature = messages.open_envelope(
        OFFLINE_PAYMENT, {"message": envelope["message"], "signature": envelope["signature"]}
    )
    certificate = DeviceCertificate.from_envelope(envelope["certificate"])
    operator_certificate = OperatorCertificate.from_envelope(envelope["operator_certificate"])
    chain = (
        hashlib.sha256(signing.signed_bytes(CERTIFICATE, certificate.message)
                       + certificate.signature).digest(),
        hashlib.sha256(signing.signed_bytes(CERTIFICATE, operator_certificate.message)
                       + operator_certificate.signature).digest(),
    )
    if verified_chains is None or chain not in verified_chains:
        operator_only = (b"", chain[1])  # the operator's certificate verified on its own
        verify_chain(certificate, operator_certificate, root_public_key,
                     operator_verified=verified_chains is not None
                     and operator_only in verified_chains)
        if verified_chains is not None:
            verified_chains.update((chain, operator_only))
    check_names_certified(message, certificate)
    signing.verify(certificate.public_key, OFFLINE_PAYMENT, message, signature)
    return VerifiedPayment(
        payment_hash=messages.message_hash(OFFLINE_PAYMENT, message),
        message=message,
        signature=signature,
        certificate=certificate,
        operator_certificate=operator_certificate,
    )


def check_names_certified(message: Mapping[str, Any], certificate: DeviceCertificate) -> None:
    """Step 3: the payment names the certified device, wallet and ledger."""
    if (
        message["payer_device"] != certificate.device_id
        or message["payer_wallet"] != certificate.wallet
        or message["ledger_id"] != certificate.ledger_id
    ):
        raise CertificateRefused(
            f"payment from {message['payer_device']}/{message['payer_wallet']} travels with "
            f"the certificate of {certificate.device_id}/{certificate.wallet}",
            code="certificate_mismatch",
            serial=certificate.serial,
        )


def check_payment_acceptable(
    payment: VerifiedPayment, revocations: RevocationSnapshot, now: datetime
) -> None:
    """The time, revocation and cap rules, in order: (5) not from the future
    (``offline_from_future``); (6) both certificates valid at ``now`` and at the payment's
    ``created_at`` (``certificate_expired`` / ``certificate_not_yet_valid``), neither revoked
    (``certificate_revoked``); (7) caps of the payer's certificate
    (``offline_payment_cap_exceeded``, ``offline_payments_exhausted``)."""
    if payment.created_at > now + CLOCK_SKEW:
        raise OfflineRefused(
            f"payment dated {payment.message['created_at']} is ahead of the verifier's clock",
            code="offline_from_future",
        )
    check_chain_usable(payment.certificate, payment.operator_certificate, revocations, now)
    check_chain_usable(
        payment.certificate, payment.operator_certificate, revocations, payment.created_at
    )
    caps = payment.certificate.caps
    if payment.amount_fen > caps.payment_fen_max:
        raise OfflineRefused(
            f"payment of {payment.amount_fen} fen is above the device's single-payment cap "
            f"of {caps.payment_fen_max} fen",
            code="offline_payment_cap_exceeded",
        )
    if payment.payments_since_sync > caps.payments_max:
        raise OfflineRefused(
            f"payment is the device's {payment.payments_since_sync}th since its last sync; "
            f"its cap is {caps.payments_max}",
            code="offline_payments_exhausted",
        )


def verify_offline_payment(
    envelope: Any,
    root_public_key: bytes,
    revocations: RevocationSnapshot,
    now: datetime,
    *,
    ledger_id: str | None = None,
    verified_chains: set[tuple[bytes, bytes]] | None = None,
) -> VerifiedPayment:
    """Everything a payee can check offline; raises the first failed rule's error.

    ``now`` is the verifier's time of acceptance. When ``ledger_id`` is given the payment must
    be for that ledger (``offline_wrong_ledger``), checked right after the shape.
    ``verified_chains``: as for :func:`authenticate_offline_payment` (a payee that remembers
    the chains it verified checks each payer's chain once).
    """
    payment = authenticate_offline_payment(envelope, root_public_key,
                                           verified_chains=verified_chains)
    if ledger_id is not None and payment.message["ledger_id"] != ledger_id:
        raise OfflineRefused(
            f"payment is for ledger {payment.message['ledger_id']}, not {ledger_id}",
            code="offline_wrong_ledger",
        )
    check_payment_acceptable(payment, revocations, now)
    return payment


# --- fraud classification -----------------------------------------------------------------


class FindingCode(StrEnum):
    """Stable codes of what classification can prove about a device's payments."""

    FORGED = "offline_forged"
    DOUBLE_SPEND = "offline_double_spend"
    AFTER_UNLOAD = "offline_after_unload"
    OVERSPEND = "offline_overspend"
    CAP_EXCEEDED = "offline_cap_exceeded"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_REVOKED = "certificate_revoked"


_REFUSAL_FINDINGS = {
    "certificate_expired": FindingCode.CERTIFICATE_EXPIRED,
    "certificate_not_yet_valid": FindingCode.CERTIFICATE_EXPIRED,
    "certificate_revoked": FindingCode.CERTIFICATE_REVOKED,
    "offline_payment_cap_exceeded": FindingCode.CAP_EXCEEDED,
    "offline_payments_exhausted": FindingCode.CAP_EXCEEDED,
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One proven problem: which payments (by counter and hash) and the amount they carry."""

    code: FindingCode
    device_id: str
    counters: tuple[int, ...]
    payment_hashes: tuple[str, ...]
    amount_fen: int
    detail: str


@dataclass(frozen=True, slots=True)
class Classification:
    """The ledger's verdict on one device's payments.

    ``authentic`` holds every distinct payment signed by the certified device (sorted by counter,
    then hash); ``honest`` the authentic payments with no finding; ``loaded_fen`` and
    ``unloaded_fen`` the escrow movements the ledger recorded for the device.
    """

    device_id: str
    authentic: tuple[VerifiedPayment, ...]
    honest: tuple[VerifiedPayment, ...]
    findings: tuple[Finding, ...]
    loaded_fen: int
    unloaded_fen: int
    flagged: Mapping[str, tuple[FindingCode, ...]] = field(default_factory=dict)

    @property
    def honest_paid_fen(self) -> int:
        return sum(payment.amount_fen for payment in self.honest)

    @property
    def escrow_fen(self) -> int:
        """What the device's escrow held for its payments: loads minus unloads."""
        return self.loaded_fen - self.unloaded_fen

    def codes(self) -> set[str]:
        return {str(finding.code) for finding in self.findings}

    def of(self, code: FindingCode) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if finding.code is code)


def classify_device_payments(
    device_id: str,
    envelopes: Iterable[Any],
    *,
    root_public_key: bytes,
    loads: Iterable[Mapping[str, Any]] = (),
    unloads: Iterable[Mapping[str, Any]] = (),
    revocations: RevocationSnapshot,
    verified: Iterable[VerifiedPayment] = (),
) -> Classification:
    """Classify every payment the ledger holds from ``device_id``.

    ``envelopes``: offline payment envelopes claiming to come from the device (duplicates of the
    same payment are fine). ``verified``: payments the caller has already authenticated (the
    ledger keeps only authenticated payments, so it does not check their signatures twice);
    they join the authentic ones as they are. ``loads``: the load receipt messages the ledger
    issued to the device, each once; ``unloads``: the device's unload statement messages the
    ledger accepted (already signature-checked). Certificate validity is judged at each
    payment's ``created_at``; revocation against ``revocations`` (the ledger's current list).

    Rules, in the order they are applied (docs/offline-protocol.md, "Fraud classes"):
    forged; expired / revoked / over cap (still authentic, so they count below); double spend
    (one counter, several contents); after unload (a counter or load range the device's unload
    closed, or more than the unload declared paid); overspend (covered in counter order until
    the escrow, loads minus unloads, is exhausted).
    """
    load_list = [_validated_for(device_id, LOAD_RECEIPT, load, "device") for load in loads]
    unload_list = [_validated_for(device_id, UNLOAD, unload, "device") for unload in unloads]
    findings: list[Finding] = []
    authentic = _authentic_payments(device_id, envelopes, root_public_key, findings, verified)
    flagged: dict[str, list[FindingCode]] = {p.payment_hash: [] for p in authentic}
    _classify_acceptability(device_id, authentic, revocations, findings, flagged)
    _classify_double_spends(device_id, authentic, findings, flagged)
    spendable = [p for p in authentic if FindingCode.DOUBLE_SPEND not in flagged[p.payment_hash]]
    spendable = _classify_after_unloads(device_id, spendable, unload_list, findings, flagged)
    loaded_fen = sum(load["amount_fen"] for load in load_list)
    unloaded_fen = sum(unload["amount_fen"] for unload in unload_list)
    _classify_overspend(device_id, spendable, loaded_fen - unloaded_fen, findings, flagged)
    honest = tuple(p for p in authentic if not flagged[p.payment_hash])
    return Classification(
        device_id=device_id,
        authentic=tuple(authentic),
        honest=honest,
        findings=tuple(sorted(findings, key=_finding_order)),
        loaded_fen=loaded_fen,
        unloaded_fen=unloaded_fen,
        flagged={key: tuple(codes) for key, codes in flagged.items() if codes},
    )


def _validated_for(device_id: str, tag: str, message: Any, key: str) -> dict[str, Any]:
    plain = messages.validate(tag, message)
    if plain[key] != device_id:
        raise InvalidRequest(
            f"{tag} for device {plain[key]} passed to the classification of {device_id}",
            code="device_mismatch",
        )
    return plain


def _authentic_payments(
    device_id: str,
    envelopes: Iterable[Any],
    root_public_key: bytes,
    findings: list[Finding],
    verified: Iterable[VerifiedPayment] = (),
) -> list[VerifiedPayment]:
    by_hash: dict[str, VerifiedPayment] = {}
    forged_seen: set[str] = set()
    verified_chains: set[tuple[bytes, bytes]] = set()
    for envelope in envelopes:
        try:
            payment = authenticate_offline_payment(
                envelope, root_public_key, verified_chains=verified_chains
            )
        except CbdcError as exc:
            _record_forged(device_id, envelope, exc, findings, forged_seen)
            continue
        _check_payer(device_id, payment)
        by_hash.setdefault(payment.payment_hash, payment)
    for payment in verified:
        _check_payer(device_id, payment)
        by_hash.setdefault(payment.payment_hash, payment)
    return sorted(by_hash.values(), key=lambda p: (p.counter, p.payment_hash))


def _check_payer(device_id: str, payment: VerifiedPayment) -> None:
    if payment.payer_device != device_id:
        raise InvalidRequest(
            f"payment from {payment.payer_device} passed to the classification of {device_id}",
            code="device_mismatch",
        )


def _record_forged(
    device_id: str,
    envelope: Any,
    error: CbdcError,
    findings: list[Finding],
    seen: set[str],
) -> None:
    message = unchecked_message(envelope)
    digest = best_effort_hash(envelope, message)
    if digest in seen:
        return
    seen.add(digest)
    counter = claimed_counter(message)
    findings.append(
        Finding(
            code=FindingCode.FORGED,
            device_id=device_id,
            counters=() if counter is None else (counter,),
            payment_hashes=(digest,),
            amount_fen=claimed_amount_fen(message),
            detail=f"not a payment of a certified device: {error}",
        )
    )


def claimed_counter(message: Mapping[str, Any]) -> int | None:
    """The counter an unchecked (refused) payment claims, if it is one a payment could carry."""
    return _claimed(message.get("counter"), COUNTER_MAX)


def claimed_amount_fen(message: Mapping[str, Any]) -> int:
    """The amount an unchecked (refused) payment claims, if it is one a payment could carry;
    else 0. A fraud case adds these up, so no claim may be of an amount the ledger cannot hold."""
    return _claimed(message.get("amount_fen"), AMOUNT_FEN_MAX) or 0


def _claimed(value: object, maximum: int) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum:
        return value
    return None


def best_effort_hash(envelope: Any, message: Mapping[str, Any]) -> str:
    """The payment hash if the message can be hashed at all, else the hash of the envelope's
    canonical JSON (or of its repr), so every forged item still has a stable name."""
    try:
        return messages.message_hash(OFFLINE_PAYMENT, message)
    except (CbdcError, TypeError, ValueError):
        pass
    try:
        return hashlib.sha256(signing.canonical(envelope)).hexdigest()
    except (CbdcError, TypeError, ValueError, AttributeError):
        return hashlib.sha256(repr(envelope).encode()).hexdigest()


def _finding(
    code: FindingCode, device_id: str, payments: list[VerifiedPayment], detail: str
) -> Finding:
    return Finding(
        code=code,
        device_id=device_id,
        counters=tuple(sorted({p.counter for p in payments})),
        payment_hashes=tuple(p.payment_hash for p in payments),
        amount_fen=sum(p.amount_fen for p in payments),
        detail=detail,
    )


def _flag(
    code: FindingCode,
    device_id: str,
    payments: list[VerifiedPayment],
    detail: str,
    findings: list[Finding],
    flagged: dict[str, list[FindingCode]],
) -> None:
    if not payments:
        return
    findings.append(_finding(code, device_id, payments, detail))
    for payment in payments:
        flagged[payment.payment_hash].append(code)


def _classify_acceptability(
    device_id: str,
    authentic: list[VerifiedPayment],
    revocations: RevocationSnapshot,
    findings: list[Finding],
    flagged: dict[str, list[FindingCode]],
) -> None:
    by_code: dict[FindingCode, list[VerifiedPayment]] = {}
    for payment in authentic:
        try:
            check_payment_acceptable(payment, revocations, payment.created_at)
        except (CertificateRefused, OfflineRefused) as exc:
            by_code.setdefault(_REFUSAL_FINDINGS[exc.code], []).append(payment)
    for code, payments in by_code.items():
        _flag(code, device_id, payments, f"{len(payments)} payment(s): {code}", findings, flagged)


def _classify_double_spends(
    device_id: str,
    authentic: list[VerifiedPayment],
    findings: list[Finding],
    flagged: dict[str, list[FindingCode]],
) -> None:
    by_counter: dict[int, list[VerifiedPayment]] = {}
    for payment in authentic:
        by_counter.setdefault(payment.counter, []).append(payment)
    for counter, payments in sorted(by_counter.items()):
        if len(payments) > 1:
            detail = (
                f"counter {counter} signed {len(payments)} times with different content "
                f"(a cloned secure element)"
            )
            _flag(FindingCode.DOUBLE_SPEND, device_id, payments, detail, findings, flagged)


def _classify_after_unloads(
    device_id: str,
    payments: list[VerifiedPayment],
    unloads: list[dict[str, Any]],
    findings: list[Finding],
    flagged: dict[str, list[FindingCode]],
) -> list[VerifiedPayment]:
    """Flag payments outside what an unload closed and declared; return the rest."""
    late: dict[str, VerifiedPayment] = {}
    for unload in sorted(unloads, key=lambda u: u["unload_counter"]):
        for payment in _outside_unload(payments, unload, late):
            late[payment.payment_hash] = payment
    for unload in sorted(unloads, key=lambda u: u["unload_counter"]):
        for payment in _beyond_declared(payments, unload, late):
            late[payment.payment_hash] = payment
    detail = "signed in a counter or load range that an unload statement had closed"
    ordered = [p for p in payments if p.payment_hash in late]
    _flag(FindingCode.AFTER_UNLOAD, device_id, ordered, detail, findings, flagged)
    return [p for p in payments if p.payment_hash not in late]


def _outside_unload(
    payments: list[VerifiedPayment], unload: Mapping[str, Any], late: Mapping[str, Any]
) -> list[VerifiedPayment]:
    """Payments on the wrong side of an unload: an honest device pays from loads up to the
    unload with counters up to it, and after it only from later loads with later counters."""
    result = []
    for payment in payments:
        if payment.payment_hash in late:
            continue
        before_by_counter = payment.counter <= unload["counter"]
        before_by_load = payment.load_counter <= unload["load_counter"]
        if before_by_counter != before_by_load:
            result.append(payment)
    return result


def _declared_chain(payments: list[VerifiedPayment], unload: Mapping[str, Any]) -> dict[int, str]:
    """The hashes the unload vouches for, by counter: its ``last_payment_hash``, then back
    through each known payment's ``prev_hash`` for as long as the ledger holds the links."""
    by_hash = {p.payment_hash: p for p in payments}
    declared: dict[int, str] = {}
    counter, digest = unload["counter"], unload["last_payment_hash"]
    while counter >= 1:
        declared[counter] = digest
        payment = by_hash.get(digest)
        if payment is None or payment.counter != counter:
            break
        counter, digest = counter - 1, payment.prev_hash
    return declared


def _beyond_declared(
    payments: list[VerifiedPayment], unload: Mapping[str, Any], late: Mapping[str, Any]
) -> list[VerifiedPayment]:
    """In the closed range, payments the unload did not declare: off its hash chain where the
    chain is known, then, if the rest sum to more than ``paid_fen_total``, the excess among the
    payments not proven on the chain, highest counters first."""
    declared = _declared_chain(payments, unload)
    closed = [p for p in payments if p.counter <= unload["counter"] and p.payment_hash not in late]
    off_chain = [p for p in closed if declared.get(p.counter, p.payment_hash) != p.payment_hash]
    rest = [p for p in closed if p not in off_chain]
    unproven = [p for p in rest if declared.get(p.counter) != p.payment_hash]
    total = sum(p.amount_fen for p in rest)
    while unproven and total > unload["paid_fen_total"]:
        payment = unproven.pop()
        total -= payment.amount_fen
        off_chain.append(payment)
    return off_chain


def _classify_overspend(
    device_id: str,
    payments: list[VerifiedPayment],
    escrow_fen: int,
    findings: list[Finding],
    flagged: dict[str, list[FindingCode]],
) -> None:
    """Payments are covered by the escrow in counter order; from the first that does not fit,
    every later one is beyond what was loaded."""
    covered = 0
    beyond: list[VerifiedPayment] = []
    for payment in payments:
        if beyond or covered + payment.amount_fen > escrow_fen:
            beyond.append(payment)
        else:
            covered += payment.amount_fen
    detail = (
        f"payments beyond the escrow of {escrow_fen} fen (loads minus unloads); "
        f"{covered} fen covered"
    )
    _flag(FindingCode.OVERSPEND, device_id, beyond, detail, findings, flagged)


_CODE_ORDER = {code: index for index, code in enumerate(FindingCode)}


def _finding_order(finding: Finding) -> tuple[int, tuple[int, ...], tuple[str, ...]]:
    return (_CODE_ORDER[finding.code], finding.counters, finding.payment_hashes)
