"""Offline devices and the settlement of their payments (issue 4, the ledger's side).

A certified device has a row here and an ``escrow`` account held at its certifying operator:
loads move value from the wallet into the escrow, unloads move the unspent rest back, settled
offline payments move it to the payees. The running totals on the device row restate the escrow
(``loaded - settled - unloaded``), and a CHECK keeps them from promising more than was loaded.

Every distinct authentic payment uploaded is kept once in ``offline_payments`` (by payment hash),
clones' conflicting branches included: that is the evidence. Settlement is split in two so each
payment is paid at most once and a device's counter is spent from its escrow at most once:

* ``offline_settlements``: paid from the payer device's escrow, UNIQUE (payer device, counter);
* ``offline_operator_losses``: paid by the certifying operator's float (the loss policy).

Both are unique on the payment. Fraud cases are one row per (device, finding code), kept up to
date as more evidence arrives; revocations are one row per device; each published revocation
list is kept as signed.
"""

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
    UniqueConstraint,
)

from cbdc.storage.tables.base import BigId, metadata

DEVICE_STATUSES = ("active", "revoked")
PAYMENT_STATUSES = ("pending", "settled", "operator_paid", "unpaid")
FRAUD_CODES = (
    "offline_forged",
    "certificate_expired",
    "certificate_revoked",
    "offline_cap_exceeded",
    "offline_double_spend",
    "offline_after_unload",
    "offline_overspend",
)

offline_devices = Table(
    "offline_devices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", String(64), nullable=False, unique=True),
    Column("wallet_id", Integer, ForeignKey("wallets.id"), nullable=False),
    Column("operator_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("escrow_account_id", Integer, ForeignKey("accounts.id"), nullable=False, unique=True),
    Column("public_key", String(64), nullable=False, unique=True),
    Column("certificate_serial", String(64), nullable=False, unique=True),
    Column("certificate_json", Text, nullable=False),
    Column("offline_balance_fen_max", BigInteger, nullable=False),
    Column("offline_payment_fen_max", BigInteger, nullable=False),
    Column("offline_payments_max", Integer, nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("load_counter", Integer, nullable=False, server_default="0"),
    Column("unload_counter", Integer, nullable=False, server_default="0"),
    # The last payment counter an accepted unload closed, and the last the device was told is
    # on the ledger (its sync receipt); the revocation list it was handed at its last sync.
    Column("closed_counter", BigInteger, nullable=False, server_default="0"),
    Column("synced_counter", BigInteger, nullable=False, server_default="0"),
    Column("revocation_number", Integer, nullable=False, server_default="0"),
    Column("loaded_fen", BigInteger, nullable=False, server_default="0"),
    Column("settled_fen", BigInteger, nullable=False, server_default="0"),
    Column("unloaded_fen", BigInteger, nullable=False, server_default="0"),
    Column("operator_paid_fen", BigInteger, nullable=False, server_default="0"),
    Column("last_sync_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("status IN ('active', 'revoked')", name="status"),
    CheckConstraint(
        "(status = 'active' AND revoked_at IS NULL)"
        " OR (status = 'revoked' AND revoked_at IS NOT NULL)",
        name="revoked_at_when_revoked",
    ),
    CheckConstraint(
        "offline_payment_fen_max > 0 AND offline_payment_fen_max <= offline_balance_fen_max"
        " AND offline_payments_max > 0",
        name="caps_valid",
    ),
    CheckConstraint(
        "load_counter >= 0 AND unload_counter >= 0 AND closed_counter >= 0"
        " AND synced_counter >= 0 AND revocation_number >= 0",
        name="counters_not_negative",
    ),
    CheckConstraint(
        "loaded_fen >= 0 AND settled_fen >= 0 AND unloaded_fen >= 0 AND operator_paid_fen >= 0",
        name="totals_not_negative",
    ),
    # Never more settled from (or returned out of) a device's escrow than was loaded into it.
    CheckConstraint("settled_fen + unloaded_fen <= loaded_fen", name="escrow_not_overdrawn"),
    Index("ix_offline_devices_wallet_id", "wallet_id"),
    Index("ix_offline_devices_operator_id", "operator_id"),
)

offline_loads = Table(
    "offline_loads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("load_id", String(64), nullable=False, unique=True),
    Column("device_id", Integer, ForeignKey("offline_devices.id"), nullable=False),
    Column("load_counter", Integer, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("entry_seq", BigInteger, ForeignKey("journal_entries.seq"), nullable=False,
           unique=True),
    Column("receipt_json", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    CheckConstraint("load_counter > 0", name="load_counter_positive"),
    UniqueConstraint("device_id", "load_counter", name="uq_offline_loads_device_id_load_counter"),
)

offline_unloads = Table(
    "offline_unloads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", Integer, ForeignKey("offline_devices.id"), nullable=False),
    Column("unload_counter", Integer, nullable=False),
    Column("statement_hash", String(64), nullable=False, unique=True),
    Column("statement_json", Text, nullable=False),
    Column("signature", String(128), nullable=False),
    Column("closed_counter", BigInteger, nullable=False),
    # What the statement returns, and what the escrow could return (less only after fraud).
    Column("amount_fen", BigInteger, nullable=False),
    Column("returned_fen", BigInteger, nullable=False),
    Column("swept_fen", BigInteger, nullable=False, server_default="0"),
    Column("entry_seq", BigInteger, ForeignKey("journal_entries.seq"), nullable=True,
           unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("unload_counter > 0", name="unload_counter_positive"),
    CheckConstraint(
        "returned_fen >= 0 AND returned_fen <= amount_fen", name="returned_within_amount"
    ),
    CheckConstraint("swept_fen >= 0 AND swept_fen <= returned_fen", name="swept_within_returned"),
    CheckConstraint("(returned_fen = 0) = (entry_seq IS NULL)", name="entry_when_returned"),
    UniqueConstraint(
        "device_id", "unload_counter", name="uq_offline_unloads_device_id_unload_counter"
    ),
)

#: Every distinct authentic offline payment the ledger has received, once, whoever uploaded it.
offline_payments = Table(
    "offline_payments",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("payment_hash", String(64), nullable=False, unique=True),
    Column("payer_device_id", Integer, ForeignKey("offline_devices.id"), nullable=False),
    Column("counter", BigInteger, nullable=False),
    Column("payee_device", String(64), nullable=False),
    Column("payee_wallet", String(64), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
    Column("message_json", Text, nullable=False),
    Column("signature", String(128), nullable=False),
    Column("uploaded_by_device_id", Integer, ForeignKey("offline_devices.id"), nullable=False),
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    # Why a payment is pending (say, the payee's balance cap) or unpaid (say, expired).
    Column("reason", String(64), nullable=True),
    CheckConstraint(
        "status IN ('pending', 'settled', 'operator_paid', 'unpaid')", name="status"
    ),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    CheckConstraint("counter > 0", name="counter_positive"),
    Index("ix_offline_payments_payer_device_id_counter", "payer_device_id", "counter"),
    Index("ix_offline_payments_status_uploaded_at", "status", "uploaded_at"),
)

#: Payments paid from the payer device's escrow: each counter of a device at most once.
offline_settlements = Table(
    "offline_settlements",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("payment_id", BigInteger, ForeignKey("offline_payments.id"), nullable=False,
           unique=True),
    Column("payer_device_id", Integer, ForeignKey("offline_devices.id"), nullable=False),
    Column("counter", BigInteger, nullable=False),
    Column("payee_wallet_id", Integer, ForeignKey("wallets.id"), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("swept_fen", BigInteger, nullable=False, server_default="0"),
    Column("entry_seq", BigInteger, ForeignKey("journal_entries.seq"), nullable=False),
    Column("settled_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    CheckConstraint("swept_fen >= 0 AND swept_fen <= amount_fen", name="swept_within_amount"),
    UniqueConstraint(
        "payer_device_id", "counter", name="uq_offline_settlements_payer_device_id_counter"
    ),
    Index("ix_offline_settlements_entry_seq", "entry_seq"),
)

#: Payments an honest payee accepted that the escrow could not cover: the operator pays.
offline_operator_losses = Table(
    "offline_operator_losses",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("payment_id", BigInteger, ForeignKey("offline_payments.id"), nullable=False,
           unique=True),
    Column("device_id", Integer, ForeignKey("offline_devices.id"), nullable=False),
    Column("operator_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("payee_wallet_id", Integer, ForeignKey("wallets.id"), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("swept_fen", BigInteger, nullable=False, server_default="0"),
    Column("codes", String(200), nullable=False),
    Column("entry_seq", BigInteger, ForeignKey("journal_entries.seq"), nullable=False,
           unique=True),
    Column("paid_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    CheckConstraint("swept_fen >= 0 AND swept_fen <= amount_fen", name="swept_within_amount"),
    Index("ix_offline_operator_losses_device_id", "device_id"),
    Index("ix_offline_operator_losses_operator_id", "operator_id"),
)

offline_fraud_cases = Table(
    "offline_fraud_cases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", Integer, ForeignKey("offline_devices.id"), nullable=False),
    Column("wallet_id", Integer, ForeignKey("wallets.id"), nullable=False),
    Column("operator_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("code", String(32), nullable=False),
    Column("counters_json", Text, nullable=False),
    Column("payment_hashes_json", Text, nullable=False),
    Column("payments_count", Integer, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("detail", Text, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "code IN ('offline_forged', 'certificate_expired', 'certificate_revoked',"
        " 'offline_cap_exceeded', 'offline_double_spend', 'offline_after_unload',"
        " 'offline_overspend')",
        name="code",
    ),
    CheckConstraint("amount_fen >= 0 AND payments_count >= 0", name="amounts_not_negative"),
    UniqueConstraint("device_id", "code", name="uq_offline_fraud_cases_device_id_code"),
    Index("ix_offline_fraud_cases_operator_id", "operator_id"),
)

#: Each revocation list as the central bank's root key signed it (numbers strictly increase).
offline_revocation_lists = Table(
    "offline_revocation_lists",
    metadata,
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("envelope_json", Text, nullable=False),
    CheckConstraint("number > 0", name="number_positive"),
)

offline_revocations = Table(
    "offline_revocations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", Integer, ForeignKey("offline_devices.id"), nullable=False, unique=True),
    Column("serial", String(64), nullable=False, unique=True),
    Column("reason", String(32), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    # The first published list that carries it (NULL until the next list is published).
    Column("list_number", Integer, ForeignKey("offline_revocation_lists.number"), nullable=True),
)
