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

__all__ = [
    "ACCOUNT_KINDS",
    "API_KEY_ROLES",
    "IDEMPOTENCY_STATES",
    "accounts",
    "api_keys",
    "idempotency_keys",
    "institutions",
    "journal_entries",
    "ledger_head",
    "metadata",
    "postings",
]
