"""The FastAPI application factory.

``create_app(context)`` serves an open :class:`LedgerContext` (tests pass one with a manual
clock); without one it opens ``settings.database_url`` or ``$CBDC_DATABASE_URL`` at start-up,
refusing a schema that is behind the code, and disposes of it at shutdown. ``cbdc serve`` runs
it with uvicorn (``uvicorn --factory api.app:create_app``), one ledger context per worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from fastapi import FastAPI

from api import docs
from api.errors import install_error_handlers
from api.limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from api.routes import central_bank, health, offline, payments, reports, wallets
from cbdc.services.context import LedgerContext, open_ledger

API_VERSION = "1"
DESCRIPTION = """\
The HTTP API of a two-tier, digital-yuan style CBDC ledger.

* **Authentication**: institutions (the central bank, each operator) send
  `Authorization: Bearer KEY` (keys from `cbdc apikey create CODE`). Wallet actions are
  additionally authorised by the wallet's Ed25519 signature over the message.
* **Money** is an integer number of fen (0.01 CNY); floats and numeric strings are refused.
* **Idempotency**: every POST that moves money needs an `Idempotency-Key` header; a retry with
  the same key and body gets the first response (`Idempotent-Replayed: true`).
* **Errors** are RFC 9457 `application/problem+json` documents whose `code` is stable and whose
  `type` is `urn:cbdc:problem:<code>`.
"""


@dataclass(frozen=True, slots=True)
class ApiSettings:
    database_url: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    idempotency_stale_after: timedelta = timedelta(seconds=60)


def create_app(
    context: LedgerContext | None = None, *, settings: ApiSettings | None = None
) -> FastAPI:
    settings = settings or ApiSettings()
    owned = context is None
    ledger = context if context is not None else open_ledger(settings.database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            ledger.dispose()

    app = FastAPI(
        title="cbdc", version=API_VERSION, description=DESCRIPTION, lifespan=lifespan,
    )
    app.state.ledger = ledger
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    routers = (health.router, central_bank.router, reports.router, wallets.router,
               wallets.funding_router, payments.router, offline.router)
    for router in routers:
        app.include_router(router)
    docs.install_openapi(app)
    return app
