"""Regenerate the protocol test vectors in this folder, byte for byte.

    .venv/bin/python docs/vectors/generate.py          # rewrite the files
    .venv/bin/python docs/vectors/generate.py --check  # exit 1 if a file would change

Everything is derived from fixed seeds and fixed times, and Ed25519 signatures are deterministic,
so running this again gives identical files (tests/unit/test_vectors.py checks that). Each
<kind>.json holds valid envelopes with the exact signed bytes; invalid.json holds envelopes that
must be refused, each with the error code and field the validation order of docs/protocol.md
assigns to it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nacl.signing
import rfc8785

from cbdc.client import (
    LedgerKey,
    WalletKey,
    build_capture,
    build_payment,
    build_payment_code,
    build_payment_request,
    build_refund,
    encode_qr,
    sign_receipt,
)
from cbdc.domain.keys import KeyPair
from cbdc.domain.messages import Envelope
from cbdc.domain.signing import signed_bytes

HERE = Path(__file__).resolve().parent
LEDGER_ID = "cn-pilot-sz"
NOON = datetime(2026, 3, 1, 4, 0, 0, tzinfo=UTC)  # 12:00 in Shenzhen
IDENTITY_POINT_HEX = "01" + "00" * 31


def seed_for(name: str) -> bytes:
    """The fixed seed of a named test party: SHA-256 of ``cbdc test vector seed: <name>``."""
    return hashlib.sha256(f"cbdc test vector seed: {name}".encode()).digest()


ALICE = WalletKey.from_seed(seed_for("alice"))
TEA_HOUSE = WalletKey.from_seed(seed_for("tea-house"))
LEDGER = LedgerKey.from_seed(seed_for("ledger"))


def entry(description: str, key: KeyPair, envelope: Envelope) -> dict[str, Any]:
    message = envelope["message"]
    return {
        "description": description,
        "seed_hex": key.seed.hex(),
        "public_key_hex": key.public_key_hex,
        "message": dict(sorted(message.items())),
        "signed_bytes_hex": signed_bytes(message["domain"], message).hex(),
        "signature_hex": envelope["signature"],
        "qr": encode_qr(envelope),
    }


def payments() -> list[dict[str, Any]]:
    plain = build_payment(
        ALICE, ledger_id=LEDGER_ID, payment_id="pay-0001", payer="w-alice", payee="w-tea-house",
        amount_fen=1850, sequence=1, created_at=NOON,
    )
    full = build_payment(
        ALICE, ledger_id=LEDGER_ID, payment_id="pay-0002", payer="w-alice", payee="w-tea-house",
        amount_fen=3200, sequence=2, created_at=NOON + timedelta(seconds=75, microseconds=250_000),
        request_id="req-0001", memo='午饭 AA "谢谢" \\o/ 🍜',
    )
    return [
        entry("Alice pays the tea house 18.50 CNY; no optional fields.", ALICE, plain),
        entry(
            "Alice pays the tea house's request req-0001, with a memo that needs JSON escaping "
            "(quote, backslash), CJK characters and an emoji outside the BMP; fractional seconds.",
            ALICE, full,
        ),
    ]


def payment_requests() -> list[dict[str, Any]]:
    cjk = build_payment_request(
        TEA_HOUSE, ledger_id=LEDGER_ID, request_id="req-0001", merchant="w-tea-house",
        amount_fen=3200, reference="订单 2026-0301-17", created_at=NOON,
        expires_at=NOON + timedelta(minutes=10),
    )
    ascii_only = build_payment_request(
        TEA_HOUSE, ledger_id=LEDGER_ID, request_id="req-0002", merchant="w-tea-house",
        amount_fen=99, reference="table 4", created_at=NOON, expires_at=NOON + timedelta(hours=1),
    )
    return [
        entry("The tea house asks 32.00 CNY for order 17, with a Chinese reference.", TEA_HOUSE,
              cjk),
        entry("The tea house asks 0.99 CNY for table 4.", TEA_HOUSE, ascii_only),
    ]


def payment_codes() -> list[dict[str, Any]]:
    open_code = build_payment_code(
        ALICE, ledger_id=LEDGER_ID, code_id="code-0001", payer="w-alice", max_amount_fen=50_000,
        created_at=NOON, expires_at=NOON + timedelta(seconds=60),
    )
    merchant_code = build_payment_code(
        ALICE, ledger_id=LEDGER_ID, code_id="code-0002", payer="w-alice", max_amount_fen=2_000,
        created_at=NOON, expires_at=NOON + timedelta(seconds=60), merchant="w-tea-house",
    )
    return [
        entry("Alice shows a one-time code for up to 500.00 CNY at any merchant.", ALICE,
              open_code),
        entry("Alice shows a code for up to 20.00 CNY, usable only by the tea house.", ALICE,
              merchant_code),
    ]


def captures() -> list[dict[str, Any]]:
    capture = build_capture(
        TEA_HOUSE, ledger_id=LEDGER_ID, capture_id="cap-0001", code_id="code-0001",
        merchant="w-tea-house", amount_fen=4_250, created_at=NOON + timedelta(seconds=20),
    )
    return [entry("The tea house captures 42.50 CNY from Alice's code-0001.", TEA_HOUSE, capture)]


def refunds() -> list[dict[str, Any]]:
    refund = build_refund(
        TEA_HOUSE, ledger_id=LEDGER_ID, refund_id="ref-0001", payment_id="cap-0001",
        merchant="w-tea-house", amount_fen=1_000, created_at=NOON + timedelta(hours=2),
    )
    return [entry("The tea house refunds 10.00 of the 42.50 CNY it captured.", TEA_HOUSE, refund)]


def receipts() -> list[dict[str, Any]]:
    payment = sign_receipt(
        LEDGER, ledger_id=LEDGER_ID, receipt_for="pay-0001", kind="payment", payer="w-alice",
        payee="w-tea-house", amount_fen=1850, entry_seq=41,
        entry_hash=hashlib.sha256(b"entry 41").hexdigest(),
        settled_at=NOON + timedelta(microseconds=1_200),
    )
    refund = sign_receipt(
        LEDGER, ledger_id=LEDGER_ID, receipt_for="ref-0001", kind="refund",
        payer="w-tea-house", payee="w-alice", amount_fen=1_000, entry_seq=57,
        entry_hash=hashlib.sha256(b"entry 57").hexdigest(), settled_at=NOON + timedelta(hours=2),
    )
    return [
        entry("The ledger's receipt for pay-0001, settled as journal entry 41.", LEDGER, payment),
        entry("The ledger's receipt for the partial refund ref-0001: money flows back from the "
              "merchant to Alice.", LEDGER, refund),
    ]


# --- envelopes that must be refused -----------------------------------------------------------


def raw_envelope(key: KeyPair, domain: str, message: Any) -> dict[str, Any]:
    """Sign whatever ``message`` is, so a refusal can only come from the rule being shown."""
    data = domain.encode("ascii") + b"\x00" + rfc8785.dumps(message)
    signature = nacl.signing.SigningKey(key.seed).sign(data).signature
    return {"message": message, "signature": bytes(signature).hex()}


def mutated(base: Envelope, **changes: Any) -> dict[str, Any]:
    message = copy.deepcopy(dict(base["message"]))
    for name, value in changes.items():
        if value is None:
            del message[name]
        else:
            message[name] = value
    return raw_envelope(ALICE, "cbdc/v1/payment", message)


def invalid() -> list[dict[str, Any]]:
    base = build_payment(
        ALICE, ledger_id=LEDGER_ID, payment_id="pay-0009", payer="w-alice", payee="w-tea-house",
        amount_fen=1850, sequence=9, created_at=NOON,
    )
    request = build_payment_request(
        TEA_HOUSE, ledger_id=LEDGER_ID, request_id="req-0009", merchant="w-tea-house",
        amount_fen=1850, reference="table 9", created_at=NOON,
        expires_at=NOON + timedelta(minutes=5),
    )
    flipped = base["signature"][:-2] + format(int(base["signature"][-2:], 16) ^ 1, "02x")
    receipt = sign_receipt(
        LEDGER, ledger_id=LEDGER_ID, receipt_for="pay-0009", kind="payment", payer="w-alice",
        payee="w-tea-house", amount_fen=1850, entry_seq=90,
        entry_hash=hashlib.sha256(b"entry 90").hexdigest(), settled_at=NOON,
    )
    expired_request = copy.deepcopy(dict(request["message"]))
    expired_request["expires_at"] = expired_request["created_at"]
    pay = "cbdc/v1/payment"
    cases: list[tuple[str, str, Any, str, str | None]] = [
        ("an extra envelope member", pay, {**base, "signer": "alice"}, "envelope_invalid", None),
        ("signature in uppercase hex", pay,
         {"message": base["message"], "signature": base["signature"].upper()},
         "envelope_invalid", "signature"),
        ("message is an array", pay, {"message": [], "signature": base["signature"]},
         "message_invalid", None),
        ("version missing", pay, mutated(base, version=None), "field_missing", "version"),
        ("version true (a boolean is not the integer 1)", pay, mutated(base, version=True),
         "field_invalid", "version"),
        ("version 2", pay, mutated(base, version=2), "version_unsupported", "version"),
        ("a payment request where a payment is expected", pay, request, "domain_invalid",
         "domain"),
        ("payee missing and an unknown field: missing is reported first", pay,
         mutated(base, payee=None, fee_fen=1), "field_missing", "payee"),
        ("unknown field fee_fen", pay, mutated(base, fee_fen=1), "field_unknown", "fee_fen"),
        ("amount as a decimal number", pay, mutated(base, amount_fen=18.5), "amount_invalid",
         "amount_fen"),
        ("amount 1850.0 is a float even if whole", pay, mutated(base, amount_fen=1850.0),
         "amount_invalid", "amount_fen"),
        ("amount as a string", pay, mutated(base, amount_fen="1850"), "amount_invalid",
         "amount_fen"),
        ("amount zero", pay, mutated(base, amount_fen=0), "amount_invalid", "amount_fen"),
        ("two bad fields: amount_fen sorts before payer, so it is reported", pay,
         mutated(base, amount_fen=-1, payer="w alice"), "amount_invalid", "amount_fen"),
        ("currency USD", pay, mutated(base, currency="USD"), "currency_unsupported",
         "currency"),
        ("time with an offset instead of Z", pay,
         mutated(base, created_at="2026-03-01T12:00:00+08:00"), "field_invalid", "created_at"),
        ("time on a day that does not exist", pay,
         mutated(base, created_at="2026-02-30T04:00:00Z"), "field_invalid", "created_at"),
        ("time with seven fractional digits", pay,
         mutated(base, created_at="2026-03-01T04:00:00.1234567Z"), "field_invalid",
         "created_at"),
        ("wallet id with a space", pay, mutated(base, payer="w alice"), "field_invalid", "payer"),
        ("memo of 141 characters", pay, mutated(base, memo="好" * 141), "field_invalid", "memo"),
        ("memo with a right-to-left override", pay, mutated(base, memo="pay \u202egnp.exe"),
         "field_invalid", "memo"),
        ("sequence zero", pay, mutated(base, sequence=0), "field_invalid", "sequence"),
        ("public key is the identity point (small order)", pay,
         mutated(base, public_key=IDENTITY_POINT_HEX), "public_key_invalid", "public_key"),
        ("public key in uppercase hex", pay,
         mutated(base, public_key=ALICE.public_key_hex.upper()), "public_key_invalid",
         "public_key"),
        ("payment request that expires when it is created", "cbdc/v1/payment-request",
         raw_envelope(TEA_HOUSE, "cbdc/v1/payment-request", expired_request), "field_invalid",
         "expires_at"),
        ("amount changed after signing", pay,
         {"message": {**base["message"], "amount_fen": 18500}, "signature": base["signature"]},
         "signature_invalid", None),
        ("one bit of the signature flipped", pay,
         {"message": base["message"], "signature": flipped}, "signature_invalid", None),
        ("receipt checked against a wallet's key instead of the ledger's", "cbdc/v1/receipt",
         receipt, "signature_invalid", None),
    ]
    return [
        {
            "description": description,
            "expected_domain": domain,
            **({"public_key_hex": ALICE.public_key_hex} if domain == "cbdc/v1/receipt" else {}),
            "envelope": envelope,
            "code": code,
            "field": field,
        }
        for description, domain, envelope, code, field in cases
    ]


def build_files() -> dict[str, str]:
    """File name -> exact file text."""
    kinds = {
        "payment.json": payments(),
        "payment-request.json": payment_requests(),
        "payment-code.json": payment_codes(),
        "capture.json": captures(),
        "refund.json": refunds(),
        "receipt.json": receipts(),
        "invalid.json": invalid(),
    }
    return {name: json.dumps(entries, indent=2, ensure_ascii=False) + "\n"
            for name, entries in kinds.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in build_files().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale vectors: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
