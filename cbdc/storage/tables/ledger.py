"""The ledger core: institutions, accounts with cached balances, the append-only journal."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from cbdc.storage.tables.base import BigId, metadata

#: Account kinds. Only ``issuance`` (the central bank's liability for the money it has put into
#: the ledger) may go negative; the CHECK below enforces it in the database as well.
ACCOUNT_KINDS = ("issuance", "reserve", "float", "wallet", "escrow")

institutions = Table(
    "institutions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code", String(32), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("quota_fen", BigInteger, nullable=False, server_default="0"),
    Column("issued_fen", BigInteger, nullable=False, server_default="0"),
    Column("redeemed_fen", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("kind IN ('central_bank', 'operator')", name="kind"),
    CheckConstraint("quota_fen >= 0", name="quota_not_negative"),
    CheckConstraint("issued_fen >= 0", name="issued_not_negative"),
    CheckConstraint("redeemed_fen >= 0", name="redeemed_not_negative"),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code", String(96), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("institution_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("balance_fen", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "kind IN ('issuance', 'reserve', 'float', 'wallet', 'escrow')", name="kind"
    ),
    CheckConstraint("balance_fen >= 0 OR kind = 'issuance'", name="balance_not_negative"),
    Index("ix_accounts_institution_id_kind", "institution_id", "kind"),
)

journal_entries = Table(
    "journal_entries",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("entry_id", String(128), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("metadata_json", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    CheckConstraint("seq > 0", name="seq_positive"),
)

postings = Table(
    "postings",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("entry_seq", BigInteger, ForeignKey("journal_entries.seq"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    CheckConstraint("amount_fen <> 0", name="amount_not_zero"),
    Index("ix_postings_entry_seq", "entry_seq"),
    Index("ix_postings_account_id_entry_seq", "account_id", "entry_seq"),
)

#: One row: the tip of the hash chain. Writers lock it first, which serialises the chain.
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    CheckConstraint("last_seq >= 0", name="last_seq_not_negative"),
)
