"""Fixtures for API tests: the app over the ``ledger`` fixture (SQLite and PostgreSQL), a
client speaking HTTP to it, institutions with API keys, and a snapshot of everything that
money or authorisation could change."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from cbdc.domain.money import yuan
from cbdc.services import apikeys, issuance
from cbdc.services.context import LedgerContext
from cbdc.storage.tables import accounts, idempotency_keys, institutions, ledger_head

PROBLEM = "application/problem+json"
_keys = itertools.count(1)


@dataclass(frozen=True)
class Keys:
    central_bank: str
    bank_a: str
    bank_b: str


@pytest.fixture
def app(ledger: LedgerContext) -> FastAPI:
    return create_app(ledger)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def keys(ledger: LedgerContext) -> Keys:
    """Two operators with reserves and quota, and a key for each institution."""
    for code, name in (("BANK-A", "Bank A"), ("BANK-B", "Bank B")):
        issuance.create_operator(ledger, code, name, quota_fen=yuan(1_000_000))
        issuance.deposit_reserve(ledger, f"seed-reserve-{code}", code, yuan(1_000_000))
        issuance.issue(ledger, f"seed-issue-{code}", code, yuan(100_000))
    return Keys(
        central_bank=apikeys.create_api_key(ledger, "central-bank")[1],
        bank_a=apikeys.create_api_key(ledger, "BANK-A")[1],
        bank_b=apikeys.create_api_key(ledger, "BANK-B")[1],
    )


def auth(key: str | None, idempotency_key: str | None = None) -> dict[str, str]:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def money_headers(key: str) -> dict[str, str]:
    """Headers for a POST that moves money: the key and a fresh Idempotency-Key."""
    return auth(key, f"test-{next(_keys)}")


def snapshot(ledger: LedgerContext) -> dict[str, Any]:
    """Every balance, the chain head, issuance counters and idempotency records."""
    with ledger.read() as connection:
        return {
            "balances": connection.execute(
                select(accounts.c.code, accounts.c.balance_fen).order_by(accounts.c.code)
            ).all(),
            "head": connection.execute(select(ledger_head)).all(),
            "institutions": connection.execute(
                select(institutions.c.code, institutions.c.quota_fen, institutions.c.issued_fen,
                       institutions.c.redeemed_fen).order_by(institutions.c.code)
            ).all(),
            "idempotency": connection.execute(
                select(idempotency_keys.c.key, idempotency_keys.c.state)
                .order_by(idempotency_keys.c.id)
            ).all(),
        }


def journal_length(ledger: LedgerContext) -> int:
    with ledger.read() as connection:
        return int(connection.execute(select(ledger_head.c.last_seq)).scalar_one())


def assert_problem(
    response: httpx.Response | httpx2.Response, status: int, code: str, **members: Any
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with the stable code and the expected members."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    document: dict[str, Any] = response.json()
    assert document["type"] == f"urn:cbdc:problem:{code}"
    assert document["code"] == code
    assert document["status"] == status
    assert isinstance(document["title"], str) and document["title"]
    assert isinstance(document["detail"], str) and document["detail"]
    for name, value in members.items():
        assert document[name] == value, (name, document)
    return document
