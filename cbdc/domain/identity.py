"""Identity evidence behind a wallet's class, and how an operator keeps it: salted hashes only.

The central ledger sees a pseudonymous wallet id; the operator that opened the wallet keeps the
evidence (phone number, ID document, bank account, an in-person check) that decides the class.
Even the operator stores no evidence in clear: each value is an HMAC-SHA256 under a random
per-wallet salt, enough to check a later claim ("is this the same phone?") and to stop the same
phone being linked across wallets by its hash. Phone numbers have little entropy, so a salt does
not stop a targeted guess; a deployment adds a secret pepper held by the operator (outside this
ledger) before values reach here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from cbdc.domain.errors import InvalidRequest

SALT_BYTES = 16
_PHONE = re.compile(r"^\+?[0-9]{6,15}$")
_PHONE_SEPARATORS = re.compile(r"[ ()-]")
_DOCUMENT = re.compile(r"^[A-Za-z0-9]{4,32}$")
_BANK_ACCOUNT = re.compile(r"^[A-Za-z0-9]{6,34}$")


@dataclass(frozen=True, slots=True)
class IdentityEvidence:
    """What the operator verified about the holder. Class 4 needs only ``phone``."""

    phone: str
    id_document: str | None = None
    bank_account: str | None = None
    in_person: bool = False

    def kinds(self) -> frozenset[str]:
        """The evidence kinds present, as named by :data:`cbdc.domain.tiers.EVIDENCE_KINDS`."""
        present = {"phone"}
        if self.id_document is not None:
            present.add("id_document")
        if self.bank_account is not None:
            present.add("bank_account")
        if self.in_person:
            present.add("in_person")
        return frozenset(present)

    def normalised(self) -> IdentityEvidence:
        """Checked and in one canonical spelling, so the same evidence always hashes the same."""
        phone = _PHONE_SEPARATORS.sub("", self.phone) if isinstance(self.phone, str) else ""
        if not _PHONE.match(phone):
            raise InvalidRequest("phone must be 6-15 digits, optionally after '+'",
                                 code="identity_evidence_invalid")
        document = self.id_document
        if document is not None:
            if not isinstance(document, str) or not _DOCUMENT.match(document):
                raise InvalidRequest("ID document number must be 4-32 letters or digits",
                                     code="identity_evidence_invalid")
            document = document.upper()
        account = self.bank_account
        if account is not None:
            if not isinstance(account, str) or not _BANK_ACCOUNT.match(account.replace(" ", "")):
                raise InvalidRequest("bank account must be 6-34 letters or digits",
                                     code="identity_evidence_invalid")
            account = account.replace(" ", "").upper()
        return IdentityEvidence(phone, document, account, bool(self.in_person))


def evidence_hash(salt: bytes, kind: str, value: str) -> str:
    """HMAC-SHA256 of ``kind:value`` under ``salt``, as hex."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes")
    return hmac.new(salt, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def bank_account_ref(bank_account_hash: str) -> str:
    """The opaque reference under which the ledger knows a linked bank account, derived from the
    operator's salted hash of it: the operator can resolve it from its own records, nobody else
    can read an account number from it."""
    return "ba:" + bank_account_hash[:32]
