"""Offline payments over HTTP: BANK-A certifies Carol's card and two shop tills, loads the card,
the card pays offline, a clone of it spends the same 300 CNY at the other shop; both tills
upload; both shops are paid, the card is revoked, the fraud case is there for its operator and
the central bank, and nobody else reaches the devices."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from cbdc.clock import ManualClock
from cbdc.domain.money import yuan
from cbdc.offline import DeviceCertificate, OperatorCertificate, SecureElement
from cbdc.services.context import LedgerContext
from tests.api.conftest import Keys, assert_problem, auth, money_headers, snapshot
from tests.api.test_wallets import FULL_EVIDENCE, fund, open_wallet
from tests.offline_helpers import device_seed


def device(client: TestClient, key: str, ledger: LedgerContext, clock: ManualClock,
           device_id: str, wallet_id: str) -> SecureElement:
    element = SecureElement(seed=device_seed(device_id), ledger_id=ledger.ledger_id,
                            root_public_key=_root(ledger))
    issued = client.post(f"/v1/wallets/{wallet_id}/devices",
                         json={"device_id": device_id, "public_key": element.public_key.hex()},
                         headers=auth(key))
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert bytes.fromhex(body["root_public_key"]) == _root(ledger)
    element.install_certificate(DeviceCertificate.from_envelope(body["certificate"]),
                                OperatorCertificate.from_envelope(body["operator_certificate"]),
                                clock.now())
    return element


def _root(ledger: LedgerContext) -> bytes:
    from cbdc.services import offline

    return offline.root_public_key(ledger)


def upload(client: TestClient, key: str, element: SecureElement) -> dict[str, Any]:
    held = [*element.payments_made(),
            *(payment.to_envelope() for payment in element.payments_received())]
    response = client.post(f"/v1/devices/{element.device_id}/uploads", json={"payments": held},
                           headers=money_headers(key))
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    element.sync_done(report["sync_receipt"])
    return report


def test_cloned_card_spends_twice_both_shops_paid_card_revoked(
    client: TestClient, keys: Keys, ledger: LedgerContext, clock: ManualClock
) -> None:
    open_wallet(client, keys.bank_a, "w-carol", wallet_class=2, evidence=FULL_EVIDENCE)
    fund(client, keys.bank_a, "w-carol", yuan(2_000), "t-carol")
    for shop, phone in (("w-noodles", "+8613800000011"), ("w-tea", "+8613800000012")):
        open_wallet(client, keys.bank_a, shop, wallet_class=2,
                    evidence={**FULL_EVIDENCE, "phone": phone})
    card = device(client, keys.bank_a, ledger, clock, "carol-card", "w-carol")
    noodle_till = device(client, keys.bank_a, ledger, clock, "noodles-till", "w-noodles")
    tea_till = device(client, keys.bank_a, ledger, clock, "tea-till", "w-tea")

    loaded = client.post("/v1/devices/carol-card/loads",
                         json={"load_id": "load-1", "amount_fen": yuan(300)},
                         headers=money_headers(keys.bank_a))
    assert loaded.status_code == 201, loaded.text
    card.apply_load(loaded.json())
    clone = card.clone()

    clock.advance(timedelta(minutes=1))
    first = card.pay("noodles-till", "w-noodles", yuan(300), clock.now())
    noodle_till.receive(first, clock.now())
    second = clone.pay("tea-till", "w-tea", yuan(300), clock.now())
    tea_till.receive(second, clock.now())

    assert [o["status"] for o in upload(client, keys.bank_a, noodle_till)["outcomes"]] == \
        ["settled"]
    tea = upload(client, keys.bank_a, tea_till)
    assert [o["status"] for o in tea["outcomes"]] == ["operator_paid"]
    assert tea["revoked"] == ["carol-card"]
    for shop in ("w-noodles", "w-tea"):
        assert client.get(f"/v1/wallets/{shop}", headers=auth(keys.bank_a)).json()[
            "balance_fen"] == yuan(300)

    revocations = client.get("/v1/offline/revocation-list", headers=auth(keys.bank_b)).json()
    assert "dev:carol-card" in revocations["message"]["revoked"]
    for key in (keys.bank_a, keys.central_bank):
        (case,) = client.get("/v1/offline/fraud-cases", headers=auth(key)).json()["cases"]
        assert (case["device_id"], case["code"], case["amount_fen"]) == \
            ("carol-card", "offline_double_spend", yuan(600))
    assert client.get("/v1/offline/fraud-cases", headers=auth(keys.bank_b)).json()["cases"] == []
    report = client.get("/v1/offline/report", headers=auth(keys.central_bank)).json()
    assert report["ok"]
    (bank,) = report["operators"]
    assert (bank["code"], bank["fraud_cases"], bank["losses_fen"]) == ("BANK-A", 1, yuan(300))
    assert client.get("/v1/offline/report", headers=auth(keys.bank_b)).json()["devices"] == []

    again = client.post("/v1/devices/carol-card/loads",
                        json={"load_id": "load-2", "amount_fen": 100},
                        headers=money_headers(keys.bank_a))
    assert_problem(again, 422, again.json()["code"])
    assert again.json()["code"] == "offline_device_revoked"


def test_devices_are_reached_by_their_operator_only(
    client: TestClient, keys: Keys, ledger: LedgerContext, clock: ManualClock
) -> None:
    open_wallet(client, keys.bank_a, "w-hana", wallet_class=2, evidence=FULL_EVIDENCE)
    fund(client, keys.bank_a, "w-hana", yuan(1_000), "t-hana")
    card = device(client, keys.bank_a, ledger, clock, "hana-card", "w-hana")
    before = snapshot(ledger)
    routes: list[tuple[str, dict[str, Any]]] = [
        ("/v1/devices/hana-card/loads", {"load_id": "load-x", "amount_fen": 100}),
        ("/v1/devices/hana-card/unloads", {"message": {}, "signature": "0" * 128}),
        ("/v1/devices/hana-card/uploads", {"payments": [{
            "message": {}, "signature": "", "certificate": {}, "operator_certificate": {}}]}),
    ]
    for path, body in routes:
        assert_problem(client.post(path, json=body, headers=auth(None, "k")), 401,
                       "unauthenticated")
        assert_problem(client.post(path, json=body, headers=money_headers(keys.central_bank)),
                       403, "operator_only")
        foreign = client.post(path, json=body, headers=money_headers(keys.bank_b))
        assert_problem(foreign, 404, "offline_device_not_found")
        nowhere = client.post(path.replace("hana-card", "no-card"), json=body,
                              headers=money_headers(keys.bank_b))
        assert_problem(nowhere, 404, "offline_device_not_found")
    assert_problem(client.post("/v1/wallets/w-hana/devices",
                               json={"device_id": "b-card", "public_key": "ab" * 32},
                               headers=auth(keys.bank_b)), 404, "wallet_not_found")
    assert snapshot(ledger) == before

    loaded = client.post("/v1/devices/hana-card/loads",
                         json={"load_id": "load-h", "amount_fen": yuan(200)},
                         headers=money_headers(keys.bank_a))
    card.apply_load(loaded.json())
    statement = card.unload(clock.now())
    unloaded = client.post("/v1/devices/hana-card/unloads", json=statement,
                           headers=money_headers(keys.bank_a))
    assert unloaded.status_code == 201, unloaded.text
    assert unloaded.json()["returned_fen"] == yuan(200)
    assert client.get("/v1/wallets/w-hana", headers=auth(keys.bank_a)).json()["balance_fen"] \
        == yuan(1_000)
