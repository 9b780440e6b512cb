"""The shipped protocol vectors (docs/vectors/) are right, and regenerate byte for byte.

An interoperating wallet is written against these files, so each entry is re-derived here from its
seed: the public key, the exact signed bytes, the signature and the QR text must all match, and the
negative vectors must be refused with exactly the code and field they name.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cbdc.domain.errors import CbdcError
from cbdc.domain.keys import KeyPair
from cbdc.domain.messages import KINDS, verify_envelope
from cbdc.domain.qr import decode_qr, encode_qr
from cbdc.domain.signing import signed_bytes

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "vectors"
KIND_FILES = {f"{domain.removeprefix('cbdc/v1/')}.json": domain for domain in KINDS}


def load(name: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return entries


def valid_entries() -> list[tuple[str, dict[str, Any]]]:
    return [(domain, entry) for name, domain in KIND_FILES.items() for entry in load(name)]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vector_generator", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_kind_has_a_vector_file_and_nothing_else_is_there() -> None:
    expected = {*KIND_FILES, "invalid.json", "generate.py"}
    # offline-*.json belong to the offline protocol (tests/unit/offline/test_vectors.py).
    found = {path.name for path in VECTORS.iterdir() if path.is_file()}
    assert {name for name in found if not name.startswith("offline-")} == expected
    assert all(load(name) for name in KIND_FILES)


@pytest.mark.parametrize(("domain", "entry"), valid_entries(), ids=lambda v: str(v)[:40])
def test_vector_reverifies(domain: str, entry: dict[str, Any]) -> None:
    key = KeyPair.from_seed(bytes.fromhex(entry["seed_hex"]))
    assert key.public_key_hex == entry["public_key_hex"]
    message = entry["message"]
    data = signed_bytes(domain, message)
    assert data.hex() == entry["signed_bytes_hex"]
    assert data.startswith(domain.encode("ascii") + b"\x00")
    assert key.sign_bytes(data).hex() == entry["signature_hex"]
    envelope = {"message": message, "signature": entry["signature_hex"]}
    signer = entry["public_key_hex"] if KINDS[domain].signer_field is None else None
    assert verify_envelope(envelope, domain, public_key_hex=signer) == message
    assert encode_qr(envelope) == entry["qr"]
    assert decode_qr(entry["qr"]) == envelope


def test_vectors_include_text_that_is_not_ascii() -> None:
    texts = [entry["message"].get(name, "") for _, entry in valid_entries()
             for name in ("memo", "reference")]
    assert any(not text.isascii() for text in texts)
    assert any(ord(char) > 0xFFFF for text in texts for char in text)  # outside the BMP


@pytest.mark.parametrize("entry", load("invalid.json"), ids=lambda e: e["description"][:50])
def test_invalid_vector_is_refused_with_its_code(entry: dict[str, Any]) -> None:
    with pytest.raises(CbdcError) as caught:
        verify_envelope(
            entry["envelope"], entry["expected_domain"], public_key_hex=entry.get("public_key_hex")
        )
    assert caught.value.code == entry["code"]
    assert caught.value.extra.get("field") == entry["field"]


def test_generator_reproduces_every_file_byte_for_byte() -> None:
    files = generator().build_files()
    assert set(files) == {*KIND_FILES, "invalid.json"}
    for name, text in files.items():
        assert (VECTORS / name).read_bytes() == text.encode("utf-8"), name


def test_protocol_document_shows_real_vectors_for_every_kind() -> None:
    text = (VECTORS.parent / "protocol.md").read_text(encoding="utf-8")
    squeezed = "".join(text.split())
    for name, domain in KIND_FILES.items():
        entries = load(name)
        assert f"`{domain}`" in text
        shown = [e for e in entries if e["signed_bytes_hex"] in squeezed]
        assert shown, f"no worked example of {domain}"
        assert all(e["signature_hex"] in squeezed for e in shown)
    assert load("capture.json")[0]["qr"] in squeezed
