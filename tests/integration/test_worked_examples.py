"""Worked examples: the two-tier books of a small pilot, step by step, on SQLite and PostgreSQL.

The central bank authorises two banks, they deposit reserves, 1,000,000 CNY of e-CNY is issued
to them, part is redeemed, and after every step each account (the central bank's issuance
account, each bank's reserve and float), the supply report and the audit are checked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from cbdc.clock import ManualClock
from cbdc.domain.errors import EntryConflict, InsufficientFunds, QuotaExceeded
from cbdc.domain.money import format_yuan, yuan
from cbdc.services import issuance
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext
from cbdc.services.reconcile import supply_report
from cbdc.storage.tables import accounts


def books(ledger: LedgerContext) -> dict[str, int]:
    """Every account and its balance in fen."""
    with ledger.read() as connection:
        return dict(connection.execute(select(accounts.c.code, accounts.c.balance_fen)).all())


def assert_audit_passes(ledger: LedgerContext, *, ecny_outstanding: int, entries: int) -> None:
    report = run_audit(ledger)
    assert report.ok, [finding.as_dict() for finding in report.findings]
    assert report.ecny_outstanding_fen == report.holdings_fen == ecny_outstanding
    assert report.entries_checked == entries


@pytest.fixture
def pilot(ledger: LedgerContext) -> LedgerContext:
    """ICBC and BOC authorised with quotas, reserves deposited, 1,000,000 CNY issued."""
    issuance.create_operator(ledger, "ICBC", "Industrial and Commercial Bank of China",
                             quota_fen=yuan(700_000))
    issuance.create_operator(ledger, "BOC", "Bank of China", quota_fen=yuan(500_000))

    # Each bank places central-bank money in its reserve: the central bank now owes 1,100,000.
    issuance.deposit_reserve(ledger, "reserve-ICBC-1", "ICBC", yuan(700_000))
    issuance.deposit_reserve(ledger, "reserve-BOC-1", "BOC", yuan(400_000))
    assert books(ledger) == {
        "cb:issuance": -yuan(1_100_000),
        "op:ICBC:reserve": yuan(700_000), "op:ICBC:float": 0,
        "op:BOC:reserve": yuan(400_000), "op:BOC:float": 0,
    }

    # Issuance converts reserve into e-CNY one for one: 600,000 + 400,000 = 1,000,000 CNY.
    issuance.issue(ledger, "issue-ICBC-1", "ICBC", yuan(600_000))
    issuance.issue(ledger, "issue-BOC-1", "BOC", yuan(400_000))
    return ledger


def test_issuing_one_million_to_two_banks(pilot: LedgerContext) -> None:
    assert books(pilot) == {
        "cb:issuance": -yuan(1_100_000),  # unchanged by issuance: reserve became e-CNY
        "op:ICBC:reserve": yuan(100_000), "op:ICBC:float": yuan(600_000),
        "op:BOC:reserve": 0, "op:BOC:float": yuan(400_000),
    }
    report = supply_report(pilot)
    assert report.balanced
    assert report.outstanding_fen == report.holdings_fen == yuan(1_000_000)
    assert report.reserves_fen == yuan(100_000)
    assert report.central_bank_liability_fen == yuan(1_100_000)
    icbc, boc = sorted(report.operators, key=lambda op: op.code != "ICBC")
    assert (icbc.code, icbc.quota_fen, icbc.issued_fen, icbc.outstanding_fen) == (
        "ICBC", yuan(700_000), yuan(600_000), yuan(600_000))
    assert (boc.code, boc.quota_fen, boc.issued_fen, boc.outstanding_fen) == (
        "BOC", yuan(500_000), yuan(400_000), yuan(400_000))
    assert format_yuan(report.outstanding_fen) == "1,000,000.00"
    assert_audit_passes(pilot, ecny_outstanding=yuan(1_000_000), entries=4)


def test_redeeming_part_burns_e_cny_and_releases_reserve(pilot: LedgerContext) -> None:
    issuance.redeem(pilot, "redeem-BOC-1", "BOC", yuan(150_000))
    issuance.redeem(pilot, "redeem-ICBC-1", "ICBC", yuan(50_000))

    assert books(pilot) == {
        "cb:issuance": -yuan(1_100_000),  # the central bank still owes it, now as reserve
        "op:ICBC:reserve": yuan(150_000), "op:ICBC:float": yuan(550_000),
        "op:BOC:reserve": yuan(150_000), "op:BOC:float": yuan(250_000),
    }
    report = supply_report(pilot)
    assert report.balanced
    by_code = {op.code: op for op in report.operators}
    assert (by_code["ICBC"].issued_fen, by_code["ICBC"].redeemed_fen) == (
        yuan(600_000), yuan(50_000))
    assert (by_code["BOC"].issued_fen, by_code["BOC"].redeemed_fen) == (
        yuan(400_000), yuan(150_000))
    assert report.outstanding_fen == yuan(800_000)
    assert report.reserves_fen == yuan(300_000)
    assert report.central_bank_liability_fen == report.reserves_fen + report.holdings_fen
    assert_audit_passes(pilot, ecny_outstanding=yuan(800_000), entries=6)

    # Redeemed e-CNY frees quota: BOC may issue again up to 500,000 outstanding.
    issuance.issue(pilot, "issue-BOC-2", "BOC", yuan(150_000))
    assert books(pilot)["op:BOC:float"] == yuan(400_000)
    assert_audit_passes(pilot, ecny_outstanding=yuan(950_000), entries=7)


def test_interbank_transfer_moves_e_cny_without_changing_supply(pilot: LedgerContext) -> None:
    issuance.transfer_between_holdings(pilot, "settle-1", "op:ICBC:float", "op:BOC:float",
                                       yuan(100_000))
    balances = books(pilot)
    assert (balances["op:ICBC:float"], balances["op:BOC:float"]) == (
        yuan(500_000), yuan(500_000))
    report = supply_report(pilot)
    # Supply is per issuer: ICBC issued 600,000 but now holds 500,000; the total still matches.
    assert report.balanced
    assert report.outstanding_fen == report.holdings_fen == yuan(1_000_000)
    assert_audit_passes(pilot, ecny_outstanding=yuan(1_000_000), entries=5)


def test_the_rules_refuse_without_touching_the_books(pilot: LedgerContext) -> None:
    before = books(pilot)
    # ICBC has 600,000 outstanding of a 700,000 quota.
    with pytest.raises(QuotaExceeded) as over_quota:
        issuance.issue(pilot, "issue-ICBC-2", "ICBC", yuan(100_000) + 1)
    assert over_quota.value.code == "quota_exceeded"
    # BOC is within quota (400,000 of 500,000) but has no reserve left to convert.
    with pytest.raises(InsufficientFunds) as no_reserve:
        issuance.issue(pilot, "issue-BOC-2", "BOC", 1)
    assert no_reserve.value.code == "insufficient_funds"
    # A bank cannot redeem more e-CNY than it holds.
    with pytest.raises(InsufficientFunds):
        issuance.redeem(pilot, "redeem-BOC-big", "BOC", yuan(400_000) + 1)
    assert books(pilot) == before
    assert_audit_passes(pilot, ecny_outstanding=yuan(1_000_000), entries=4)

    # Exactly at the quota is allowed.
    issuance.issue(pilot, "issue-ICBC-2", "ICBC", yuan(100_000))
    assert books(pilot)["op:ICBC:reserve"] == 0


def test_a_repeated_entry_id_returns_the_first_result(
    pilot: LedgerContext, clock: ManualClock
) -> None:
    first = issuance.redeem(pilot, "redeem-BOC-1", "BOC", yuan(150_000))
    assert not first.replayed
    after_first = books(pilot)

    clock.advance(timedelta(minutes=5))
    again = issuance.redeem(pilot, "redeem-BOC-1", "BOC", yuan(150_000))
    assert again.replayed
    assert (again.seq, again.entry_hash, again.created_at) == (
        first.seq, first.entry_hash, first.created_at)
    assert books(pilot) == after_first

    # Even once the float could no longer pay it, the repeat still answers with the first result.
    issuance.redeem(pilot, "redeem-BOC-rest", "BOC", yuan(250_000))
    assert books(pilot)["op:BOC:float"] == 0
    assert issuance.redeem(pilot, "redeem-BOC-1", "BOC", yuan(150_000)).seq == first.seq
    assert_audit_passes(pilot, ecny_outstanding=yuan(600_000), entries=6)


@pytest.mark.parametrize(
    "different",
    [
        lambda ledger: issuance.redeem(ledger, "redeem-BOC-1", "BOC", yuan(150_001)),
        lambda ledger: issuance.redeem(ledger, "redeem-BOC-1", "ICBC", yuan(150_000)),
        lambda ledger: issuance.issue(ledger, "redeem-BOC-1", "BOC", yuan(1)),
        lambda ledger: issuance.transfer_between_holdings(
            ledger, "redeem-BOC-1", "op:BOC:float", "op:ICBC:float", yuan(150_000)),
    ],
    ids=["other amount", "other bank", "other kind", "a transfer"],
)
def test_a_repeated_entry_id_with_other_content_is_a_conflict(
    pilot: LedgerContext, different: Callable[[LedgerContext], object]
) -> None:
    issuance.redeem(pilot, "redeem-BOC-1", "BOC", yuan(150_000))
    before = books(pilot)
    with pytest.raises(EntryConflict) as raised:
        different(pilot)
    assert raised.value.code == "entry_conflict"
    assert raised.value.status == 409
    assert books(pilot) == before
    assert_audit_passes(pilot, ecny_outstanding=yuan(850_000), entries=5)
