"""What a journal entry must satisfy, and that its chain hash covers every field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbdc.domain.errors import InvalidPostings
from cbdc.domain.money import AMOUNT_FEN_MAX
from cbdc.domain.postings import (
    GENESIS_HASH,
    EntryDraft,
    Posting,
    canonical_json,
    checked_metadata_json,
    entry_hash,
    format_timestamp,
    transfer,
    validate_draft,
)

MOMENT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def draft(*postings: tuple[Any, Any], entry_id: str = "e-1", kind: str = "transfer",
          metadata: dict[str, Any] | None = None) -> EntryDraft:
    return EntryDraft(
        entry_id=entry_id,
        kind=kind,
        postings=tuple(Posting(account, amount) for account, amount in postings),
        metadata=metadata or {},
    )


def test_a_balanced_two_leg_entry_is_valid() -> None:
    validate_draft(draft((1, -500), (2, 500)))


def test_a_balanced_multi_leg_entry_is_valid() -> None:
    validate_draft(draft((1, -500), (2, 300), (3, 200)))


def test_transfer_builds_a_debit_and_a_credit() -> None:
    entry = transfer("t-1", "transfer", debit_account_id=7, credit_account_id=9, amount_fen=250)
    assert entry.postings == (Posting(7, -250), Posting(9, 250))
    validate_draft(entry)


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (draft((1, -500), (2, 499)), "sum to -1"),
        (draft((1, -500), (2, 501)), "sum to 1"),
        (draft((1, 500), (2, 500)), "sum to 1000"),
        (draft((1, -500)), "at least two postings"),
        (draft(), "at least two postings"),
        (draft((1, -500), (1, 500)), "account 1 posted twice"),
        (draft((1, -500), (2, 500), (1, 0)), "out of range"),
        (draft((1, 0), (2, 0)), "out of range"),
        (draft((1, -5.0), (2, 5.0)), "integer fen"),
        (draft((1, -True), (2, True)), "integer fen"),
        (draft((1, True), (2, -1)), "integer fen"),
        (draft((1, "-5"), (2, "5")), "integer fen"),
        (draft((1, -(AMOUNT_FEN_MAX + 1)), (2, AMOUNT_FEN_MAX + 1)), "out of range"),
        (draft((1, -5), (2, 5), entry_id=""), "entry id"),
        (draft((1, -5), (2, 5), entry_id="x" * 129), "entry id"),
        (draft((1, -5), (2, 5), kind=""), "kind"),
        (draft((1, -5), (2, 5), kind="k" * 33), "kind"),
    ],
)
def test_invalid_entries_are_refused(entry: EntryDraft, why: str) -> None:
    with pytest.raises(InvalidPostings, match=why) as raised:
        validate_draft(entry)
    assert raised.value.code == "postings_invalid"


@pytest.mark.parametrize(
    "metadata",
    [{"rate": 0.5}, {"nested": [1, {"rate": 1e3}]}, {"when": MOMENT}, {"nan": float("nan")}],
)
def test_metadata_must_be_plain_json_without_floats(metadata: dict[str, Any]) -> None:
    with pytest.raises(InvalidPostings, match="metadata is not plain JSON") as raised:
        checked_metadata_json(draft((1, -5), (2, 5), metadata=metadata))
    assert raised.value.code == "postings_invalid"


def test_metadata_json_is_canonical() -> None:
    entry = draft((1, -5), (2, 5), metadata={"zone": "深圳", "order": 7})
    assert checked_metadata_json(entry) == '{"order":7,"zone":"\\u6df1\\u5733"}'
    assert checked_metadata_json(draft((1, -5), (2, 5))) == "{}"


def test_canonical_json_refuses_floats_and_sorts_keys() -> None:
    assert canonical_json({"b": 1, "a": [2, "é"]}) == b'{"a":[2,"\\u00e9"],"b":1}'
    with pytest.raises(TypeError):
        canonical_json({"amount": 1.5})
    with pytest.raises(TypeError):
        canonical_json({"a": [1, {"b": float("nan")}]})
    with pytest.raises(TypeError):
        canonical_json({"when": MOMENT})


def test_timestamps_are_utc_with_microseconds() -> None:
    assert format_timestamp(MOMENT) == "2026-03-02T09:30:00.000000Z"
    east8 = MOMENT.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai"))
    assert format_timestamp(east8) == "2026-03-02T09:30:00.000000Z"


BASE: dict[str, Any] = {
    "prev_hash": GENESIS_HASH,
    "seq": 1,
    "entry_id": "e-1",
    "kind": "issue",
    "created_at": MOMENT,
    "metadata": {"operator": "ICBC"},
    "postings": (Posting(1, -100), Posting(2, 100)),
}

CHANGES: dict[str, Any] = {
    "prev_hash": "f" * 64,
    "seq": 2,
    "entry_id": "e-2",
    "kind": "redeem",
    "created_at": MOMENT + timedelta(microseconds=1),
    "metadata": {"operator": "BOC"},
    "postings": (Posting(1, -101), Posting(2, 101)),
}


def test_entry_hash_is_deterministic_sha256_hex() -> None:
    first = entry_hash(**BASE)
    assert first == entry_hash(**BASE)
    assert len(first) == 64
    assert int(first, 16) >= 0


@pytest.mark.parametrize("field_name", sorted(CHANGES))
def test_entry_hash_changes_when_any_field_changes(field_name: str) -> None:
    changed = {**BASE, field_name: CHANGES[field_name]}
    assert entry_hash(**changed) != entry_hash(**BASE)


@pytest.mark.parametrize(
    "postings",
    [
        (Posting(2, 100), Posting(1, -100)),  # same legs, other order
        (Posting(1, -100), Posting(3, 100)),  # other account
        (Posting(1, -100), Posting(2, 60), Posting(3, 40)),  # split leg
    ],
)
def test_entry_hash_covers_posting_order_and_accounts(postings: tuple[Posting, ...]) -> None:
    assert entry_hash(**{**BASE, "postings": postings}) != entry_hash(**BASE)


@given(
    st.integers(min_value=1, max_value=2**40),
    st.integers(min_value=1, max_value=AMOUNT_FEN_MAX),
    st.integers(min_value=1, max_value=AMOUNT_FEN_MAX),
)
def test_any_amount_change_changes_the_hash(seq: int, amount: int, other: int) -> None:
    def hashed(amount_fen: int) -> str:
        return entry_hash(
            **{**BASE, "seq": seq, "postings": (Posting(1, -amount_fen), Posting(2, amount_fen))}
        )

    assert (hashed(amount) == hashed(other)) == (amount == other)


def test_content_hash_is_the_idempotency_fingerprint() -> None:
    entry = draft((1, -5), (2, 5), metadata={"order": 1})
    assert entry.content_hash() == draft((1, -5), (2, 5), metadata={"order": 1}).content_hash()
    # The id is the key, not part of the fingerprint; everything the caller asked for is.
    assert entry.content_hash() == draft((1, -5), (2, 5), entry_id="e-9",
                                         metadata={"order": 1}).content_hash()
    for other in (
        draft((1, -6), (2, 6), metadata={"order": 1}),
        draft((1, -5), (3, 5), metadata={"order": 1}),
        draft((1, -5), (2, 5), kind="redeem", metadata={"order": 1}),
        draft((1, -5), (2, 5), metadata={"order": 2}),
    ):
        assert other.content_hash() != entry.content_hash()
