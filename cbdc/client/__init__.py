"""The wallet side of the protocol: keys, signed message builders, QR codes, receipt checks.

Imports only ``cbdc.domain`` and PyNaCl, so a wallet, the simulation or a test can use it without a
database. Every builder takes the time as an argument (``created_at``); nothing here reads a clock.
"""

from cbdc.client.builders import (
    build_capture,
    build_payment,
    build_payment_code,
    build_payment_for_request,
    build_payment_request,
    build_refund,
)
from cbdc.client.keys import WalletKey
from cbdc.client.sequence import SequenceCounter
from cbdc.domain.messages import Envelope, Message, verify_envelope
from cbdc.domain.qr import decode_qr, encode_qr
from cbdc.domain.receipts import LedgerKey, sign_receipt, verify_receipt

__all__ = [
    "Envelope",
    "LedgerKey",
    "Message",
    "SequenceCounter",
    "WalletKey",
    "build_capture",
    "build_payment",
    "build_payment_code",
    "build_payment_for_request",
    "build_payment_request",
    "build_refund",
    "decode_qr",
    "encode_qr",
    "sign_receipt",
    "verify_envelope",
    "verify_receipt",
]
