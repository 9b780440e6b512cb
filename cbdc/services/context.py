"""What every service needs: the engine, an injected clock and randomness, the wallet classes in
force, the ledger's receipt-signing seed, and the central bank's identity.

Settings (environment, read by :func:`open_ledger` when the caller passes nothing):

* ``CBDC_LEDGER_SIGNING_SEED``: 64 hex characters, the Ed25519 seed of the key with which the
  ledger signs settlement receipts. Without it a fixed, publicly known test seed is used
  (:data:`TEST_LEDGER_SIGNING_SEED`): fine for tests and demos, never for production.
* ``CBDC_OFFLINE_ROOT_SEED``: 64 hex characters, the seed from which the offline PKI's keys are
  derived (the central bank's root key and each operator's key, see
  :mod:`cbdc.services.offline_keys`). Without it a fixed, publicly known test seed is used
  (:data:`TEST_OFFLINE_ROOT_SEED`). Production holds these keys in HSMs instead.
* ``CBDC_LEDGER_ID``: the id every signed message names (``ledger_id``), so that a message
  signed for one ledger is refused by another; ``cbdc-local`` without it. Set it once, before
  the first wallet signs anything.

A setting that is present but malformed is ``setting_invalid`` (naming it), never a default.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select

from cbdc.clock import Clock, SystemClock
from cbdc.domain.errors import FieldInvalid, InvalidRequest
from cbdc.domain.messages import check_id
from cbdc.domain.tiers import WalletClasses
from cbdc.storage.engine import make_engine, read_transaction, write_transaction
from cbdc.storage.migrate import ensure_current
from cbdc.storage.tables import accounts, institutions

CENTRAL_BANK_CODE = "central-bank"
CENTRAL_BANK_NAME = "Central Bank"
ISSUANCE_ACCOUNT_CODE = "cb:issuance"
ENV_LEDGER_SIGNING_SEED = "CBDC_LEDGER_SIGNING_SEED"
#: Deterministic and public: receipts signed with it prove nothing outside tests and demos.
TEST_LEDGER_SIGNING_SEED = hashlib.sha256(b"cbdc test ledger signing seed").digest()
ENV_OFFLINE_ROOT_SEED = "CBDC_OFFLINE_ROOT_SEED"
#: Deterministic and public: certificates chained to it prove nothing outside tests and demos.
TEST_OFFLINE_ROOT_SEED = hashlib.sha256(b"cbdc test offline root seed").digest()


ENV_LEDGER_ID = "CBDC_LEDGER_ID"
DEFAULT_LEDGER_ID = "cbdc-local"
_SEED = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)


def _setting_invalid(name: str, rule: str) -> InvalidRequest:
    return InvalidRequest(f"the setting {name} must be {rule}", code="setting_invalid",
                          field=name)


def _seed_from_env(name: str, default: bytes) -> bytes:
    text = os.environ.get(name)
    if not text:
        return default
    if _SEED.fullmatch(text) is None:
        raise _setting_invalid(name, "64 hex characters (a 32-byte seed)")
    return bytes.fromhex(text)


def ledger_id_from_env() -> str:
    text = os.environ.get(ENV_LEDGER_ID)
    if not text:
        return DEFAULT_LEDGER_ID
    try:
        check_id(ENV_LEDGER_ID, text)  # an id of docs/protocol.md
    except FieldInvalid as error:
        raise _setting_invalid(ENV_LEDGER_ID, "an id: " + error.detail) from error
    return text


def check_settings() -> None:
    """Refuse a malformed setting (``setting_invalid``), as :func:`open_ledger` would."""
    ledger_id_from_env()
    ledger_signing_seed_from_env()
    offline_root_seed_from_env()


def ledger_signing_seed_from_env() -> bytes:
    return _seed_from_env(ENV_LEDGER_SIGNING_SEED, TEST_LEDGER_SIGNING_SEED)


def offline_root_seed_from_env() -> bytes:
    return _seed_from_env(ENV_OFFLINE_ROOT_SEED, TEST_OFFLINE_ROOT_SEED)


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
    """Handle on one ledger database. Cheap to pass around; holds no transaction of its own.

    ``wallet_classes`` are the limits in force (configuration; defaults in README.md);
    ``ledger_signing_seed`` makes the key that signs receipts; ``offline_root_seed`` the offline
    PKI's root and operator keys; ``random_bytes`` is the only source of randomness services
    use (salts), injected so simulations replay."""

    engine: Engine
    clock: Clock = field(default_factory=SystemClock)
    ledger_id: str = DEFAULT_LEDGER_ID
    wallet_classes: WalletClasses = field(default_factory=WalletClasses)
    ledger_signing_seed: bytes = TEST_LEDGER_SIGNING_SEED
    offline_root_seed: bytes = TEST_OFFLINE_ROOT_SEED
    random_bytes: Callable[[int], bytes] = os.urandom

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

    def joined(self) -> bool:
        """Whether a write unit of work is open on this engine here: a :meth:`write` now would
        join it."""
        return id(self.engine) in (_open_unit.get() or {})

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
    ledger_id: str | None = None,
    check_schema: bool = True,
    wallet_classes: WalletClasses | None = None,
    ledger_signing_seed: bytes | None = None,
    offline_root_seed: bytes | None = None,
) -> LedgerContext:
    """Connect to a migrated database, refuse a schema that is behind, ensure the central bank."""
    # Settings first: a malformed one is refused before the database is touched.
    ledger_id = ledger_id or ledger_id_from_env()
    ledger_signing_seed = ledger_signing_seed or ledger_signing_seed_from_env()
    offline_root_seed = offline_root_seed or offline_root_seed_from_env()
    engine = make_engine(database_url)
    if check_schema:
        ensure_current(engine)
    context = LedgerContext(
        engine=engine,
        clock=clock or SystemClock(),
        ledger_id=ledger_id,
        wallet_classes=wallet_classes or WalletClasses(),
        ledger_signing_seed=ledger_signing_seed,
        offline_root_seed=offline_root_seed,
    )
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
