"""What every service needs: the engine, an injected clock, and the central bank's identity."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select

from cbdc.clock import Clock, SystemClock
from cbdc.storage.engine import make_engine, read_transaction, write_transaction
from cbdc.storage.migrate import ensure_current
from cbdc.storage.tables import accounts, institutions

CENTRAL_BANK_CODE = "central-bank"
CENTRAL_BANK_NAME = "Central Bank"
ISSUANCE_ACCOUNT_CODE = "cb:issuance"


def reserve_account_code(operator_code: str) -> str:
    return f"op:{operator_code}:reserve"


def float_account_code(operator_code: str) -> str:
    return f"op:{operator_code}:float"


#: The unit of work open in this thread or task, if any, per engine. A service called inside
#: another unit of work (the API's idempotency record, a batch) joins it instead of opening its
#: own, so the caller's record and the service's effect commit together or not at all.
_open_unit: ContextVar[dict[int, Connection] | None] = ContextVar("cbdc_open_unit", default=None)


@dataclass
class LedgerContext:
    """Handle on one ledger database. Cheap to pass around; holds no transaction of its own."""

    engine: Engine
    clock: Clock = field(default_factory=SystemClock)
    ledger_id: str = "cbdc-local"

    def now(self) -> datetime:
        return self.clock.now()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """Open a write unit of work, or join the one already open on this engine."""
        joined = (_open_unit.get() or {}).get(id(self.engine))
        if joined is not None:
            yield joined
            return
        with write_transaction(self.engine) as connection:
            token = _open_unit.set({**(_open_unit.get() or {}), id(self.engine): connection})
            try:
                yield connection
            finally:
                _open_unit.reset(token)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A consistent read snapshot; inside a write unit of work, that unit's connection."""
        joined = (_open_unit.get() or {}).get(id(self.engine))
        if joined is not None:
            yield joined
            return
        with read_transaction(self.engine) as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()


def open_ledger(
    database_url: str | None = None,
    *,
    clock: Clock | None = None,
    ledger_id: str = "cbdc-local",
    check_schema: bool = True,
) -> LedgerContext:
    """Connect to a migrated database, refuse a schema that is behind, ensure the central bank."""
    engine = make_engine(database_url)
    if check_schema:
        ensure_current(engine)
    context = LedgerContext(engine=engine, clock=clock or SystemClock(), ledger_id=ledger_id)
    ensure_central_bank(context)
    return context


def ensure_central_bank(context: LedgerContext) -> None:
    """The central bank and its issuance account exist in every ledger; create them once."""
    with context.read() as connection:
        found = connection.execute(
            select(accounts.c.id).where(accounts.c.code == ISSUANCE_ACCOUNT_CODE)
        ).first()
    if found is not None:
        return
    with context.write() as connection:
        if connection.execute(
            select(institutions.c.id).where(institutions.c.code == CENTRAL_BANK_CODE)
        ).first():
            return
        institution_id = connection.execute(
            insert(institutions)
            .values(
                code=CENTRAL_BANK_CODE,
                name=CENTRAL_BANK_NAME,
                kind="central_bank",
                created_at=context.now(),
            )
            .returning(institutions.c.id)
        ).scalar_one()
        connection.execute(
            insert(accounts).values(
                code=ISSUANCE_ACCOUNT_CODE,
                kind="issuance",
                institution_id=institution_id,
                created_at=context.now(),
            )
        )
