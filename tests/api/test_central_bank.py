"""The central bank's endpoints, as accounting scenarios over HTTP, and every problem they give."""

from __future__ import annotations

import itertools

import pytest
from fastapi.testclient import TestClient

from cbdc.domain.money import AMOUNT_FEN_MAX, yuan
from cbdc.services.context import LedgerContext
from tests.api.conftest import Keys, assert_problem, auth, journal_length, money_headers, snapshot


def test_operator_is_registered_given_quota_reserve_and_issued_then_redeems(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    cb = keys.central_bank
    created = client.post(
        "/v1/operators", json={"code": "BANK-C", "name": "Bank C"}, headers=auth(cb)
    )
    assert created.status_code == 201, created.text
    assert created.json() == {
        "code": "BANK-C", "name": "Bank C", "quota_fen": 0, "issued_fen": 0, "redeemed_fen": 0,
        "outstanding_fen": 0,
    }
    again = client.post(
        "/v1/operators", json={"code": "BANK-C", "name": "Bank C"}, headers=auth(cb)
    )
    assert again.status_code == 201 and again.json() == created.json()

    quota = client.put(
        "/v1/operators/BANK-C/quota", json={"quota_fen": yuan(5_000)}, headers=auth(cb)
    )
    assert quota.status_code == 200 and quota.json()["quota_fen"] == yuan(5_000)

    deposit = client.post(
        "/v1/operators/BANK-C/reserve-deposits",
        json={"entry_id": "c-reserve-1", "amount_fen": yuan(5_000)}, headers=money_headers(cb),
    )
    assert deposit.status_code == 201, deposit.text
    assert deposit.json()["kind"] == "reserve_deposit"
    assert deposit.json()["created_at"].endswith("Z")

    issued = client.post(
        "/v1/issuances", json={"entry_id": "c-issue-1", "operator": "BANK-C",
                               "amount_fen": yuan(3_000)}, headers=money_headers(cb),
    )
    assert issued.status_code == 201 and issued.json()["kind"] == "issue"
    assert issued.json()["seq"] == deposit.json()["seq"] + 1

    redeemed = client.post(
        "/v1/redemptions", json={"entry_id": "c-redeem-1", "operator": "BANK-C",
                                 "amount_fen": yuan(1_000)}, headers=money_headers(cb),
    )
    assert redeemed.status_code == 201 and redeemed.json()["kind"] == "redeem"

    operator = client.get("/v1/operators/BANK-C", headers=auth(cb)).json()
    assert operator["issued_fen"] == yuan(3_000)
    assert operator["redeemed_fen"] == yuan(1_000)
    assert operator["outstanding_fen"] == yuan(2_000)
    listed = client.get("/v1/operators", headers=auth(cb)).json()["operators"]
    assert [op["code"] for op in listed] == ["BANK-A", "BANK-B", "BANK-C"]

    report = client.get("/v1/operators/BANK-C/report", headers=auth(cb)).json()
    assert report["float_fen"] == yuan(2_000)
    assert report["reserve_fen"] == yuan(3_000)
    assert report["holdings_fen"] == report["outstanding_fen"] == yuan(2_000)


def test_same_entry_id_is_replayed_or_conflicts(client: TestClient, keys: Keys) -> None:
    body = {"entry_id": "issue-twice", "operator": "BANK-A", "amount_fen": yuan(10)}
    first = client.post("/v1/issuances", json=body, headers=money_headers(keys.central_bank))
    second = client.post("/v1/issuances", json=body, headers=money_headers(keys.central_bank))
    assert first.status_code == second.status_code == 201
    assert second.json() == {**first.json(), "replayed": True}
    other = client.post(
        "/v1/issuances", json={**body, "amount_fen": yuan(11)},
        headers=money_headers(keys.central_bank),
    )
    assert_problem(other, 409, "entry_conflict", instance="/v1/issuances")


def test_issuance_beyond_quota_is_refused_with_the_figures(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    before = snapshot(ledger)
    refused = client.post(
        "/v1/issuances",
        json={"entry_id": "too-much", "operator": "BANK-A", "amount_fen": yuan(900_001)},
        headers=auth(keys.central_bank, "quota-1"),
    )
    document = assert_problem(refused, 422, "quota_exceeded", operator="BANK-A",
                              outstanding_fen=yuan(100_000), quota_fen=yuan(1_000_000))
    assert document["title"] == "Issuance quota exceeded"
    after = snapshot(ledger)
    assert after["balances"] == before["balances"] and after["head"] == before["head"]


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/v1/issuances", {"entry_id": "x1", "operator": "NOPE", "amount_fen": 1},
         "operator_not_found"),
        ("/v1/redemptions", {"entry_id": "x2", "operator": "NOPE", "amount_fen": 1},
         "operator_not_found"),
        ("/v1/operators/NOPE/reserve-deposits", {"entry_id": "x3", "amount_fen": 1},
         "operator_not_found"),
    ],
)
def test_unknown_operator_is_not_found(
    client: TestClient, keys: Keys, path: str, body: dict[str, object], code: str
) -> None:
    assert_problem(client.post(path, json=body, headers=money_headers(keys.central_bank)),
                   404, code)


def test_redeeming_more_than_the_float_is_refused(client: TestClient, keys: Keys) -> None:
    refused = client.post(
        "/v1/redemptions",
        json={"entry_id": "burn-all", "operator": "BANK-A", "amount_fen": yuan(100_001)},
        headers=money_headers(keys.central_bank),
    )
    assert_problem(refused, 422, "insufficient_funds")


def test_other_problems_of_central_bank_routes(client: TestClient, keys: Keys) -> None:
    cb = auth(keys.central_bank)
    assert_problem(client.post("/v1/operators", json={"code": "BANK-A", "name": "Other"},
                               headers=cb), 409, "operator_exists")
    assert_problem(client.post("/v1/operators", json={"code": "central-bank", "name": "X"},
                               headers=cb), 400, "operator_code_invalid")
    assert_problem(client.put("/v1/operators/NOPE/quota", json={"quota_fen": 1}, headers=cb),
                   404, "operator_not_found")
    assert_problem(client.get("/v1/operators/NOPE", headers=cb), 404, "operator_not_found")
    assert_problem(client.get("/v1/operators/NOPE/report", headers=cb), 404,
                   "operator_not_found")
    assert_problem(client.get("/v1/operators/x", headers=cb), 422, "request_invalid")
    # Found by schemathesis: PostgreSQL refuses NUL in text; the schema refuses control chars.
    assert_problem(client.post("/v1/operators", json={"code": "BANK-N", "name": "N\u0000"},
                               headers=cb), 422, "request_invalid")


BAD_AMOUNTS = [1.5, 100.0, "100", 0, -1, AMOUNT_FEN_MAX + 1, True, None, [1], {"fen": 1}]


def test_amounts_must_be_integer_fen_in_range(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    before = snapshot(ledger)
    for amount in BAD_AMOUNTS:
        response = client.post(
            "/v1/issuances",
            json={"entry_id": "bad", "operator": "BANK-A", "amount_fen": amount},
            headers=money_headers(keys.central_bank),
        )
        document = assert_problem(response, 422, "request_invalid")
        assert document["errors"][0]["loc"] == ["body", "amount_fen"], amount
    assert snapshot(ledger) == before


def test_largest_amount_is_accepted_by_the_schema(client: TestClient, keys: Keys) -> None:
    response = client.post(
        "/v1/issuances",
        json={"entry_id": "max", "operator": "BANK-A", "amount_fen": AMOUNT_FEN_MAX},
        headers=money_headers(keys.central_bank),
    )
    assert_problem(response, 422, "quota_exceeded")  # valid shape; the ledger's rule says no


NOT_INPUTS: list[tuple[str, str, dict[str, object]]] = [
    ("POST", "/v1/issuances", {"entry_id": "i", "operator": "BANK-A", "amount_fen": 1}),
    ("POST", "/v1/redemptions", {"entry_id": "r", "operator": "BANK-A", "amount_fen": 1}),
    ("POST", "/v1/operators/BANK-A/reserve-deposits", {"entry_id": "d", "amount_fen": 1}),
    ("PUT", "/v1/operators/BANK-A/quota", {"quota_fen": 1}),
    ("POST", "/v1/operators", {"code": "BANK-Z", "name": "Z"}),
]
SMUGGLED: list[dict[str, object]] = [
    {"balance": 10**9}, {"status": "active"}, {"owner": "BANK-B"}, {"issued_fen": 0},
]


def test_fields_that_are_not_inputs_are_refused_and_change_nothing(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    before = snapshot(ledger)
    length = journal_length(ledger)
    for (method, path, body), smuggled in itertools.product(NOT_INPUTS, SMUGGLED):
        response = client.request(method, path, json={**body, **smuggled},
                                  headers=money_headers(keys.central_bank))
        document = assert_problem(response, 422, "request_invalid")
        assert document["errors"][0]["type"] == "extra_forbidden"
        assert document["errors"][0]["loc"] == ["body", next(iter(smuggled))]
    assert snapshot(ledger) == before
    assert journal_length(ledger) == length
