"""Ed25519 key pairs that seal protocol messages: the common core of wallet and ledger keys.

A key pair is made from a 32-byte seed (RFC 8032's "secret key"); where the seed comes from is the
holder's business, so this module needs no randomness. ``seal`` refuses to sign anything that
fails the message rules, so every envelope a key produces verifies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import nacl.signing

from cbdc.domain.errors import InvalidKey
from cbdc.domain.messages import Envelope, seal

SEED_BYTES = 32


class KeyPair:
    """An Ed25519 signing key and its public key. The seed never appears in ``repr``."""

    __slots__ = ("_signing_key",)

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key

    @classmethod
    def from_seed(cls, seed: bytes) -> Self:
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise InvalidKey(f"an Ed25519 seed is {SEED_BYTES} bytes")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed, for the holder to store; treat it as the money itself."""
        return bytes(self._signing_key)

    @property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    @property
    def public_key_hex(self) -> str:
        return self.public_key.hex()

    def seal(self, message: Mapping[str, Any]) -> Envelope:
        """Validate ``message`` for its domain tag, sign it, and return the envelope."""
        return seal(self._signing_key, message)

    def sign_bytes(self, data: bytes) -> bytes:
        """Plain Ed25519 over ``data`` (for test vectors; protocol messages go through ``seal``)."""
        return bytes(self._signing_key.sign(data).signature)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(public_key_hex={self.public_key_hex!r})"
