"""Idempotency-Key on POSTs that move money: replay, reuse with another body, in flight,
missing, takeover of a stale claim, and ten parallel requests with one key: one effect."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from fastapi.testclient import TestClient

from cbdc.clock import ManualClock
from cbdc.domain.money import yuan
from cbdc.services import idempotency, issuance
from cbdc.services.apikeys import verify_api_key
from cbdc.services.context import LedgerContext
from tests.api.conftest import Keys, assert_problem, auth, journal_length, snapshot

ISSUE = {"entry_id": "idem-issue", "operator": "BANK-A", "amount_fen": yuan(250)}


def test_retry_with_same_key_and_body_replays_the_first_response(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    headers = auth(keys.central_bank, "retry-1")
    first = client.post("/v1/issuances", json=ISSUE, headers=headers)
    length = journal_length(ledger)
    second = client.post("/v1/issuances", json=ISSUE, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.content == first.content  # byte for byte, ``replayed`` still false
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert journal_length(ledger) == length


def test_key_order_and_whitespace_do_not_change_the_fingerprint(
    client: TestClient, keys: Keys
) -> None:
    headers = {**auth(keys.central_bank, "retry-2"), "Content-Type": "application/json"}
    first = client.post("/v1/issuances", content=b'{"entry_id":"w","operator":"BANK-A",'
                        b'"amount_fen":5}', headers=headers)
    second = client.post("/v1/issuances", content=b'{ "amount_fen": 5, "operator": "BANK-A",'
                         b' "entry_id": "w" }', headers=headers)
    assert second.status_code == 201 and second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content


def test_same_key_with_another_body_or_path_is_refused(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    headers = auth(keys.central_bank, "reused")
    client.post("/v1/issuances", json=ISSUE, headers=headers)
    before = snapshot(ledger)
    other_body = client.post("/v1/issuances", json={**ISSUE, "amount_fen": yuan(251)},
                             headers=headers)
    assert_problem(other_body, 422, "idempotency_key_reused")
    other_path = client.post("/v1/redemptions", json=ISSUE, headers=headers)
    assert_problem(other_path, 422, "idempotency_key_reused")
    assert snapshot(ledger) == before


def test_keys_belong_to_one_institution(keys: Keys, ledger: LedgerContext) -> None:
    """Another institution using the same key string has its own record."""
    cb = verify_api_key(ledger, keys.central_bank)
    bank = verify_api_key(ledger, keys.bank_a)
    fingerprint = idempotency.fingerprint("POST", "/v1/issuances", ISSUE)
    assert isinstance(idempotency.claim(ledger, bank.institution_id, "shared", "0" * 64),
                      idempotency.Claim)
    assert isinstance(idempotency.claim(ledger, cb.institution_id, "shared", fingerprint),
                      idempotency.Claim)


def test_missing_or_malformed_key_is_a_bad_request(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    before = snapshot(ledger)
    assert_problem(client.post("/v1/issuances", json=ISSUE, headers=auth(keys.central_bank)),
                   400, "idempotency_key_missing")
    assert_problem(client.post("/v1/issuances", json=ISSUE,
                               headers=auth(keys.central_bank, "x" * 256)),
                   400, "idempotency_key_invalid")
    assert snapshot(ledger) == before


def test_a_refusal_is_remembered_under_its_key(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    issuance.set_quota(ledger, "BANK-A", yuan(500_000))
    body = {"entry_id": "big", "operator": "BANK-A", "amount_fen": yuan(800_000)}
    headers = auth(keys.central_bank, "refused-once")
    refused = client.post("/v1/issuances", json=body, headers=headers)
    assert_problem(refused, 422, "quota_exceeded")
    issuance.set_quota(ledger, "BANK-A", yuan(2_000_000))
    again = client.post("/v1/issuances", json=body, headers=headers)
    assert_problem(again, 422, "quota_exceeded")
    assert again.content == refused.content and again.headers["idempotent-replayed"] == "true"
    fresh = client.post("/v1/issuances", json=body, headers=auth(keys.central_bank, "new-key"))
    assert fresh.status_code == 201


def test_a_key_in_flight_is_a_conflict_until_it_goes_stale(
    client: TestClient, keys: Keys, ledger: LedgerContext, clock: ManualClock
) -> None:
    cb = verify_api_key(ledger, keys.central_bank)
    fingerprint = idempotency.fingerprint("POST", "/v1/issuances", ISSUE)
    stuck = idempotency.claim(ledger, cb.institution_id, "stuck", fingerprint)
    assert isinstance(stuck, idempotency.Claim)
    length = journal_length(ledger)
    in_flight = client.post("/v1/issuances", json=ISSUE, headers=auth(keys.central_bank, "stuck"))
    assert_problem(in_flight, 409, "idempotency_in_flight")
    assert journal_length(ledger) == length

    clock.advance(timedelta(seconds=61))  # the first claimant crashed; its claim is stale
    taken_over = client.post("/v1/issuances", json=ISSUE,
                             headers=auth(keys.central_bank, "stuck"))
    assert taken_over.status_code == 201
    assert journal_length(ledger) == length + 1
    with ledger.write() as connection:  # the first claimant wakes up: it may not finish
        assert not idempotency.hold(connection, stuck)


def test_ten_parallel_requests_with_one_key_have_one_effect(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    length = journal_length(ledger)
    headers = auth(keys.central_bank, "parallel")

    def send(_: int) -> tuple[int, bytes, str]:
        response = client.post("/v1/issuances", json=ISSUE, headers=headers)
        return response.status_code, response.content, response.headers["content-type"]

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(send, range(10)))
    assert journal_length(ledger) == length + 1
    created = [content for status, content, _ in results if status == 201]
    conflicts = [content for status, content, kind in results
                 if status == 409 and kind == "application/problem+json"]
    assert len(created) + len(conflicts) == 10 and created
    assert len(set(created)) == 1  # every success is the one stored response
    final = client.post("/v1/issuances", json=ISSUE, headers=headers)
    assert final.status_code == 201 and final.content == created[0]

    other = client.post("/v1/issuances", json={**ISSUE, "amount_fen": 1}, headers=headers)
    assert_problem(other, 422, "idempotency_key_reused")
    assert journal_length(ledger) == length + 1
