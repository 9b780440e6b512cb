"""Who may do what: every route tried anonymously, with a bad key, with the wrong role, as
another operator and as the owner; every refusal is a problem and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from cbdc.services import apikeys
from cbdc.services.context import LedgerContext
from tests.api.conftest import Keys, assert_problem, auth, money_headers, snapshot

#: (method, path, body) of every central-bank-only route.
CENTRAL_BANK_ONLY: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/operators", {"code": "BANK-Z", "name": "Bank Z"}),
    ("GET", "/v1/operators", None),
    ("PUT", "/v1/operators/BANK-A/quota", {"quota_fen": 1}),
    ("POST", "/v1/operators/BANK-A/reserve-deposits", {"entry_id": "d-1", "amount_fen": 100}),
    ("POST", "/v1/issuances", {"entry_id": "i-1", "operator": "BANK-A", "amount_fen": 100}),
    ("POST", "/v1/redemptions", {"entry_id": "r-1", "operator": "BANK-A", "amount_fen": 100}),
    ("POST", "/v1/issuance-runs",
     {"run_id": "run-1", "orders": [{"operator": "BANK-A", "amount_fen": 100}]}),
    ("GET", "/v1/issuance-runs/run-1", None),
    ("GET", "/v1/reports/supply", None),
    ("POST", "/v1/audits", None),
]
#: Routes about one operator, which that operator may use too.
OPERATOR_OBJECTS = ["/v1/operators/{code}", "/v1/operators/{code}/report"]


def _call(client: TestClient, method: str, path: str, body: Any, key: str | None) -> Any:
    headers = money_headers(key) if key is not None else auth(None, "anon-key")
    return client.request(method, path, json=body, headers=headers)


def test_central_bank_routes_refuse_everyone_else(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    revoked = apikeys.create_api_key(ledger, "central-bank")
    apikeys.revoke_api_key(ledger, revoked[0].prefix)
    before = snapshot(ledger)
    for method, path, body in CENTRAL_BANK_ONLY:
        anonymous = _call(client, method, path, body, None)
        assert_problem(anonymous, 401, "unauthenticated")
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        for bad_key in ("cbdc_not-a-key", revoked[1]):
            assert_problem(_call(client, method, path, body, bad_key), 401, "unauthenticated")
        for operator_key in (keys.bank_a, keys.bank_b):
            assert_problem(_call(client, method, path, body, operator_key), 403,
                           "central_bank_only")
        basic = client.request(method, path, json=body,
                               headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert_problem(basic, 401, "unauthenticated")
    assert snapshot(ledger) == before


@pytest.mark.parametrize("template", OPERATOR_OBJECTS)
def test_operator_objects_are_seen_by_owner_and_central_bank_only(
    client: TestClient, keys: Keys, ledger: LedgerContext, template: str
) -> None:
    before = snapshot(ledger)
    own = client.get(template.format(code="BANK-A"), headers=auth(keys.bank_a))
    assert own.status_code == 200 and own.json()["code"] == "BANK-A"
    by_central_bank = client.get(template.format(code="BANK-A"), headers=auth(keys.central_bank))
    assert by_central_bank.json() == own.json()
    foreign = client.get(template.format(code="BANK-A"), headers=auth(keys.bank_b))
    missing = client.get(template.format(code="BANK-Q"), headers=auth(keys.bank_b))
    # Another operator's object and one that does not exist look exactly alike.
    assert_problem(foreign, 404, "operator_not_found")
    assert_problem(missing, 404, "operator_not_found")
    assert foreign.json()["detail"].replace("BANK-A", "X") == \
        missing.json()["detail"].replace("BANK-Q", "X")
    assert_problem(client.get(template.format(code="BANK-A")), 401, "unauthenticated")
    assert snapshot(ledger) == before


def test_operator_cannot_move_money_for_another_operator(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    before = snapshot(ledger)
    for path in ("/v1/operators/BANK-B/reserve-deposits", "/v1/operators/BANK-A/reserve-deposits"):
        refused = client.post(path, json={"entry_id": "sneaky", "amount_fen": 10**6},
                              headers=money_headers(keys.bank_a))
        assert_problem(refused, 403, "central_bank_only")
    assert snapshot(ledger) == before


def test_authentication_comes_before_validation(client: TestClient, keys: Keys) -> None:
    """A caller without a key learns nothing, not even that its body is malformed."""
    response = client.post("/v1/issuances", json={"nonsense": True})
    assert_problem(response, 401, "unauthenticated")
    response = client.post("/v1/issuances", json={"nonsense": True}, headers=auth(keys.bank_a))
    assert_problem(response, 403, "central_bank_only")


#: Every route on one wallet: (method, path, body, needs an idempotency key).
WALLET_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/wallets/w-owned", None),
    ("PUT", "/v1/wallets/w-owned/class", {"wallet_class": 4}),
    ("PUT", "/v1/wallets/w-owned/reverse-waterfall", {"enabled": False}),
    ("POST", "/v1/wallets/w-owned/freeze", None),
    ("POST", "/v1/wallets/w-owned/unfreeze", None),
    ("POST", "/v1/wallets/w-owned/close", None),
    ("POST", "/v1/wallets/w-owned/sub-wallets",
     {"sub_wallet_id": "w-owned.sub", "caps": {"balance_fen_max": 1, "payment_fen_max": 1,
                                               "daily_outgoing_fen_max": 1,
                                               "annual_outgoing_fen_max": 1}}),
    ("POST", "/v1/wallets/w-owned/sub-wallets/w-owned.till/close", {"entry_id": "sweep"}),
    ("POST", "/v1/wallets/w-owned/top-ups", {"entry_id": "t-x", "amount_fen": 100}),
    ("POST", "/v1/wallets/w-owned/withdrawals", {"entry_id": "w-x", "amount_fen": 100}),
    ("POST", "/v1/wallets/w-owned/keys", {"public_key": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"}),  # noqa: E501
    ("GET", "/v1/wallets/w-owned/keys", None),
    ("POST", "/v1/wallets/w-owned/keys/" + "d7" * 32 + "/revoke", None),
    ("GET", "/v1/wallets/w-owned/history", None),
]


@pytest.fixture
def owned_wallet(ledger: LedgerContext, keys: Keys) -> str:
    """BANK-A's wallet with a sub-wallet and 500 fen, the object every route below aims at."""
    from cbdc.domain.identity import IdentityEvidence
    from cbdc.domain.tiers import Limits
    from cbdc.services import funding, wallets

    wallets.open_wallet(ledger, "w-owned", operator_code="BANK-A", zone="shenzhen",
                        evidence=IdentityEvidence(phone="+8613800000001"))
    wallets.authorise_sub_wallet(ledger, "w-owned", "w-owned.till",
                                 Limits(1_000, 1_000, 1_000, 1_000))
    funding.top_up(ledger, "t-owned", "w-owned", 500)
    return "w-owned"


def test_wallet_routes_refuse_all_but_the_serving_operator(
    client: TestClient, keys: Keys, ledger: LedgerContext, owned_wallet: str
) -> None:
    before = snapshot(ledger)
    for method, path, body in WALLET_ROUTES:
        assert_problem(_call(client, method, path, body, None), 401, "unauthenticated")
        assert_problem(_call(client, method, path, body, "cbdc_forged"), 401,
                       "unauthenticated")
        assert_problem(_call(client, method, path, body, keys.central_bank), 403,
                       "operator_only")
        foreign = _call(client, method, path, body, keys.bank_b)
        assert_problem(foreign, 404, "wallet_not_found", wallet="w-owned")
        nowhere = _call(client, method, path.replace("w-owned", "w-nowhere"), body,
                        keys.bank_b)
        assert_problem(nowhere, 404, "wallet_not_found")
        assert foreign.json()["detail"].replace("w-owned", "X") == \
            nowhere.json()["detail"].replace("w-nowhere", "X")
    assert snapshot(ledger) == before
    for method, path, body in WALLET_ROUTES:  # and the owner is let through
        owner = _call(client, method, path, body, keys.bank_a)
        assert owner.status_code < 500, (method, path, owner.text)
        assert owner.status_code not in (401, 403), (method, path, owner.text)
        assert owner.json().get("code") != "wallet_not_found", (method, path)
