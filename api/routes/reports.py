"""Reconciliation: the global supply report and the audit (central bank), and each operator's
own report."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import CentralBank, Ledger, ScopedOperatorCode
from api.docs import AUTHENTICATED, problems
from api.json_body import StrictJsonRoute
from api.schemas.reports import AuditReport, OperatorSupply, SupplyReport
from cbdc.domain.errors import NotFound
from cbdc.services.audit import run_audit
from cbdc.services.reconcile import supply_report

router = APIRouter(prefix="/v1", tags=["reconciliation"], route_class=StrictJsonRoute)


@router.get(
    "/reports/supply", response_model=SupplyReport, responses=problems(*AUTHENTICATED),
    summary="e-CNY supply per operator and in total",
)
def global_supply(context: Ledger, _: CentralBank) -> SupplyReport:
    return SupplyReport.model_validate(supply_report(context).as_dict())


@router.get(
    "/operators/{code}/report", response_model=OperatorSupply,
    responses=problems(*AUTHENTICATED, 404), summary="One operator's supply report",
)
def operator_supply(code: ScopedOperatorCode, context: Ledger) -> OperatorSupply:
    report = supply_report(context, operator_code=code)
    if not report.operators:
        raise NotFound(f"no operator {code!r}", code="operator_not_found")
    return OperatorSupply.model_validate(report.operators[0].as_dict())


@router.post(
    "/audits", response_model=AuditReport, responses=problems(*AUTHENTICATED),
    summary="Re-check the whole ledger from its journal and return the findings",
)
def audit(context: Ledger, _: CentralBank) -> AuditReport:
    return AuditReport.model_validate(run_audit(context).as_dict())
