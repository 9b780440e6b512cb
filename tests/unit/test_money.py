"""Money is integer fen: explicit parse and format, and every other shape refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbdc.domain.errors import InvalidAmount
from cbdc.domain.money import AMOUNT_FEN_MAX, check_amount, format_yuan, parse_yuan, yuan


@pytest.mark.parametrize(
    ("text", "amount_fen"),
    [
        ("12.34", 1234),
        ("12.3", 1230),
        ("12", 1200),
        ("0.01", 1),
        ("0.10", 10),
        ("1000000.00", 100_000_000),
        ("90071992547409.91", AMOUNT_FEN_MAX),
    ],
)
def test_parse_yuan_to_fen(text: str, amount_fen: int) -> None:
    assert parse_yuan(text) == amount_fen


@pytest.mark.parametrize(
    "text",
    [
        "1.234", "-1", "1e3", " 1", "1 ", "", "1,000", "+1", "1.", ".5", "0x10", "1_000",
        "0", "0.00", "90071992547409.92", "NaN", "inf",
        # Unicode digits and a trailing newline: a naive ``\d+...$`` regex lets these through.
        "１２", "١٢.٣٤", "12\n", "12.34\n",
    ],
)
def test_parse_yuan_refuses_anything_but_plain_positive_decimals(text: str) -> None:
    with pytest.raises(InvalidAmount) as raised:
        parse_yuan(text)
    assert raised.value.code == "amount_invalid"


@pytest.mark.parametrize("value", [12.34, 1234, None, b"12.34"])
def test_parse_yuan_takes_only_strings(value: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_yuan(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount_fen", "text"),
    [
        (1, "0.01"),
        (10, "0.10"),
        (1234, "12.34"),
        (123456, "1,234.56"),
        (100_000_000, "1,000,000.00"),
        (0, "0.00"),
        (-123456, "-1,234.56"),
    ],
)
def test_format_yuan(amount_fen: int, text: str) -> None:
    assert format_yuan(amount_fen) == text


def test_format_yuan_with_symbol_keeps_the_sign_first() -> None:
    assert format_yuan(1234, symbol=True) == "¥12.34"
    assert format_yuan(-1234, symbol=True) == "-¥12.34"


@pytest.mark.parametrize("value", [12.34, 1.0, True, "1234", None])
def test_format_yuan_refuses_non_integers(value: object) -> None:
    with pytest.raises(InvalidAmount):
        format_yuan(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1, 2, 100, AMOUNT_FEN_MAX])
def test_check_amount_accepts_positive_int_fen(value: int) -> None:
    assert check_amount(value) == value


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (1.0, "integer"),
        (12.34, "integer"),
        (float("nan"), "integer"),
        (True, "integer"),
        (False, "integer"),
        ("100", "integer"),
        (None, "integer"),
        (0, "positive"),
        (-1, "positive"),
        (-(2**63), "positive"),
        (AMOUNT_FEN_MAX + 1, "maximum"),
        (2**64, "maximum"),
    ],
)
def test_check_amount_refuses(value: object, why: str) -> None:
    with pytest.raises(InvalidAmount, match=why) as raised:
        check_amount(value)
    assert raised.value.code == "amount_invalid"
    assert raised.value.status == 400


def test_yuan_helper_is_whole_yuan_in_fen() -> None:
    assert yuan(500) == 50_000
    with pytest.raises(InvalidAmount):
        yuan(0)


def _plain(amount_fen: int) -> str:
    """format_yuan without the thousands separators parse_yuan (rightly) refuses."""
    return format_yuan(amount_fen).replace(",", "")


@given(st.integers(min_value=1, max_value=AMOUNT_FEN_MAX))
def test_parse_of_format_round_trips(amount_fen: int) -> None:
    assert parse_yuan(_plain(amount_fen)) == amount_fen


@given(st.integers(min_value=1, max_value=AMOUNT_FEN_MAX))
def test_formatted_amounts_keep_two_decimals_and_group_thousands(amount_fen: int) -> None:
    text = format_yuan(amount_fen)
    whole, fen = text.split(".")
    assert len(fen) == 2
    assert int(whole.replace(",", "")) * 100 + int(fen) == amount_fen
    assert all(len(group) == 3 for group in whole.split(",")[1:])


@given(st.integers(min_value=0, max_value=999_999_999), st.integers(min_value=0, max_value=99))
def test_format_of_parse_round_trips(whole: int, fen: int) -> None:
    text = f"{whole}.{fen:02d}"
    if whole == 0 and fen == 0:
        with pytest.raises(InvalidAmount):
            parse_yuan(text)
        return
    assert _plain(parse_yuan(text)) == text
