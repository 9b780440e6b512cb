"""Reconciliation: supply reports and the audit."""

from __future__ import annotations

from api.schemas.common import ResponseModel


class OperatorSupply(ResponseModel):
    code: str
    name: str
    quota_fen: int
    issued_fen: int
    redeemed_fen: int
    outstanding_fen: int
    reserve_fen: int
    float_fen: int
    wallets_fen: int
    escrow_fen: int
    holdings_fen: int


class SupplyTotal(ResponseModel):
    outstanding_fen: int
    holdings_fen: int
    reserves_fen: int
    central_bank_liability_fen: int
    balanced: bool


class SupplyReport(ResponseModel):
    operators: list[OperatorSupply]
    total: SupplyTotal


class Finding(ResponseModel):
    code: str
    subject: str
    detail: str
    amount_fen: int | None


class AuditReport(ResponseModel):
    ok: bool
    entries_checked: int
    accounts_checked: int
    ecny_outstanding_fen: int
    holdings_fen: int
    findings: list[Finding]
