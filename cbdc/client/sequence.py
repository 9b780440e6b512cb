"""Payment sequence numbers: strictly increasing per signing key.

The ledger keeps the last sequence it accepted for each key and refuses a new payment whose
sequence is not above it, so a captured payment cannot be replayed under a fresh ``payment_id``.
Gaps are allowed: a payment signed but never sent costs nothing.
"""

from __future__ import annotations

from cbdc.domain.errors import FieldInvalid
from cbdc.domain.messages import COUNTER_MAX


class SequenceCounter:
    """The sequence of one wallet key. Persist ``last_sequence`` with the key."""

    __slots__ = ("_last",)

    def __init__(self, last_sequence: int = 0) -> None:
        if isinstance(last_sequence, bool) or not isinstance(last_sequence, int):
            raise FieldInvalid("last_sequence must be an integer", field="sequence")
        if not 0 <= last_sequence <= COUNTER_MAX:
            raise FieldInvalid(f"last_sequence must be in [0, {COUNTER_MAX}]", field="sequence")
        self._last = last_sequence

    @property
    def last_sequence(self) -> int:
        return self._last

    def next(self) -> int:
        """The sequence for the next payment; it is used up whether or not the payment is sent."""
        if self._last >= COUNTER_MAX:
            raise FieldInvalid("this key has used up its sequence numbers", field="sequence")
        self._last += 1
        return self._last

    def observe(self, sequence: int) -> None:
        """Catch up with a sequence seen elsewhere (e.g. the ledger's, after a restore)."""
        if sequence > self._last:
            self._last = min(sequence, COUNTER_MAX)
