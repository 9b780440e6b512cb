"""The one error tree of cbdc.

Every error a caller can provoke is a :class:`CbdcError` with a stable snake_case ``code`` (part of
the public contract: clients switch on it) and an HTTP ``status`` that ``api/`` alone turns into an
RFC 9457 problem document. Our own bugs are ``AssertionError``; they never reach a caller as a
domain error.

::

    CbdcError
    ├── InvalidRequest (400)            bad shape or value in a command
    │   ├── InvalidAmount               amount_invalid
    │   ├── InvalidPostings             postings_invalid
    │   ├── InvalidPlan                 plan_invalid
    │   ├── InvalidKey                  public_key_invalid
    │   └── InvalidMessage              message_invalid (a signed message, see messages.py)
    │       ├── InvalidEnvelope         envelope_invalid
    │       ├── InvalidQr               qr_invalid
    │       ├── FieldMissing            field_missing
    │       ├── FieldUnknown            field_unknown
    │       ├── FieldInvalid            field_invalid
    │       │   ├── UnsupportedVersion  version_unsupported
    │       │   └── UnsupportedCurrency currency_unsupported
    │       └── DomainMismatch          domain_invalid
    ├── AuthenticationFailed (401)      unauthenticated
    ├── Forbidden (403)                 forbidden
    ├── NotFound (404)                  *_not_found
    ├── Conflict (409)                  the request clashes with what is recorded
    │   ├── EntryConflict               entry_conflict (same id, other content)
    │   ├── AlreadyExists               *_exists
    │   └── IdempotencyInFlight         idempotency_in_flight
    ├── Refused (422)                   well-formed, but the ledger's rules say no
    │   ├── InsufficientFunds           insufficient_funds
    │   ├── QuotaExceeded               quota_exceeded
    │   ├── LimitExceeded               *_limit_exceeded
    │   ├── ClassChangeRefused          class_change_refused
    │   ├── InvalidSignature            signature_invalid
    │   ├── StatusRefused               *_inactive, *_expired, ...
    │   ├── CertificateRefused          certificate_invalid, certificate_chain_invalid,
    │   │                               certificate_expired, certificate_not_yet_valid,
    │   │                               certificate_revoked, certificate_mismatch
    │   ├── OfflineRefused              offline payments between two devices:
    │   │                               offline_balance_insufficient, offline_value_pending,
    │   │                               offline_payment_cap_exceeded, offline_balance_cap_exceeded,
    │   │                               offline_payments_exhausted, offline_counter_replayed,
    │   │                               offline_chain_broken, offline_wrong_payee,
    │   │                               offline_wrong_ledger, offline_from_future,
    │   │                               offline_self_payment, offline_device_uncertified
    │   ├── LoadRefused                 load_replayed, load_out_of_order, load_wrong_device
    │   ├── SyncRefused                 sync_receipt_invalid
    │   └── RevocationListRefused       revocation_list_stale
    ├── SchemaOutOfDate (503)           schema_out_of_date
    └── ApiUnavailable (503)            api_unavailable (a client of the HTTP API: the
                                        server did not answer, or not as the API says)
"""

from __future__ import annotations

from typing import Any, ClassVar


class CbdcError(Exception):
    """Root of every error a caller can cause. ``code`` is stable; ``detail`` is for humans."""

    code: ClassVar[str] = "cbdc_error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Request failed"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code  # type: ignore[misc]  # a subclass instance may refine its code
        self.extra: dict[str, Any] = extra

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class InvalidRequest(CbdcError):
    code = "invalid_request"
    status = 400
    title = "Invalid request"


class InvalidAmount(InvalidRequest):
    code = "amount_invalid"
    title = "Invalid amount"


class InvalidPostings(InvalidRequest):
    code = "postings_invalid"
    title = "Invalid postings"


class InvalidPlan(InvalidRequest):
    code = "plan_invalid"
    title = "Invalid issuance plan"


class InvalidKey(InvalidRequest):
    code = "public_key_invalid"
    title = "Invalid public key"


class InvalidMessage(InvalidRequest):
    """A signed message or its envelope is malformed. ``extra["field"]`` names the field, if any."""

    code = "message_invalid"
    title = "Invalid signed message"


class InvalidEnvelope(InvalidMessage):
    code = "envelope_invalid"
    title = "Invalid message envelope"


class InvalidQr(InvalidMessage):
    code = "qr_invalid"
    title = "Invalid QR payload"


class FieldMissing(InvalidMessage):
    code = "field_missing"
    title = "A required field is missing"


class FieldUnknown(InvalidMessage):
    code = "field_unknown"
    title = "An unknown field is present"


class FieldInvalid(InvalidMessage):
    code = "field_invalid"
    title = "A field has the wrong type or format"


class UnsupportedVersion(FieldInvalid):
    code = "version_unsupported"
    title = "Unsupported message version"


class UnsupportedCurrency(FieldInvalid):
    code = "currency_unsupported"
    title = "Unsupported currency"


class DomainMismatch(InvalidMessage):
    code = "domain_invalid"
    title = "Message domain tag is not the expected one"


class AuthenticationFailed(CbdcError):
    code = "unauthenticated"
    status = 401
    title = "Authentication required"


class Forbidden(CbdcError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class NotFound(CbdcError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(CbdcError):
    code = "conflict"
    status = 409
    title = "Conflict"


class EntryConflict(Conflict):
    code = "entry_conflict"
    title = "Same id, different content"


class AlreadyExists(Conflict):
    code = "already_exists"
    title = "Already exists"


class IdempotencyInFlight(Conflict):
    code = "idempotency_in_flight"
    title = "A request with this idempotency key is in flight"


class Refused(CbdcError):
    code = "refused"
    status = 422
    title = "Refused by the ledger's rules"


class InsufficientFunds(Refused):
    code = "insufficient_funds"
    title = "Insufficient funds"


class QuotaExceeded(Refused):
    code = "quota_exceeded"
    title = "Issuance quota exceeded"


class LimitExceeded(Refused):
    code = "limit_exceeded"
    title = "Wallet limit exceeded"


class ClassChangeRefused(Refused):
    """An upgrade or downgrade that the wallet's balance or usage would break."""

    code = "class_change_refused"
    title = "Wallet class change refused"


class InvalidSignature(Refused):
    code = "signature_invalid"
    title = "Invalid signature"


class StatusRefused(Refused):
    code = "status_refused"
    title = "Refused in the current status"


class CertificateRefused(Refused):
    """A certificate (operator or device) that does not chain, is out of date, or is revoked."""

    code = "certificate_invalid"
    title = "Certificate refused"


class OfflineRefused(Refused):
    """An offline payment a device refuses to make or to accept; ``code`` names the rule."""

    code = "offline_refused"
    title = "Offline payment refused"


class LoadRefused(Refused):
    """A load receipt a device refuses to apply (replayed, out of order, for another device)."""

    code = "load_refused"
    title = "Load receipt refused"


class SyncRefused(Refused):
    code = "sync_receipt_invalid"
    title = "Sync receipt refused"


class RevocationListRefused(Refused):
    code = "revocation_list_stale"
    title = "Revocation list refused"


class SchemaOutOfDate(CbdcError):
    code = "schema_out_of_date"
    status = 503
    title = "Database schema is behind the code"


class DatabaseUnavailable(CbdcError):
    code = "database_unavailable"
    status = 503
    title = "The ledger database is unavailable"


class ApiUnavailable(CbdcError):
    code = "api_unavailable"
    status = 503
    title = "The HTTP API did not answer as expected"
