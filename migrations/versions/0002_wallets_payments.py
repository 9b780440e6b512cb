"""Wallets, identity evidence, keys, payments, payment requests and payment codes.

Revision ID: 0002_wallets_payments
Revises: 0001_ledger_core
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_wallets_payments"
down_revision: str | None = "0001_ledger_core"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    create_wallets()
    create_wallet_identities()
    create_wallet_keys()
    create_payments()
    create_payment_requests()
    create_payment_codes()


def downgrade() -> None:
    op.drop_table("payment_codes")
    op.drop_table("payment_requests")
    op.drop_index("ix_payments_payee_wallet_id", table_name="payments")
    op.drop_index("ix_payments_payer_wallet_id", table_name="payments")
    op.drop_index("ix_payments_original_id", table_name="payments")
    op.drop_table("payments")
    op.drop_index("ix_wallet_keys_wallet_id", table_name="wallet_keys")
    op.drop_table("wallet_keys")
    op.drop_table("wallet_identities")
    op.drop_index("ix_wallets_operator_id", table_name="wallets")
    op.drop_index("ix_wallets_parent_id", table_name="wallets")
    op.drop_table("wallets")


def create_wallets() -> None:
    op.create_table(
        "wallets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("wallet_id", sa.String(64), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("holder_kind", sa.String(16), nullable=False),
        sa.Column("merchant_category_code", sa.String(4), nullable=True),
        sa.Column("wallet_class", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("cap_balance_fen", sa.BigInteger(), nullable=True),
        sa.Column("cap_payment_fen", sa.BigInteger(), nullable=True),
        sa.Column("cap_daily_outgoing_fen", sa.BigInteger(), nullable=True),
        sa.Column("cap_annual_outgoing_fen", sa.BigInteger(), nullable=True),
        sa.Column("bank_account_ref", sa.String(64), nullable=True),
        sa.Column("reverse_waterfall", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("usage_day", sa.Date(), nullable=False),
        sa.Column("spent_day_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("usage_year", sa.Integer(), nullable=False),
        sa.Column("spent_year_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "holder_kind IN ('personal', 'corporate')", name=op.f("ck_wallets_holder_kind")
        ),
        sa.CheckConstraint(
            "merchant_category_code IS NULL OR holder_kind = 'corporate'",
            name=op.f("ck_wallets_merchant_is_corporate"),
        ),
        sa.CheckConstraint("wallet_class BETWEEN 1 AND 4", name=op.f("ck_wallets_wallet_class")),
        sa.CheckConstraint(
            "status IN ('active', 'frozen', 'closed')", name=op.f("ck_wallets_status")
        ),
        sa.CheckConstraint(
            "(status = 'closed' AND closed_at IS NOT NULL)"
            " OR (status <> 'closed' AND closed_at IS NULL)",
            name=op.f("ck_wallets_closed_at_when_closed"),
        ),
        sa.CheckConstraint(
            "parent_id IS NULL OR parent_id <> id", name=op.f("ck_wallets_not_own_parent")
        ),
        sa.CheckConstraint(
            "parent_id IS NOT NULL OR (cap_balance_fen IS NULL AND cap_payment_fen IS NULL"
            " AND cap_daily_outgoing_fen IS NULL AND cap_annual_outgoing_fen IS NULL)",
            name=op.f("ck_wallets_caps_only_for_sub_wallets"),
        ),
        sa.CheckConstraint(
            "(cap_balance_fen IS NULL OR cap_balance_fen > 0)"
            " AND (cap_payment_fen IS NULL OR cap_payment_fen > 0)"
            " AND (cap_daily_outgoing_fen IS NULL OR cap_daily_outgoing_fen > 0)"
            " AND (cap_annual_outgoing_fen IS NULL OR cap_annual_outgoing_fen > 0)",
            name=op.f("ck_wallets_caps_positive"),
        ),
        sa.CheckConstraint(
            "bank_account_ref IS NULL OR wallet_class <= 2",
            name=op.f("ck_wallets_bank_account_class"),
        ),
        sa.CheckConstraint(
            "wallet_class > 2 OR parent_id IS NOT NULL OR bank_account_ref IS NOT NULL",
            name=op.f("ck_wallets_bank_account_linked"),
        ),
        sa.CheckConstraint(
            "NOT reverse_waterfall OR bank_account_ref IS NOT NULL",
            name=op.f("ck_wallets_reverse_waterfall_needs_bank_account"),
        ),
        sa.CheckConstraint("spent_day_fen >= 0", name=op.f("ck_wallets_spent_day_not_negative")),
        sa.CheckConstraint(
            "spent_year_fen >= spent_day_fen", name=op.f("ck_wallets_day_within_year")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_wallets_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["institutions.id"],
            name=op.f("fk_wallets_operator_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["wallets.id"], name=op.f("fk_wallets_parent_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallets")),
        sa.UniqueConstraint("account_id", name=op.f("uq_wallets_account_id")),
        sa.UniqueConstraint("wallet_id", name=op.f("uq_wallets_wallet_id")),
    )
    op.create_index("ix_wallets_parent_id", "wallets", ["parent_id"])
    op.create_index("ix_wallets_operator_id", "wallets", ["operator_id"])


def create_wallet_identities() -> None:
    op.create_table(
        "wallet_identities",
        sa.Column("wallet_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("phone_hash", sa.String(64), nullable=False),
        sa.Column("id_document_hash", sa.String(64), nullable=True),
        sa.Column("bank_account_hash", sa.String(64), nullable=True),
        sa.Column("verified_in_person", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("length(salt) = 32", name=op.f("ck_wallet_identities_salt_length")),
        sa.CheckConstraint(
            "length(phone_hash) = 64", name=op.f("ck_wallet_identities_phone_hash_length")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_wallet_identities_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("wallet_id", name=op.f("pk_wallet_identities")),
    )


def create_wallet_keys() -> None:
    op.create_table(
        "wallet_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("wallet_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "length(public_key) = 64", name=op.f("ck_wallet_keys_public_key_length")
        ),
        sa.CheckConstraint("status IN ('active', 'revoked')", name=op.f("ck_wallet_keys_status")),
        sa.CheckConstraint(
            "(status = 'active' AND revoked_at IS NULL)"
            " OR (status = 'revoked' AND revoked_at IS NOT NULL)",
            name=op.f("ck_wallet_keys_revoked_at_when_revoked"),
        ),
        sa.CheckConstraint(
            "last_sequence >= 0", name=op.f("ck_wallet_keys_last_sequence_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_wallet_keys_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_keys")),
        sa.UniqueConstraint("public_key", name=op.f("uq_wallet_keys_public_key")),
    )
    op.create_index("ix_wallet_keys_wallet_id", "wallet_keys", ["wallet_id"])


def create_payments() -> None:
    op.create_table(
        "payments",
        sa.Column("id", BigId, nullable=False),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payer_wallet_id", sa.Integer(), nullable=False),
        sa.Column("payee_wallet_id", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=True),
        sa.Column("message_json", sa.Text(), nullable=False),
        sa.Column("message_hash", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("entry_seq", sa.BigInteger(), nullable=False),
        sa.Column("original_id", sa.BigInteger(), nullable=True),
        sa.Column("refunded_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("topped_up_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("swept_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("receipt_json", sa.Text(), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('payment', 'capture', 'refund')", name=op.f("ck_payments_kind")
        ),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_payments_amount_positive")),
        sa.CheckConstraint(
            "payer_wallet_id <> payee_wallet_id", name=op.f("ck_payments_payer_not_payee")
        ),
        sa.CheckConstraint(
            "(kind = 'payment' AND sequence IS NOT NULL AND sequence > 0)"
            " OR (kind <> 'payment' AND sequence IS NULL)",
            name=op.f("ck_payments_sequence_for_payments"),
        ),
        sa.CheckConstraint(
            "(kind = 'refund' AND original_id IS NOT NULL)"
            " OR (kind <> 'refund' AND original_id IS NULL)",
            name=op.f("ck_payments_original_for_refunds"),
        ),
        sa.CheckConstraint(
            "refunded_fen >= 0 AND refunded_fen <= amount_fen",
            name=op.f("ck_payments_refunded_within_amount"),
        ),
        sa.CheckConstraint(
            "kind <> 'refund' OR refunded_fen = 0", name=op.f("ck_payments_refunds_not_refunded")
        ),
        sa.CheckConstraint(
            "topped_up_fen >= 0 AND topped_up_fen <= amount_fen",
            name=op.f("ck_payments_topped_up_within_amount"),
        ),
        sa.CheckConstraint(
            "swept_fen >= 0 AND swept_fen <= amount_fen",
            name=op.f("ck_payments_swept_within_amount"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_seq"], ["journal_entries.seq"],
            name=op.f("fk_payments_entry_seq_journal_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["wallet_keys.id"], name=op.f("fk_payments_key_id_wallet_keys")
        ),
        sa.ForeignKeyConstraint(
            ["original_id"], ["payments.id"], name=op.f("fk_payments_original_id_payments")
        ),
        sa.ForeignKeyConstraint(
            ["payee_wallet_id"], ["wallets.id"], name=op.f("fk_payments_payee_wallet_id_wallets")
        ),
        sa.ForeignKeyConstraint(
            ["payer_wallet_id"], ["wallets.id"], name=op.f("fk_payments_payer_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("entry_seq", name=op.f("uq_payments_entry_seq")),
        sa.UniqueConstraint("key_id", "sequence", name=op.f("uq_payments_key_id_sequence")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_payments_payment_id")),
    )
    op.create_index("ix_payments_original_id", "payments", ["original_id"])
    op.create_index("ix_payments_payer_wallet_id", "payments", ["payer_wallet_id"])
    op.create_index("ix_payments_payee_wallet_id", "payments", ["payee_wallet_id"])


def create_payment_requests() -> None:
    op.create_table(
        "payment_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("merchant_wallet_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_hash", sa.String(64), nullable=False),
        sa.Column("envelope_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("paid_payment_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_payment_requests_amount_positive")),
        sa.CheckConstraint("status IN ('open', 'paid')", name=op.f("ck_payment_requests_status")),
        sa.CheckConstraint(
            "(status = 'paid' AND paid_payment_id IS NOT NULL)"
            " OR (status = 'open' AND paid_payment_id IS NULL)",
            name=op.f("ck_payment_requests_paid_once"),
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["wallet_keys.id"], name=op.f("fk_payment_requests_key_id_wallet_keys")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_wallet_id"], ["wallets.id"],
            name=op.f("fk_payment_requests_merchant_wallet_id_wallets"),
        ),
        sa.ForeignKeyConstraint(
            ["paid_payment_id"], ["payments.id"],
            name=op.f("fk_payment_requests_paid_payment_id_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_requests")),
        sa.UniqueConstraint("paid_payment_id", name=op.f("uq_payment_requests_paid_payment_id")),
        sa.UniqueConstraint("request_id", name=op.f("uq_payment_requests_request_id")),
    )


def create_payment_codes() -> None:
    op.create_table(
        "payment_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code_id", sa.String(64), nullable=False),
        sa.Column("payer_wallet_id", sa.Integer(), nullable=False),
        sa.Column("merchant_wallet_id", sa.Integer(), nullable=True),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("max_amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_json", sa.Text(), nullable=False),
        sa.Column("message_hash", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("captured_payment_id", sa.BigInteger(), nullable=False),
        sa.Column("captured_fen", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "max_amount_fen > 0", name=op.f("ck_payment_codes_max_amount_positive")
        ),
        sa.CheckConstraint(
            "captured_fen > 0 AND captured_fen <= max_amount_fen",
            name=op.f("ck_payment_codes_captured_within_max"),
        ),
        sa.ForeignKeyConstraint(
            ["captured_payment_id"], ["payments.id"],
            name=op.f("fk_payment_codes_captured_payment_id_payments"),
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["wallet_keys.id"], name=op.f("fk_payment_codes_key_id_wallet_keys")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_wallet_id"], ["wallets.id"],
            name=op.f("fk_payment_codes_merchant_wallet_id_wallets"),
        ),
        sa.ForeignKeyConstraint(
            ["payer_wallet_id"], ["wallets.id"],
            name=op.f("fk_payment_codes_payer_wallet_id_wallets"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_codes")),
        sa.UniqueConstraint(
            "captured_payment_id", name=op.f("uq_payment_codes_captured_payment_id")
        ),
        sa.UniqueConstraint("code_id", name=op.f("uq_payment_codes_code_id")),
    )
