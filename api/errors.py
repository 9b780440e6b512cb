"""The one mapping of errors to RFC 9457 problem documents (``application/problem+json``).

Every error response of the API comes from here. Members:

* ``type``: ``urn:cbdc:problem:<code>`` -- a URN rather than a URL, so nobody expects to
  dereference it; clients switch on ``code`` (or ``type``, which carries the same code);
* ``title``: short and fixed per kind of error; ``status``: the HTTP status;
* ``detail``: for humans, about this occurrence; ``instance``: the request path;
* ``code``: the stable snake_case code of :mod:`cbdc.domain.errors`;
* extension members a domain error carries (e.g. ``quota_fen``), and for ``request_invalid``
  an ``errors`` list of ``{"loc", "msg", "type"}`` naming each bad field.

Unexpected exceptions are logged with their traceback and answered with a bare
``internal_error`` that echoes nothing of the exception; a database that cannot be reached (or
is locked for longer than the busy timeout) is a ``database_unavailable`` 503 to retry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cbdc.domain.errors import CbdcError
from cbdc.storage.engine import lost_a_race

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:cbdc:problem:"
logger = logging.getLogger("cbdc.api")

#: Codes of errors raised by the HTTP layer itself (routing, body size), by status.
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
}
_RESERVED = frozenset({"type", "title", "status", "detail", "code", "instance"})


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    instance: str | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance is not None:
        document["instance"] = instance
    for name, value in (extensions or {}).items():
        if name not in _RESERVED and _is_json(value):
            document[name] = value
    return document


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def problem_of(error: CbdcError, instance: str | None = None) -> dict[str, Any]:
    return problem(
        error.status, error.code, error.detail, title=error.title, instance=instance,
        extensions=error.extra,
    )


def problem_response(
    document: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        content=json.dumps(document, separators=(",", ":")),
        status_code=int(document["status"]),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def error_response(error: CbdcError, instance: str | None = None) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="cbdc"'} if error.status == 401 else None
    return problem_response(problem_of(error, instance), headers)


async def _on_domain_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, CbdcError)
    return error_response(error, request.url.path)


async def _on_validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    fields = [
        {
            "loc": [str(part) for part in item.get("loc", ())],
            "msg": _message(item),
            "type": str(item.get("type", "")),
        }
        for item in error.errors()
    ]
    summary = "; ".join(f"{'.'.join(f['loc'])}: {f['msg']}" for f in fields[:5])
    document = problem(
        422, "request_invalid", f"the request does not match its schema: {summary}",
        title="Invalid request", instance=request.url.path,
    )
    document["errors"] = fields
    return problem_response(document)


def _message(item: dict[str, Any]) -> str:
    """A validation error's message; a body that is not JSON says why (its parser's reason)."""
    message = str(item.get("msg", ""))
    reason = (item.get("ctx") or {}).get("error")
    if item.get("type") == "json_invalid" and isinstance(reason, str):
        return f"{message}: {reason}"
    return message


async def _on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    status = error.status_code
    code = HTTP_CODES.get(status, f"http_{status}")
    detail = error.detail if isinstance(error.detail, str) else HTTPStatus(status).phrase
    document = problem(status, code, detail, instance=request.url.path)
    return problem_response(document, error.headers)


async def _on_database_error(request: Request, error: Exception) -> Response:
    """A request that lost a race to a concurrent one (PostgreSQL: a unique key taken meanwhile,
    a serialization failure, a deadlock) changed nothing: 409, retry. The API's money routes
    retry such a unit of work themselves (:mod:`api.idempotency`); this answers the rest."""
    assert isinstance(error, DBAPIError)
    if lost_a_race(error):
        logger.info("concurrent update on %s %s: %s", request.method, request.url.path,
                    type(error.orig).__name__)
        document = problem(
            409, "concurrent_update",
            "a concurrent request changed the same records first; nothing was changed, retry",
            instance=request.url.path,
        )
        return problem_response(document, {"Retry-After": "0"})
    if isinstance(error, OperationalError):
        return await _on_database_unavailable(request, error)
    return await _on_unexpected(request, error)


async def _on_database_unavailable(request: Request, error: Exception) -> Response:
    logger.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                   type(error).__name__)
    document = problem(
        503, "database_unavailable", "the ledger database is unavailable; retry shortly",
        instance=request.url.path,
    )
    return problem_response(document, {"Retry-After": "1"})


async def _on_unexpected(request: Request, error: Exception) -> Response:
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    document = problem(
        500, "internal_error", "the server failed to handle this request; it has been logged",
        instance=request.url.path,
    )
    return problem_response(document)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CbdcError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(DBAPIError, _on_database_error)
    app.add_exception_handler(Exception, _on_unexpected)
