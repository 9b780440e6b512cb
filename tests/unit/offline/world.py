"""A small offline world for tests: the central bank root, operators, certified devices, and the
ledger's side of loads and unloads (what the settlement service will store), all from fixed
seeds so every run signs the same bytes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import nacl.signing

from cbdc.offline import (
    NO_REVOCATIONS,
    Classification,
    OfflineCaps,
    OperatorAuthority,
    RevocationSnapshot,
    RootAuthority,
    SecureElement,
    classify_device_payments,
    verify_revocation_list,
)
from cbdc.offline.messages import OFFLINE_PAYMENT, format_time, seal
from cbdc.offline.verification import payment_envelope

LEDGER_ID = "cbdc-test"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def signing_key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed(name))


def seed(name: str) -> bytes:
    return hashlib.sha256(f"cbdc-test-seed:{name}".encode()).digest()


class World:
    def __init__(self) -> None:
        self.now = T0
        self.root = RootAuthority(LEDGER_ID, "pboc", signing_key("root"))
        self.operators: dict[str, OperatorAuthority] = {}
        self.load_counters: dict[str, int] = {}
        self.loads: dict[str, list[dict[str, Any]]] = {}
        self.unloads: dict[str, list[dict[str, Any]]] = {}
        self.revocations: RevocationSnapshot = NO_REVOCATIONS

    def tick(self, minutes: int = 1) -> datetime:
        self.now += timedelta(minutes=minutes)
        return self.now

    def operator(self, operator_id: str = "bank-a") -> OperatorAuthority:
        if operator_id not in self.operators:
            key = signing_key(f"operator:{operator_id}")
            certificate = self.root.certify_operator(
                serial=f"op-{operator_id}",
                operator_id=operator_id,
                operator_public_key=bytes(key.verify_key),
                not_before=T0 - timedelta(days=30),
                not_after=T0 + timedelta(days=3650),
            )
            self.operators[operator_id] = OperatorAuthority(key, certificate)
        return self.operators[operator_id]

    def device(
        self,
        device_id: str,
        *,
        wallet_class: int = 2,
        operator_id: str = "bank-a",
        valid_for: timedelta = timedelta(days=365),
        caps: OfflineCaps | None = None,
        key_name: str | None = None,
    ) -> SecureElement:
        operator = self.operator(operator_id)
        element = SecureElement(
            seed=seed(f"device:{key_name or device_id}"),
            ledger_id=LEDGER_ID,
            root_public_key=self.root.public_key,
        )
        certificate = operator.certify_device(
            serial=f"dev-{device_id}",
            device_id=device_id,
            device_public_key=element.public_key,
            wallet=f"w-{device_id}",
            wallet_class=wallet_class,
            not_before=T0 - timedelta(days=1),
            not_after=T0 + valid_for,
            caps=caps,
        )
        element.install_certificate(certificate, operator.certificate, self.now)
        self.load_counters[device_id] = 0
        self.loads[device_id] = []
        self.unloads[device_id] = []
        return element

    def load_receipt(self, element: SecureElement, amount_fen: int) -> dict[str, Any]:
        """What the ledger does online: move value into escrow and sign the receipt."""
        certificate = element.certificate
        assert certificate is not None
        device_id = certificate.device_id
        self.load_counters[device_id] += 1
        counter = self.load_counters[device_id]
        receipt = self.operator(certificate.operator_id).sign_load_receipt(
            load_id=f"load-{device_id}-{counter}",
            device_id=device_id,
            wallet=certificate.wallet,
            amount_fen=amount_fen,
            load_counter=counter,
            created_at=self.now,
        )
        self.loads[device_id].append(receipt["message"])
        return receipt

    def load(self, element: SecureElement, amount_fen: int) -> dict[str, Any]:
        receipt = self.load_receipt(element, amount_fen)
        element.apply_load(receipt)
        return receipt

    def unload(self, element: SecureElement) -> dict[str, Any]:
        statement = element.unload(self.now)
        self.unloads[element.device_id].append(statement["message"])
        return statement

    def revoke(self, number: int, *serials: str) -> dict[str, Any]:
        envelope = self.root.publish_revocation_list(
            number=number, issued_at=self.now, revoked=set(serials)
        )
        self.revocations = verify_revocation_list(envelope, self.root.public_key, LEDGER_ID)
        return envelope

    def classify(self, device_id: str, envelopes: list[dict[str, Any]]) -> Classification:
        return classify_device_payments(
            device_id,
            envelopes,
            root_public_key=self.root.public_key,
            loads=self.loads[device_id],
            unloads=self.unloads[device_id],
            revocations=self.revocations,
        )


def extracted_key_payment(
    world: World, element: SecureElement, **fields: Any
) -> dict[str, Any]:
    """A payment signed outside the secure element with its extracted key (a rogue firmware):
    the device's next payment by default, with ``fields`` overriding any field. The device's
    own state does not change, exactly as when an attacker signs on a copy of the key."""
    state = element.state()
    certificate = element.certificate
    assert certificate is not None
    message: dict[str, Any] = {
        "version": 1,
        "domain": OFFLINE_PAYMENT,
        "ledger_id": LEDGER_ID,
        "payer_device": certificate.device_id,
        "payer_wallet": certificate.wallet,
        "counter": state.counter + 1,
        "load_counter": state.load_counter,
        "payments_since_sync": state.payments_since_sync + 1,
        "payee_device": "shop",
        "payee_wallet": "w-shop",
        "amount_fen": 100,
        "currency": "CNY",
        "created_at": format_time(world.now),
        "prev_hash": state.last_payment_hash,
    }
    message.update(fields)
    sealed = seal(signing_key_of(certificate.device_id), OFFLINE_PAYMENT, message)
    operator = world.operator(certificate.operator_id)
    return payment_envelope(
        sealed["message"], bytes.fromhex(sealed["signature"]), certificate, operator.certificate
    )


def signing_key_of(device_id: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed(f"device:{device_id}"))
