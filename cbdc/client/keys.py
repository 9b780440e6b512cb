"""Wallet keys: made from a stored seed, derived from a root seed, or freshly random.

Only the wallet side may draw randomness of its own (``generate``); simulations and tests derive
keys from a seed instead, so they replay exactly.
"""

from __future__ import annotations

import hashlib
from typing import Self

import nacl.signing

from cbdc.domain.keys import SEED_BYTES, KeyPair


class WalletKey(KeyPair):
    """The key a wallet signs its payments, payment requests, codes, captures and refunds with."""

    __slots__ = ()

    @classmethod
    def generate(cls) -> Self:
        """A new key from the operating system's random source."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def derive(cls, root_seed: bytes, label: str) -> Self:
        """A key determined by ``root_seed`` and ``label``: BLAKE2b-256 keyed with the root seed.

        Lets a simulation or a test give every wallet its own reproducible key from one seed.
        """
        digest = hashlib.blake2b(label.encode("utf-8"), key=root_seed, digest_size=SEED_BYTES)
        return cls.from_seed(digest.digest())
