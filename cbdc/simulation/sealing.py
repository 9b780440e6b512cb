"""The simulated wallets sign on the worker process while the driver draws the rest of a batch.

Signing is a fifth of what the wallets cost the simulation's main thread. A :class:`LaterKey`
seals the way a :class:`~cbdc.domain.keys.KeyPair` does, with the same validation at once (a
bad message still fails where it is built), but leaves the signature empty; every
:data:`CHUNK` envelopes, their signing jobs go to the worker process the ledger verifies on
(:class:`cbdc.services.verifier.Signing`, one message for the chunk). :meth:`LaterSeals.settle`
fills in every signature before a batch leaves the driver: the jobs not yet sent are signed here
(a partial chunk, fewer than :data:`CHUNK`), the rest are read back from the worker, which has
long finished them. At most :data:`IN_FLIGHT_MAX` chunks are out at once; the oldest is read
back before another goes: the worker writes its answers into a pipe of 64 KiB, and once that
were full it would stop reading our requests, and our next request would wait for it forever.
Ed25519 signatures are deterministic, so the envelopes, and the final state hash, are exactly
those of signing at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from cbdc.domain.keys import KeyPair
from cbdc.domain.messages import Envelope, sealable
from cbdc.domain.signing import sign_many
from cbdc.services.verifier import Signing, SigningJob

#: Envelopes whose signing jobs travel to the worker in one message.
CHUNK = 8
#: Chunks sent and not yet read back, at most: their answers (about 600 bytes each) stay well
#: inside the worker's answer pipe.
IN_FLIGHT_MAX = 32


class LaterKey:
    """A wallet's key whose envelopes are signed when their batch is settled."""

    __slots__ = ("_seals", "_secret", "public_key_hex")

    def __init__(self, key: KeyPair, seals: LaterSeals) -> None:
        self.public_key_hex = key.public_key_hex
        self._secret = key.seed + key.public_key  # libsodium's secret key: seed, public key
        self._seals = seals

    def seal(self, message: Mapping[str, Any]) -> Envelope:
        """``message`` validated as :meth:`KeyPair.seal` validates it; signed before the
        envelope leaves the driver (:meth:`LaterSeals.settle`)."""
        checked, data = sealable(message, self.public_key_hex)
        envelope: Envelope = {"message": checked, "signature": ""}
        self._seals.add((self._secret, data), envelope)
        return envelope


class LaterSeals:
    """The envelopes sealed by :class:`LaterKey` s and not yet signed, in chunks."""

    def __init__(self) -> None:
        self._unsent: list[tuple[SigningJob, Envelope]] = []
        self._sent: deque[tuple[Signing, list[Envelope]]] = deque()

    def key(self, key: KeyPair) -> LaterKey:
        return LaterKey(key, self)

    def add(self, job: SigningJob, envelope: Envelope) -> None:
        self._unsent.append((job, envelope))
        if len(self._unsent) >= CHUNK:
            if len(self._sent) >= IN_FLIGHT_MAX:
                _read_back(*self._sent.popleft())
            jobs = [job for job, _ in self._unsent]
            self._sent.append((Signing(jobs), [envelope for _, envelope in self._unsent]))
            self._unsent = []

    def settle(self) -> None:
        """Every envelope sealed so far gets its signature."""
        unsent, self._unsent = self._unsent, []
        _fill([envelope for _, envelope in unsent], sign_many([job for job, _ in unsent]))
        while self._sent:
            _read_back(*self._sent.popleft())


def _read_back(signing: Signing, envelopes: list[Envelope]) -> None:
    _fill(envelopes, signing.result())


def _fill(envelopes: list[Envelope], signatures: list[bytes]) -> None:
    for envelope, signature in zip(envelopes, signatures, strict=True):
        envelope["signature"] = signature.hex()
