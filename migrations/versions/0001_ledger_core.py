"""Ledger core: institutions, accounts, the append-only hash-chained journal.

Revision ID: 0001_ledger_core
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_ledger_core"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
APPEND_ONLY_TABLES = ("journal_entries", "postings")


def upgrade() -> None:
    op.create_table(
        "institutions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("quota_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("issued_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("redeemed_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('central_bank', 'operator')", name=op.f("ck_institutions_kind")),
        sa.CheckConstraint("quota_fen >= 0", name=op.f("ck_institutions_quota_not_negative")),
        sa.CheckConstraint("issued_fen >= 0", name=op.f("ck_institutions_issued_not_negative")),
        sa.CheckConstraint("redeemed_fen >= 0", name=op.f("ck_institutions_redeemed_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_institutions")),
        sa.UniqueConstraint("code", name=op.f("uq_institutions_code")),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(96), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("balance_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('issuance', 'reserve', 'float', 'wallet', 'escrow')",
            name=op.f("ck_accounts_kind"),
        ),
        sa.CheckConstraint(
            "balance_fen >= 0 OR kind = 'issuance'", name=op.f("ck_accounts_balance_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"], ["institutions.id"],
            name=op.f("fk_accounts_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("code", name=op.f("uq_accounts_code")),
    )
    op.create_index("ix_accounts_institution_id_kind", "accounts", ["institution_id", "kind"])
    op.create_table(
        "journal_entries",
        sa.Column("seq", BigId, autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.CheckConstraint("seq > 0", name=op.f("ck_journal_entries_seq_positive")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_journal_entries")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_journal_entries_entry_id")),
    )
    op.create_table(
        "postings",
        sa.Column("id", BigId, nullable=False),
        sa.Column("entry_seq", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_fen <> 0", name=op.f("ck_postings_amount_not_zero")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_postings_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["entry_seq"], ["journal_entries.seq"],
            name=op.f("fk_postings_entry_seq_journal_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_postings")),
    )
    op.create_index("ix_postings_entry_seq", "postings", ["entry_seq"])
    op.create_index("ix_postings_account_id_entry_seq", "postings", ["account_id", "entry_seq"])
    ledger_head = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_ledger_head_single_row")),
        sa.CheckConstraint("last_seq >= 0", name=op.f("ck_ledger_head_last_seq_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_head")),
    )
    op.bulk_insert(ledger_head, [{"id": 1, "last_seq": 0, "last_hash": "0" * 64}])
    for table in APPEND_ONLY_TABLES:
        create_append_only_guard(table)


def downgrade() -> None:
    for table in APPEND_ONLY_TABLES:
        drop_append_only_guard(table)
    op.drop_table("ledger_head")
    op.drop_index("ix_postings_account_id_entry_seq", table_name="postings")
    op.drop_index("ix_postings_entry_seq", table_name="postings")
    op.drop_table("postings")
    op.drop_table("journal_entries")
    op.drop_index("ix_accounts_institution_id_kind", table_name="accounts")
    op.drop_table("accounts")
    op.drop_table("institutions")


def create_append_only_guard(table: str) -> None:
    """History is never updated or deleted: the database itself refuses both."""
    if op.get_bind().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_append_only_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
        return
    op.execute(
        "CREATE OR REPLACE FUNCTION cbdc_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME "
        "USING ERRCODE = 'restrict_violation'; END $$"
    )
    op.execute(
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION cbdc_refuse_change()"
    )
    op.execute(
        f"CREATE TRIGGER {table}_append_only_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION cbdc_refuse_change()"
    )


def drop_append_only_guard(table: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only_{action}")
        return
    op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only_truncate ON {table}")
    if table == APPEND_ONLY_TABLES[-1]:
        op.execute("DROP FUNCTION IF EXISTS cbdc_refuse_change()")
