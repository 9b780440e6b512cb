"""Receipts: the ledger's signed statement that a payment, capture or refund has settled.

The ledger signs a receipt with its own key after the journal entry is committed, naming the
entry's place in the hash chain (``entry_seq``, ``entry_hash``), so a wallet holding the ledger's
public key can prove settlement to anyone without asking the ledger again. Signing lives here, in
the domain, because services may not import ``cbdc.client``; wallets verify with
:func:`verify_receipt`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cbdc.domain.keys import KeyPair
from cbdc.domain.messages import (
    CURRENCY,
    PROTOCOL_VERSION,
    RECEIPT,
    Envelope,
    Message,
    format_time,
    validate_message,
    verify_envelope,
)
from cbdc.domain.postings import canonical_json
from cbdc.domain.signing import signed_bytes


class LedgerKey(KeyPair):
    """The key a ledger signs receipts with. Its public key is published to every wallet."""

    __slots__ = ()


def build_receipt(
    *,
    ledger_id: str,
    receipt_for: str,
    kind: str,
    payer: str,
    payee: str,
    amount_fen: int,
    entry_seq: int,
    entry_hash: str,
    settled_at: datetime,
) -> Message:
    """The unsigned receipt message, validated."""
    return validate_message(
        receipt_message(
            ledger_id=ledger_id, receipt_for=receipt_for, kind=kind, payer=payer, payee=payee,
            amount_fen=amount_fen, entry_seq=entry_seq, entry_hash=entry_hash,
            settled_at=settled_at,
        ),
        RECEIPT,
    )


def receipt_message(
    *,
    ledger_id: str,
    receipt_for: str,
    kind: str,
    payer: str,
    payee: str,
    amount_fen: int,
    entry_seq: int,
    entry_hash: str,
    settled_at: datetime,
) -> dict[str, Any]:
    """The unsigned receipt message, not validated: for values the ledger has validated already
    (see :func:`sign_receipt`)."""
    return {
        "version": PROTOCOL_VERSION,
        "domain": RECEIPT,
        "ledger_id": ledger_id,
        "receipt_for": receipt_for,
        "kind": kind,
        "payer": payer,
        "payee": payee,
        "amount_fen": amount_fen,
        "currency": CURRENCY,
        "entry_seq": entry_seq,
        "entry_hash": entry_hash,
        "settled_at": format_time(settled_at),
    }


def sign_receipt(
    ledger_key: LedgerKey,
    *,
    ledger_id: str,
    receipt_for: str,
    kind: str,
    payer: str,
    payee: str,
    amount_fen: int,
    entry_seq: int,
    entry_hash: str,
    settled_at: datetime,
) -> Envelope:
    """Build and sign a receipt with the ledger's key.

    The settlement hot path signs one receipt per payment from values the ledger has already
    validated (the payment message, its own rows and hashes), so it skips re-validating them;
    tests check that what it signs passes :func:`verify_receipt`."""
    message = receipt_message(
        ledger_id=ledger_id, receipt_for=receipt_for, kind=kind, payer=payer, payee=payee,
        amount_fen=amount_fen, entry_seq=entry_seq, entry_hash=entry_hash, settled_at=settled_at,
    )
    envelope, _ = sign_receipt_json(ledger_key, message)
    return envelope


def sign_receipt_json(ledger_key: LedgerKey, message: Message) -> tuple[Envelope, str]:
    """Sign a :func:`receipt_message`; return the envelope, and the envelope as canonical ASCII
    JSON (what the ledger stores).

    A receipt is all ASCII (ids, hex, integers, times), so the stored JSON is written around
    the JCS bytes just signed: ``{"message":<JCS>,"signature":"<hex>"}``, keys in order, the
    same bytes :func:`~cbdc.domain.postings.canonical_json` would write."""
    signed = signed_bytes(RECEIPT, message)
    signature = ledger_key.sign_bytes(signed).hex()
    envelope: Envelope = {"message": message, "signature": signature}
    jcs = signed.partition(b"\x00")[2]
    if not jcs.isascii():  # not a receipt the ledger writes; kept correct all the same
        return envelope, canonical_json(envelope).decode("ascii")
    return envelope, f'{{"message":{jcs.decode("ascii")},"signature":"{signature}"}}'


def verify_receipt(receipt_envelope: object, ledger_public_key_hex: str) -> Message:
    """Check a receipt envelope completely against the ledger's public key; return the receipt."""
    return verify_envelope(receipt_envelope, RECEIPT, public_key_hex=ledger_public_key_hex)
