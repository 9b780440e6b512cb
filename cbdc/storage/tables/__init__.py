"""All tables, registered on one MetaData. Alembic's autogenerate compares migrations to this."""

from cbdc.storage.tables.api import API_KEY_ROLES, IDEMPOTENCY_STATES, api_keys, idempotency_keys
from cbdc.storage.tables.base import metadata
from cbdc.storage.tables.ledger import (
    ACCOUNT_KINDS,
    accounts,
    institutions,
    journal_entries,
    ledger_head,
    postings,
)
from cbdc.storage.tables.wallets import (
    HOLDER_KINDS,
    KEY_STATUSES,
    PAYMENT_KINDS,
    WALLET_STATUSES,
    payment_codes,
    payment_requests,
    payments,
    wallet_identities,
    wallet_keys,
    wallets,
)

__all__ = [
    "ACCOUNT_KINDS",
    "API_KEY_ROLES",
    "HOLDER_KINDS",
    "IDEMPOTENCY_STATES",
    "KEY_STATUSES",
    "PAYMENT_KINDS",
    "WALLET_STATUSES",
    "accounts",
    "api_keys",
    "idempotency_keys",
    "institutions",
    "journal_entries",
    "ledger_head",
    "metadata",
    "payment_codes",
    "payment_requests",
    "payments",
    "postings",
    "wallet_identities",
    "wallet_keys",
    "wallets",
]
