"""``/healthz`` (the process answers) and ``/readyz`` (the database answers, schema at head).

An unreachable database raises SQLAlchemy's OperationalError, which :mod:`api.errors` answers
with a ``database_unavailable`` 503; a schema behind the code is ``schema_out_of_date`` 503.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import Ledger
from api.docs import problems
from api.json_body import StrictJsonRoute
from api.schemas.health import Health, Ready
from cbdc.domain.errors import SchemaOutOfDate
from cbdc.storage import migrate

router = APIRouter(tags=["health"], route_class=StrictJsonRoute)


@router.get("/healthz", response_model=Health, responses=problems())
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, responses=problems())
def readyz(context: Ledger) -> Ready:
    current = migrate.current_revision(context.engine)
    head = migrate.head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, the code needs {head}"
        )
    return Ready(status="ready", database=context.engine.dialect.name, schema_revision=head)
