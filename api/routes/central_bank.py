"""Central bank: operators and their quotas, reserves, issuance, redemption, issuance runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from api.auth import CentralBank, Ledger, OperatorCodePath, ScopedOperatorCode
from api.docs import AUTHENTICATED, MOVES_MONEY, WITH_BODY, problems
from api.idempotency import IdempotencyKey, run_idempotent
from api.json_body import StrictJsonRoute
from api.schemas.central_bank import (
    Entry,
    IssuanceOrder,
    IssuancePlan,
    Operator,
    OperatorCreate,
    OperatorList,
    QuotaUpdate,
    RecordedRun,
    ReserveDeposit,
    RunReport,
)
from cbdc.domain.postings import format_timestamp
from cbdc.services import issuance, issuance_run, run_reports
from cbdc.storage.journal import PostedEntry

router = APIRouter(prefix="/v1", tags=["central bank"], route_class=StrictJsonRoute)
RunId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,48}$")]


def operator_out(operator: issuance.Operator) -> Operator:
    return Operator(
        code=operator.code, name=operator.name, quota_fen=operator.quota_fen,
        issued_fen=operator.issued_fen, redeemed_fen=operator.redeemed_fen,
        outstanding_fen=operator.outstanding_fen,
    )


def entry_out(posted: PostedEntry) -> Entry:
    return Entry(
        entry_id=posted.entry_id, seq=posted.seq, kind=posted.kind,
        created_at=format_timestamp(posted.created_at), entry_hash=posted.entry_hash,
        replayed=posted.replayed,
    )


@router.post(
    "/operators", status_code=201, response_model=Operator,
    responses=problems(*AUTHENTICATED, *WITH_BODY, 409),
    summary="Register an operator (repeating it with the same name returns it)",
)
def create_operator(body: OperatorCreate, context: Ledger, _: CentralBank) -> Operator:
    created = issuance.create_operator(context, body.code, body.name, quota_fen=body.quota_fen)
    return operator_out(created)


@router.get(
    "/operators", response_model=OperatorList, responses=problems(*AUTHENTICATED),
    summary="All operators",
)
def list_operators(context: Ledger, _: CentralBank) -> OperatorList:
    return OperatorList(operators=[operator_out(op) for op in issuance.list_operators(context)])


@router.get(
    "/operators/{code}", response_model=Operator, responses=problems(*AUTHENTICATED, 404),
    summary="One operator (an operator sees only itself)",
)
def get_operator(code: ScopedOperatorCode, context: Ledger) -> Operator:
    with context.read() as connection:
        return operator_out(issuance.get_operator(connection, code))


@router.put(
    "/operators/{code}/quota", response_model=Operator,
    responses=problems(*AUTHENTICATED, *WITH_BODY, 404),
    summary="Set an operator's issuance quota",
)
def set_quota(
    _: CentralBank, code: OperatorCodePath, body: QuotaUpdate, context: Ledger
) -> Operator:
    return operator_out(issuance.set_quota(context, code, body.quota_fen))


@router.post(
    "/operators/{code}/reserve-deposits", status_code=201, response_model=Entry,
    responses=problems(*AUTHENTICATED, *MOVES_MONEY, 404),
    summary="Record central-bank money placed in the operator's reserve",
)
def deposit_reserve(
    principal: CentralBank,
    code: OperatorCodePath,
    body: ReserveDeposit,
    request: Request,
    context: Ledger,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return run_idempotent(
        request, context, principal, idempotency_key, body,
        lambda: (201, entry_out(
            issuance.deposit_reserve(context, body.entry_id, code, body.amount_fen)
        )),
    )


@router.post(
    "/issuances", status_code=201, response_model=Entry,
    responses=problems(*AUTHENTICATED, *MOVES_MONEY, 404),
    summary="Issue e-CNY to an operator's float, within its quota",
)
def issue(
    body: IssuanceOrder,
    request: Request,
    context: Ledger,
    principal: CentralBank,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return run_idempotent(
        request, context, principal, idempotency_key, body,
        lambda: (201, entry_out(
            issuance.issue(context, body.entry_id, body.operator, body.amount_fen)
        )),
    )


@router.post(
    "/redemptions", status_code=201, response_model=Entry,
    responses=problems(*AUTHENTICATED, *MOVES_MONEY, 404),
    summary="Redeem (burn) e-CNY from an operator's float back to its reserve",
)
def redeem(
    body: IssuanceOrder,
    request: Request,
    context: Ledger,
    principal: CentralBank,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return run_idempotent(
        request, context, principal, idempotency_key, body,
        lambda: (201, entry_out(
            issuance.redeem(context, body.entry_id, body.operator, body.amount_fen)
        )),
    )


@router.post(
    "/issuance-runs", status_code=201, response_model=RunReport,
    responses=problems(*AUTHENTICATED, *MOVES_MONEY, 404),
    summary="Execute an issuance plan (the JSON form of the TOML plan) in one unit of work",
)
def run_plan(
    body: IssuancePlan,
    request: Request,
    context: Ledger,
    principal: CentralBank,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def execute() -> tuple[int, RunReport]:
        plan = issuance_run.parse_plan(body.model_dump(exclude_none=True))
        report = issuance_run.execute_plan(context, plan)
        return 201, RunReport.model_validate(report.as_dict())

    return run_idempotent(request, context, principal, idempotency_key, body, execute)


@router.get(
    "/issuance-runs/{run_id}", response_model=RecordedRun,
    responses=problems(*AUTHENTICATED, 404), summary="What the journal records of a run",
)
def get_run(run_id: RunId, context: Ledger, _: CentralBank) -> RecordedRun:
    return RecordedRun.model_validate(run_reports.recorded_run(context, run_id).as_dict())
