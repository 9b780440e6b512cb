"""Offline devices, loads, unloads, uploaded payments, settlements, operator losses, fraud cases,
revocations and published revocation lists.

Revision ID: 0003_offline
Revises: 0002_wallets_payments
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_offline"
down_revision: str | None = "0002_wallets_payments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    create_offline_devices()
    create_offline_loads()
    create_offline_unloads()
    create_offline_payments()
    create_offline_settlements()
    create_offline_operator_losses()
    create_offline_fraud_cases()
    create_offline_revocations()


def downgrade() -> None:
    op.drop_table("offline_revocations")
    op.drop_table("offline_revocation_lists")
    op.drop_index("ix_offline_fraud_cases_operator_id", table_name="offline_fraud_cases")
    op.drop_table("offline_fraud_cases")
    op.drop_index("ix_offline_operator_losses_operator_id", table_name="offline_operator_losses")
    op.drop_index("ix_offline_operator_losses_device_id", table_name="offline_operator_losses")
    op.drop_table("offline_operator_losses")
    op.drop_index("ix_offline_settlements_entry_seq", table_name="offline_settlements")
    op.drop_table("offline_settlements")
    op.drop_index("ix_offline_payments_status_uploaded_at", table_name="offline_payments")
    op.drop_index("ix_offline_payments_payer_device_id_counter", table_name="offline_payments")
    op.drop_table("offline_payments")
    op.drop_table("offline_unloads")
    op.drop_table("offline_loads")
    op.drop_index("ix_offline_devices_operator_id", table_name="offline_devices")
    op.drop_index("ix_offline_devices_wallet_id", table_name="offline_devices")
    op.drop_table("offline_devices")


def create_offline_devices() -> None:
    op.create_table(
        "offline_devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("wallet_id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("escrow_account_id", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("certificate_serial", sa.String(64), nullable=False),
        sa.Column("certificate_json", sa.Text(), nullable=False),
        sa.Column("offline_balance_fen_max", sa.BigInteger(), nullable=False),
        sa.Column("offline_payment_fen_max", sa.BigInteger(), nullable=False),
        sa.Column("offline_payments_max", sa.Integer(), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("load_counter", sa.Integer(), server_default="0", nullable=False),
        sa.Column("unload_counter", sa.Integer(), server_default="0", nullable=False),
        sa.Column("closed_counter", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("synced_counter", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("revocation_number", sa.Integer(), server_default="0", nullable=False),
        sa.Column("loaded_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("settled_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("unloaded_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("operator_paid_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'revoked')", name=op.f("ck_offline_devices_status")
        ),
        sa.CheckConstraint(
            "(status = 'active' AND revoked_at IS NULL)"
            " OR (status = 'revoked' AND revoked_at IS NOT NULL)",
            name=op.f("ck_offline_devices_revoked_at_when_revoked"),
        ),
        sa.CheckConstraint(
            "offline_payment_fen_max > 0 AND offline_payment_fen_max <= offline_balance_fen_max"
            " AND offline_payments_max > 0",
            name=op.f("ck_offline_devices_caps_valid"),
        ),
        sa.CheckConstraint(
            "load_counter >= 0 AND unload_counter >= 0 AND closed_counter >= 0"
            " AND synced_counter >= 0 AND revocation_number >= 0",
            name=op.f("ck_offline_devices_counters_not_negative"),
        ),
        sa.CheckConstraint(
            "loaded_fen >= 0 AND settled_fen >= 0 AND unloaded_fen >= 0"
            " AND operator_paid_fen >= 0",
            name=op.f("ck_offline_devices_totals_not_negative"),
        ),
        sa.CheckConstraint(
            "settled_fen + unloaded_fen <= loaded_fen",
            name=op.f("ck_offline_devices_escrow_not_overdrawn"),
        ),
        sa.ForeignKeyConstraint(
            ["escrow_account_id"], ["accounts.id"],
            name=op.f("fk_offline_devices_escrow_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["institutions.id"],
            name=op.f("fk_offline_devices_operator_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_offline_devices_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_devices")),
        sa.UniqueConstraint(
            "certificate_serial", name=op.f("uq_offline_devices_certificate_serial")
        ),
        sa.UniqueConstraint("device_id", name=op.f("uq_offline_devices_device_id")),
        sa.UniqueConstraint(
            "escrow_account_id", name=op.f("uq_offline_devices_escrow_account_id")
        ),
        sa.UniqueConstraint("public_key", name=op.f("uq_offline_devices_public_key")),
    )
    op.create_index("ix_offline_devices_wallet_id", "offline_devices", ["wallet_id"])
    op.create_index("ix_offline_devices_operator_id", "offline_devices", ["operator_id"])


def create_offline_loads() -> None:
    op.create_table(
        "offline_loads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("load_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("load_counter", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("entry_seq", sa.BigInteger(), nullable=False),
        sa.Column("receipt_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_offline_loads_amount_positive")),
        sa.CheckConstraint(
            "load_counter > 0", name=op.f("ck_offline_loads_load_counter_positive")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["offline_devices.id"],
            name=op.f("fk_offline_loads_device_id_offline_devices"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_seq"], ["journal_entries.seq"],
            name=op.f("fk_offline_loads_entry_seq_journal_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_loads")),
        sa.UniqueConstraint(
            "device_id", "load_counter", name=op.f("uq_offline_loads_device_id_load_counter")
        ),
        sa.UniqueConstraint("entry_seq", name=op.f("uq_offline_loads_entry_seq")),
        sa.UniqueConstraint("load_id", name=op.f("uq_offline_loads_load_id")),
    )


def create_offline_unloads() -> None:
    op.create_table(
        "offline_unloads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("unload_counter", sa.Integer(), nullable=False),
        sa.Column("statement_hash", sa.String(64), nullable=False),
        sa.Column("statement_json", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("closed_counter", sa.BigInteger(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("returned_fen", sa.BigInteger(), nullable=False),
        sa.Column("swept_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("entry_seq", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "unload_counter > 0", name=op.f("ck_offline_unloads_unload_counter_positive")
        ),
        sa.CheckConstraint(
            "returned_fen >= 0 AND returned_fen <= amount_fen",
            name=op.f("ck_offline_unloads_returned_within_amount"),
        ),
        sa.CheckConstraint(
            "swept_fen >= 0 AND swept_fen <= returned_fen",
            name=op.f("ck_offline_unloads_swept_within_returned"),
        ),
        sa.CheckConstraint(
            "(returned_fen = 0) = (entry_seq IS NULL)",
            name=op.f("ck_offline_unloads_entry_when_returned"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["offline_devices.id"],
            name=op.f("fk_offline_unloads_device_id_offline_devices"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_seq"], ["journal_entries.seq"],
            name=op.f("fk_offline_unloads_entry_seq_journal_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_unloads")),
        sa.UniqueConstraint(
            "device_id", "unload_counter",
            name=op.f("uq_offline_unloads_device_id_unload_counter"),
        ),
        sa.UniqueConstraint("entry_seq", name=op.f("uq_offline_unloads_entry_seq")),
        sa.UniqueConstraint("statement_hash", name=op.f("uq_offline_unloads_statement_hash")),
    )


def create_offline_payments() -> None:
    op.create_table(
        "offline_payments",
        sa.Column("id", BigId, nullable=False),
        sa.Column("payment_hash", sa.String(64), nullable=False),
        sa.Column("payer_device_id", sa.Integer(), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("payee_device", sa.String(64), nullable=False),
        sa.Column("payee_wallet", sa.String(64), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_json", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("uploaded_by_device_id", sa.Integer(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'settled', 'operator_paid', 'unpaid')",
            name=op.f("ck_offline_payments_status"),
        ),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_offline_payments_amount_positive")),
        sa.CheckConstraint("counter > 0", name=op.f("ck_offline_payments_counter_positive")),
        sa.ForeignKeyConstraint(
            ["payer_device_id"], ["offline_devices.id"],
            name=op.f("fk_offline_payments_payer_device_id_offline_devices"),
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by_device_id"], ["offline_devices.id"],
            name=op.f("fk_offline_payments_uploaded_by_device_id_offline_devices"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_payments")),
        sa.UniqueConstraint("payment_hash", name=op.f("uq_offline_payments_payment_hash")),
    )
    op.create_index(
        "ix_offline_payments_payer_device_id_counter", "offline_payments",
        ["payer_device_id", "counter"],
    )
    op.create_index(
        "ix_offline_payments_status_uploaded_at", "offline_payments", ["status", "uploaded_at"]
    )


def create_offline_settlements() -> None:
    op.create_table(
        "offline_settlements",
        sa.Column("id", BigId, nullable=False),
        sa.Column("payment_id", sa.BigInteger(), nullable=False),
        sa.Column("payer_device_id", sa.Integer(), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("payee_wallet_id", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("swept_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("entry_seq", sa.BigInteger(), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "amount_fen > 0", name=op.f("ck_offline_settlements_amount_positive")
        ),
        sa.CheckConstraint(
            "swept_fen >= 0 AND swept_fen <= amount_fen",
            name=op.f("ck_offline_settlements_swept_within_amount"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_seq"], ["journal_entries.seq"],
            name=op.f("fk_offline_settlements_entry_seq_journal_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["payee_wallet_id"], ["wallets.id"],
            name=op.f("fk_offline_settlements_payee_wallet_id_wallets"),
        ),
        sa.ForeignKeyConstraint(
            ["payer_device_id"], ["offline_devices.id"],
            name=op.f("fk_offline_settlements_payer_device_id_offline_devices"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["offline_payments.id"],
            name=op.f("fk_offline_settlements_payment_id_offline_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_settlements")),
        sa.UniqueConstraint(
            "payer_device_id", "counter",
            name=op.f("uq_offline_settlements_payer_device_id_counter"),
        ),
        sa.UniqueConstraint("payment_id", name=op.f("uq_offline_settlements_payment_id")),
    )
    op.create_index(
        "ix_offline_settlements_entry_seq", "offline_settlements", ["entry_seq"]
    )


def create_offline_operator_losses() -> None:
    op.create_table(
        "offline_operator_losses",
        sa.Column("id", BigId, nullable=False),
        sa.Column("payment_id", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("payee_wallet_id", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("swept_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("codes", sa.String(200), nullable=False),
        sa.Column("entry_seq", sa.BigInteger(), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "amount_fen > 0", name=op.f("ck_offline_operator_losses_amount_positive")
        ),
        sa.CheckConstraint(
            "swept_fen >= 0 AND swept_fen <= amount_fen",
            name=op.f("ck_offline_operator_losses_swept_within_amount"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["offline_devices.id"],
            name=op.f("fk_offline_operator_losses_device_id_offline_devices"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_seq"], ["journal_entries.seq"],
            name=op.f("fk_offline_operator_losses_entry_seq_journal_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["institutions.id"],
            name=op.f("fk_offline_operator_losses_operator_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["payee_wallet_id"], ["wallets.id"],
            name=op.f("fk_offline_operator_losses_payee_wallet_id_wallets"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["offline_payments.id"],
            name=op.f("fk_offline_operator_losses_payment_id_offline_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_operator_losses")),
        sa.UniqueConstraint("entry_seq", name=op.f("uq_offline_operator_losses_entry_seq")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_offline_operator_losses_payment_id")),
    )
    op.create_index(
        "ix_offline_operator_losses_device_id", "offline_operator_losses", ["device_id"]
    )
    op.create_index(
        "ix_offline_operator_losses_operator_id", "offline_operator_losses", ["operator_id"]
    )


def create_offline_fraud_cases() -> None:
    op.create_table(
        "offline_fraud_cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("wallet_id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("counters_json", sa.Text(), nullable=False),
        sa.Column("payment_hashes_json", sa.Text(), nullable=False),
        sa.Column("payments_count", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "code IN ('offline_forged', 'certificate_expired', 'certificate_revoked',"
            " 'offline_cap_exceeded', 'offline_double_spend', 'offline_after_unload',"
            " 'offline_overspend')",
            name=op.f("ck_offline_fraud_cases_code"),
        ),
        sa.CheckConstraint(
            "amount_fen >= 0 AND payments_count >= 0",
            name=op.f("ck_offline_fraud_cases_amounts_not_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["offline_devices.id"],
            name=op.f("fk_offline_fraud_cases_device_id_offline_devices"),
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["institutions.id"],
            name=op.f("fk_offline_fraud_cases_operator_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_offline_fraud_cases_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_fraud_cases")),
        sa.UniqueConstraint(
            "device_id", "code", name=op.f("uq_offline_fraud_cases_device_id_code")
        ),
    )
    op.create_index(
        "ix_offline_fraud_cases_operator_id", "offline_fraud_cases", ["operator_id"]
    )


def create_offline_revocations() -> None:
    op.create_table(
        "offline_revocation_lists",
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("envelope_json", sa.Text(), nullable=False),
        sa.CheckConstraint("number > 0", name=op.f("ck_offline_revocation_lists_number_positive")),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_offline_revocation_lists")),
    )
    op.create_table(
        "offline_revocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("list_number", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["offline_devices.id"],
            name=op.f("fk_offline_revocations_device_id_offline_devices"),
        ),
        sa.ForeignKeyConstraint(
            ["list_number"], ["offline_revocation_lists.number"],
            name=op.f("fk_offline_revocations_list_number_offline_revocation_lists"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_revocations")),
        sa.UniqueConstraint("device_id", name=op.f("uq_offline_revocations_device_id")),
        sa.UniqueConstraint("serial", name=op.f("uq_offline_revocations_serial")),
    )
