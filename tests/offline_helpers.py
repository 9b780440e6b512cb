"""Driving offline devices against a real ledger: wallets funded at an operator, devices
provisioned by the ledger's services, loads, offline payments and uploads, from fixed seeds."""

from __future__ import annotations

import hashlib
import itertools
from datetime import timedelta
from typing import Any

import nacl.signing
from sqlalchemy import func, select

from cbdc.domain.money import yuan
from cbdc.offline import DeviceCertificate, OperatorCertificate, SecureElement
from cbdc.offline.messages import OFFLINE_PAYMENT, format_time, seal
from cbdc.offline.verification import payment_envelope
from cbdc.services import offline
from cbdc.services.context import LedgerContext
from cbdc.services.funding import top_up
from cbdc.services.wallets import get_wallet
from cbdc.storage.tables import (
    accounts,
    institutions,
    offline_operator_losses,
    offline_payments,
    offline_settlements,
)
from tests.wallet_helpers import funded_operator, new_wallet


def device_seed(device_id: str) -> bytes:
    return hashlib.sha256(f"cbdc test device:{device_id}".encode()).digest()


class OfflineLedger:
    """The ledger with its operator, wallets and devices, as a test drives them."""

    def __init__(self, ledger: LedgerContext, operator: str = "BANK-A") -> None:
        self.ledger = ledger
        self.operator = funded_operator(ledger, operator)
        self.devices: dict[str, SecureElement] = {}
        self.wallet_of: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._phones = itertools.count(1)

    def wallet(self, wallet_id: str, *, wallet_class: int = 2, funds_yuan: int = 2_000) -> str:
        new_wallet(self.ledger, wallet_id, wallet_class, operator=self.operator,
                   phone=f"+86138{next(self._phones):08d}")
        if funds_yuan:
            top_up(self.ledger, f"fund-{wallet_id}", wallet_id, yuan(funds_yuan))
        return wallet_id

    def device(self, device_id: str, wallet_id: str, **options: Any) -> SecureElement:
        element = SecureElement(seed=device_seed(device_id), ledger_id=self.ledger.ledger_id,
                                root_public_key=offline.root_public_key(self.ledger))
        issued = offline.provision_device(self.ledger, device_id, wallet_id,
                                          element.public_key.hex(), **options)
        element.install_certificate(DeviceCertificate.from_envelope(issued.certificate),
                                    OperatorCertificate.from_envelope(issued.operator_certificate),
                                    self.ledger.now())
        self.devices[device_id] = element
        self.wallet_of[device_id] = wallet_id
        return element

    def card_and_till(
        self, customer: str, merchant: str, load_fen: int
    ) -> tuple[SecureElement, SecureElement]:
        """A customer's card loaded with ``load_fen`` and a merchant's till, each on a wallet of
        its own (``w-<name>``; the merchant's starts empty)."""
        self.wallet(f"w-{customer}")
        self.wallet(f"w-{merchant}", funds_yuan=0)
        card = self.device(f"{customer}-card", f"w-{customer}")
        till = self.device(f"{merchant}-till", f"w-{merchant}")
        self.load(card, load_fen)
        return card, till

    def load(self, element: SecureElement, amount_fen: int) -> dict[str, Any]:
        receipt = offline.load_device(self.ledger, f"load-{next(self._ids)}",
                                      element.device_id, amount_fen)
        element.apply_load(receipt)
        return receipt

    def pay(self, payer: SecureElement, payee: SecureElement, amount_fen: int) -> dict[str, Any]:
        """An offline payment, accepted by the payee's device."""
        envelope = payer.pay(payee.device_id, self.wallet_of[payee.device_id], amount_fen,
                             self.ledger.now())
        payee.receive(envelope, self.ledger.now())
        return envelope

    def holdings(self, element: SecureElement) -> list[dict[str, Any]]:
        return [*element.payments_made(),
                *(payment.to_envelope() for payment in element.payments_received())]

    def upload(
        self, element: SecureElement, envelopes: list[dict[str, Any]] | None = None
    ) -> offline.UploadReport:
        """The device goes online: it uploads (by default all it holds), applies the sync
        receipt and installs the revocation list it is handed."""
        report = offline.upload_offline_payments(
            self.ledger, self.holdings(element) if envelopes is None else envelopes,
            uploaded_by_device_id=element.device_id,
        )
        element.sync_done(report.sync_receipt)
        if report.revocation_list is not None:
            element.install_revocation_list(report.revocation_list)
        return report

    def balance(self, wallet_id: str) -> int:
        return get_wallet(self.ledger, wallet_id).balance_fen

    def escrow(self, device_id: str) -> int:
        return self.account_balance(f"escrow:{device_id}")

    def account_balance(self, code: str) -> int:
        with self.ledger.read() as connection:
            return int(connection.execute(
                select(accounts.c.balance_fen).where(accounts.c.code == code)
            ).scalar_one())

    def times_paid(self, payment_hash: str) -> int:
        """How many times the ledger paid this payment (escrow and operator together)."""
        total = 0
        with self.ledger.read() as connection:
            for table in (offline_settlements, offline_operator_losses):
                total += int(connection.execute(
                    select(func.count()).select_from(table)
                    .join(offline_payments, offline_payments.c.id == table.c.payment_id)
                    .where(offline_payments.c.payment_hash == payment_hash)
                ).scalar_one())
        return total

    def tick(self, minutes: int = 1) -> None:
        self.ledger.clock.advance(timedelta(minutes=minutes))  # type: ignore[attr-defined]


def signed_outside(
    ledger: LedgerContext, element: SecureElement, **fields: Any
) -> dict[str, Any]:
    """A payment signed with the device's extracted key outside its secure element (a rogue
    firmware): the device's next payment by default, ``fields`` overriding any field."""
    state = element.state()
    certificate = element.certificate
    assert certificate is not None
    message: dict[str, Any] = {
        "version": 1, "domain": OFFLINE_PAYMENT, "ledger_id": ledger.ledger_id,
        "payer_device": certificate.device_id, "payer_wallet": certificate.wallet,
        "counter": state.counter + 1, "load_counter": state.load_counter,
        "payments_since_sync": state.payments_since_sync + 1,
        "payee_device": "shop", "payee_wallet": "w-shop", "amount_fen": 100,
        "currency": "CNY", "created_at": format_time(ledger.now()),
        "prev_hash": state.last_payment_hash,
    }
    message.update(fields)
    key = nacl.signing.SigningKey(device_seed(certificate.device_id))
    sealed = seal(key, OFFLINE_PAYMENT, message)
    travelling = element.payments_made()
    operator = OperatorCertificate.from_envelope(
        travelling[0]["operator_certificate"] if travelling
        else offline.operator_authority(ledger, "BANK-A", _registered(ledger)).certificate
        .to_envelope()
    )
    return payment_envelope(sealed["message"], bytes.fromhex(sealed["signature"]), certificate,
                            operator)


def _registered(ledger: LedgerContext) -> Any:
    with ledger.read() as connection:
        return connection.execute(
            select(institutions.c.created_at).where(institutions.c.code == "BANK-A")
        ).scalar_one()
