"""Helpers for wallet and payment tests: a funded operator, evidence per class, and a snapshot of
everything a refused operation must leave untouched."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cbdc.client import Envelope, SequenceCounter, WalletKey, build_payment
from cbdc.domain.identity import IdentityEvidence
from cbdc.domain.money import yuan
from cbdc.services import issuance
from cbdc.services.context import LedgerContext, float_account_code
from cbdc.services.keys import enrol_key
from cbdc.services.payments import Settlement, settle_payment
from cbdc.services.wallets import Wallet, open_wallet
from cbdc.storage.tables import (
    accounts,
    ledger_head,
    payment_codes,
    payment_requests,
    payments,
    wallet_identities,
    wallet_keys,
    wallets,
)


def funded_operator(
    ledger: LedgerContext, code: str = "BANK-A", float_yuan: int = 2_000_000
) -> str:
    """An operator whose float holds ``float_yuan`` of issued e-CNY."""
    issuance.create_operator(ledger, code, f"Bank {code}", quota_fen=yuan(float_yuan))
    issuance.deposit_reserve(ledger, f"{code}-reserve", code, yuan(float_yuan))
    issuance.issue(ledger, f"{code}-issue", code, yuan(float_yuan))
    return code


def evidence_for(wallet_class: int, phone: str = "+8613800000001") -> IdentityEvidence:
    return IdentityEvidence(
        phone=phone,
        id_document="110101199001011234" if wallet_class <= 3 else None,
        bank_account="6222020200112233" if wallet_class <= 2 else None,
        in_person=wallet_class == 1,
    )


def new_wallet(
    ledger: LedgerContext,
    wallet_id: str,
    wallet_class: int = 4,
    *,
    operator: str = "BANK-A",
    phone: str = "+8613800000001",
    **options: Any,
) -> Wallet:
    return open_wallet(
        ledger,
        wallet_id,
        operator_code=operator,
        evidence=evidence_for(wallet_class, phone),
        zone="shenzhen",
        wallet_class=wallet_class,
        **options,
    )


def float_balance(ledger: LedgerContext, operator: str = "BANK-A") -> int:
    with ledger.read() as connection:
        return int(
            connection.execute(
                select(accounts.c.balance_fen).where(
                    accounts.c.code == float_account_code(operator)
                )
            ).scalar_one()
        )


def snapshot(ledger: LedgerContext) -> dict[str, Any]:
    """Every row a refused operation must leave byte-identical."""
    tables = (accounts, ledger_head, wallets, wallet_identities, wallet_keys, payments,
              payment_requests, payment_codes)
    with ledger.read() as connection:
        return {
            table.name: [
                tuple(row)
                for row in connection.execute(
                    select(table).order_by(*table.primary_key.columns)
                )
            ]
            for table in tables
        }


ROOT_SEED = b"cbdc tests: wallet keys".ljust(32, b".")


class Holder:
    """A wallet's owner as a test drives it: the wallet id, an enrolled key, a sequence."""

    def __init__(self, ledger: LedgerContext, wallet_id: str, label: str | None = None) -> None:
        self.ledger = ledger
        self.wallet_id = wallet_id
        self.key = WalletKey.derive(ROOT_SEED, label or wallet_id)
        self.sequence = SequenceCounter()
        enrol_key(ledger, wallet_id, self.key.public_key_hex)

    def payment(self, payee: str, amount_fen: int, payment_id: str, **fields: Any) -> Envelope:
        options: dict[str, Any] = {
            "ledger_id": self.ledger.ledger_id,
            "sequence": self.sequence.next(),
            "created_at": self.ledger.now(),
            **fields,
        }
        return build_payment(self.key, payment_id=payment_id, payer=self.wallet_id, payee=payee,
                             amount_fen=amount_fen, **options)

    def pay(self, payee: str, amount_fen: int, payment_id: str, **fields: Any) -> Settlement:
        return settle_payment(self.ledger, self.payment(payee, amount_fen, payment_id, **fields))
