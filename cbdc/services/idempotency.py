"""Idempotency records for requests that move money (the IETF ``Idempotency-Key`` draft).

Two phases, so the record and the effect it protects can never disagree:

1. :func:`claim`, in its own short transaction, inserts ``(institution, key)`` as ``in_flight``
   with the request's fingerprint, or reports what is already there: the stored response (same
   fingerprint, done), ``idempotency_key_reused`` (other fingerprint), or
   ``idempotency_in_flight`` (a live claim). A claim older than ``stale_after`` (its holder
   crashed) is taken over by bumping ``attempt``.
2. Inside the caller's unit of work, :func:`hold` locks the record (before anything else is
   locked) and checks the claim is still ours; the caller runs the service, which joins that unit
   of work, and :func:`complete` stores the response in the same transaction. So the effect and
   the stored response commit together, and a claimant whose claim was taken over rolls back.

A request the service refuses rolled its effect back; :func:`record_refusal` stores the refusal
in a transaction of its own, so a retry gets the same answer. :func:`release` drops a claim after
an unexpected failure, so the client may simply retry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cbdc.domain.errors import IdempotencyInFlight, InvalidRequest, Refused
from cbdc.domain.postings import sha256_hex
from cbdc.services.context import LedgerContext
from cbdc.storage.tables import idempotency_keys

KEY_LENGTH_MAX = 255
STALE_AFTER_DEFAULT = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Claim:
    """This request holds the key: run the effect, then complete it."""

    record_id: int
    attempt: int


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The key was used before with this very request: answer with what was answered then."""

    status: int
    body: str


def check_key(key: str | None) -> str:
    if key is None or key == "":
        raise InvalidRequest(
            "this request moves money and needs an Idempotency-Key header",
            code="idempotency_key_missing",
        )
    if len(key) > KEY_LENGTH_MAX or not key.isascii() or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1-{KEY_LENGTH_MAX} printable ASCII characters",
            code="idempotency_key_invalid",
        )
    return key


def fingerprint(method: str, path: str, body: Any) -> str:
    """sha256 of the method, the path and the (parsed) body as sorted, compact JSON.

    Not the ledger's canonical JSON, which refuses floats: a body may carry one (inside a signed
    message the service will refuse), and the refusal is what the client must get back, stored
    under its key like any other answer."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return sha256_hex(method.upper().encode() + b" " + path.encode() + b"\n" + text.encode())


def claim(
    context: LedgerContext,
    institution_id: int,
    key: str,
    request_fingerprint: str,
    *,
    stale_after: timedelta = STALE_AFTER_DEFAULT,
) -> Claim | StoredResponse:
    """Phase 1: take the key for this request, or say why not (see the module docstring)."""
    with context.write() as connection:
        now = context.now()
        record_id = _insert_if_absent(connection, institution_id, key, request_fingerprint, now)
        if record_id is not None:
            return Claim(record_id=record_id, attempt=1)
        query = select(idempotency_keys).where(
            idempotency_keys.c.institution_id == institution_id, idempotency_keys.c.key == key
        )
        if connection.dialect.name != "sqlite":
            query = query.with_for_update()
        row = connection.execute(query).one()
        if row.fingerprint != request_fingerprint:
            raise Refused(
                "this Idempotency-Key was used with a different request",
                code="idempotency_key_reused",
            )
        if row.state == "done":
            return StoredResponse(status=row.response_status, body=row.response_body)
        if now - _as_utc(row.claimed_at) < stale_after:
            raise IdempotencyInFlight(
                "a request with this Idempotency-Key is still being processed; retry later"
            )
        connection.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.id == row.id)
            .values(attempt=row.attempt + 1, claimed_at=now)
        )
        return Claim(record_id=row.id, attempt=row.attempt + 1)


def _insert_if_absent(
    connection: Connection, institution_id: int, key: str, request_fingerprint: str, now: datetime
) -> int | None:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(idempotency_keys)
        .values(
            institution_id=institution_id, key=key, fingerprint=request_fingerprint,
            state="in_flight", attempt=1, created_at=now, claimed_at=now,
        )
        .on_conflict_do_nothing(index_elements=["institution_id", "key"])
        .returning(idempotency_keys.c.id)
    )
    found = connection.execute(statement).scalar()
    return None if found is None else int(found)


def hold(connection: Connection, claimed: Claim) -> bool:
    """Phase 2, first statement of the unit of work: lock the record; is the claim still ours?"""
    query = select(idempotency_keys.c.state, idempotency_keys.c.attempt).where(
        idempotency_keys.c.id == claimed.record_id
    )
    if connection.dialect.name != "sqlite":
        query = query.with_for_update()
    row = connection.execute(query).first()
    return row is not None and row.state == "in_flight" and row.attempt == claimed.attempt


def complete(connection: Connection, claimed: Claim, status: int, body: str) -> None:
    """Phase 2, last statement of the unit of work: store the response with the effect."""
    result = connection.execute(
        update(idempotency_keys)
        .where(
            idempotency_keys.c.id == claimed.record_id,
            idempotency_keys.c.attempt == claimed.attempt,
            idempotency_keys.c.state == "in_flight",
        )
        .values(state="done", response_status=status, response_body=body)
    )
    assert result.rowcount == 1, "an idempotency record held by hold() changed under us"


def record_refusal(context: LedgerContext, claimed: Claim, status: int, body: str) -> None:
    """Store a refusal (the effect rolled back) so a retry with the key gets the same answer."""
    with context.write() as connection:
        connection.execute(
            update(idempotency_keys)
            .where(
                idempotency_keys.c.id == claimed.record_id,
                idempotency_keys.c.attempt == claimed.attempt,
                idempotency_keys.c.state == "in_flight",
            )
            .values(state="done", response_status=status, response_body=body)
        )


def release(context: LedgerContext, claimed: Claim) -> None:
    """Forget a claim whose request failed unexpectedly (nothing was stored, nothing happened)."""
    with context.write() as connection:
        connection.execute(
            delete(idempotency_keys).where(
                idempotency_keys.c.id == claimed.record_id,
                idempotency_keys.c.attempt == claimed.attempt,
                idempotency_keys.c.state == "in_flight",
            )
        )


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
