"""The wallet client: keys, builders, sequences and receipts, as a wallet and a ledger use them."""

from __future__ import annotations

import ast
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import cbdc.client
import cbdc.domain
from cbdc.client import (
    LedgerKey,
    SequenceCounter,
    WalletKey,
    build_payment,
    build_payment_for_request,
    build_payment_request,
    sign_receipt,
    verify_envelope,
    verify_receipt,
)
from cbdc.domain.errors import CbdcError
from cbdc.domain.messages import PAYMENT, PAYMENT_REQUEST
from tests.unit.samples import CUSTOMER, LEDGER, LEDGER_ID, MERCHANT, MORNING


def imported_modules(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
    return names


def test_client_imports_only_the_domain_nacl_and_the_standard_library() -> None:
    ours = {name for name in imported_modules(Path(cbdc.client.__file__).parent)
            if name.split(".")[0] in {"cbdc", "nacl", "sqlalchemy", "fastapi", "rfc8785"}}
    assert all(name.startswith(("cbdc.domain", "cbdc.client", "nacl")) for name in ours), ours


def test_domain_imports_no_storage_services_or_frameworks() -> None:
    names = imported_modules(Path(cbdc.domain.__file__).parent)
    forbidden = {"sqlalchemy", "fastapi", "cbdc.storage", "cbdc.services", "cbdc.client", "random"}
    assert not {name for name in names if name.startswith(tuple(forbidden))}


def test_a_customer_pays_a_merchant_request_read_from_its_qr() -> None:
    request = build_payment_request(
        MERCHANT, ledger_id=LEDGER_ID, request_id="req-77", merchant="w-noodle-shop",
        amount_fen=2_350, reference="bowl 77", created_at=MORNING,
        expires_at=MORNING + timedelta(minutes=3),
    )
    scanned = cbdc.client.decode_qr(cbdc.client.encode_qr(request))
    verified_request = verify_envelope(scanned, PAYMENT_REQUEST)
    sequence = SequenceCounter(last_sequence=41)
    payment = build_payment_for_request(
        CUSTOMER, verified_request, payment_id="pay-77", payer="w-customer",
        sequence=sequence.next(), created_at=MORNING + timedelta(seconds=30),
    )
    message = verify_envelope(payment, PAYMENT)
    assert (message["payee"], message["amount_fen"], message["request_id"]) == (
        "w-noodle-shop", 2_350, "req-77")
    assert (message["sequence"], message["public_key"]) == (42, CUSTOMER.public_key_hex)
    assert message["created_at"] == "2026-05-04T01:30:30Z"


def test_sequence_counter_only_moves_forward() -> None:
    counter = SequenceCounter()
    assert [counter.next(), counter.next()] == [1, 2]
    counter.observe(1)
    assert counter.last_sequence == 2
    counter.observe(10)
    assert counter.next() == 11
    with pytest.raises(CbdcError):
        SequenceCounter(last_sequence=-1)
    with pytest.raises(CbdcError):
        SequenceCounter(last_sequence=True)
    exhausted = SequenceCounter(last_sequence=2**53 - 1)
    with pytest.raises(CbdcError):
        exhausted.next()


def test_derived_keys_are_reproducible_and_distinct() -> None:
    assert WalletKey.derive(b"root", "a").public_key == WalletKey.derive(b"root", "a").public_key
    assert WalletKey.derive(b"root", "a").public_key != WalletKey.derive(b"root", "b").public_key
    assert WalletKey.derive(b"root", "a").public_key != WalletKey.derive(b"toor", "a").public_key
    assert WalletKey.generate().public_key != WalletKey.generate().public_key


def test_a_key_never_shows_its_seed() -> None:
    key = WalletKey.from_seed(bytes(range(32)))
    assert key.seed.hex() not in repr(key)
    assert key.public_key_hex in repr(key)
    with pytest.raises(CbdcError):
        WalletKey.from_seed(bytes(31))


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"amount_fen": 12.5}, "amount_invalid"),
        ({"amount_fen": 0}, "amount_invalid"),
        ({"payee": "w noodle"}, "field_invalid"),
        ({"memo": "x" * 141}, "field_invalid"),
        ({"sequence": 0}, "field_invalid"),
        ({"created_at": datetime(2026, 5, 4, 9, 30)}, "field_invalid"),
    ],
)
def test_builders_refuse_bad_arguments_with_the_ledgers_codes(
    changes: dict[str, object], code: str
) -> None:
    arguments: dict[str, object] = {
        "ledger_id": LEDGER_ID, "payment_id": "pay-9", "payer": "w-customer",
        "payee": "w-noodle-shop", "amount_fen": 100, "sequence": 1, "created_at": MORNING,
    }
    with pytest.raises(CbdcError) as caught:
        build_payment(CUSTOMER, **(arguments | changes))  # type: ignore[arg-type]
    assert caught.value.code == code


def test_a_ledger_receipt_verifies_only_with_the_ledgers_key() -> None:
    receipt = sign_receipt(
        LEDGER, ledger_id=LEDGER_ID, receipt_for="pay-77", kind="payment", payer="w-customer",
        payee="w-noodle-shop", amount_fen=2_350, entry_seq=1_001, entry_hash="0a" * 32,
        settled_at=MORNING + timedelta(microseconds=5),
    )
    message = verify_receipt(receipt, LEDGER.public_key_hex)
    assert message["settled_at"] == "2026-05-04T01:30:00.000005Z"
    impostor = LedgerKey.from_seed(b"\x01" * 32)
    with pytest.raises(CbdcError) as caught:
        verify_receipt(receipt, impostor.public_key_hex)
    assert caught.value.code == "signature_invalid"
    with pytest.raises(CbdcError) as caught:
        verify_receipt(receipt, "not a key")
    assert caught.value.code == "public_key_invalid"


def test_receipt_signing_is_importable_without_the_client() -> None:
    from cbdc.domain.receipts import LedgerKey as DomainLedgerKey
    from cbdc.domain.receipts import sign_receipt as domain_sign_receipt

    assert DomainLedgerKey is LedgerKey
    assert domain_sign_receipt is sign_receipt
