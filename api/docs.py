"""OpenAPI details: the problem responses each route declares, served as
``application/problem+json`` (FastAPI would label them ``application/json``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.errors import PROBLEM_MEDIA_TYPE
from api.schemas.common import Problem

DESCRIPTIONS = {
    400: "Bad request: an undecodable body (`bad_request`), `idempotency_key_missing`, or a "
    "value the service refuses (`operator_code_invalid`, `plan_invalid`...).",
    401: "No, unknown or revoked API key (`unauthenticated`).",
    403: "The caller's role may not do this (`central_bank_only`, `operator_only`).",
    404: "Not found, or not the caller's to see.",
    409: "Conflicts with what is recorded (`*_exists`, `entry_conflict`, "
    "`idempotency_in_flight`).",
    413: "The body is larger than the cap (`body_too_large`).",
    422: "Schema violation (`request_invalid`) or refused by the ledger's rules.",
    500: "Unexpected server error (`internal_error`); nothing internal is revealed.",
    503: "Database unavailable or schema behind the code.",
}
#: Every route can fail like this: bad input, a server fault, an unreachable database.
ALWAYS = (422, 500, 503)
AUTHENTICATED = (401, 403)
#: A route with a body: undecodable bytes (400), too many of them (413).
WITH_BODY = (400, 413)
MOVES_MONEY = (*WITH_BODY, 409)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the given problem statuses plus :data:`ALWAYS`."""
    return {
        status: {"model": Problem, "description": DESCRIPTIONS[status]}
        for status in sorted({*statuses, *ALWAYS})
    }


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )
            _problems_as_problem_json(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problems_as_problem_json(schema: dict[str, Any]) -> None:
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            _idempotency_key_required(operation)
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if status.isdigit() and int(status) >= 400 and content:
                    body = content.pop("application/json", None)
                    if body is not None:
                        content[PROBLEM_MEDIA_TYPE] = body


def _idempotency_key_required(operation: dict[str, Any]) -> None:
    """Documented as required; at run time its absence is our own 400
    ``idempotency_key_missing`` rather than FastAPI's generic 422."""
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "header" and parameter.get("name") == "Idempotency-Key":
            parameter["required"] = True
            parameter["schema"] = {
                "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$",
                "title": "Idempotency-Key",
            }
