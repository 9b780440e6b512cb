"""The published offline vectors are exactly what the code produces, and verify on their own."""

from __future__ import annotations

import hashlib
import json
import runpy
from datetime import timedelta
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from cbdc.domain import signing
from cbdc.offline import NO_REVOCATIONS, verify_offline_payment
from cbdc.offline.messages import validate

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = runpy.run_path(str(ROOT / "scripts" / "generate_offline_vectors.py"))
VECTORS: dict[str, dict[str, Any]] = SCRIPT["build_vectors"]()


def test_every_message_kind_has_a_vector() -> None:
    domains = {vector["message"]["domain"] for vector in VECTORS.values()}
    assert domains == {
        "cbdc/v1/certificate",
        "cbdc/v1/load-receipt",
        "cbdc/v1/offline-payment",
        "cbdc/v1/unload",
        "cbdc/v1/revocation-list",
        "cbdc/v1/sync-receipt",
    }


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_file_matches_the_generator(name: str) -> None:
    on_disk = (ROOT / "docs" / "vectors" / name).read_text(encoding="ascii")
    assert on_disk == SCRIPT["render"](VECTORS[name])


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_verifies_from_its_published_fields_alone(name: str) -> None:
    vector = json.loads((ROOT / "docs" / "vectors" / name).read_text(encoding="ascii"))
    message = vector["message"]
    data = bytes.fromhex(vector["signed_bytes_hex"])
    tag = message["domain"]
    assert data == tag.encode("ascii") + b"\x00" + signing.canonical(message)
    assert signing.verify_raw(
        bytes.fromhex(vector["public_key_hex"]), data, bytes.fromhex(vector["signature_hex"])
    )
    assert hashlib.sha256(data).hexdigest() == vector["message_hash"]
    assert validate(tag, message) == message
    signer = nacl.signing.SigningKey(SCRIPT["seed"](vector["seed_label"]))
    assert bytes(signer.verify_key).hex() == vector["public_key_hex"]
    assert bytes(signer.sign(data).signature).hex() == vector["signature_hex"]  # deterministic


def test_the_payment_vector_envelope_verifies_offline() -> None:
    vector = VECTORS["offline-payment.json"]
    root = VECTORS["offline-certificate-operator.json"]
    payment = verify_offline_payment(
        vector["envelope"],
        bytes.fromhex(root["public_key_hex"]),
        NO_REVOCATIONS,
        SCRIPT["NOW"] + timedelta(minutes=10),
        ledger_id="cbdc-vectors",
    )
    assert payment.payment_hash == vector["message_hash"]


def test_the_chained_payment_vector_follows_the_first_and_the_unload_closes_it() -> None:
    first = VECTORS["offline-payment.json"]
    second = VECTORS["offline-payment-chained.json"]
    unload = VECTORS["offline-unload.json"]["message"]
    root = VECTORS["offline-certificate-operator.json"]
    payment = verify_offline_payment(
        second["envelope"], bytes.fromhex(root["public_key_hex"]), NO_REVOCATIONS,
        SCRIPT["NOW"] + timedelta(minutes=30), ledger_id="cbdc-vectors",
    )
    assert payment.payment_hash == second["message_hash"]
    message = second["message"]
    assert (message["counter"], message["payments_since_sync"]) == (2, 2)
    assert message["prev_hash"] == first["message_hash"]
    assert first["message"]["prev_hash"] == "0" * 64
    assert (unload["counter"], unload["last_payment_hash"]) == (2, second["message_hash"])
    assert unload["paid_fen_total"] == first["message"]["amount_fen"] + message["amount_fen"]
    assert unload["amount_fen"] == unload["loaded_fen_total"] - unload["paid_fen_total"]
