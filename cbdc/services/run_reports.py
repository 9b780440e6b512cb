"""What the journal records of an issuance run: its reserve deposits and issued orders.

An issuance run (:mod:`cbdc.services.issuance_run`) leaves nothing but journal entries, each
tagged with the run id in its metadata; this report is read back from them, so it is true
whether the run was started from the CLI or the API, finished or interrupted.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from cbdc.domain.errors import NotFound
from cbdc.services.context import LedgerContext
from cbdc.storage.tables import journal_entries, postings


@dataclass
class RecordedRun:
    run_id: str
    orders_issued: int = 0
    reserve_deposits: int = 0
    reserves_deposited_fen: int = 0
    issued_by_operator: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    issued_by_zone: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def issued_fen(self) -> int:
        return sum(self.issued_by_operator.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "orders_issued": self.orders_issued,
            "issued_fen": self.issued_fen,
            "issued_by_operator": dict(sorted(self.issued_by_operator.items())),
            "issued_by_zone": dict(sorted(self.issued_by_zone.items())),
            "reserve_deposits": self.reserve_deposits,
            "reserves_deposited_fen": self.reserves_deposited_fen,
        }


def recorded_run(context: LedgerContext, run_id: str) -> RecordedRun:
    """The run's entries as recorded; ``issuance_run_not_found`` if it left none."""
    moved = (
        select(postings.c.entry_seq, func.sum(postings.c.amount_fen).label("amount_fen"))
        .where(postings.c.amount_fen > 0)
        .group_by(postings.c.entry_seq)
        .subquery()
    )
    query = (
        select(journal_entries.c.kind, journal_entries.c.metadata_json, moved.c.amount_fen)
        .join(moved, moved.c.entry_seq == journal_entries.c.seq)
        .where(journal_entries.c.entry_id.startswith(f"run:{run_id}:", autoescape=True))
        .order_by(journal_entries.c.seq)
    )
    report = RecordedRun(run_id=run_id)
    with context.read() as connection:
        for row in connection.execute(query):
            metadata = json.loads(row.metadata_json)
            if metadata.get("run_id") != run_id:
                continue  # a longer run id that merely starts like this one
            _count(report, row.kind, metadata, int(row.amount_fen))
    if report.orders_issued == 0 and report.reserve_deposits == 0:
        raise NotFound(f"no issuance run {run_id!r} in the journal", code="issuance_run_not_found")
    return report


def _count(report: RecordedRun, kind: str, metadata: dict[str, Any], amount_fen: int) -> None:
    if kind == "issue":
        report.orders_issued += 1
        report.issued_by_operator[str(metadata.get("operator", ""))] += amount_fen
        report.issued_by_zone[str(metadata.get("zone", ""))] += amount_fen
    elif kind == "reserve_deposit":
        report.reserve_deposits += 1
        report.reserves_deposited_fen += amount_fen
