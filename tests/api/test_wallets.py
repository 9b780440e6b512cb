"""Operators manage their wallets over HTTP: a class 4 wallet is opened, funded, upgraded,
frozen, paged through and closed; sub-wallets and keys; every refusal a problem document."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cbdc.client import WalletKey
from cbdc.domain.money import yuan
from cbdc.services.context import LedgerContext
from cbdc.storage.tables import wallets
from tests.api.conftest import Keys, assert_problem, auth, money_headers, snapshot

PHONE = "+86 138 0013 8000"
FULL_EVIDENCE = {"phone": PHONE, "id_document": "110101199003074518",
                 "bank_account": "6222020200112233445"}

TILL_CAPS = {"balance_fen_max": 50_000, "payment_fen_max": 20_000,
             "daily_outgoing_fen_max": 50_000, "annual_outgoing_fen_max": 500_000}


def open_wallet(client: TestClient, key: str, wallet_id: str, **extra: Any) -> dict[str, Any]:
    body = {"wallet_id": wallet_id, "zone": "shenzhen", "evidence": {"phone": PHONE}, **extra}
    response = client.post("/v1/wallets", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def fund(client: TestClient, key: str, wallet_id: str, amount_fen: int, entry_id: str) -> None:
    response = client.post(f"/v1/wallets/{wallet_id}/top-ups",
                           json={"entry_id": entry_id, "amount_fen": amount_fen},
                           headers=money_headers(key))
    assert response.status_code == 201, response.text


def test_class_4_wallet_from_opening_to_closing(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    opened = open_wallet(client, keys.bank_a, "w-alice")
    assert (opened["wallet_class"], opened["status"], opened["balance_fen"]) == (4, "active", 0)
    assert opened["limits"] == {"balance_fen_max": yuan(10_000), "payment_fen_max": yuan(2_000),
                                "daily_outgoing_fen_max": yuan(5_000),
                                "annual_outgoing_fen_max": yuan(50_000)}
    assert opened["limits_left"] == {
        "daily_outgoing_left_fen": yuan(5_000), "annual_outgoing_left_fen": yuan(50_000),
        "balance_room_fen": yuan(10_000), "payable_now_fen": 0,
    }
    again = client.post("/v1/wallets", json={"wallet_id": "w-alice", "zone": "shenzhen",
                                             "evidence": {"phone": PHONE}},
                        headers=auth(keys.bank_a))
    assert again.status_code == 201 and again.json() == opened

    fund(client, keys.bank_a, "w-alice", yuan(3_000), "t-alice-1")
    over_cap = client.post("/v1/wallets/w-alice/top-ups",
                           json={"entry_id": "t-alice-2", "amount_fen": yuan(7_001)},
                           headers=money_headers(keys.bank_a))
    assert_problem(over_cap, 422, over_cap.json()["code"])
    assert over_cap.json()["code"].endswith("limit_exceeded")
    wallet = client.get("/v1/wallets/w-alice", headers=auth(keys.bank_a)).json()
    assert wallet["balance_fen"] == yuan(3_000)
    assert wallet["limits_left"]["payable_now_fen"] == yuan(2_000)  # single-payment cap

    upgraded = client.put("/v1/wallets/w-alice/class",
                          json={"wallet_class": 3, "evidence": {
                              "phone": PHONE, "id_document": "110101199003074518"}},
                          headers=auth(keys.bank_a))
    assert upgraded.status_code == 200 and upgraded.json()["wallet_class"] == 3
    assert_problem(client.put("/v1/wallets/w-alice/class", json={"wallet_class": 2},
                              headers=auth(keys.bank_a)), 400, "identity_evidence_missing")
    assert_problem(client.put("/v1/wallets/w-alice/reverse-waterfall", json={"enabled": True},
                              headers=auth(keys.bank_a)), 400, "reverse_waterfall_unavailable")

    frozen = client.post("/v1/wallets/w-alice/freeze", headers=auth(keys.bank_a))
    assert frozen.json()["status"] == "frozen"
    assert_problem(client.post("/v1/wallets/w-alice/top-ups",
                               json={"entry_id": "t-frozen", "amount_fen": 1},
                               headers=money_headers(keys.bank_a)), 422, "wallet_frozen")
    assert client.post("/v1/wallets/w-alice/unfreeze",
                       headers=auth(keys.bank_a)).json()["status"] == "active"

    assert_problem(client.post("/v1/wallets/w-alice/close", headers=auth(keys.bank_a)),
                   422, "wallet_not_empty", balance_fen=yuan(3_000))
    withdrawn = client.post("/v1/wallets/w-alice/withdrawals",
                            json={"entry_id": "w-alice-out", "amount_fen": yuan(3_000)},
                            headers=money_headers(keys.bank_a))
    assert withdrawn.status_code == 201 and withdrawn.json()["kind"] == "withdrawal"
    assert client.post("/v1/wallets/w-alice/close",
                       headers=auth(keys.bank_a)).json()["status"] == "closed"


def test_withdrawing_more_than_the_balance_is_refused(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    open_wallet(client, keys.bank_a, "w-bob")
    fund(client, keys.bank_a, "w-bob", 500, "t-bob")
    before = snapshot(ledger)
    refused = client.post("/v1/wallets/w-bob/withdrawals",
                          json={"entry_id": "w-bob-out", "amount_fen": 501},
                          headers=money_headers(keys.bank_a))
    assert_problem(refused, 422, "insufficient_funds")
    after = snapshot(ledger)
    assert after["balances"] == before["balances"] and after["head"] == before["head"]


def test_history_pages_newest_first_with_a_cursor(client: TestClient, keys: Keys) -> None:
    open_wallet(client, keys.bank_a, "w-carol")
    for number in range(1, 6):
        fund(client, keys.bank_a, "w-carol", number * 100, f"t-carol-{number}")
    seen: list[int] = []
    cursor: int | None = None
    pages = 0
    while True:
        query = {"limit": 2} | ({} if cursor is None else {"before_seq": cursor})
        page = client.get("/v1/wallets/w-carol/history", params=query,
                          headers=auth(keys.bank_a)).json()
        seen += [item["amount_fen"] for item in page["items"]]
        pages += 1
        cursor = page["next_before_seq"]
        if cursor is None:
            break
    assert seen == [500, 400, 300, 200, 100] and pages == 3
    assert_problem(client.get("/v1/wallets/w-carol/history", params={"limit": 0},
                              headers=auth(keys.bank_a)), 422, "request_invalid")


def test_sub_wallet_is_authorised_and_closed_into_its_parent(
    client: TestClient, keys: Keys
) -> None:
    open_wallet(client, keys.bank_a, "w-shop", wallet_class=2, holder_kind="corporate",
                merchant_category_code="5812", evidence=FULL_EVIDENCE)
    sub = client.post("/v1/wallets/w-shop/sub-wallets",
                      json={"sub_wallet_id": "w-shop.till", "caps": TILL_CAPS},
                      headers=auth(keys.bank_a))
    assert sub.status_code == 201, sub.text
    assert sub.json()["parent_wallet_id"] == "w-shop"
    assert sub.json()["limits"]["balance_fen_max"] == 50_000
    fund(client, keys.bank_a, "w-shop.till", 30_000, "t-till")
    too_loose = client.post("/v1/wallets/w-shop/sub-wallets",
                            json={"sub_wallet_id": "w-shop.till2",
                                  "caps": {**TILL_CAPS, "balance_fen_max": yuan(600_000)}},
                            headers=auth(keys.bank_a))
    assert too_loose.status_code in (400, 422) and too_loose.json()["code"]
    closed = client.post("/v1/wallets/w-shop/sub-wallets/w-shop.till/close",
                         json={"entry_id": "sweep-till"}, headers=money_headers(keys.bank_a))
    assert closed.status_code == 200, closed.text
    assert closed.json()["wallet"]["status"] == "closed"
    assert closed.json()["swept_entry_id"] == "sweep-till"
    assert client.get("/v1/wallets/w-shop", headers=auth(keys.bank_a)).json()["balance_fen"] \
        == 30_000


def test_keys_are_enrolled_listed_and_revoked(client: TestClient, keys: Keys) -> None:
    open_wallet(client, keys.bank_a, "w-dave")
    key = WalletKey.generate().public_key_hex
    enrolled = client.post("/v1/wallets/w-dave/keys", json={"public_key": key},
                           headers=auth(keys.bank_a))
    assert enrolled.status_code == 201 and enrolled.json()["status"] == "active"
    listed = client.get("/v1/wallets/w-dave/keys", headers=auth(keys.bank_a)).json()["keys"]
    assert [k["public_key"] for k in listed] == [key]
    revoked = client.post(f"/v1/wallets/w-dave/keys/{key}/revoke", headers=auth(keys.bank_a))
    assert revoked.json()["status"] == "revoked" and revoked.json()["revoked_at"]
    again = client.post("/v1/wallets/w-dave/keys", json={"public_key": key},
                        headers=auth(keys.bank_a))
    assert_problem(again, again.status_code, again.json()["code"])
    assert "revoked" in again.json()["code"]  # a revoked key is never enrolled again
    assert_problem(client.post(f"/v1/wallets/w-dave/keys/{'ab' * 32}/revoke",
                               headers=auth(keys.bank_a)), 404, "public_key_not_found")
    small_order = "0" * 64
    assert_problem(client.post("/v1/wallets/w-dave/keys", json={"public_key": small_order},
                               headers=auth(keys.bank_a)), 400, "public_key_invalid")


def test_wallet_fields_that_are_not_inputs_are_refused(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    before = snapshot(ledger)
    for smuggled in ({"balance_fen": 10**9}, {"status": "frozen"}, {"owner": "BANK-B"},
                     {"operator": "BANK-B"}):
        response = client.post("/v1/wallets", json={"wallet_id": "w-eve", "zone": "shenzhen",
                                                    "evidence": {"phone": PHONE}, **smuggled},
                               headers=auth(keys.bank_a))
        document = assert_problem(response, 422, "request_invalid")
        assert document["errors"][0]["loc"] == ["body", next(iter(smuggled))]
    assert snapshot(ledger) == before
    assert_problem(client.get("/v1/wallets/w-eve", headers=auth(keys.bank_a)), 404,
                   "wallet_not_found")


def test_identity_evidence_is_checked_as_its_schema_describes(
    client: TestClient, keys: Keys, app: FastAPI
) -> None:
    """The OpenAPI text of each evidence field states the ledger's rule, and the ledger keeps
    to it: a phone with brackets opens; an ID document with a space is
    identity_evidence_invalid, not a schema error."""
    evidence = app.openapi()["components"]["schemas"]["Evidence"]["properties"]
    assert "4-32 letters or digits" in evidence["id_document"]["description"]
    assert "brackets are ignored" in evidence["phone"]["description"]
    opened = open_wallet(client, keys.bank_a, "w-brackets",
                         evidence={"phone": "+86 (755) 8888-1234"})
    assert opened["wallet_id"] == "w-brackets"
    for field, value in (("id_document", "ID 1234"), ("id_document", "ID1"),
                         ("bank_account", "6222-0200"), ("phone", "12345")):
        body = {"wallet_id": "w-evidence", "zone": "shenzhen", "wallet_class": 3,
                "evidence": {"phone": PHONE, field: value}}
        assert_problem(client.post("/v1/wallets", json=body, headers=auth(keys.bank_a)), 400,
                       "identity_evidence_invalid")


def test_parallel_openings_of_one_wallet_id_open_it_once_and_never_fail(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    """Sixteen clerks at two operators press "open" for the same wallet id at once: one wallet,
    and every other answer is the wallet (a repeat), a conflict, or a clean 409 asking to retry:
    never a server error."""

    def send(number: int) -> Any:
        bank = keys.bank_a if number % 2 else keys.bank_b
        body = {"wallet_id": "w-raced", "zone": "shenzhen", "evidence": {"phone": PHONE}}
        return client.post("/v1/wallets", json=body, headers=auth(bank))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(16)))
    assert all(a.status_code in (200, 201, 404, 409) for a in answers), [a.text for a in answers]
    opened = [a.json() for a in answers if a.status_code in (200, 201)]
    assert opened and {o["wallet_id"] for o in opened} == {"w-raced"}
    for answer in answers:
        if answer.status_code >= 400:
            assert answer.headers["content-type"] == "application/problem+json"
    with ledger.read() as connection:
        count = connection.execute(
            select(func.count()).select_from(wallets).where(wallets.c.wallet_id == "w-raced")
        ).scalar_one()
    assert count == 1


def test_a_batch_opens_wallets_with_their_keys_and_answers_each_refusal(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    alice, bob = WalletKey.generate(), WalletKey.generate()
    body = {"wallets": [
        {"wallet_id": "w-batch-alice", "zone": "shenzhen", "evidence": {"phone": PHONE},
         "public_key": alice.public_key_hex},
        {"wallet_id": "w-batch-class-2", "zone": "shenzhen", "evidence": {"phone": PHONE},
         "wallet_class": 2},  # class 2 needs more evidence than a phone
        {"wallet_id": "w-batch-shop", "zone": "beijing", "evidence": FULL_EVIDENCE,
         "wallet_class": 2, "holder_kind": "corporate", "merchant_category_code": "5812"},
        {"wallet_id": "w-batch-bob", "zone": "shenzhen", "evidence": {"phone": PHONE},
         "public_key": alice.public_key_hex},  # alice's key: already enrolled
        {"wallet_id": "w-batch-bob-2", "zone": "shenzhen", "evidence": {"phone": PHONE},
         "public_key": bob.public_key_hex},
    ]}
    before = snapshot(ledger)
    response = client.post("/v1/wallets/batch", json=body, headers=auth(keys.bank_a, "open-1"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["opened"], answer["refused"]) == (3, 2)
    results = answer["results"]
    assert [r["status"] for r in results] == [201, 400, 201, 409, 201]
    assert results[1]["problem"]["code"] == "identity_evidence_missing"
    assert results[3]["problem"]["code"] == "public_key_exists"
    assert [results[i]["wallet"]["operator"] for i in (0, 2, 4)] == ["BANK-A"] * 3
    assert results[2]["wallet"]["merchant_category_code"] == "5812"
    listed = client.get("/v1/wallets/w-batch-alice/keys", headers=auth(keys.bank_a)).json()
    assert [key["public_key"] for key in listed["keys"]] == [alice.public_key_hex]
    for refused in ("w-batch-class-2", "w-batch-bob"):  # a refused opening leaves nothing
        assert_problem(client.get(f"/v1/wallets/{refused}", headers=auth(keys.bank_a)), 404,
                       "wallet_not_found")
    assert_problem(client.get("/v1/wallets/w-batch-alice", headers=auth(keys.bank_b)), 404,
                   "wallet_not_found")  # opened for the caller, no one else
    again = client.post("/v1/wallets/batch", json=body, headers=auth(keys.bank_a, "open-1"))
    assert again.content == response.content
    after = snapshot(ledger)
    assert (after["balances"][:len(before["balances"])], after["head"]) == \
        (before["balances"], before["head"])  # new zero accounts, no money moved
    assert_problem(client.post("/v1/wallets/batch", json={"wallets": [body["wallets"][0]] * 1_001},
                               headers=auth(keys.bank_a)), 422, "request_invalid")
    assert_problem(client.post("/v1/wallets/batch", json=body, headers=auth(keys.central_bank)),
                   403, "operator_only")
    assert_problem(client.post("/v1/wallets/batch", json=body, headers=auth(keys.bank_a)), 400,
                   "idempotency_key_missing")  # a batch is retried whole, under its key


def test_batches_of_top_ups_and_withdrawals_reach_only_the_callers_wallets(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    open_wallet(client, keys.bank_a, "w-fund-a")
    open_wallet(client, keys.bank_b, "w-fund-b")
    items = [
        {"wallet_id": "w-fund-a", "entry_id": "batch-top-1", "amount_fen": 50_000},
        {"wallet_id": "w-fund-b", "entry_id": "batch-top-2", "amount_fen": 50_000},  # BANK-B's
        {"wallet_id": "w-nobody", "entry_id": "batch-top-3", "amount_fen": 50_000},
        {"wallet_id": "w-fund-a", "entry_id": "batch-top-4", "amount_fen": yuan(10_000)},  # cap
        {"wallet_id": "w-fund-a", "entry_id": "batch-top-1", "amount_fen": 50_000},  # a repeat
        {"wallet_id": "w-fund-a", "entry_id": "batch-top-5", "amount_fen": 20_000},
    ]
    headers = money_headers(keys.bank_a)
    before = snapshot(ledger)
    response = client.post("/v1/top-ups/batch", json={"items": items}, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["posted"], answer["refused"]) == (3, 3)
    results = answer["results"]
    assert [r["status"] for r in results] == [201, 404, 404, 422, 201, 201]
    assert [r["problem"]["code"] for r in results if r["problem"]] == \
        ["wallet_not_found", "wallet_not_found", "balance_limit_exceeded"]
    assert results[4]["entry"]["replayed"] is True
    assert results[4]["entry"]["seq"] == results[0]["entry"]["seq"]
    assert client.get("/v1/wallets/w-fund-a", headers=auth(keys.bank_a)).json()["balance_fen"] \
        == 70_000
    assert client.get("/v1/wallets/w-fund-b", headers=auth(keys.bank_b)).json()["balance_fen"] \
        == 0
    again = client.post("/v1/top-ups/batch", json={"items": items}, headers=headers)
    assert again.content == response.content

    out = client.post("/v1/withdrawals/batch", headers=money_headers(keys.bank_a), json={
        "items": [{"wallet_id": "w-fund-a", "entry_id": "batch-out-1", "amount_fen": 60_000},
                  {"wallet_id": "w-fund-a", "entry_id": "batch-out-2", "amount_fen": 10_001},
                  {"wallet_id": "w-fund-b", "entry_id": "batch-out-3", "amount_fen": 1}]})
    assert out.status_code == 200, out.text
    assert [r["status"] for r in out.json()["results"]] == [201, 422, 404]
    assert out.json()["results"][1]["problem"]["code"] == "insufficient_funds"
    assert client.get("/v1/wallets/w-fund-a", headers=auth(keys.bank_a)).json()["balance_fen"] \
        == 10_000
    after = snapshot(ledger)
    assert sum(b for _, b in after["balances"]) == sum(b for _, b in before["balances"])
    bad: dict[str, Any]
    for bad in ({"items": []}, {"items": [{**items[0], "amount_fen": 0}]},
                {"items": [{**items[0], "amount_fen": 1.5}]}, {"items": [items[0]] * 1_001}):
        assert_problem(client.post("/v1/top-ups/batch", json=bad,
                                   headers=money_headers(keys.bank_a)), 422, "request_invalid")
    assert snapshot(ledger)["balances"] == after["balances"]
