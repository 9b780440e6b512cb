"""Scenarios and integer draws: the documented example is the built-in default, amounts are whole
fen from integer draws, and counts split exactly."""

from __future__ import annotations

import random
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbdc.domain.errors import InvalidRequest
from cbdc.simulation.amounts import AmountDistribution, WeightedChoice, apportion
from cbdc.simulation.scenario import (
    WALLETS_MAX,
    default_scenario,
    default_scenario_text,
    load_scenario,
    parse_scenario,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scenario.toml"


def test_the_documented_example_is_the_built_in_default() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == default_scenario_text()
    assert load_scenario(EXAMPLE) == default_scenario()


def test_the_default_pilot_week_matches_the_brief() -> None:
    scenario = default_scenario()
    assert len(scenario.operators) == 4
    assert len(scenario.zones) == 3
    assert (scenario.wallet_count, scenario.merchant_count) == (10_000, 500)
    assert (scenario.payment_count, scenario.days) == (100_000, 7)
    assert dict(scenario.mix) == {"merchant_qr": 50, "customer_code": 30,
                                  "person_to_person": 10, "offline": 8, "refund": 2}
    shares = dict(scenario.class_shares)
    assert shares[4] > shares[3] > shares[2] + shares[1]
    assert scenario.misbehaviour.cloned_card_percent == Fraction(1, 2)
    weights = scenario.hourly_weights
    assert max(weights[0:5]) < min(weights[7], weights[12], weights[19])  # quiet nights


def test_scale_multiplies_wallets_merchants_and_payments_only() -> None:
    scenario = default_scenario()
    tenfold = scenario.scaled(10)
    assert (tenfold.wallet_count, tenfold.merchant_count, tenfold.payment_count) == (
        100_000, 5_000, 1_000_000)
    assert tenfold.mix == scenario.mix and tenfold.days == scenario.days
    with pytest.raises(InvalidRequest) as refused:
        scenario.scaled(0)
    assert refused.value.code == "scenario_invalid"
    assert scenario.scaled(100).wallet_count == WALLETS_MAX
    with pytest.raises(InvalidRequest) as too_big:  # within SCALE_MAX, too many wallets to hold
        scenario.scaled(101)
    assert "at most 1,000,000 wallets" in too_big.value.detail


def _document() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(default_scenario_text())


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d["payments"].update(hourly_weights=[1] * 23), "hourly_weights"),
        (lambda d: d["payments"]["mix"].pop("refund"), "mix"),
        (lambda d: d["central_bank"].update(issuance_per_wallet=3000.0), "yuan string"),
        (lambda d: d["amounts"].update(buckets=[["5.00", "1.00", 1]]), "high must be above"),
        (lambda d: d["wallets"]["class_shares"].pop("1"), "classes"),
        (lambda d: d.update(time_zone="Mars/Olympus"), "time zone"),
        (lambda d: d["misbehaviour"].update(replay_percent=101), "between 0 and 100"),
        (lambda d: d.update(day=7), "scenario: unknown key 'day'"),
        (lambda d: d["wallets"].update(home_zone_pct=80), "[wallets]: unknown key"),
        (lambda d: d["operators"][1].update(shares=5), "operators #2: unknown key 'shares'"),
        (lambda d: d["misbehaviour"].update(clone_percent=1, replay=2),
         "unknown keys 'clone_percent', 'replay'"),
        (lambda d: d["wallets"].update(count=1_000_001), "at most 1,000,000 wallets"),
        (lambda d: d["merchants"].update(count=100_001), "at most 100,000 merchants"),
        (lambda d: d["payments"].update(count=10**9), "at most 100,000,000 payments"),
    ],
)
def test_a_malformed_scenario_is_refused_naming_the_problem(
    mutate: Callable[[dict[str, Any]], object], fragment: str
) -> None:
    document = _document()
    mutate(document)
    with pytest.raises(InvalidRequest) as refused:
        parse_scenario(document)
    assert refused.value.code == "scenario_invalid"
    assert fragment in refused.value.detail


def test_retail_amounts_are_whole_fen_mostly_tens_to_hundreds_of_yuan() -> None:
    distribution = AmountDistribution(default_scenario().amount_buckets)
    rng = random.Random(7)
    amounts = sorted(distribution.draw(rng) for _ in range(20_000))
    assert all(type(amount) is int and amount >= 100 for amount in amounts)
    median = amounts[len(amounts) // 2]
    assert 3_000 <= median <= 10_000  # 30 to 100 yuan
    assert amounts[int(len(amounts) * 0.99)] > 50_000  # a long tail above 500 yuan
    assert amounts[-1] < 190_000


def test_the_same_seed_draws_the_same_amounts() -> None:
    distribution = AmountDistribution(default_scenario().amount_buckets)
    first = [distribution.draw(random.Random(3)) for _ in range(5)]
    again = [distribution.draw(random.Random(3)) for _ in range(5)]
    assert first == again


@given(st.integers(0, 10**7), st.lists(st.integers(0, 1000), min_size=1, max_size=50))
def test_apportion_splits_exactly_and_proportionally(total: int, weights: list[int]) -> None:
    if not any(weights):
        weights = [*weights, 1]
    shares = apportion(total, weights)
    assert sum(shares) == total
    weight_sum = sum(weights)
    for share, weight in zip(shares, weights, strict=True):
        assert abs(share * weight_sum - total * weight) < weight_sum  # off by less than one
        if weight == 0:
            assert share == 0


def test_weighted_choice_never_picks_a_zero_weight() -> None:
    choice = WeightedChoice(["never", "always"], [0, 5])
    rng = random.Random(1)
    assert {choice.pick(rng) for _ in range(200)} == {"always"}
