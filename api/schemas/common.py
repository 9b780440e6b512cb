"""Shared field types, the request base class and the problem document's schema."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from cbdc.domain.money import AMOUNT_FEN_MAX

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
OPERATOR_CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{1,31}$"
YUAN_PATTERN = r"^[0-9]{1,14}(\.[0-9]{1,2})?$"

AmountFen = Annotated[
    StrictInt,
    Field(ge=1, le=AMOUNT_FEN_MAX, description="An amount in fen (0.01 CNY), an integer."),
]
NonNegativeFen = Annotated[
    StrictInt, Field(ge=0, le=AMOUNT_FEN_MAX, description="An amount in fen, 0 or more.")
]
#: Free text (names, zones): printable, no control characters (PostgreSQL refuses NUL in text,
#: and nobody's name contains a line feed).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"

Name = Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)]
Zone = Annotated[StrictStr, Field(max_length=64, pattern=TEXT_PATTERN)]


EntityId = Annotated[
    StrictStr,
    Field(pattern=ID_PATTERN, description="A caller-chosen id; it doubles as an idempotency key."),
]
OperatorCode = Annotated[
    StrictStr, Field(pattern=OPERATOR_CODE_PATTERN, description="An operator's code.")
]
Timestamp = Annotated[
    str, Field(description="UTC time, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.", examples=[
        "2026-03-02T01:00:00.000000Z"])
]


def examples(*documents: dict[str, Any]) -> dict[str, Any]:
    """``json_schema_extra`` with OpenAPI examples (shown at /docs, used by schemathesis)."""
    return {"examples": list(documents)}


class RequestModel(BaseModel):
    """Base of every request body: unknown fields (``balance``, ``status``, ``owner``...) are
    refused with 422, and values are not coerced between types."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldError(BaseModel):
    loc: list[str]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document; clients switch on ``code``."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra=examples({
            "type": "urn:cbdc:problem:quota_exceeded",
            "title": "Issuance quota exceeded",
            "status": 422,
            "detail": "operator BANK-A has 900.00 CNY outstanding of a 1000.00 CNY quota; "
                      "200.00 CNY more would exceed it",
            "code": "quota_exceeded",
            "instance": "/v1/issuances",
        }),
    )

    type: str = Field(description="`urn:cbdc:problem:<code>`")
    title: str
    status: StrictInt
    detail: str
    code: str = Field(description="The stable snake_case error code.")
    instance: str | None = None
    errors: list[FieldError] | None = Field(
        default=None, description="For `request_invalid`: each field that is wrong."
    )


__all__ = [
    "AmountFen",
    "EntityId",
    "FieldError",
    "Name",
    "NonNegativeFen",
    "OperatorCode",
    "Problem",
    "RequestModel",
    "ResponseModel",
    "StrictBool",
    "StrictInt",
    "StrictStr",
    "Timestamp",
    "Zone",
    "examples",
]
