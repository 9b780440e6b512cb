"""Two-tier issuance: the central bank issues e-CNY to operators against their reserves, within
a quota it sets per operator; operators redeem e-CNY back (burned, reserve released).

Accounting (see docs/architecture.md, "The books"):

=====================  ==========================  ===========================
operation              debit                       credit
=====================  ==========================  ===========================
reserve deposit        cb:issuance                 op:CODE:reserve
issuance               op:CODE:reserve             op:CODE:float
redemption             op:CODE:float               op:CODE:reserve
reserve withdrawal     op:CODE:reserve             cb:issuance
=====================  ==========================  ===========================

So ``-balance(cb:issuance)`` is all central-bank money in the ledger (reserves plus e-CNY), and
e-CNY in circulation (issued minus redeemed, kept per operator) always equals the sum of floats,
wallets and escrows: the audit checks both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, insert, select, update

from cbdc.domain.errors import (
    AlreadyExists,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
)
from cbdc.domain.messages import forbidden_character
from cbdc.domain.money import AMOUNT_FEN_MAX, check_amount, format_yuan
from cbdc.domain.postings import check_caller_entry_id, transfer
from cbdc.services.context import (
    CENTRAL_BANK_CODE,
    ISSUANCE_ACCOUNT_CODE,
    LedgerContext,
    float_account_code,
    reserve_account_code,
)
from cbdc.storage.journal import PostedEntry, post_entry, recorded_entry
from cbdc.storage.tables import accounts, institutions

OPERATOR_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{1,31}$")
OPERATOR_NAME_LENGTH_MAX = 200


@dataclass(frozen=True, slots=True)
class Operator:
    id: int
    code: str
    name: str
    quota_fen: int
    issued_fen: int
    redeemed_fen: int
    reserve_account_id: int
    float_account_id: int

    @property
    def outstanding_fen(self) -> int:
        return self.issued_fen - self.redeemed_fen


def check_operator_code(code: str) -> str:
    if not isinstance(code, str) or not OPERATOR_CODE.match(code) or code == CENTRAL_BANK_CODE:
        raise InvalidRequest(
            f"operator code must be 2-32 letters, digits, '-' or '_': {code!r}",
            code="operator_code_invalid",
        )
    return code


def check_operator_name(name: object) -> str:
    """1-200 characters of text that prints as it reads: no control characters (C0, DEL, C1: a
    line feed or an escape sequence would forge lines in reports and logs that show the name,
    and PostgreSQL refuses NUL), lone surrogates or bidirectional overrides (the rule of
    :func:`cbdc.domain.messages.check_text`). The API's schema refuses the C0 controls before
    this; the CLI's issuance plans reach here directly. ``name_invalid``."""
    if not isinstance(name, str) or not 1 <= len(name) <= OPERATOR_NAME_LENGTH_MAX:
        raise InvalidRequest(
            f"operator name must be 1-{OPERATOR_NAME_LENGTH_MAX} characters", code="name_invalid"
        )
    forbidden = forbidden_character(name)
    if forbidden is not None:
        raise InvalidRequest(
            f"operator name contains {forbidden}, a control or formatting character",
            code="name_invalid", character=forbidden,
        )
    return name


def create_operator(
    context: LedgerContext, code: str, name: str, *, quota_fen: int = 0
) -> Operator:
    """Register an authorised operator with its reserve and float accounts.

    Idempotent: creating an operator that exists with the same name returns it."""
    check_operator_code(code)
    check_operator_name(name)
    if quota_fen:
        check_amount(quota_fen)
    with context.write() as connection:
        existing = _find_operator(connection, code)
        if existing is not None:
            if existing.name != name:
                raise AlreadyExists(
                    f"operator {code} exists with another name", code="operator_exists"
                )
            return existing
        now = context.now()
        institution_id = connection.execute(
            insert(institutions)
            .values(code=code, name=name, kind="operator", quota_fen=quota_fen, created_at=now)
            .returning(institutions.c.id)
        ).scalar_one()
        connection.execute(
            insert(accounts),
            [
                {"code": reserve_account_code(code), "kind": "reserve",
                 "institution_id": institution_id, "created_at": now},
                {"code": float_account_code(code), "kind": "float",
                 "institution_id": institution_id, "created_at": now},
            ],
        )
        operator = _find_operator(connection, code)
        assert operator is not None
        return operator


def get_operator(connection: Connection, code: str, *, lock: bool = False) -> Operator:
    operator = _find_operator(connection, code, lock=lock)
    if operator is None:
        raise NotFound(f"no operator {code!r}", code="operator_not_found")
    return operator


def list_operators(context: LedgerContext) -> list[Operator]:
    with context.read() as connection:
        codes = connection.execute(
            select(institutions.c.code)
            .where(institutions.c.kind == "operator")
            .order_by(institutions.c.code)
        ).scalars().all()
        return [get_operator(connection, code) for code in codes]


def _find_operator(connection: Connection, code: str, *, lock: bool = False) -> Operator | None:
    query = select(institutions).where(
        institutions.c.code == code, institutions.c.kind == "operator"
    )
    if lock and connection.dialect.name != "sqlite":
        query = query.with_for_update()
    row = connection.execute(query).first()
    if row is None:
        return None
    account_ids = dict(
        connection.execute(
            select(accounts.c.kind, accounts.c.id).where(
                accounts.c.institution_id == row.id, accounts.c.kind.in_(("reserve", "float"))
            )
        ).all()
    )
    return Operator(
        id=row.id,
        code=row.code,
        name=row.name,
        quota_fen=row.quota_fen,
        issued_fen=row.issued_fen,
        redeemed_fen=row.redeemed_fen,
        reserve_account_id=account_ids["reserve"],
        float_account_id=account_ids["float"],
    )


def account_id(connection: Connection, code: str) -> int:
    found = connection.execute(select(accounts.c.id).where(accounts.c.code == code)).scalar()
    if found is None:
        raise NotFound(f"no account {code!r}", code="account_not_found")
    return int(found)


def set_quota(context: LedgerContext, operator_code: str, quota_fen: int) -> Operator:
    """The central bank sets how much e-CNY an operator may have outstanding. Lowering it below
    what is outstanding is allowed: it only stops further issuance."""
    if (
        isinstance(quota_fen, bool)
        or not isinstance(quota_fen, int)
        or not 0 <= quota_fen <= AMOUNT_FEN_MAX
    ):
        raise InvalidRequest(
            f"quota must be an integer of fen from 0 to {AMOUNT_FEN_MAX}", code="amount_invalid"
        )
    with context.write() as connection:
        operator = get_operator(connection, operator_code, lock=True)
        connection.execute(
            update(institutions).where(institutions.c.id == operator.id).values(quota_fen=quota_fen)
        )
        return get_operator(connection, operator_code)


def deposit_reserve(
    context: LedgerContext,
    entry_id: str,
    operator_code: str,
    amount_fen: int,
    *,
    metadata: dict[str, Any] | None = None,
    run_entry: bool = False,
) -> PostedEntry:
    """The operator places central-bank money in its reserve account (from outside e-CNY).
    ``run_entry``: ``entry_id`` is one an issuance run made (``run:...``), not the caller's."""
    if not run_entry:
        check_caller_entry_id(entry_id)
    check_amount(amount_fen)
    with context.write() as connection:
        operator = get_operator(connection, operator_code)
        draft = transfer(
            entry_id,
            "reserve_deposit",
            debit_account_id=account_id(connection, ISSUANCE_ACCOUNT_CODE),
            credit_account_id=operator.reserve_account_id,
            amount_fen=amount_fen,
            metadata={"operator": operator_code, **(metadata or {})},
        )
        return post_entry(connection, draft, now=context.now())


def issue(
    context: LedgerContext,
    entry_id: str,
    operator_code: str,
    amount_fen: int,
    *,
    metadata: dict[str, Any] | None = None,
    run_entry: bool = False,
) -> PostedEntry:
    """Issue e-CNY into the operator's float against its reserve, within its quota.
    ``run_entry``: as for :func:`deposit_reserve`."""
    if not run_entry:
        check_caller_entry_id(entry_id)
    return _convert(context, "issue", entry_id, operator_code, amount_fen, metadata)


def redeem(
    context: LedgerContext,
    entry_id: str,
    operator_code: str,
    amount_fen: int,
    *,
    metadata: dict[str, Any] | None = None,
) -> PostedEntry:
    """Burn e-CNY from the operator's float and release the same amount to its reserve."""
    check_caller_entry_id(entry_id)
    return _convert(context, "redeem", entry_id, operator_code, amount_fen, metadata)


def _convert(
    context: LedgerContext,
    kind: Literal["issue", "redeem"],
    entry_id: str,
    operator_code: str,
    amount_fen: int,
    metadata: dict[str, Any] | None,
) -> PostedEntry:
    """Reserve -> float (issue) or float -> reserve (redeem), with the operator's counter moved
    in the same transaction; a repeat of ``entry_id`` returns the first result unchecked."""
    check_amount(amount_fen)
    with context.write() as connection:
        operator = get_operator(connection, operator_code, lock=True)
        reserve, float_ = operator.reserve_account_id, operator.float_account_id
        draft = transfer(
            entry_id,
            kind,
            debit_account_id=reserve if kind == "issue" else float_,
            credit_account_id=float_ if kind == "issue" else reserve,
            amount_fen=amount_fen,
            metadata={"operator": operator_code, **(metadata or {})},
        )
        first = recorded_entry(connection, draft)
        if first is not None:
            return first
        if kind == "issue" and operator.outstanding_fen + amount_fen > operator.quota_fen:
            raise QuotaExceeded(
                f"operator {operator_code} has {format_yuan(operator.outstanding_fen)} CNY "
                f"outstanding of a {format_yuan(operator.quota_fen)} CNY quota; "
                f"{format_yuan(amount_fen)} CNY more would exceed it",
                operator=operator_code,
                outstanding_fen=operator.outstanding_fen,
                quota_fen=operator.quota_fen,
            )
        posted = post_entry(connection, draft, now=context.now())
        counter = institutions.c.issued_fen if kind == "issue" else institutions.c.redeemed_fen
        connection.execute(
            update(institutions)
            .where(institutions.c.id == operator.id)
            .values({counter: counter + amount_fen})
        )
        return posted


#: Kinds of account that hold e-CNY, between which value may move without touching supply.
HOLDING_KINDS = frozenset({"float", "wallet", "escrow"})


def transfer_between_holdings(
    context: LedgerContext,
    entry_id: str,
    from_account_code: str,
    to_account_code: str,
    amount_fen: int,
    *,
    kind: str = "transfer",
    metadata: dict[str, Any] | None = None,
) -> PostedEntry:
    """Move e-CNY between two holdings (floats, wallets, escrows); supply does not change."""
    check_amount(amount_fen)
    with context.write() as connection:
        rows = {
            row.code: row
            for row in connection.execute(
                select(accounts.c.code, accounts.c.id, accounts.c.kind).where(
                    accounts.c.code.in_((from_account_code, to_account_code))
                )
            )
        }
        for code in (from_account_code, to_account_code):
            if code not in rows:
                raise NotFound(f"no account {code!r}", code="account_not_found")
            if rows[code].kind not in HOLDING_KINDS:
                raise InvalidRequest(
                    f"account {code} does not hold e-CNY", code="account_not_holding"
                )
        draft = transfer(
            entry_id,
            kind,
            debit_account_id=rows[from_account_code].id,
            credit_account_id=rows[to_account_code].id,
            amount_fen=amount_fen,
            metadata=metadata,
        )
        return post_entry(connection, draft, now=context.now())
