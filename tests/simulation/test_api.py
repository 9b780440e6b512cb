"""`cbdc simulate --api`: a tiny pilot driven over HTTP against a `cbdc serve` this test starts on
a fresh SQLite file, as a real client would, offline devices and cloned cards included: the
invariants hold, the server's own audit passes, and every payment the simulation counts as
settled (online or offline) is in the server's books."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from api.schemas import payments as payment_schemas
from api.schemas import wallets as wallet_schemas
from api.schemas.offline import UPLOAD_SIZE_MAX
from cbdc.cli import app
from cbdc.domain.errors import CbdcError
from cbdc.services import apikeys
from cbdc.services.context import open_ledger
from cbdc.services.offline import DeviceLoad, DeviceRequest, Upload
from cbdc.simulation import http
from cbdc.simulation.http import HttpLedger
from cbdc.simulation.offline import UPLOAD_ENVELOPES_MAX
from cbdc.simulation.runner import parse_operator_keys
from cbdc.storage.engine import ENV_DATABASE_URL
from cbdc.storage.tables import offline_payments, payments
from tests.simulation.test_command import tiny_scenario

runner = CliRunner()


def cheating_scenario(folder: Path) -> Path:
    """The tiny pilot with cheats at ten times the default rates (forty for cloned cards, of the
    16 offline slots), so each kind is injected."""
    path = tiny_scenario(folder)
    text = (path.read_text(encoding="utf-8")
            .replace("replay_percent = 0.3", "replay_percent = 3")
            .replace("over_cap_percent = 0.2", "over_cap_percent = 2")
            .replace("forged_signature_percent = 0.2", "forged_signature_percent = 2")
            .replace("cloned_card_percent = 0.5", "cloned_card_percent = 20"))
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Server:
    base: str
    database_url: str
    central_bank_key: str
    operator_keys: list[str]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """`cbdc serve` on a fresh SQLite file that `cbdc simulate-setup` prepared: migrated, the
    scenario's operators registered, a key for the central bank and for each operator."""
    url = f"sqlite:///{tmp_path / 'served.sqlite3'}"
    setup = runner.invoke(app, ["simulate-setup", str(tiny_scenario(tmp_path)),
                                "--database-url", url])
    assert setup.exit_code == 0, setup.output
    exports = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1)
                   for line in setup.stdout.splitlines())
    central_bank_key = exports["CBDC_API_KEY"]
    operator_keys = exports["CBDC_SIM_OPERATOR_KEYS"].split()
    port = _free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("cbdc")), "serve", "--port", str(port)],
        env={**os.environ, ENV_DATABASE_URL: url},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "cbdc serve did not start in 30 s"
            time.sleep(0.1)
        yield Server(base, url, central_bank_key, operator_keys)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_tiny_pilot_settles_over_http_and_the_servers_books_hold(
    server: Server, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    arguments = ["simulate", str(cheating_scenario(tmp_path)), "--seed", "5", "--out", str(out),
                 "--api", server.base, "--api-key", server.central_bank_key]
    for pair in server.operator_keys:
        arguments += ["--operator-key", pair]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "ALL INVARIANTS HOLD" in result.output
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["ok"] is True
    assert all(metrics["invariants"].values())
    assert metrics["final_state_hash"].startswith("http:")
    # Over HTTP the ledger's share of a phase is the time spent waiting on the server.
    assert 0 < metrics["ledger_seconds"]["payments"] < metrics["phase_seconds"]["payments"]
    cheats = metrics["cheats"]
    assert set(cheats["by_kind"]) == {"replay", "over_cap", "forged_signature", "cloned_card"}
    assert cheats["caught"] == cheats["injected"] == 17
    assert cheats["by_kind"]["cloned_card"] == {"refused": 0, "detected": 3, "accepted": 0}
    assert sum(metrics["rejections"]["cheats"].values()) > 0  # refusals came as problem codes
    assert not (out / "ledger.sqlite3").exists()  # nothing ran in-process
    assert metrics["offline_run"] is True  # the devices went online through the device routes
    assert metrics["payments"]["not_run_by_kind"] == {}
    assert metrics["payments"]["settled_by_kind"]["offline"]["count"] == 16  # 8 % of 200
    assert metrics["offline"]["loaded"]["count"] > 0

    central_bank = {"Authorization": f"Bearer {server.central_bank_key}"}
    audit = httpx.post(f"{server.base}/v1/audits", headers=central_bank)
    assert audit.status_code == 200 and audit.json()["ok"] is True, audit.text
    # The final state hash digests the server's figures at the end (taken once, with the
    # verdicts): the same figures asked for again give it.
    supply = httpx.get(f"{server.base}/v1/reports/supply", headers=central_bank).json()
    figures = json.dumps({"audit": audit.json(), "supply": supply}, sort_keys=True)
    assert metrics["final_state_hash"] == "http:" + hashlib.sha256(figures.encode()).hexdigest()
    cases = httpx.get(f"{server.base}/v1/offline/fraud-cases", headers=central_bank).json()
    assert len(cases["cases"]) == metrics["fraud"]["cases"] >= 3  # a case per clone at least
    context = open_ledger(server.database_url)
    try:
        with context.read() as connection:
            settled_online = connection.execute(
                select(func.count()).select_from(payments)).scalar_one()
            paid_offline = connection.execute(
                select(func.count()).select_from(offline_payments)
                .where(offline_payments.c.status.in_(("settled", "operator_paid")))).scalar_one()
    finally:
        context.dispose()
    settled = metrics["payments"]["settled"]
    assert settled > 100
    assert paid_offline == 16 + 2 * 3  # the honest offline payments, each clone's two
    assert settled_online + paid_offline == settled


def test_api_refuses_to_run_without_the_operators_keys(server: Server, tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", str(tiny_scenario(tmp_path)), "--out",
                                 str(tmp_path / "out"), "--api", server.base,
                                 "--api-key", server.central_bank_key])
    assert result.exit_code == 2
    assert "operator_key_missing" in result.output
    supply = httpx.get(f"{server.base}/v1/reports/supply",
                       headers={"Authorization": f"Bearer {server.central_bank_key}"})
    assert supply.json()["total"]["outstanding_fen"] == 0  # refused before anything was issued


def test_the_simulation_uploads_no_more_than_the_api_takes_in_one_upload() -> None:
    assert UPLOAD_ENVELOPES_MAX == UPLOAD_SIZE_MAX


def test_the_simulation_batches_no_more_than_the_api_takes_in_one_batch() -> None:
    assert http.BATCH_SIZE_MAX == payment_schemas.BATCH_SIZE_MAX == wallet_schemas.BATCH_SIZE_MAX
    assert http.SETTLEMENT_BATCH_SIZE_MAX == payment_schemas.SETTLEMENT_BATCH_SIZE_MAX


def test_refused_device_calls_are_answered_in_place_with_the_servers_code(
    server: Server,
) -> None:
    ledger = HttpLedger(server.base, server.central_bank_key,
                        parse_operator_keys(server.operator_keys))
    try:
        provisioned = ledger.provision_devices(
            [DeviceRequest("card-x", "no-such-wallet", "ab" * 32)] * 2)
        loaded = ledger.load_devices([DeviceLoad("load-x", "card-x", 100)])
        uploaded = ledger.upload_offline([Upload("card-x", [
            {"message": {}, "signature": "", "certificate": {}, "operator_certificate": {}}])])
        cases = ledger.fraud_devices()
    finally:
        ledger.close()
    answers = [*provisioned, *loaded, *uploaded]
    assert all(isinstance(answer, CbdcError) for answer in answers)
    assert [answer.code for answer in answers if isinstance(answer, CbdcError)] == [
        "wallet_not_found", "wallet_not_found", "offline_device_not_found",
        "offline_device_not_found"]
    assert cases == {}


def test_setup_runs_again_with_new_keys_and_refuses_an_operator_named_otherwise(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'pilot.sqlite3'}"
    scenario = tiny_scenario(tmp_path)
    first, second = (runner.invoke(app, ["simulate-setup", str(scenario), "--database-url", url])
                     for _ in range(2))
    assert first.exit_code == second.exit_code == 0, (first.output, second.output)
    assert first.stdout != second.stdout  # the operators found again, keys made anew
    context = open_ledger(url)
    try:
        for result in (first, second):
            key = shlex.split(result.stdout.splitlines()[0].removeprefix("export "))[0]
            assert apikeys.verify_api_key(context, key.split("=", 1)[1]).institution_code == \
                "central-bank"
    finally:
        context.dispose()
    renamed = tmp_path / "renamed.toml"
    renamed.write_text(scenario.read_text(encoding="utf-8").replace(  # the second operator
        'name = "China Construction Bank"', 'name = "Another bank"'), encoding="utf-8")
    context = open_ledger(url)
    try:
        keys_before = len(apikeys.list_api_keys(context))
        refused = runner.invoke(app, ["simulate-setup", str(renamed), "--database-url", url])
        assert refused.exit_code == 2 and "operator_exists" in refused.output
        assert len(apikeys.list_api_keys(context)) == keys_before  # no key made and never shown
    finally:
        context.dispose()
