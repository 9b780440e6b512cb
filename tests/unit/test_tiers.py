"""Wallet classes and limits: the pure rules, with hand-picked times around Shanghai midnight."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbdc.domain.errors import ClassChangeRefused, InvalidRequest, LimitExceeded
from cbdc.domain.money import yuan
from cbdc.domain.tiers import (
    DEFAULT_CLASSES,
    NO_LIMITS,
    Limits,
    Usage,
    WalletClasses,
    balance_excess,
    check_class_change,
    check_evidence,
    check_incoming,
    check_outgoing,
    check_sub_wallet_caps,
    local_day,
    wallet_classes_from_config,
)

CLASS_4 = DEFAULT_CLASSES[4].limits


def test_default_table_is_the_domain_brief() -> None:
    as_yuan = {
        number: tuple(None if cap is None else cap // 100 for cap in c.limits.as_dict().values())
        for number, c in DEFAULT_CLASSES.items()
    }
    assert as_yuan == {
        1: (500_000, 50_000, 100_000, 500_000),
        2: (500_000, 50_000, 100_000, None),
        3: (20_000, 5_000, 10_000, None),
        4: (10_000, 2_000, 5_000, 50_000),
    }
    assert DEFAULT_CLASSES[4].evidence_required == {"phone"}
    assert DEFAULT_CLASSES[1].evidence_required == {
        "in_person", "id_document", "phone", "bank_account"
    }
    assert [c.links_bank_account for c in DEFAULT_CLASSES.values()] == [True, True, False, False]


def test_shanghai_day_starts_at_16_utc() -> None:
    assert local_day(datetime(2026, 3, 1, 15, 59, 59, tzinfo=UTC)) == date(2026, 3, 1)
    assert local_day(datetime(2026, 3, 1, 16, 0, 0, tzinfo=UTC)) == date(2026, 3, 2)
    with pytest.raises(ValueError):
        local_day(datetime(2026, 3, 1))


def test_class_4_single_daily_and_annual_caps_in_that_order() -> None:
    usage = Usage(date(2026, 3, 1), yuan(4_000), 2026, yuan(49_500))
    with pytest.raises(LimitExceeded) as single:
        check_outgoing(CLASS_4, usage, yuan(2_001))
    assert single.value.code == "single_payment_limit_exceeded"
    with pytest.raises(LimitExceeded) as daily:
        check_outgoing(CLASS_4, usage, yuan(1_001))
    assert daily.value.code == "daily_limit_exceeded"
    with pytest.raises(LimitExceeded) as annual:
        check_outgoing(CLASS_4, usage, yuan(501))
    assert annual.value.code == "annual_limit_exceeded"
    check_outgoing(CLASS_4, usage, yuan(500))


def test_usage_rolls_over_at_shanghai_midnight_and_new_year() -> None:
    usage = Usage(date(2026, 12, 31), yuan(4_000), 2026, yuan(30_000))
    same_day = datetime(2026, 12, 31, 15, 59, tzinfo=UTC)
    assert usage.at(same_day) == usage
    next_day = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)  # 00:00 on 1 January in Shanghai
    assert usage.at(next_day) == Usage(date(2027, 1, 1), 0, 2027, 0)
    mid_year = Usage(date(2026, 6, 1), yuan(4_000), 2026, yuan(30_000))
    assert mid_year.at(datetime(2026, 6, 1, 16, 0, tzinfo=UTC)) == Usage(
        date(2026, 6, 2), 0, 2026, yuan(30_000)
    )
    assert mid_year.at(datetime(2026, 5, 1, tzinfo=UTC)) == mid_year  # a clock that went back
    assert mid_year.plus(5) == Usage(date(2026, 6, 1), yuan(4_000) + 5, 2026, yuan(30_000) + 5)


def test_balance_cap_and_waterfall_excess() -> None:
    cap = CLASS_4.balance_fen_max
    assert cap == yuan(10_000)
    assert balance_excess(CLASS_4, yuan(9_000), yuan(1_000)) == 0
    assert balance_excess(CLASS_4, yuan(9_000), yuan(1_500)) == yuan(500)
    assert balance_excess(CLASS_4, yuan(11_000), yuan(10)) == yuan(10)
    assert balance_excess(NO_LIMITS, yuan(10**9), yuan(10**9)) == 0
    check_incoming(CLASS_4, yuan(9_000), yuan(1_000))
    with pytest.raises(LimitExceeded) as refused:
        check_incoming(CLASS_4, yuan(9_000), yuan(1_000) + 1)
    assert refused.value.code == "balance_limit_exceeded"


@given(
    balance=st.integers(0, 10**10),
    amount=st.integers(1, 10**10),
    cap=st.one_of(st.none(), st.integers(1, 10**10)),
)
def test_after_a_waterfall_the_balance_never_ends_above_the_cap(
    balance: int, amount: int, cap: int | None
) -> None:
    limits = Limits(cap, None, None, None)
    excess = balance_excess(limits, balance, amount)
    assert 0 <= excess <= amount
    kept = balance + amount - excess
    assert cap is None or kept <= max(cap, balance)


def test_sub_wallet_caps_may_not_be_looser_than_the_parent() -> None:
    parent = DEFAULT_CLASSES[2].limits
    caps = Limits(yuan(1_000), yuan(100), yuan(500), yuan(2_000))
    assert check_sub_wallet_caps(parent, caps) == caps
    with pytest.raises(InvalidRequest) as looser:
        check_sub_wallet_caps(parent, Limits(yuan(600_000), None, None, None))
    assert looser.value.code == "sub_wallet_caps_invalid"
    with pytest.raises(InvalidRequest) as uncapped:
        check_sub_wallet_caps(parent, Limits(None, yuan(100), yuan(500), None))
    assert uncapped.value.code == "sub_wallet_caps_invalid"
    with pytest.raises(InvalidRequest) as zero:
        check_sub_wallet_caps(parent, Limits(0, None, None, None))
    assert zero.value.code == "limits_invalid"
    assert parent.tightened(caps) == caps
    assert caps.tightened(NO_LIMITS) == caps


def test_evidence_and_class_change() -> None:
    check_evidence(DEFAULT_CLASSES[4], ["phone"])
    with pytest.raises(InvalidRequest) as missing:
        check_evidence(DEFAULT_CLASSES[2], ["phone", "id_document"])
    assert missing.value.code == "identity_evidence_missing"
    assert missing.value.extra["missing"] == ["bank_account"]
    today = Usage(date(2026, 3, 1), yuan(6_000), 2026, yuan(6_000))
    check_class_change(DEFAULT_CLASSES[2].limits, yuan(15_000), today)
    with pytest.raises(ClassChangeRefused) as over_balance:
        check_class_change(CLASS_4, yuan(15_000), today)
    assert over_balance.value.extra["limit"] == "balance_limit_exceeded"
    with pytest.raises(ClassChangeRefused) as over_day:
        check_class_change(CLASS_4, yuan(5_000), today)
    assert over_day.value.extra["limit"] == "daily_limit_exceeded"
    tomorrow = today.at(datetime(2026, 3, 1, 16, tzinfo=UTC) + timedelta(hours=1))
    check_class_change(CLASS_4, yuan(5_000), tomorrow)


def test_limits_from_configuration() -> None:
    classes = wallet_classes_from_config({"3": {"balance_fen_max": yuan(30_000)},
                                          "1": {"annual_outgoing_fen_max": None}})
    assert classes.get(3).limits.balance_fen_max == yuan(30_000)
    assert classes.get(3).limits.payment_fen_max == yuan(5_000)
    assert classes.get(1).limits.annual_outgoing_fen_max is None
    assert WalletClasses().get(1).limits.annual_outgoing_fen_max == yuan(500_000)
    with pytest.raises(InvalidRequest):
        wallet_classes_from_config({"3": {"balance_cap": 1}})
    with pytest.raises(InvalidRequest) as bad_class:
        WalletClasses().get(5)
    assert bad_class.value.code == "wallet_class_invalid"
