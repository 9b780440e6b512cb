"""``cbdc apikey`` and ``cbdc serve``: a key printed once that opens the API, and the server
answering over a real socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cbdc.cli import app as cli
from cbdc.domain.errors import CbdcError
from cbdc.domain.money import yuan
from cbdc.services import apikeys, issuance
from cbdc.services.context import LedgerContext
from cbdc.storage.engine import ENV_DATABASE_URL
from tests.api.conftest import assert_problem

runner = CliRunner()


def test_apikey_create_prints_a_working_key_once(
    ledger: LedgerContext, database_url: str
) -> None:
    issuance.create_operator(ledger, "BANK-K", "Bank K", quota_fen=yuan(10))
    created = runner.invoke(cli, ["apikey", "create", "BANK-K", "--database-url", database_url])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    principal = apikeys.verify_api_key(ledger, key)
    assert (principal.institution_code, principal.role) == ("BANK-K", "operator")
    listed = runner.invoke(cli, ["apikey", "list", "--database-url", database_url])
    assert key[:12] in listed.stdout and key not in listed.stdout  # only the prefix, ever

    central = runner.invoke(cli, ["apikey", "create", "central-bank", "--database-url",
                                  database_url])
    assert apikeys.verify_api_key(ledger, central.stdout.strip()).is_central_bank

    revoked = runner.invoke(cli, ["apikey", "revoke", key[:12], "--database-url", database_url])
    assert revoked.exit_code == 0
    assert apikeys.list_api_keys(ledger)[0].revoked_at is not None


def test_apikey_revoke_takes_the_key_or_its_prefix_as_printed(
    ledger: LedgerContext, database_url: str
) -> None:
    issuance.create_operator(ledger, "BANK-R", "Bank R")
    keys = []
    for _ in range(3):
        created = runner.invoke(cli, ["apikey", "create", "BANK-R", "--database-url",
                                      database_url])
        assert created.exit_code == 0
        keys.append(created.stdout.strip().splitlines()[-1])
        assert f"API key {keys[-1][:12]}... for BANK-R" in created.output  # the printed form
    for named in (keys[0], f"{keys[1][:12]}...", keys[2][:12]):
        revoked = runner.invoke(cli, ["apikey", "revoke", named, "--database-url", database_url])
        assert revoked.exit_code == 0, revoked.output
        assert "revoked 1 key(s)" in revoked.output
    for key in keys:
        with pytest.raises(CbdcError):
            apikeys.verify_api_key(ledger, key)
    again = runner.invoke(cli, ["apikey", "revoke", keys[0], "--database-url", database_url])
    assert again.exit_code == 2
    assert again.output.startswith("error [api_key_not_found] ")
    assert "already revoked" in " ".join(again.output.split())  # Rich wraps at 80 columns
    unknown = runner.invoke(cli, ["apikey", "revoke", "cbdc_nothing", "--database-url",
                                  database_url])
    assert unknown.exit_code == 2 and "is not known" in " ".join(unknown.output.split())


def test_apikey_for_unknown_institution_fails(database_url: str) -> None:
    result = runner.invoke(cli, ["apikey", "create", "NO-SUCH-BANK", "--database-url",
                                 database_url])
    assert result.exit_code == 2
    assert "no institution 'NO-SUCH-BANK'" in result.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_answers_over_http(ledger: LedgerContext, database_url: str) -> None:
    port = _free_port()
    environment = {**os.environ, ENV_DATABASE_URL: database_url}
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("cbdc")), "serve", "--port", str(port)],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "cbdc serve did not start in 30 s"
                time.sleep(0.1)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert_problem(httpx.get(f"{base}/v1/operators"), 401, "unauthenticated")
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "cbdc"
    finally:
        server.terminate()
        server.wait(timeout=10)
