"""Liveness and readiness."""

from __future__ import annotations

from api.schemas.common import ResponseModel


class Health(ResponseModel):
    status: str


class Ready(ResponseModel):
    status: str
    database: str
    schema_revision: str
