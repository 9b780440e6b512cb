"""Signed payments over HTTP: a customer at one operator pays a noodle shop at another; the
ledger-signed receipt verifies; batches, payment requests (QR), payment codes, refunds; and a
bearer key alone moves nothing."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.limits import DEFAULT_MAX_BODY_BYTES
from api.schemas.payments import SETTLEMENT_BATCH_SIZE_MAX
from cbdc.client import (
    WalletKey,
    build_capture,
    build_payment,
    build_payment_code,
    build_payment_for_request,
    build_payment_request,
    build_refund,
    decode_qr,
    verify_receipt,
)
from cbdc.clock import ManualClock
from cbdc.domain.money import yuan
from cbdc.services.context import LedgerContext
from tests.api.conftest import (
    Keys,
    assert_problem,
    auth,
    journal_length,
    money_headers,
    snapshot,
)
from tests.api.test_wallets import FULL_EVIDENCE, fund, open_wallet


@dataclass
class Parties:
    customer: WalletKey
    shop: WalletKey
    ledger_id: str
    receipt_key: str


@pytest.fixture
def parties(client: TestClient, keys: Keys) -> Parties:
    """Carol (class 3, BANK-A, 1,000 CNY) and a noodle shop (class 2, MCC 5812, BANK-B)."""
    open_wallet(client, keys.bank_a, "w-carol", wallet_class=3,
                evidence={"phone": "+8613800000003", "id_document": "110101199001011234"})
    fund(client, keys.bank_a, "w-carol", yuan(1_000), "t-carol")
    open_wallet(client, keys.bank_b, "w-noodles", wallet_class=2, holder_kind="corporate",
                merchant_category_code="5812", evidence=FULL_EVIDENCE)
    customer, shop = WalletKey.generate(), WalletKey.generate()
    for bank, wallet, key in ((keys.bank_a, "w-carol", customer),
                              (keys.bank_b, "w-noodles", shop)):
        enrolled = client.post(f"/v1/wallets/{wallet}/keys",
                               json={"public_key": key.public_key_hex}, headers=auth(bank))
        assert enrolled.status_code == 201
    info = client.get("/v1/ledger").json()
    return Parties(customer, shop, info["ledger_id"], info["receipt_public_key"])


def payment(parties: Parties, clock: ManualClock, payment_id: str, amount_fen: int,
            sequence: int, **extra: Any) -> dict[str, Any]:
    envelope = build_payment(
        parties.customer, ledger_id=parties.ledger_id, payment_id=payment_id, payer="w-carol",
        payee="w-noodles", amount_fen=amount_fen, sequence=sequence, created_at=clock.now(),
        **extra,
    )
    return dict(envelope)


def balance(client: TestClient, key: str, wallet_id: str) -> int:
    value: int = client.get(f"/v1/wallets/{wallet_id}", headers=auth(key)).json()["balance_fen"]
    return value


def test_customer_pays_a_shop_at_another_operator(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock
) -> None:
    body = payment(parties, clock, "pay-noodles-1", 2_350, 1, memo="beef noodles")
    paid = client.post("/v1/payments", json=body, headers=money_headers(keys.bank_a))
    assert paid.status_code == 201, paid.text
    settlement = paid.json()
    assert (settlement["payer"], settlement["payee"], settlement["amount_fen"]) == \
        ("w-carol", "w-noodles", 2_350)
    receipt = verify_receipt(settlement["receipt"], parties.receipt_key)
    assert receipt["entry_seq"] == settlement["entry_seq"] and receipt["kind"] == "payment"
    assert balance(client, keys.bank_a, "w-carol") == yuan(1_000) - 2_350
    assert balance(client, keys.bank_b, "w-noodles") == 2_350

    for bank in (keys.bank_a, keys.bank_b):  # the payer's and the payee's operators
        looked_up = client.get("/v1/payments/pay-noodles-1", headers=auth(bank))
        assert looked_up.status_code == 200 and looked_up.json()["receipt"] == \
            settlement["receipt"]
    assert_problem(client.get("/v1/payments/pay-noodles-1", headers=auth(keys.central_bank)),
                   403, "operator_only")
    assert_problem(client.get("/v1/payments/pay-nothing", headers=auth(keys.bank_a)), 404,
                   "payment_not_found")

    replay = client.post("/v1/payments", json=body, headers=money_headers(keys.bank_b))
    assert replay.status_code == 201 and replay.json()["replayed"] is True
    assert balance(client, keys.bank_a, "w-carol") == yuan(1_000) - 2_350


def test_a_third_operator_cannot_look_a_payment_up(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock, ledger: LedgerContext
) -> None:
    from cbdc.services import apikeys, issuance

    issuance.create_operator(ledger, "BANK-C", "Bank C")
    bank_c = apikeys.create_api_key(ledger, "BANK-C")[1]
    client.post("/v1/payments", json=payment(parties, clock, "pay-x", 100, 1),
                headers=money_headers(keys.bank_a))
    foreign = client.get("/v1/payments/pay-x", headers=auth(bank_c))
    missing = client.get("/v1/payments/pay-y", headers=auth(bank_c))
    assert_problem(foreign, 404, "payment_not_found")
    assert_problem(missing, 404, "payment_not_found")


def test_forged_altered_and_malformed_payments_change_nothing(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock, ledger: LedgerContext
) -> None:
    before = snapshot(ledger)
    good = payment(parties, clock, "pay-forged", 2_000, 1)
    altered = {**good, "message": {**good["message"], "amount_fen": 200_000}}
    assert_problem(client.post("/v1/payments", json=altered, headers=money_headers(keys.bank_a)),
                   422, "signature_invalid")
    mallory = WalletKey.generate()
    forged = dict(build_payment(mallory, ledger_id=parties.ledger_id, payment_id="pay-forged",
                                payer="w-carol", payee="w-noodles", amount_fen=2_000,
                                sequence=1, created_at=clock.now()))
    forged_response = client.post("/v1/payments", json=forged, headers=money_headers(keys.bank_a))
    assert_problem(forged_response, 403, "public_key_not_enrolled")
    missing = {**good, "message": {k: v for k, v in good["message"].items() if k != "payee"}}
    assert_problem(client.post("/v1/payments", json=missing, headers=money_headers(keys.bank_a)),
                   400, "field_missing", field="payee")
    as_float = {**good, "message": {**good["message"], "amount_fen": 2000.0}}
    assert_problem(client.post("/v1/payments", json=as_float, headers=money_headers(keys.bank_a)),
                   400, "amount_invalid", field="amount_fen")
    smuggled = {**good, "balance": 10**9}
    assert_problem(client.post("/v1/payments", json=smuggled, headers=money_headers(keys.bank_a)),
                   422, "request_invalid")
    anonymous = client.post("/v1/payments", json=good, headers=auth(None, "anon"))
    assert_problem(anonymous, 401, "unauthenticated")
    assert_problem(client.post("/v1/payments", json=good,
                               headers=money_headers(keys.central_bank)), 403, "operator_only")
    after = snapshot(ledger)
    assert after["balances"] == before["balances"] and after["head"] == before["head"]


def test_a_payment_with_a_key_twice_is_refused_whichever_value_would_verify(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock, ledger: LedgerContext
) -> None:
    """protocol.md 2.1: a reader that keeps one of two equal keys must not read an envelope,
    or two readers could see two different payments in one text."""
    before = snapshot(ledger)
    good = payment(parties, clock, "pay-twice", 1_850, 1)
    text = json.dumps(good, separators=(",", ":"))
    signed_amount = '"amount_fen":1850'
    assert text.count(signed_amount) == 1
    bodies = {
        "amount_fen": text.replace(signed_amount, '"amount_fen":1,' + signed_amount),
        "signature": text.replace('"signature":', '"signature":"00","signature":'),
    }
    for key, body in bodies.items():
        response = client.post("/v1/payments", content=body.encode(), headers={
            **money_headers(keys.bank_a), "Content-Type": "application/json"})
        document = assert_problem(response, 422, "request_invalid")
        assert document["errors"][0]["type"] == "json_invalid"
        assert f"duplicate key '{key}'" in document["detail"]
    assert_problem(client.get("/v1/payments/pay-twice", headers=auth(keys.bank_a)), 404,
                   "payment_not_found")
    after = snapshot(ledger)
    assert after["balances"] == before["balances"] and after["head"] == before["head"]
    settled = client.post("/v1/payments", content=text.encode(), headers={
        **money_headers(keys.bank_a), "Content-Type": "application/json"})
    assert settled.status_code == 201, settled.text


def test_over_the_single_payment_cap_is_refused(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock
) -> None:
    refused = client.post("/v1/payments", json=payment(parties, clock, "pay-big", yuan(5_001), 1),
                          headers=money_headers(keys.bank_a))
    assert refused.status_code == 422 and refused.json()["code"].endswith("limit_exceeded")


def test_a_batch_settles_the_good_and_answers_each_refusal(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock, ledger: LedgerContext
) -> None:
    good = [payment(parties, clock, f"batch-{n}", 100 * n, n) for n in range(1, 5)]
    forged = {**good[1], "signature": "00" * 64}
    body = {"payments": [good[0], forged, *good[2:]]}
    length = journal_length(ledger)
    headers = money_headers(keys.bank_a)
    response = client.post("/v1/payments/batch", json=body, headers=headers)
    assert response.status_code == 200, response.text
    results = response.json()
    assert (results["settled"], results["refused"]) == (3, 1)
    assert [r["status"] for r in results["results"]] == [201, 422, 201, 201]
    assert results["results"][1]["problem"]["code"] == "signature_invalid"
    assert journal_length(ledger) == length + 3
    again = client.post("/v1/payments/batch", json=body, headers=headers)
    assert again.content == response.content and journal_length(ledger) == length + 3
    too_many = {"payments": [good[0]] * 1_001}
    assert_problem(client.post("/v1/payments/batch", json=too_many,
                               headers=money_headers(keys.bank_a)), 422, "request_invalid")


def test_a_batch_with_a_list_as_a_payment_id_answers_it_and_settles_the_rest(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock, ledger: LedgerContext
) -> None:
    good = payment(parties, clock, "batch-odd-1", 100, 1)
    odd = payment(parties, clock, "batch-odd-2", 100, 2)
    odd = {**odd, "message": {**odd["message"], "payment_id": ["batch-odd-2"]}}
    length = journal_length(ledger)
    response = client.post("/v1/payments/batch", json={"payments": [good, odd]},
                           headers=money_headers(keys.bank_a))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 400]
    assert results[1]["problem"]["code"] == "field_invalid"
    assert journal_length(ledger) == length + 1


def test_merchant_presented_qr_is_paid_once(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock
) -> None:
    request = dict(build_payment_request(
        parties.shop, ledger_id=parties.ledger_id, request_id="req-table-7", merchant="w-noodles",
        amount_fen=4_800, reference="table 7", expires_at=clock.now() + timedelta(minutes=10),
        created_at=clock.now(),
    ))
    created = client.post("/v1/payment-requests", json=request, headers=auth(keys.bank_b))
    assert created.status_code == 201, created.text
    scanned = decode_qr(created.json()["qr"])
    assert scanned == request
    paid = client.post("/v1/payments", headers=money_headers(keys.bank_a), json=dict(
        build_payment_for_request(parties.customer, scanned["message"], payment_id="pay-table-7",
                                  payer="w-carol", sequence=1, created_at=clock.now())))
    assert paid.status_code == 201, paid.text
    assert client.get("/v1/payment-requests/req-table-7",
                      headers=auth(keys.bank_a)).json()["status"] == "paid"
    twice = client.post("/v1/payments", headers=money_headers(keys.bank_a), json=dict(
        build_payment_for_request(parties.customer, scanned["message"], payment_id="pay-again",
                                  payer="w-carol", sequence=2, created_at=clock.now())))
    assert twice.status_code in (409, 422) and "request" in twice.json()["code"]
    assert_problem(client.get("/v1/payment-requests/req-none", headers=auth(keys.bank_b)), 404,
                   "payment_request_not_found")


def test_customer_code_captured_then_refunded_half_twice(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock
) -> None:
    code = dict(build_payment_code(
        parties.customer, ledger_id=parties.ledger_id, code_id="code-1", payer="w-carol",
        max_amount_fen=10_000, expires_at=clock.now() + timedelta(minutes=1),
        created_at=clock.now(),
    ))
    capture = dict(build_capture(
        parties.shop, ledger_id=parties.ledger_id, capture_id="cap-1", code_id="code-1",
        merchant="w-noodles", amount_fen=6_000, created_at=clock.now(),
    ))
    captured = client.post("/v1/captures", json={"payment_code": code, "capture": capture},
                           headers=money_headers(keys.bank_b))
    assert captured.status_code == 201, captured.text
    assert captured.json()["kind"] == "capture"

    def refund(refund_id: str) -> Any:
        return client.post("/v1/refunds", headers=money_headers(keys.bank_b), json=dict(
            build_refund(parties.shop, ledger_id=parties.ledger_id, refund_id=refund_id,
                         payment_id="cap-1", merchant="w-noodles", amount_fen=3_000,
                         created_at=clock.now())))

    assert refund("refund-1").status_code == 201
    assert refund("refund-2").status_code == 201
    third = refund("refund-3")
    assert third.status_code == 422 and third.headers["content-type"] == \
        "application/problem+json"
    assert balance(client, keys.bank_a, "w-carol") == yuan(1_000)
    assert balance(client, keys.bank_b, "w-noodles") == 0


def test_parallel_submissions_of_one_payment_under_different_keys_settle_it_once(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock, ledger: LedgerContext
) -> None:
    """Two apps of one customer retry the same signed payment with keys of their own, at once:
    one settlement, every answer its receipt, never a server error."""
    body = payment(parties, clock, "pay-raced", 1_999, 1)
    length = journal_length(ledger)

    def send(number: int) -> Any:
        return client.post("/v1/payments", json=body,
                           headers=auth(keys.bank_a, f"race-{number}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(16)))
    assert [a.status_code for a in answers] == [201] * 16, [a.text for a in answers]
    receipts = {json.dumps(a.json()["receipt"], sort_keys=True) for a in answers}
    assert len(receipts) == 1
    assert sum(not a.json()["replayed"] for a in answers) == 1
    assert journal_length(ledger) == length + 1
    assert balance(client, keys.bank_a, "w-carol") == yuan(1_000) - 1_999


def test_two_payers_racing_for_one_payment_id_get_one_settlement_and_one_conflict(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock, ledger: LedgerContext
) -> None:
    """Two customers' apps pick the same payment id at the same moment (their wallets lock
    apart, so only the id's unique key meets): one settles, every other answer is the stored
    receipt or ``payment_conflict``, never a server error."""
    open_wallet(client, keys.bank_b, "w-dave", wallet_class=3,
                evidence={"phone": "+8613800000004", "id_document": "110101199001015678"})
    fund(client, keys.bank_b, "w-dave", yuan(1_000), "t-dave")
    open_wallet(client, keys.bank_b, "w-tea", wallet_class=2, holder_kind="corporate",
                merchant_category_code="5814", evidence=FULL_EVIDENCE)
    dave = WalletKey.generate()
    enrolled = client.post("/v1/wallets/w-dave/keys", json={"public_key": dave.public_key_hex},
                           headers=auth(keys.bank_b))
    assert enrolled.status_code == 201
    carols = payment(parties, clock, "pay-same-id", 1_000, 1)
    daves = dict(build_payment(dave, ledger_id=parties.ledger_id, payment_id="pay-same-id",
                               payer="w-dave", payee="w-tea", amount_fen=2_000, sequence=1,
                               created_at=clock.now()))
    length = journal_length(ledger)

    def send(number: int) -> Any:
        body, bank = (carols, keys.bank_a) if number % 2 else (daves, keys.bank_b)
        return client.post("/v1/payments", json=body, headers=money_headers(bank))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(16)))
    statuses = sorted({a.status_code for a in answers})
    assert statuses == [201, 409], [a.text for a in answers]
    winners = {a.json()["payer"] for a in answers if a.status_code == 201}
    assert len(winners) == 1
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "payment_conflict")
    assert journal_length(ledger) == length + 1


def _code_and_capture(parties: Parties, clock: ManualClock, name: str,
                      amount_fen: int) -> dict[str, Any]:
    code = build_payment_code(
        parties.customer, ledger_id=parties.ledger_id, code_id=f"code-{name}", payer="w-carol",
        max_amount_fen=amount_fen, expires_at=clock.now() + timedelta(minutes=1),
        created_at=clock.now(),
    )
    capture = build_capture(
        parties.shop, ledger_id=parties.ledger_id, capture_id=f"cap-{name}",
        code_id=f"code-{name}", merchant="w-noodles", amount_fen=amount_fen,
        created_at=clock.now(),
    )
    return {"kind": "capture", "payment_code": dict(code), "capture": dict(capture)}


def _refund_item(parties: Parties, clock: ManualClock, refund_id: str, of: str,
                 amount_fen: int) -> dict[str, Any]:
    return {"kind": "refund", "refund": dict(build_refund(
        parties.shop, ledger_id=parties.ledger_id, refund_id=refund_id, payment_id=of,
        merchant="w-noodles", amount_fen=amount_fen, created_at=clock.now()))}


def test_a_mixed_batch_settles_payments_captures_and_refunds_in_order(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock, ledger: LedgerContext
) -> None:
    paid = {"kind": "payment", "payment": payment(parties, clock, "mixed-pay", 1_000, 1)}
    forged = {"kind": "payment", "payment": {
        **payment(parties, clock, "mixed-forged", 500, 2), "signature": "00" * 64}}
    items = [
        paid,
        _code_and_capture(parties, clock, "mixed", 6_000),
        _refund_item(parties, clock, "mixed-refund-1", "cap-mixed", 3_000),  # same batch
        forged,
        _refund_item(parties, clock, "mixed-refund-2", "cap-mixed", 3_001),  # above what is left
        _refund_item(parties, clock, "mixed-refund-3", "mixed-pay", 1_000),
    ]
    length = journal_length(ledger)
    headers = money_headers(keys.bank_b)
    response = client.post("/v1/settlements/batch", json={"items": items}, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["settled"], answer["refused"]) == (4, 2)
    assert [r["status"] for r in answer["results"]] == [201, 201, 201, 422, 422, 201]
    assert [r["settlement"]["kind"] for r in answer["results"] if r["settlement"]] == \
        ["payment", "capture", "refund", "refund"]
    assert answer["results"][3]["problem"]["code"] == "signature_invalid"
    assert answer["results"][4]["problem"]["code"] == "refund_exceeds_payment"
    for result in answer["results"]:
        if result["settlement"] is not None:
            receipt = verify_receipt(result["settlement"]["receipt"], parties.receipt_key)
            assert receipt["receipt_for"] == result["settlement"]["payment_id"]
    assert journal_length(ledger) == length + 4
    assert balance(client, keys.bank_a, "w-carol") == yuan(1_000) - 1_000 - 6_000 + 3_000 + 1_000
    assert balance(client, keys.bank_b, "w-noodles") == 1_000 + 6_000 - 3_000 - 1_000

    again = client.post("/v1/settlements/batch", json={"items": items}, headers=headers)
    assert again.content == response.content and journal_length(ledger) == length + 4
    replayed = client.post("/v1/settlements/batch", json={"items": items[:3]},
                           headers=money_headers(keys.bank_a))  # a new key: each item replayed
    assert [r["settlement"]["replayed"] for r in replayed.json()["results"]] == [True] * 3
    assert journal_length(ledger) == length + 4
    lookup = client.get("/v1/payments/mixed-refund-1", headers=auth(keys.bank_a))
    assert lookup.status_code == 200 and lookup.json()["kind"] == "refund"


def test_a_malformed_or_oversized_mixed_batch_is_refused_whole_and_changes_nothing(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock, ledger: LedgerContext
) -> None:
    good = {"kind": "payment", "payment": payment(parties, clock, "whole-1", 100, 1)}
    before = snapshot(ledger)
    body: dict[str, Any]
    for body in (
        {"items": [good, {"kind": "gift", "payment": good["payment"]}]},  # no such kind
        {"items": [good, {"kind": "capture", "capture": good["payment"]}]},  # no payment code
        {"items": [good, {"payment": good["payment"]}]},  # no kind
        {"items": [{**good, "refund": good["payment"]}]},  # a field of another kind
        {"items": []},
        {"items": [good] * 1_001},
        {"payments": [good["payment"]]},
    ):
        assert_problem(client.post("/v1/settlements/batch", json=body,
                                   headers=money_headers(keys.bank_a)), 422, "request_invalid")
    assert_problem(client.post("/v1/settlements/batch", json={"items": [good]}), 401,
                   "unauthenticated")
    assert snapshot(ledger) == before


def test_a_batch_of_payment_requests_records_each_and_answers_each_refusal(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock, ledger: LedgerContext
) -> None:
    def request(request_id: str, amount_fen: int) -> dict[str, Any]:
        return dict(build_payment_request(
            parties.shop, ledger_id=parties.ledger_id, request_id=request_id,
            merchant="w-noodles", amount_fen=amount_fen, reference=f"table {request_id}",
            expires_at=clock.now() + timedelta(minutes=10), created_at=clock.now(),
        ))

    first, second = request("req-batch-1", 4_800), request("req-batch-2", 1_200)
    forged = {**request("req-batch-3", 900), "signature": "00" * 64}
    clash = request("req-batch-1", 4_900)  # the first's id, another amount
    headers = auth(keys.bank_b, "requests-1")
    before = snapshot(ledger)
    response = client.post("/v1/payment-requests/batch",
                           json={"requests": [first, forged, second, clash]}, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["created"], answer["refused"]) == (2, 2)
    results = answer["results"]
    assert [r["status"] for r in results] == [201, 422, 201, 409]
    assert results[1]["problem"]["code"] == "signature_invalid"
    assert results[3]["problem"]["code"] == "payment_request_conflict"
    assert decode_qr(results[0]["payment_request"]["qr"]) == first
    assert results[2]["payment_request"]["status"] == "open"
    after = snapshot(ledger)
    assert (after["balances"], after["head"]) == (before["balances"], before["head"])  # no money
    again = client.post("/v1/payment-requests/batch",
                        json={"requests": [first, forged, second, clash]}, headers=headers)
    assert again.content == response.content
    assert client.get("/v1/payment-requests/req-batch-3", headers=auth(keys.bank_a)).status_code \
        == 404
    paid = client.post("/v1/settlements/batch", headers=money_headers(keys.bank_a), json={
        "items": [{"kind": "payment", "payment": dict(build_payment_for_request(
            parties.customer, second["message"], payment_id="pay-req-batch-2", payer="w-carol",
            sequence=1, created_at=clock.now()))}]})
    assert paid.json()["results"][0]["status"] == 201, paid.text
    assert client.get("/v1/payment-requests/req-batch-2",
                      headers=auth(keys.bank_b)).json()["status"] == "paid"
    assert_problem(client.post("/v1/payment-requests/batch", json={"requests": []},
                               headers=auth(keys.bank_b)), 422, "request_invalid")


def test_a_full_mixed_batch_of_captures_fits_the_body_limit(
    parties: Parties, clock: ManualClock
) -> None:
    """The mixed batch's item cap keeps its largest realistic body (captures, two envelopes
    each, with ids of the longest kind) under the API's body limit."""
    long = "x" * 50
    items = [_code_and_capture(parties, clock, f"{long}-{n:04d}", 2_000_000)
             for n in range(SETTLEMENT_BATCH_SIZE_MAX)]
    body = json.dumps({"items": items}).encode()
    assert len(body) < DEFAULT_MAX_BODY_BYTES
    assert len(body) > DEFAULT_MAX_BODY_BYTES // 2  # the cap is not far lower than it need be


def test_parallel_retries_of_one_mixed_batch_settle_each_item_once(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock, ledger: LedgerContext
) -> None:
    """A back office retries one batch (a payment, a capture and a refund of it) from several
    threads under keys of their own: each item settles once, every answer is its settlement,
    never a server error."""
    items = [
        {"kind": "payment", "payment": payment(parties, clock, "raced-pay", 1_500, 1)},
        _code_and_capture(parties, clock, "raced", 4_000),
        _refund_item(parties, clock, "raced-refund", "cap-raced", 1_000),
    ]
    length = journal_length(ledger)

    def send(number: int) -> Any:
        return client.post("/v1/settlements/batch", json={"items": items},
                           headers=auth(keys.bank_b, f"batch-race-{number}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(12)))
    assert [a.status_code for a in answers] == [200] * 12, [a.text for a in answers]
    for position in range(3):
        results = [a.json()["results"][position] for a in answers]
        assert {r["status"] for r in results} == {201}, results
        assert sum(not r["settlement"]["replayed"] for r in results) == 1
        assert len({r["settlement"]["entry_seq"] for r in results}) == 1
    assert journal_length(ledger) == length + 3
    assert balance(client, keys.bank_a, "w-carol") == yuan(1_000) - 1_500 - 4_000 + 1_000


def test_an_operator_cannot_take_the_entry_id_a_customers_refund_will_need(
    client: TestClient, keys: Keys, parties: Parties, clock: ManualClock, ledger: LedgerContext
) -> None:
    """A settlement's journal entry id is ``<kind>:<its id>``, and funding entry ids are chosen
    by the operator: a top-up named ``refund:r-1`` would have blocked refund r-1 for good (found
    by review). Every id a caller chooses is refused such a prefix, on every route that takes
    one, and the refund then settles."""
    paid = client.post("/v1/payments", json=payment(parties, clock, "p-1", 5_000, 1),
                       headers=money_headers(keys.bank_a))
    assert paid.status_code == 201, paid.text
    before = snapshot(ledger)
    squats = [
        ("/v1/wallets/w-carol/top-ups", keys.bank_a, {"entry_id": "refund:r-1", "amount_fen": 1}),
        ("/v1/wallets/w-noodles/withdrawals", keys.bank_b,
         {"entry_id": "payment:p-2", "amount_fen": 1}),
        ("/v1/issuances", keys.central_bank,
         {"entry_id": "run:x:order:00001", "operator": "BANK-A", "amount_fen": 1}),
        ("/v1/redemptions", keys.central_bank,
         {"entry_id": "capture:c-1", "operator": "BANK-A", "amount_fen": 1}),
        ("/v1/operators/BANK-A/reserve-deposits", keys.central_bank,
         {"entry_id": "offline-load:l-1", "amount_fen": 1}),
    ]
    for path, key, body in squats:
        assert_problem(client.post(path, json=body, headers=money_headers(key)), 400,
                       "entry_id_reserved", field="entry_id")
    batch = client.post("/v1/top-ups/batch", headers=money_headers(keys.bank_a), json={"items": [
        {"wallet_id": "w-carol", "entry_id": "refund:r-1", "amount_fen": 1},
        {"wallet_id": "w-carol", "entry_id": "t-fine", "amount_fen": 1}]})
    assert [r["status"] for r in batch.json()["results"]] == [400, 201]
    assert batch.json()["results"][0]["problem"]["code"] == "entry_id_reserved"
    after = snapshot(ledger)
    assert after["head"] != before["head"]  # only t-fine was posted
    refund = client.post("/v1/refunds", headers=money_headers(keys.bank_b), json=dict(
        build_refund(parties.shop, ledger_id=parties.ledger_id, refund_id="r-1",
                     payment_id="p-1", merchant="w-noodles", amount_fen=1_000,
                     created_at=clock.now())))
    assert refund.status_code == 201, refund.text
