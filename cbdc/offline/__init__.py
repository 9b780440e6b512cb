"""Offline payments between two devices: certificates, signed messages, the secure element,
verification and fraud classification. Pure: imports only ``cbdc.domain`` and PyNaCl; the
settlement service (``cbdc.services``) builds on :func:`verify_offline_payment` and
:func:`classify_device_payments`. docs/offline-protocol.md is the normative description."""

from cbdc.offline.certificates import (
    DEFAULT_OFFLINE_CAPS,
    NO_REVOCATIONS,
    DeviceCertificate,
    OfflineCaps,
    OperatorAuthority,
    OperatorCertificate,
    RevocationSnapshot,
    RootAuthority,
    offline_caps_for,
    verify_chain,
    verify_revocation_list,
)
from cbdc.offline.device import DeviceState, SecureElement
from cbdc.offline.verification import (
    Classification,
    Finding,
    FindingCode,
    VerifiedPayment,
    authenticate_offline_payment,
    classify_device_payments,
    verify_offline_payment,
)

__all__ = [
    "DEFAULT_OFFLINE_CAPS",
    "NO_REVOCATIONS",
    "Classification",
    "DeviceCertificate",
    "DeviceState",
    "Finding",
    "FindingCode",
    "OfflineCaps",
    "OperatorAuthority",
    "OperatorCertificate",
    "RevocationSnapshot",
    "RootAuthority",
    "SecureElement",
    "VerifiedPayment",
    "authenticate_offline_payment",
    "classify_device_payments",
    "offline_caps_for",
    "verify_chain",
    "verify_offline_payment",
    "verify_revocation_list",
]
