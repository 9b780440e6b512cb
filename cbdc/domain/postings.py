"""What a journal entry must satisfy, and how it is hashed into the chain.

A journal entry is a caller-identified, timestamped set of postings that sum to zero: every
movement of money debits one account and credits another in the same entry. Entries are chained:
``entry_hash = sha256(prev_hash || canonical_json(fields))``, so changing, removing or reordering
any entry breaks every hash after it (see ``docs/architecture.md``).

The canonical JSON used here is the ledger's own internal format (sorted keys, no whitespace,
ASCII only, integers only); it never leaves the ledger, so it needs no external standard.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cbdc.domain.errors import InvalidPostings, InvalidRequest
from cbdc.domain.money import AMOUNT_FEN_MAX

#: The ``prev_hash`` of the first entry in the chain.
GENESIS_HASH = "0" * 64
ENTRY_ID_LENGTH_MAX = 128
#: The entry ids the ledger makes for itself start with these (a settlement's
#: ``<kind>:<payment id>``, an issuance run's ``run:<run id>:...``, an offline entry's
#: ``offline-...`` or ``operator-loss:...``). An id a caller chooses (a top-up's, an
#: issuance's) may not: it could take the id a customer's refund will need.
RESERVED_ENTRY_ID_PREFIXES = (
    "payment:", "capture:", "refund:", "run:", "offline-", "operator-loss:",
)


def check_caller_entry_id(entry_id: str) -> None:
    """Refuse an entry id a caller chose that starts like the ids the ledger makes."""
    if isinstance(entry_id, str) and entry_id.startswith(RESERVED_ENTRY_ID_PREFIXES):
        raise InvalidRequest(
            f"entry id {entry_id!r} starts with a prefix the ledger keeps for its own entries "
            f"({', '.join(RESERVED_ENTRY_ID_PREFIXES)})",
            code="entry_id_reserved", field="entry_id",
        )
KIND_LENGTH_MAX = 32


@dataclass(frozen=True, slots=True)
class Posting:
    """One leg of an entry: ``amount_fen`` > 0 credits the account, < 0 debits it."""

    account_id: int
    amount_fen: int


@dataclass(frozen=True, slots=True)
class EntryDraft:
    """An entry as a service asks for it, before the ledger gives it a place in the chain."""

    entry_id: str
    kind: str
    postings: tuple[Posting, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def metadata_json(self) -> str:
        return canonical_json(dict(self.metadata)).decode("ascii") if self.metadata else "{}"

    def content_hash(self, metadata_json: str | None = None) -> str:
        """Hash of what the caller asked for: the idempotency fingerprint of ``entry_id``."""
        return sha256_hex(
            content_fields(self.kind, metadata_json or self.metadata_json(), self.postings)
        )


def posting_pairs(postings: Sequence[Posting]) -> list[list[int]]:
    return [[p.account_id, p.amount_fen] for p in postings]


def _postings_json(postings: Sequence[Posting]) -> str:
    return "[" + ",".join(f"[{p.account_id},{p.amount_fen}]" for p in postings) + "]"


def content_fields(kind: str, metadata_json: str, postings: Sequence[Posting]) -> bytes:
    """``canonical_json({"kind", "metadata", "postings"})``, assembled without re-encoding the
    already canonical metadata (the hot path hashes every entry twice)."""
    return (
        f'{{"kind":{_string(kind)},"metadata":{metadata_json},'
        f'"postings":{_postings_json(postings)}}}'
    ).encode("ascii")


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes; refuses floats so money can never be hashed as one."""
    _refuse_floats(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
        default=_refuse,
    ).encode("ascii")


def _refuse(value: object) -> object:
    raise TypeError(f"not canonical JSON: {type(value).__name__}")


def _refuse_floats(value: object) -> None:
    """``json.dumps`` writes floats natively (``default`` never sees them), so look for them."""
    if isinstance(value, float):
        raise TypeError(f"not canonical JSON: float {value!r}")
    if isinstance(value, dict):
        for item in value.values():
            _refuse_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_floats(item)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def format_timestamp(moment: datetime) -> str:
    """UTC, microsecond precision, ``Z`` suffix: the one textual form of a ledger time."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(
    *,
    prev_hash: str,
    seq: int,
    entry_id: str,
    kind: str,
    created_at: datetime,
    metadata: Mapping[str, Any] | None = None,
    postings: Sequence[Posting],
    metadata_json: str | None = None,
    timestamp: str | None = None,
) -> str:
    """The chain hash of one entry: ``sha256(prev_hash || canonical fields)`` as hex, where the
    fields are ``canonical_json({"created_at", "entry_id", "kind", "metadata", "postings",
    "seq"})`` (``postings`` as ``[[account_id, amount_fen], ...]`` in posting order)."""
    if metadata_json is None:
        metadata_json = canonical_json(dict(metadata or {})).decode("ascii")
    fields = (
        f'{{"created_at":"{timestamp or format_timestamp(created_at)}",'
        f'"entry_id":{_string(entry_id)},"kind":{_string(kind)},"metadata":{metadata_json},'
        f'"postings":{_postings_json(postings)},"seq":{seq}}}'
    ).encode("ascii")
    return sha256_hex(bytes.fromhex(prev_hash) + fields)


def validate_draft(draft: EntryDraft) -> None:
    """Raise InvalidPostings unless ``draft`` is a well-formed double-entry journal entry."""
    if not draft.entry_id or len(draft.entry_id) > ENTRY_ID_LENGTH_MAX:
        raise InvalidPostings(f"entry id must be 1-{ENTRY_ID_LENGTH_MAX} characters")
    if not draft.kind or len(draft.kind) > KIND_LENGTH_MAX:
        raise InvalidPostings(f"entry kind must be 1-{KIND_LENGTH_MAX} characters")
    if len(draft.postings) < 2:
        raise InvalidPostings(f"entry {draft.entry_id} needs at least two postings")
    seen: set[int] = set()
    total = 0
    for posting in draft.postings:
        amount = posting.amount_fen
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidPostings(f"entry {draft.entry_id}: amounts must be integer fen")
        if amount == 0 or abs(amount) > AMOUNT_FEN_MAX:
            raise InvalidPostings(f"entry {draft.entry_id}: posting amount {amount} out of range")
        if posting.account_id in seen:
            raise InvalidPostings(
                f"entry {draft.entry_id}: account {posting.account_id} posted twice"
            )
        seen.add(posting.account_id)
        total += amount
    if total != 0:
        raise InvalidPostings(f"entry {draft.entry_id}: postings sum to {total}, not zero")


def checked_metadata_json(draft: EntryDraft) -> str:
    """The canonical metadata text, or InvalidPostings if the metadata is not plain JSON."""
    try:
        return draft.metadata_json()
    except (TypeError, ValueError) as exc:
        raise InvalidPostings(f"entry {draft.entry_id}: metadata is not plain JSON") from exc


def transfer(
    entry_id: str,
    kind: str,
    *,
    debit_account_id: int,
    credit_account_id: int,
    amount_fen: int,
    metadata: Mapping[str, Any] | None = None,
) -> EntryDraft:
    """The common two-posting entry: move ``amount_fen`` from one account to another."""
    return EntryDraft(
        entry_id=entry_id,
        kind=kind,
        postings=(
            Posting(debit_account_id, -amount_fen),
            Posting(credit_account_id, amount_fen),
        ),
        metadata=dict(metadata or {}),
    )
