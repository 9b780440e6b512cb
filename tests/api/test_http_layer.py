"""The HTTP layer itself: health, readiness, routing errors, body cap, malformed JSON, and an
unexpected exception that must reveal nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator

from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import ApiSettings, create_app
from cbdc.services.context import LedgerContext
from cbdc.storage import migrate
from cbdc.storage.engine import make_engine
from tests.api.conftest import Keys, assert_problem, auth, money_headers, snapshot


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["schema_revision"] == migrate.head_revision()


def test_not_ready_when_schema_is_behind(
    client: TestClient, ledger: LedgerContext, database_url: str
) -> None:
    migrate.downgrade(database_url, "-1")
    assert_problem(client.get("/readyz"), 503, "schema_out_of_date")
    assert client.get("/healthz").status_code == 200


def test_not_ready_when_database_cannot_be_reached(tmp_path: object) -> None:
    unreachable = LedgerContext(engine=make_engine("sqlite:////nonexistent-dir/cbdc.sqlite3"))
    with TestClient(create_app(unreachable)) as client:
        response = client.get("/readyz")
    assert_problem(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "1"


def test_routing_errors_are_problems(client: TestClient, keys: Keys) -> None:
    assert_problem(client.get("/v1/nothing-here"), 404, "not_found", instance="/v1/nothing-here")
    wrong_method = client.delete("/v1/operators", headers=auth(keys.central_bank))
    assert_problem(wrong_method, 405, "method_not_allowed")
    # Starlette names the methods of the first route on the path (here POST; GET is another).
    assert set(wrong_method.headers["allow"].split(", ")) <= {"GET", "POST"}


def test_malformed_json_is_request_invalid(client: TestClient, keys: Keys) -> None:
    response = client.post(
        "/v1/issuances", content=b'{"entry_id": "x", "amount_fen": 1',
        headers={**money_headers(keys.central_bank), "Content-Type": "application/json"},
    )
    document = assert_problem(response, 422, "request_invalid")
    assert document["errors"][0]["type"] == "json_invalid"
    assert document["errors"][0]["loc"] == ["body", "33"]  # where the parser stopped
    missing = client.post("/v1/issuances", headers=money_headers(keys.central_bank))
    assert_problem(missing, 422, "request_invalid")


def test_a_body_with_a_key_twice_or_nan_is_request_invalid_and_changes_nothing(
    client: TestClient, keys: Keys, ledger: LedgerContext
) -> None:
    before = snapshot(ledger)
    bodies = {
        b'{"entry_id": "x", "operator": "BANK-A", "amount_fen": 1, "amount_fen": 100}':
            "duplicate key 'amount_fen'",
        b'{"entry_id": "x", "operator": "BANK-A", "amount_fen": NaN}': "NaN is not a JSON number",
        b'{"entry_id": "x", "operator": "BANK-A", "amount_fen": Infinity}':
            "Infinity is not a JSON number",
    }
    for body, reason in bodies.items():
        response = client.post("/v1/issuances", content=body, headers={
            **money_headers(keys.central_bank), "Content-Type": "application/json"})
        document = assert_problem(response, 422, "request_invalid")
        assert document["errors"][0]["type"] == "json_invalid"
        assert reason in document["errors"][0]["msg"] and reason in document["detail"]
    assert snapshot(ledger) == before


def test_every_route_with_a_body_refuses_a_key_twice(client: TestClient, app: FastAPI) -> None:
    """Each route that takes a JSON body reads it with the strict rules (api/json_body.py),
    before authentication: none keeps one of two equal keys."""
    with_body = [
        (method, re.sub(r"\{[^}]+\}", "x", path))
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]
    assert len(with_body) >= 25
    for method, path in with_body:
        response = client.request(method.upper(), path, content=b'{"a": 1, "a": 2}',
                                  headers={"Content-Type": "application/json"})
        document = assert_problem(response, 422, "request_invalid")
        assert document["errors"][0]["type"] == "json_invalid", (method, path)


def _small_app(ledger: LedgerContext) -> FastAPI:
    return create_app(ledger, settings=ApiSettings(max_body_bytes=1_000))


def test_oversized_body_is_refused_before_it_is_read(
    ledger: LedgerContext, keys: Keys
) -> None:
    before = snapshot(ledger)
    body = {"entry_id": "big", "operator": "BANK-A", "amount_fen": 1, "pad": "x" * 2_000}
    with TestClient(_small_app(ledger)) as client:
        declared = client.post("/v1/issuances", json=body, headers=money_headers(keys.central_bank))
        assert_problem(declared, 413, "body_too_large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b'{"entry_id": "big", "operator": "BANK-A", "amount_fen": 1, "pad": "'
            for _ in range(20):
                yield b"x" * 100
            yield b'"}'

        streamed = client.post(
            "/v1/issuances", content=chunks(),
            headers={**money_headers(keys.central_bank), "Content-Type": "application/json"},
        )
        assert_problem(streamed, 413, "body_too_large")
        small = client.post("/v1/issuances", json={k: v for k, v in body.items() if k != "pad"},
                            headers=money_headers(keys.central_bank))
        assert small.status_code == 201
    after = snapshot(ledger)
    assert len(after["idempotency"]) == len(before["idempotency"]) + 1


def test_unexpected_exception_is_a_bare_logged_500(
    ledger: LedgerContext, caplog: object
) -> None:
    app = create_app(ledger)

    def explode() -> None:
        raise RuntimeError("secret connection string postgres://admin:hunter2@db")

    app.add_api_route("/explode", explode)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/explode")
    document = assert_problem(response, 500, "internal_error")
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert set(document) == {"type", "title", "status", "detail", "code", "instance"}
    assert "hunter2" in getattr(caplog, "text", "")  # but it is in the server's log
