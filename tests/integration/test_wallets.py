"""Wallets on both engines: opening, evidence, funding, class changes, freezing, closing,
sub-wallets and keys. Every refusal is checked to leave the ledger byte-identical."""

from __future__ import annotations

import nacl.signing
import pytest
from sqlalchemy import text

from cbdc.domain.errors import (
    AlreadyExists,
    ClassChangeRefused,
    InsufficientFunds,
    InvalidKey,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    StatusRefused,
)
from cbdc.domain.identity import IdentityEvidence
from cbdc.domain.money import yuan
from cbdc.domain.tiers import Limits
from cbdc.services import keys, wallets
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext
from cbdc.services.funding import top_up, withdraw
from tests.wallet_helpers import (
    evidence_for,
    float_balance,
    funded_operator,
    new_wallet,
    snapshot,
)


@pytest.fixture
def bank(ledger: LedgerContext) -> str:
    return funded_operator(ledger)


def test_a_class_4_wallet_knows_a_phone_only_as_a_salted_hash(
    ledger: LedgerContext, bank: str
) -> None:
    wallet = new_wallet(ledger, "w-alice", phone="+86 138-0000-0001")
    assert (wallet.wallet_class, wallet.status, wallet.balance_fen) == (4, "active", 0)
    assert wallet.limits.balance_fen_max == yuan(10_000)
    assert wallet.bank_account_ref is None
    dump = repr(snapshot(ledger))
    assert "13800000001" not in dump
    # The same phone in another wallet hashes differently (per-wallet salt): no linking.
    new_wallet(ledger, "w-alice-2", phone="+8613800000001")
    with ledger.read() as connection:
        hashes = connection.execute(text("SELECT phone_hash FROM wallet_identities")).scalars()
        assert len(set(hashes)) == 2


def test_opening_is_idempotent_on_the_wallet_id(ledger: LedgerContext, bank: str) -> None:
    first = new_wallet(ledger, "w-alice")
    assert new_wallet(ledger, "w-alice", phone="+86 13800000001") == first
    funded_operator(ledger, "BANK-B")
    before = snapshot(ledger)
    with pytest.raises(AlreadyExists) as other_operator:
        new_wallet(ledger, "w-alice", operator="BANK-B")
    assert other_operator.value.code == "wallet_exists"
    with pytest.raises(AlreadyExists):
        new_wallet(ledger, "w-alice", phone="+8613900000009")
    assert snapshot(ledger) == before


def test_each_class_needs_its_evidence(ledger: LedgerContext, bank: str) -> None:
    before = snapshot(ledger)
    for wallet_class, evidence in (
        (3, IdentityEvidence("+8613800000001")),
        (2, evidence_for(3)),
        (1, evidence_for(2)),
    ):
        with pytest.raises(InvalidRequest) as missing:
            wallets.open_wallet(ledger, "w-x", operator_code=bank, evidence=evidence,
                                zone="shenzhen", wallet_class=wallet_class)
        assert missing.value.code == "identity_evidence_missing"
    with pytest.raises(InvalidRequest) as bad_phone:
        wallets.open_wallet(ledger, "w-x", operator_code=bank,
                            evidence=IdentityEvidence("call me"), zone="shenzhen")
    assert bad_phone.value.code == "identity_evidence_invalid"
    with pytest.raises(InvalidRequest) as no_link:
        new_wallet(ledger, "w-x", 3, reverse_waterfall=True)
    assert no_link.value.code == "reverse_waterfall_unavailable"
    with pytest.raises(InvalidRequest) as personal_merchant:
        new_wallet(ledger, "w-x", 4, merchant_category_code="5812")
    assert personal_merchant.value.code == "merchant_category_code_invalid"
    with pytest.raises(NotFound):
        new_wallet(ledger, "w-x", operator="NO-SUCH-BANK")
    assert snapshot(ledger) == before
    class_1 = new_wallet(ledger, "w-one", 1)
    assert class_1.bank_account_ref is not None
    assert class_1.bank_account_ref.startswith("ba:")
    assert "6222020200112233" not in repr(snapshot(ledger))


def test_top_up_and_withdrawal_move_money_between_float_and_wallet(
    ledger: LedgerContext, bank: str
) -> None:
    new_wallet(ledger, "w-alice")
    float_before = float_balance(ledger)
    top_up(ledger, "t-1", "w-alice", yuan(800))
    withdraw(ledger, "d-1", "w-alice", yuan(300))
    assert wallets.get_wallet(ledger, "w-alice").balance_fen == yuan(500)
    assert float_balance(ledger) == float_before - yuan(500)
    # A repeat returns the first result; it moves nothing again.
    assert top_up(ledger, "t-1", "w-alice", yuan(800)).replayed
    assert wallets.get_wallet(ledger, "w-alice").balance_fen == yuan(500)
    before = snapshot(ledger)
    with pytest.raises(InsufficientFunds):
        withdraw(ledger, "d-2", "w-alice", yuan(501))
    with pytest.raises(LimitExceeded) as over_cap:
        top_up(ledger, "t-2", "w-alice", yuan(9_500) + 1)
    assert over_cap.value.code == "balance_limit_exceeded"
    assert snapshot(ledger) == before
    top_up(ledger, "t-3", "w-alice", yuan(9_500))
    assert wallets.get_wallet(ledger, "w-alice").balance_fen == yuan(10_000)
    assert run_audit(ledger).ok


def test_frozen_and_closed_wallets_refuse_money(ledger: LedgerContext, bank: str) -> None:
    new_wallet(ledger, "w-alice")
    top_up(ledger, "t-1", "w-alice", yuan(100))
    assert wallets.freeze(ledger, "w-alice").status == "frozen"
    before = snapshot(ledger)
    with pytest.raises(StatusRefused) as frozen:
        top_up(ledger, "t-2", "w-alice", yuan(1))
    assert frozen.value.code == "wallet_frozen"
    with pytest.raises(StatusRefused):
        withdraw(ledger, "d-1", "w-alice", yuan(1))
    assert snapshot(ledger) == before
    wallets.unfreeze(ledger, "w-alice")
    with pytest.raises(StatusRefused) as not_empty:
        wallets.close_wallet(ledger, "w-alice")
    assert not_empty.value.code == "wallet_not_empty"
    withdraw(ledger, "d-1", "w-alice", yuan(100))
    closed = wallets.close_wallet(ledger, "w-alice")
    assert closed.status == "closed"
    assert wallets.close_wallet(ledger, "w-alice") == closed
    with pytest.raises(StatusRefused) as after_close:
        top_up(ledger, "t-3", "w-alice", yuan(1))
    assert after_close.value.code == "wallet_closed"
    with pytest.raises(StatusRefused):
        wallets.unfreeze(ledger, "w-alice")


def test_upgrade_then_refused_downgrade_then_downgrade(ledger: LedgerContext, bank: str) -> None:
    new_wallet(ledger, "w-alice")
    before = snapshot(ledger)
    with pytest.raises(InvalidRequest) as no_evidence:
        wallets.change_class(ledger, "w-alice", 2)
    assert no_evidence.value.code == "identity_evidence_missing"
    with pytest.raises(InvalidRequest) as other_phone:
        wallets.change_class(ledger, "w-alice", 2, evidence=evidence_for(2, "+8613999999999"))
    assert other_phone.value.code == "identity_evidence_mismatch"
    assert snapshot(ledger) == before

    upgraded = wallets.change_class(ledger, "w-alice", 2, evidence=evidence_for(2),
                                    reverse_waterfall=True)
    assert (upgraded.wallet_class, upgraded.reverse_waterfall) == (2, True)
    assert upgraded.bank_account_ref is not None
    assert upgraded.limits.balance_fen_max == yuan(500_000)
    top_up(ledger, "t-1", "w-alice", yuan(15_000))

    before = snapshot(ledger)
    with pytest.raises(ClassChangeRefused) as too_rich:
        wallets.change_class(ledger, "w-alice", 4)
    assert too_rich.value.extra["limit"] == "balance_limit_exceeded"
    assert snapshot(ledger) == before

    withdraw(ledger, "d-1", "w-alice", yuan(6_000))
    downgraded = wallets.change_class(ledger, "w-alice", 3, reverse_waterfall=False)
    assert (downgraded.wallet_class, downgraded.bank_account_ref) == (3, None)
    # The evidence stays on record: upgrading again needs nothing new.
    assert wallets.change_class(ledger, "w-alice", 2).bank_account_ref == upgraded.bank_account_ref


def test_sub_wallet_caps_and_sweep_back_to_the_parent(ledger: LedgerContext, bank: str) -> None:
    new_wallet(ledger, "w-shop", 2, holder_kind="corporate", merchant_category_code="5812")
    top_up(ledger, "t-1", "w-shop", yuan(1_000))
    before = snapshot(ledger)
    with pytest.raises(InvalidRequest) as too_loose:
        wallets.authorise_sub_wallet(ledger, "w-shop", "w-till",
                                     Limits(yuan(600_000), None, None, None))
    assert too_loose.value.code == "sub_wallet_caps_invalid"
    assert snapshot(ledger) == before

    caps = Limits(yuan(2_000), yuan(500), yuan(1_000), yuan(50_000))
    till = wallets.authorise_sub_wallet(ledger, "w-shop", "w-till", caps)
    assert (till.parent_wallet_id, till.wallet_class, till.merchant_category_code) == (
        "w-shop", 2, "5812"
    )
    assert till.limits == caps
    assert wallets.authorise_sub_wallet(ledger, "w-shop", "w-till", caps) == till
    with pytest.raises(InvalidRequest) as nested:
        wallets.authorise_sub_wallet(ledger, "w-till", "w-till-2", caps)
    assert nested.value.code == "sub_wallet_nesting"
    with pytest.raises(LimitExceeded):
        top_up(ledger, "t-2", "w-till", yuan(2_000) + 1)
    top_up(ledger, "t-3", "w-till", yuan(1_200))

    with pytest.raises(StatusRefused) as has_subs:
        wallets.close_wallet(ledger, "w-shop")
    assert has_subs.value.code == "wallet_has_sub_wallets"
    closed = wallets.close_sub_wallet(ledger, "sweep-1", "w-shop", "w-till")
    assert closed.wallet.status == "closed"
    assert closed.swept is not None
    assert closed.swept.kind == "sub_wallet_sweep"
    assert wallets.get_wallet(ledger, "w-shop").balance_fen == yuan(2_200)
    again = wallets.close_sub_wallet(ledger, "sweep-1", "w-shop", "w-till")
    assert again.swept is not None
    assert again.swept.seq == closed.swept.seq
    assert run_audit(ledger).ok


def test_a_downgrade_counts_the_sub_wallets_too(ledger: LedgerContext, bank: str) -> None:
    new_wallet(ledger, "w-shop", 2, holder_kind="corporate")
    wallets.authorise_sub_wallet(
        ledger, "w-shop", "w-till", Limits(yuan(500_000), yuan(50_000), yuan(100_000), None)
    )
    top_up(ledger, "t-1", "w-till", yuan(25_000))
    with pytest.raises(ClassChangeRefused):
        wallets.change_class(ledger, "w-shop", 3)
    withdraw(ledger, "d-1", "w-till", yuan(10_000))
    wallets.change_class(ledger, "w-shop", 3)
    till = wallets.get_wallet(ledger, "w-till")
    assert (till.wallet_class, till.limits.balance_fen_max) == (3, yuan(20_000))


def test_a_closed_sub_wallet_keeps_its_class(ledger: LedgerContext, bank: str) -> None:
    """Closed is final: the shop's later downgrade moves its open till, not the closed one."""
    new_wallet(ledger, "w-shop", 2, holder_kind="corporate")
    caps = Limits(yuan(2_000), yuan(500), yuan(1_000), None)
    wallets.authorise_sub_wallet(ledger, "w-shop", "w-till-1", caps)
    wallets.authorise_sub_wallet(ledger, "w-shop", "w-till-2", caps)
    wallets.close_sub_wallet(ledger, "sweep-1", "w-shop", "w-till-1")
    wallets.change_class(ledger, "w-shop", 3)
    assert wallets.get_wallet(ledger, "w-till-2").wallet_class == 3
    closed = wallets.get_wallet(ledger, "w-till-1")
    assert (closed.status, closed.wallet_class) == ("closed", 2)


SMALL_ORDER_KEY = "01" + "00" * 31  # the identity point
NON_CANONICAL_KEY = "ee" + "ff" * 30 + "7f"  # p + 1: encodes 1 non-canonically


def test_keys_enrol_refuse_weak_keys_and_revoke(ledger: LedgerContext, bank: str) -> None:
    new_wallet(ledger, "w-alice")
    new_wallet(ledger, "w-bob", phone="+8613800000002")
    public_key = bytes(nacl.signing.SigningKey(b"\x01" * 32).verify_key).hex()
    before = snapshot(ledger)
    for weak in (SMALL_ORDER_KEY, NON_CANONICAL_KEY, public_key.upper(), public_key[:62]):
        with pytest.raises(InvalidKey):
            keys.enrol_key(ledger, "w-alice", weak)
    assert snapshot(ledger) == before

    key = keys.enrol_key(ledger, "w-alice", public_key)
    assert (key.wallet_id, key.status, key.last_sequence) == ("w-alice", "active", 0)
    assert keys.enrol_key(ledger, "w-alice", public_key) == key
    with pytest.raises(AlreadyExists) as elsewhere:
        keys.enrol_key(ledger, "w-bob", public_key)
    assert elsewhere.value.code == "public_key_exists"
    revoked = keys.revoke_key(ledger, public_key)
    assert revoked.status == "revoked"
    assert revoked.revoked_at == ledger.now()
    assert keys.revoke_key(ledger, public_key) == revoked
    with pytest.raises(StatusRefused) as again:
        keys.enrol_key(ledger, "w-alice", public_key)
    assert again.value.code == "public_key_revoked"
    assert keys.list_keys(ledger, "w-alice") == [revoked]
