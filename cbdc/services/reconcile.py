"""Supply report: what each operator was issued, what it holds, and the totals.

Read from cached balances in one consistent snapshot (the audit is what re-derives them from the
journal). Holdings are attributed to the operator that serves the account: its float, the
wallets it opened and the escrows of the devices it certified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from cbdc.services.context import ISSUANCE_ACCOUNT_CODE, LedgerContext
from cbdc.storage.tables import accounts, institutions


@dataclass(frozen=True, slots=True)
class OperatorSupply:
    code: str
    name: str
    quota_fen: int
    issued_fen: int
    redeemed_fen: int
    reserve_fen: int
    float_fen: int
    wallets_fen: int
    escrow_fen: int

    @property
    def outstanding_fen(self) -> int:
        return self.issued_fen - self.redeemed_fen

    @property
    def holdings_fen(self) -> int:
        return self.float_fen + self.wallets_fen + self.escrow_fen

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "quota_fen": self.quota_fen,
            "issued_fen": self.issued_fen,
            "redeemed_fen": self.redeemed_fen,
            "outstanding_fen": self.outstanding_fen,
            "reserve_fen": self.reserve_fen,
            "float_fen": self.float_fen,
            "wallets_fen": self.wallets_fen,
            "escrow_fen": self.escrow_fen,
            "holdings_fen": self.holdings_fen,
        }


@dataclass
class SupplyReport:
    operators: list[OperatorSupply] = field(default_factory=list)
    central_bank_liability_fen: int = 0

    @property
    def outstanding_fen(self) -> int:
        return sum(op.outstanding_fen for op in self.operators)

    @property
    def holdings_fen(self) -> int:
        return sum(op.holdings_fen for op in self.operators)

    @property
    def reserves_fen(self) -> int:
        return sum(op.reserve_fen for op in self.operators)

    @property
    def balanced(self) -> bool:
        """e-CNY outstanding equals holdings, and the central bank's liability covers
        reserves plus e-CNY exactly."""
        return (
            self.outstanding_fen == self.holdings_fen
            and self.central_bank_liability_fen == self.reserves_fen + self.holdings_fen
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "operators": [op.as_dict() for op in self.operators],
            "total": {
                "outstanding_fen": self.outstanding_fen,
                "holdings_fen": self.holdings_fen,
                "reserves_fen": self.reserves_fen,
                "central_bank_liability_fen": self.central_bank_liability_fen,
                "balanced": self.balanced,
            },
        }


def supply_report(context: LedgerContext, *, operator_code: str | None = None) -> SupplyReport:
    report = SupplyReport()
    with context.read() as connection:
        sums = {
            (row.institution_id, row.kind): int(row.total)
            for row in connection.execute(
                select(
                    accounts.c.institution_id,
                    accounts.c.kind,
                    func.sum(accounts.c.balance_fen).label("total"),
                ).group_by(accounts.c.institution_id, accounts.c.kind)
            )
        }
        query = select(institutions).where(institutions.c.kind == "operator")
        if operator_code is not None:
            query = query.where(institutions.c.code == operator_code)
        for row in connection.execute(query.order_by(institutions.c.code)):
            report.operators.append(
                OperatorSupply(
                    code=row.code,
                    name=row.name,
                    quota_fen=row.quota_fen,
                    issued_fen=row.issued_fen,
                    redeemed_fen=row.redeemed_fen,
                    reserve_fen=sums.get((row.id, "reserve"), 0),
                    float_fen=sums.get((row.id, "float"), 0),
                    wallets_fen=sums.get((row.id, "wallet"), 0),
                    escrow_fen=sums.get((row.id, "escrow"), 0),
                )
            )
        liability = connection.execute(
            select(accounts.c.balance_fen).where(accounts.c.code == ISSUANCE_ACCOUNT_CODE)
        ).scalar()
        report.central_bank_liability_fen = -int(liability or 0)
    return report
