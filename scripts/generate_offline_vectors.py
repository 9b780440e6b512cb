"""Regenerate docs/vectors/offline-*.json: one signed example of each offline message.

Every key comes from a fixed seed (sha256 of a label) and every time is fixed, so the output is
byte-for-byte stable; tests/unit/offline/test_vectors.py checks the files against this script
and re-verifies every signature. Run: ``.venv/bin/python scripts/generate_offline_vectors.py``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nacl.signing

from cbdc.domain import signing
from cbdc.domain.money import yuan
from cbdc.offline import OperatorAuthority, RootAuthority, SecureElement
from cbdc.offline.messages import (
    CERTIFICATE,
    LOAD_RECEIPT,
    OFFLINE_PAYMENT,
    REVOCATION_LIST,
    SYNC_RECEIPT,
    UNLOAD,
)

LEDGER_ID = "cbdc-vectors"
NOW = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
VECTORS_DIR = Path(__file__).resolve().parent.parent / "docs" / "vectors"


def seed(label: str) -> bytes:
    return hashlib.sha256(f"cbdc offline vector seed: {label}".encode()).digest()


def vector(
    description: str, tag: str, envelope: dict[str, Any], public_key: bytes, seed_label: str
) -> dict[str, Any]:
    message = envelope["message"]
    data = signing.signed_bytes(tag, message)
    return {
        "description": description,
        "seed_label": seed_label,
        "public_key_hex": public_key.hex(),
        "message": message,
        "signed_bytes_hex": data.hex(),
        "signature_hex": envelope["signature"],
        "message_hash": hashlib.sha256(data).hexdigest(),
    }


def build_vectors() -> dict[str, dict[str, Any]]:
    """File name -> vector, built with the real authorities and secure element."""
    root = RootAuthority(LEDGER_ID, "pboc", nacl.signing.SigningKey(seed("root")))
    operator_key = nacl.signing.SigningKey(seed("operator"))
    operator_certificate = root.certify_operator(
        serial="op-0001",
        operator_id="bank-a",
        operator_public_key=bytes(operator_key.verify_key),
        not_before=NOW,
        not_after=NOW + timedelta(days=3650),
    )
    operator = OperatorAuthority(operator_key, operator_certificate)
    payer = SecureElement(seed=seed("payer"), ledger_id=LEDGER_ID, root_public_key=root.public_key)
    device_certificate = operator.certify_device(
        serial="dev-0001",
        device_id="card-0001",
        device_public_key=payer.public_key,
        wallet="w-0001",
        wallet_class=2,
        not_before=NOW,
        not_after=NOW + timedelta(days=730),
    )
    payer.install_certificate(device_certificate, operator_certificate, NOW)
    load = operator.sign_load_receipt(
        load_id="load-0001",
        device_id="card-0001",
        wallet="w-0001",
        amount_fen=yuan(500),
        load_counter=1,
        created_at=NOW,
    )
    payer.apply_load(load)
    payment = payer.pay("pos-0042", "w-merchant-42", 12_345, NOW + timedelta(minutes=5))
    second = payer.pay("pos-0042", "w-merchant-42", 2_000, NOW + timedelta(minutes=20))
    unload = payer.unload(NOW + timedelta(hours=1))
    revocation_list = root.publish_revocation_list(
        number=1, issued_at=NOW, revoked={"dev-0666", "dev-0777"}
    )
    sync = operator.sign_sync_receipt(  # to the payee's device, which has made no payment
        sync_id="sync-0001",
        device_id="pos-0042",
        synced_counter=0,
        settled={payment_hash_of(payment)},
        created_at=NOW + timedelta(hours=2),
    )
    root_key, operator_public, device_key = root.public_key, operator.public_key, payer.public_key
    return {
        "offline-certificate-operator.json": vector(
            "operator certificate, signed by the central-bank root",
            CERTIFICATE, operator_certificate.to_envelope(), root_key, "root",
        ),
        "offline-certificate-device.json": vector(
            "device certificate (class 2 default caps), signed by the operator",
            CERTIFICATE, device_certificate.to_envelope(), operator_public, "operator",
        ),
        "offline-load-receipt.json": vector(
            "load receipt for 500 CNY, signed by the operator",
            LOAD_RECEIPT, load, operator_public, "operator",
        ),
        "offline-payment.json": {
            **vector(
                "the device's first offline payment (123.45 CNY), signed by the device",
                OFFLINE_PAYMENT, payment, device_key, "payer",
            ),
            "envelope": payment,
        },
        "offline-payment-chained.json": {
            **vector(
                "the device's second offline payment (20.00 CNY): counter 2, payments_since_sync "
                "2, prev_hash the first payment's hash, signed by the device",
                OFFLINE_PAYMENT, second, device_key, "payer",
            ),
            "envelope": second,
        },
        "offline-unload.json": vector(
            "unload statement returning 356.55 CNY, signed by the device",
            UNLOAD, unload, device_key, "payer",
        ),
        "offline-revocation-list.json": vector(
            "revocation list number 1, signed by the central-bank root",
            REVOCATION_LIST, revocation_list, root_key, "root",
        ),
        "offline-sync-receipt.json": vector(
            "sync receipt to the payee's device pos-0042: the payment it received is settled "
            "(it has made none: synced_counter 0), signed by the operator",
            SYNC_RECEIPT, sync, operator_public, "operator",
        ),
    }


def payment_hash_of(envelope: dict[str, Any]) -> str:
    return hashlib.sha256(signing.signed_bytes(OFFLINE_PAYMENT, envelope["message"])).hexdigest()


def render(vector_: dict[str, Any]) -> str:
    return json.dumps(vector_, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def main() -> int:
    VECTORS_DIR.mkdir(parents=True, exist_ok=True)
    for name, content in build_vectors().items():
        (VECTORS_DIR / name).write_text(render(content), encoding="ascii")
        print(f"wrote {VECTORS_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
