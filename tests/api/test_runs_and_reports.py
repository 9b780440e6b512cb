"""Issuance runs over HTTP (the TOML plan as JSON), their journal report, supply and audit."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from cbdc.domain.money import yuan
from cbdc.services.context import LedgerContext
from tests.api.conftest import Keys, assert_problem, auth, journal_length, money_headers, snapshot

PLAN: dict[str, Any] = {
    "run_id": "2026-03-pilot",
    "operators": [
        {"code": "BANK-S", "name": "Shenzhen Bank", "quota": "500000.00", "reserve": "500000.00"},
    ],
    "orders": [
        {"operator": "BANK-S", "zone": "shenzhen", "amount": "200000.00"},
        {"operator": "BANK-S", "zone": "suzhou", "amount_fen": yuan(50_000)},
        {"operator": "BANK-A", "zone": "shenzhen", "amount": "1000.00"},
    ],
}


def test_plan_runs_once_and_its_report_is_read_back_from_the_journal(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    response = client.post("/v1/issuance-runs", json=PLAN, headers=money_headers(keys.central_bank))
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["orders_issued_now"] == 3 and report["failures"] == []
    assert report["issued_by_zone"] == {"shenzhen": yuan(201_000), "suzhou": yuan(50_000)}
    length = journal_length(ledger)

    rerun = client.post("/v1/issuance-runs", json=PLAN, headers=money_headers(keys.central_bank))
    assert rerun.json()["orders_already_done"] == 3 and rerun.json()["orders_issued_now"] == 0
    assert journal_length(ledger) == length

    recorded = client.get("/v1/issuance-runs/2026-03-pilot", headers=auth(keys.central_bank))
    assert recorded.json() == {
        "run_id": "2026-03-pilot",
        "orders_issued": 3,
        "issued_fen": yuan(251_000),
        "issued_by_operator": {"BANK-A": yuan(1_000), "BANK-S": yuan(250_000)},
        "issued_by_zone": {"shenzhen": yuan(201_000), "suzhou": yuan(50_000)},
        "reserve_deposits": 1,
        "reserves_deposited_fen": yuan(500_000),
    }


def test_orders_beyond_quota_fail_alone(client: TestClient, keys: Keys) -> None:
    plan = {"run_id": "partly", "orders": [
        {"operator": "BANK-B", "amount": "10.00"},
        {"operator": "BANK-B", "amount": "999999.00"},
    ]}
    report = client.post("/v1/issuance-runs", json=plan,
                         headers=money_headers(keys.central_bank)).json()
    assert report["orders_issued_now"] == 1
    assert report["failures"] == [{"order": 2, "operator": "BANK-B", "code": "quota_exceeded",
                                   "detail": report["failures"][0]["detail"]}]


def test_invalid_plans_are_refused_and_change_nothing(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    before = snapshot(ledger)
    both = {"run_id": "bad", "orders": [{"operator": "BANK-A", "amount": "1.00",
                                          "amount_fen": 100}]}
    assert_problem(client.post("/v1/issuance-runs", json=both,
                               headers=money_headers(keys.central_bank)), 400, "plan_invalid")
    no_amount = {"run_id": "bad", "orders": [{"operator": "BANK-A"}]}
    assert_problem(client.post("/v1/issuance-runs", json=no_amount,
                               headers=money_headers(keys.central_bank)), 400, "plan_invalid")
    float_yuan = {"run_id": "bad", "orders": [{"operator": "BANK-A", "amount": 1.5}]}
    assert_problem(client.post("/v1/issuance-runs", json=float_yuan,
                               headers=money_headers(keys.central_bank)), 422, "request_invalid")
    no_orders = {"run_id": "bad", "orders": []}
    assert_problem(client.post("/v1/issuance-runs", json=no_orders,
                               headers=money_headers(keys.central_bank)), 422, "request_invalid")
    after = snapshot(ledger)
    assert after["balances"] == before["balances"] and after["head"] == before["head"]


def test_unknown_run_is_not_found(client: TestClient, keys: Keys) -> None:
    client.post("/v1/issuance-runs", json={**PLAN, "run_id": "ab:c"},
                headers=money_headers(keys.central_bank))
    # "ab" is a prefix of "ab:c" in entry ids, but not the same run.
    assert_problem(client.get("/v1/issuance-runs/ab", headers=auth(keys.central_bank)), 404,
                   "issuance_run_not_found")


def test_supply_report_and_audit(client: TestClient, keys: Keys, ledger: LedgerContext) -> None:
    supply = client.get("/v1/reports/supply", headers=auth(keys.central_bank)).json()
    assert [op["code"] for op in supply["operators"]] == ["BANK-A", "BANK-B"]
    assert supply["total"] == {
        "outstanding_fen": yuan(200_000), "holdings_fen": yuan(200_000),
        "reserves_fen": yuan(1_800_000), "central_bank_liability_fen": yuan(2_000_000),
        "balanced": True,
    }
    audit = client.post("/v1/audits", headers=auth(keys.central_bank)).json()
    assert audit["ok"] and audit["findings"] == []
    assert audit["entries_checked"] == journal_length(ledger)

    with ledger.write() as connection:  # a cached balance drifts from its postings
        connection.execute(text(
            "UPDATE accounts SET balance_fen = balance_fen + 1 WHERE code = 'op:BANK-B:float'"
        ))
    audit = client.post("/v1/audits", headers=auth(keys.central_bank)).json()
    assert not audit["ok"]
    assert {(f["code"], f["subject"], f["amount_fen"]) for f in audit["findings"]} >= {
        ("balance_drift", "account op:BANK-B:float", 1)
    }
