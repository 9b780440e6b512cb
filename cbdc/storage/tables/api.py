"""Tables of the HTTP API: institutions' API keys (hashes only) and idempotency records.

An API key is shown once, when it is created; the database keeps its sha256 and a short prefix
for display, so a leaked database does not leak usable keys. An idempotency record is the unique
row (institution, key) written in the same transaction as the effect it protects, never a cache.
"""

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from cbdc.storage.tables.base import BigId, metadata

API_KEY_ROLES = ("central_bank", "operator")
IDEMPOTENCY_STATES = ("in_flight", "done")

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("institution_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("role IN ('central_bank', 'operator')", name="role"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("institution_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    # Bumped when a stale in-flight claim is taken over, so the first claimant cannot finish.
    Column("attempt", Integer, nullable=False, server_default="1"),
    Column("response_status", Integer, nullable=True),
    Column("response_body", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("institution_id", "key", name="uq_idempotency_keys_institution_id_key"),
    CheckConstraint("state IN ('in_flight', 'done')", name="state"),
    CheckConstraint(
        "(state = 'done') = (response_status IS NOT NULL AND response_body IS NOT NULL)",
        name="done_has_response",
    ),
)
