"""Central bank: operators, quotas, reserves, issuance, redemption and issuance runs."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from api.schemas.common import (
    YUAN_PATTERN,
    AmountFen,
    EntityId,
    Name,
    NonNegativeFen,
    OperatorCode,
    RequestModel,
    ResponseModel,
    StrictStr,
    Timestamp,
    Zone,
    examples,
)

Yuan = Annotated[
    StrictStr, Field(pattern=YUAN_PATTERN, description='A yuan amount as a string, "1000.00".')
]


class OperatorCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra=examples({"code": "BANK-A", "name": "Bank A", "quota_fen": 100_000_000})
    )

    code: OperatorCode
    name: Name
    quota_fen: NonNegativeFen = 0


class QuotaUpdate(RequestModel):
    model_config = ConfigDict(json_schema_extra=examples({"quota_fen": 500_000_000}))

    quota_fen: NonNegativeFen


class ReserveDeposit(RequestModel):
    model_config = ConfigDict(
        json_schema_extra=examples(
            {"entry_id": "reserve-2026-03-02-001", "amount_fen": 100_000_000}
        )
    )

    entry_id: EntityId
    amount_fen: AmountFen


class IssuanceOrder(RequestModel):
    """Issue to (or, for a redemption, burn from) an operator's float."""

    model_config = ConfigDict(
        json_schema_extra=examples(
            {"entry_id": "issue-2026-03-02-001", "operator": "BANK-A", "amount_fen": 50_000_000}
        )
    )

    entry_id: EntityId
    operator: OperatorCode
    amount_fen: AmountFen


class Operator(ResponseModel):
    code: str
    name: str
    quota_fen: int
    issued_fen: int
    redeemed_fen: int
    outstanding_fen: int


class OperatorList(ResponseModel):
    operators: list[Operator]


class Entry(ResponseModel):
    """A journal entry as recorded; ``replayed`` when its id had been posted before."""

    entry_id: str
    seq: int
    kind: str
    created_at: Timestamp
    entry_hash: str
    replayed: bool


class PlannedOperator(RequestModel):
    code: OperatorCode
    name: Name
    quota: Yuan | None = None
    quota_fen: NonNegativeFen | None = None
    reserve: Yuan | None = None
    reserve_fen: AmountFen | None = None


class PlannedOrder(RequestModel):
    operator: OperatorCode
    zone: Zone = ""
    amount: Yuan | None = None
    amount_fen: AmountFen | None = None


class IssuancePlan(RequestModel):
    """The TOML plan of ``cbdc issue run``, as JSON: amounts as yuan strings or ``*_fen``."""

    model_config = ConfigDict(
        json_schema_extra=examples({
            "run_id": "2026-03-pilot-zones",
            "operators": [
                {"code": "BANK-A", "name": "Bank A", "quota": "1000000.00",
                 "reserve": "1000000.00"},
            ],
            "orders": [
                {"operator": "BANK-A", "zone": "shenzhen", "amount": "250000.00"},
                {"operator": "BANK-A", "zone": "suzhou", "amount_fen": 10_000_000},
            ],
        })
    )

    run_id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._:-]{1,48}$")]
    operators: Annotated[list[PlannedOperator], Field(default_factory=list, max_length=200)]
    orders: Annotated[list[PlannedOrder], Field(min_length=1, max_length=10_000)]


class RunFailure(ResponseModel):
    order: int
    operator: str
    code: str
    detail: str


class RunReport(ResponseModel):
    run_id: str
    orders_planned: int
    orders_issued_now: int
    orders_already_done: int
    issued_fen: int
    issued_by_operator: dict[str, int]
    issued_by_zone: dict[str, int]
    failures: list[RunFailure]


class RecordedRun(ResponseModel):
    """A run as the journal records it (whoever started it, finished or not)."""

    run_id: str
    orders_issued: int
    issued_fen: int
    issued_by_operator: dict[str, int]
    issued_by_zone: dict[str, int]
    reserve_deposits: int
    reserves_deposited_fen: int
