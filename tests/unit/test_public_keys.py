"""Weak public keys are refused before any signature is checked.

Small-order points (the identity, order 2, 4 and 8 points), points with a small-order component,
and non-canonical encodings (y >= p) would let a signer make signatures that verify for more than
one message or key; ``check_public_key`` and ``public_key_from_hex`` refuse them all.
"""

from __future__ import annotations

import nacl.bindings
import pytest

from cbdc.domain.errors import InvalidKey
from cbdc.domain.keys import KeyPair
from cbdc.domain.signing import check_public_key, public_key_from_hex

SMALL_ORDER_POINTS = {
    "identity (order 1)": "0100000000000000000000000000000000000000000000000000000000000000",
    "y = -1 (order 2)": "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "y = 0, x positive (order 4)": "00" * 32,
    "y = 0, x negative (order 4)": "00" * 31 + "80",
    "order 8, first": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order 8, second": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "order 8, third": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order 8, fourth": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
}

# p = 2^255 - 19; these encode y = p, p + 1 (the identity again) and 2^255 - 1, all >= p.
NON_CANONICAL = {
    "y = p": "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "y = p + 1": "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "y = 2^255 - 1": "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
}

REFUSED = {**SMALL_ORDER_POINTS, **NON_CANONICAL}


def test_the_non_canonical_encodings_really_are_at_least_p() -> None:
    p = 2**255 - 19
    for text in NON_CANONICAL.values():
        y = int.from_bytes(bytes.fromhex(text), "little") & (2**255 - 1)
        assert y >= p


@pytest.mark.parametrize("text", REFUSED.values(), ids=REFUSED.keys())
def test_weak_or_non_canonical_key_is_refused(text: str) -> None:
    with pytest.raises(InvalidKey):
        check_public_key(bytes.fromhex(text))
    with pytest.raises(InvalidKey) as caught:
        public_key_from_hex(text)
    assert caught.value.code == "public_key_invalid"


def test_key_with_a_small_order_component_is_refused() -> None:
    honest = KeyPair.from_seed(bytes(range(32))).public_key
    torsion = bytes.fromhex(SMALL_ORDER_POINTS["order 8, first"])
    mixed = nacl.bindings.crypto_core_ed25519_add(honest, torsion)
    assert check_public_key(honest) == honest
    with pytest.raises(InvalidKey):
        check_public_key(mixed)


@pytest.mark.parametrize(
    "text",
    ["", "00" * 31, "00" * 33, "g" * 64, KeyPair.from_seed(bytes(32)).public_key_hex.upper()],
    ids=["empty", "31 bytes", "33 bytes", "not hex", "uppercase"],
)
def test_malformed_hex_is_refused(text: str) -> None:
    with pytest.raises(InvalidKey):
        public_key_from_hex(text)


def test_wrong_length_bytes_are_refused() -> None:
    with pytest.raises(InvalidKey):
        check_public_key(bytes(31))
