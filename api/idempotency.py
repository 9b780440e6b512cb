"""The ``Idempotency-Key`` header on requests that move money (see
:mod:`cbdc.services.idempotency` for the two phases and why the record and the effect commit
together). Routes hand :func:`run_idempotent` their parsed body and a callable that runs the
service and returns ``(status, response model)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

from fastapi import Header, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from api.errors import PROBLEM_MEDIA_TYPE, problem_of
from cbdc.domain.errors import CbdcError, IdempotencyInFlight
from cbdc.services import idempotency
from cbdc.services.apikeys import Principal
from cbdc.services.context import LedgerContext
from cbdc.storage.engine import lost_a_race

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Required: a unique key per intended effect (the IETF draft's semantics). "
        "A retry with the same key and body gets the first response; another body, 422.",
        examples=["3f0c2a9e-5b8d-4e7a-9c1d-2b6f8e4a7d10"],
    ),
]
REPLAY_HEADER = "Idempotent-Replayed"


def run_idempotent(
    request: Request,
    context: LedgerContext,
    principal: Principal,
    key: str | None,
    body: BaseModel,
    action: Callable[[], tuple[int, BaseModel]],
) -> Response:
    """Claim the key, run ``action`` and store its response in one unit of work, or replay."""
    checked = idempotency.check_key(key)
    request_fingerprint = idempotency.fingerprint(
        request.method, request.url.path, body.model_dump(mode="json")
    )
    claimed = idempotency.claim(
        context, principal.institution_id, checked, request_fingerprint,
        stale_after=request.app.state.settings.idempotency_stale_after,
    )
    if isinstance(claimed, idempotency.StoredResponse):
        return _stored(claimed.status, claimed.body, replayed=True)
    try:
        status, content = _effect(context, claimed, action)
    except _ClaimLost:
        raise IdempotencyInFlight(
            "this request took too long and another with its Idempotency-Key took over"
        ) from None
    except CbdcError as error:
        if error.status >= 500:  # transient: nothing to remember, the client should retry
            idempotency.release(context, claimed)
            raise
        content = json.dumps(problem_of(error, request.url.path), separators=(",", ":"))
        idempotency.record_refusal(context, claimed, error.status, content)
        return _stored(error.status, content, replayed=False)
    except BaseException:
        idempotency.release(context, claimed)
        raise
    return _stored(status, content, replayed=False)


#: How often a unit of work that lost a race to a concurrent one is run again.
RACE_RETRIES = 3


def _effect(
    context: LedgerContext, claimed: idempotency.Claim, action: Callable[[], tuple[int, BaseModel]]
) -> tuple[int, str]:
    """Run the action and store its response in one unit of work. On PostgreSQL two requests
    whose locks do not meet (say, two payers choosing one payment id) can both pass their
    checks; the second then hits a unique key and its transaction is spoilt. Run it again on a
    fresh snapshot: it sees the first one's effect and answers as a repeat would."""
    for attempt in range(RACE_RETRIES + 1):
        try:
            with context.write() as connection:
                if not idempotency.hold(connection, claimed):
                    raise _ClaimLost
                status, model = action()
                content = model.model_dump_json()
                idempotency.complete(connection, claimed, status, content)
                return status, content
        except DBAPIError as error:
            if attempt == RACE_RETRIES or not lost_a_race(error):
                raise
    raise AssertionError("unreachable")


class _ClaimLost(Exception):
    pass


def _stored(status: int, content: str, *, replayed: bool) -> Response:
    media_type = PROBLEM_MEDIA_TYPE if status >= 400 else "application/json"
    headers = {REPLAY_HEADER: "true"} if replayed else {}
    return Response(content=content, status_code=status, media_type=media_type, headers=headers)
