"""Wallets, their keys, and the settled payments, payment requests and payment codes.

The central ledger knows a wallet by its pseudonymous ``wallet_id`` and its account; the holder's
identity evidence lives in ``wallet_identities``, a table the operator owns (salted hashes only).
Limits are enforced against running counters on the wallet row (``usage_day``/``spent_day_fen``,
``usage_year``/``spent_year_fen``), updated in the transaction that posts the payment, so no check
sums history. Every invariant SQL can state is a CHECK or a unique key as well as a service check:
a payment id settles once, a ``(key, sequence)`` pair is accepted once (the replay key), a refund
total never exceeds its payment, a request is paid once and a payment code captured once.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from cbdc.storage.tables.base import BigId, metadata

WALLET_STATUSES = ("active", "frozen", "closed")
HOLDER_KINDS = ("personal", "corporate")
KEY_STATUSES = ("active", "revoked")
PAYMENT_KINDS = ("payment", "capture", "refund")

wallets = Table(
    "wallets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("wallet_id", String(64), nullable=False, unique=True),
    Column("operator_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, unique=True),
    Column("holder_kind", String(16), nullable=False),
    Column("merchant_category_code", String(4), nullable=True),
    Column("wallet_class", Integer, nullable=False),
    Column("zone", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("parent_id", Integer, ForeignKey("wallets.id"), nullable=True),
    # A sub-wallet's own caps, each at most its parent's (NULL: the class cap applies).
    Column("cap_balance_fen", BigInteger, nullable=True),
    Column("cap_payment_fen", BigInteger, nullable=True),
    Column("cap_daily_outgoing_fen", BigInteger, nullable=True),
    Column("cap_annual_outgoing_fen", BigInteger, nullable=True),
    # The operator's opaque reference to the linked bank account (never the account number).
    Column("bank_account_ref", String(64), nullable=True),
    Column("reverse_waterfall", Boolean, nullable=False, server_default=false()),
    Column("usage_day", Date, nullable=False),
    Column("spent_day_fen", BigInteger, nullable=False, server_default="0"),
    Column("usage_year", Integer, nullable=False),
    Column("spent_year_fen", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("holder_kind IN ('personal', 'corporate')", name="holder_kind"),
    CheckConstraint(
        "merchant_category_code IS NULL OR holder_kind = 'corporate'", name="merchant_is_corporate"
    ),
    CheckConstraint("wallet_class BETWEEN 1 AND 4", name="wallet_class"),
    CheckConstraint("status IN ('active', 'frozen', 'closed')", name="status"),
    CheckConstraint(
        "(status = 'closed' AND closed_at IS NOT NULL)"
        " OR (status <> 'closed' AND closed_at IS NULL)",
        name="closed_at_when_closed",
    ),
    CheckConstraint("parent_id IS NULL OR parent_id <> id", name="not_own_parent"),
    CheckConstraint(
        "parent_id IS NOT NULL OR (cap_balance_fen IS NULL AND cap_payment_fen IS NULL"
        " AND cap_daily_outgoing_fen IS NULL AND cap_annual_outgoing_fen IS NULL)",
        name="caps_only_for_sub_wallets",
    ),
    CheckConstraint(
        "(cap_balance_fen IS NULL OR cap_balance_fen > 0)"
        " AND (cap_payment_fen IS NULL OR cap_payment_fen > 0)"
        " AND (cap_daily_outgoing_fen IS NULL OR cap_daily_outgoing_fen > 0)"
        " AND (cap_annual_outgoing_fen IS NULL OR cap_annual_outgoing_fen > 0)",
        name="caps_positive",
    ),
    CheckConstraint("bank_account_ref IS NULL OR wallet_class <= 2", name="bank_account_class"),
    CheckConstraint(
        "wallet_class > 2 OR parent_id IS NOT NULL OR bank_account_ref IS NOT NULL",
        name="bank_account_linked",
    ),
    CheckConstraint(
        "NOT reverse_waterfall OR bank_account_ref IS NOT NULL",
        name="reverse_waterfall_needs_bank_account",
    ),
    CheckConstraint("spent_day_fen >= 0", name="spent_day_not_negative"),
    CheckConstraint("spent_year_fen >= spent_day_fen", name="day_within_year"),
    Index("ix_wallets_parent_id", "parent_id"),
    Index("ix_wallets_operator_id", "operator_id"),
)

#: Operator side: the evidence behind a wallet's class, as salted hashes. The central ledger's
#: services never read it on a payment; only opening and class changes consult it.
wallet_identities = Table(
    "wallet_identities",
    metadata,
    Column("wallet_id", Integer, ForeignKey("wallets.id"), primary_key=True, autoincrement=False),
    Column("salt", String(32), nullable=False),
    Column("phone_hash", String(64), nullable=False),
    Column("id_document_hash", String(64), nullable=True),
    Column("bank_account_hash", String(64), nullable=True),
    Column("verified_in_person", Boolean, nullable=False, server_default=false()),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("length(salt) = 32", name="salt_length"),
    CheckConstraint("length(phone_hash) = 64", name="phone_hash_length"),
)

wallet_keys = Table(
    "wallet_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("public_key", String(64), nullable=False, unique=True),
    Column("wallet_id", Integer, ForeignKey("wallets.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("last_sequence", BigInteger, nullable=False, server_default="0"),
    Column("enrolled_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("length(public_key) = 64", name="public_key_length"),
    CheckConstraint("status IN ('active', 'revoked')", name="status"),
    CheckConstraint(
        "(status = 'active' AND revoked_at IS NULL)"
        " OR (status = 'revoked' AND revoked_at IS NOT NULL)",
        name="revoked_at_when_revoked",
    ),
    CheckConstraint("last_sequence >= 0", name="last_sequence_not_negative"),
    Index("ix_wallet_keys_wallet_id", "wallet_id"),
)

#: Settled payments, captures and refunds. One row per settlement; refusals leave no row.
payments = Table(
    "payments",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("payment_id", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("payer_wallet_id", Integer, ForeignKey("wallets.id"), nullable=False),
    Column("payee_wallet_id", Integer, ForeignKey("wallets.id"), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("key_id", Integer, ForeignKey("wallet_keys.id"), nullable=False),
    Column("sequence", BigInteger, nullable=True),
    # The verified message as canonical JSON and its signature: with them anyone can re-check,
    # years later, that the signer authorised exactly this settlement.
    Column("message_json", Text, nullable=False),
    Column("message_hash", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("entry_seq", BigInteger, ForeignKey("journal_entries.seq"), nullable=False, unique=True),
    Column("original_id", BigInteger, ForeignKey("payments.id"), nullable=True),
    Column("refunded_fen", BigInteger, nullable=False, server_default="0"),
    Column("topped_up_fen", BigInteger, nullable=False, server_default="0"),
    Column("swept_fen", BigInteger, nullable=False, server_default="0"),
    Column("receipt_json", Text, nullable=False),
    Column("settled_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("kind IN ('payment', 'capture', 'refund')", name="kind"),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    CheckConstraint("payer_wallet_id <> payee_wallet_id", name="payer_not_payee"),
    CheckConstraint(
        "(kind = 'payment' AND sequence IS NOT NULL AND sequence > 0)"
        " OR (kind <> 'payment' AND sequence IS NULL)",
        name="sequence_for_payments",
    ),
    CheckConstraint(
        "(kind = 'refund' AND original_id IS NOT NULL)"
        " OR (kind <> 'refund' AND original_id IS NULL)",
        name="original_for_refunds",
    ),
    CheckConstraint(
        "refunded_fen >= 0 AND refunded_fen <= amount_fen", name="refunded_within_amount"
    ),
    CheckConstraint("kind <> 'refund' OR refunded_fen = 0", name="refunds_not_refunded"),
    CheckConstraint(
        "topped_up_fen >= 0 AND topped_up_fen <= amount_fen", name="topped_up_within_amount"
    ),
    CheckConstraint("swept_fen >= 0 AND swept_fen <= amount_fen", name="swept_within_amount"),
    # The replay key: a signing key's sequence number is accepted once, forever.
    UniqueConstraint("key_id", "sequence", name="uq_payments_key_id_sequence"),
    Index("ix_payments_original_id", "original_id"),
    Index("ix_payments_payer_wallet_id", "payer_wallet_id"),
    Index("ix_payments_payee_wallet_id", "payee_wallet_id"),
)

#: Merchant-presented payment requests (QR codes). Paid at most once, never after expiry.
payment_requests = Table(
    "payment_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("merchant_wallet_id", Integer, ForeignKey("wallets.id"), nullable=False),
    Column("key_id", Integer, ForeignKey("wallet_keys.id"), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("reference", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("message_hash", String(64), nullable=False),
    Column("envelope_json", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("paid_payment_id", BigInteger, ForeignKey("payments.id"), nullable=True, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    CheckConstraint("status IN ('open', 'paid')", name="status"),
    CheckConstraint(
        "(status = 'paid' AND paid_payment_id IS NOT NULL)"
        " OR (status = 'open' AND paid_payment_id IS NULL)",
        name="paid_once",
    ),
)

#: Customer-presented payment codes, recorded when a merchant captures one (once, by code id).
payment_codes = Table(
    "payment_codes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code_id", String(64), nullable=False, unique=True),
    Column("payer_wallet_id", Integer, ForeignKey("wallets.id"), nullable=False),
    Column("merchant_wallet_id", Integer, ForeignKey("wallets.id"), nullable=True),
    Column("key_id", Integer, ForeignKey("wallet_keys.id"), nullable=False),
    Column("max_amount_fen", BigInteger, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("message_json", Text, nullable=False),
    Column("message_hash", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("captured_payment_id", BigInteger, ForeignKey("payments.id"), nullable=False,
           unique=True),
    Column("captured_fen", BigInteger, nullable=False),
    CheckConstraint("max_amount_fen > 0", name="max_amount_positive"),
    CheckConstraint(
        "captured_fen > 0 AND captured_fen <= max_amount_fen", name="captured_within_max"
    ),
)
