"""Money: an integer number of fen (0.01 CNY).

Amounts cross every boundary as ``int`` fen. Parsing and formatting are explicit; floats are
refused wherever they appear, because ``0.1 + 0.2`` is not a sum of money.
"""

from __future__ import annotations

import re

from cbdc.domain.errors import InvalidAmount

FEN_PER_YUAN = 100
#: The largest amount we accept: the largest integer that survives a round trip through a JSON
#: number in every mainstream implementation (IEEE 754 double), so clients cannot lose fen.
AMOUNT_FEN_MAX = 2**53 - 1

#: ASCII digits only (``\d`` alone would take "１２" or "١٢"), matched in full (``$`` alone would
#: let a trailing newline through).
_DECIMAL = re.compile(r"(?P<yuan>[0-9]+)(?:\.(?P<fen>[0-9]{1,2}))?")


def check_amount(amount_fen: object) -> int:
    """Return ``amount_fen`` if it is a valid positive amount of fen, else raise InvalidAmount.

    A valid amount is an ``int`` (not ``bool``, not ``float``), at least 1 and at most
    :data:`AMOUNT_FEN_MAX`.
    """
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int):
        raise InvalidAmount(
            f"amount must be an integer number of fen, got {type(amount_fen).__name__}"
        )
    if amount_fen <= 0:
        raise InvalidAmount(f"amount must be positive, got {amount_fen}")
    if amount_fen > AMOUNT_FEN_MAX:
        raise InvalidAmount(f"amount {amount_fen} is above the maximum {AMOUNT_FEN_MAX}")
    return amount_fen


def parse_yuan(text: str) -> int:
    """Parse a decimal yuan string such as ``"12.34"`` into fen (1234).

    Accepts digits with at most two decimals; no sign, exponent, separators or spaces.
    """
    if not isinstance(text, str):
        raise InvalidAmount(f"expected a decimal string, got {type(text).__name__}")
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise InvalidAmount(f"not a yuan amount with at most two decimals: {text!r}")
    fen_text = (match.group("fen") or "").ljust(2, "0")
    return check_amount(int(match.group("yuan")) * FEN_PER_YUAN + int(fen_text))


def format_yuan(amount_fen: int, *, symbol: bool = False) -> str:
    """Format fen as yuan with two decimals and thousands separators: 123456 -> "1,234.56".

    Negative numbers (the issuance account) are formatted with a leading minus.
    """
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int):
        raise InvalidAmount(f"expected int fen, got {type(amount_fen).__name__}")
    sign = "-" if amount_fen < 0 else ""
    yuan, fen = divmod(abs(amount_fen), FEN_PER_YUAN)
    prefix = "¥" if symbol else ""
    return f"{sign}{prefix}{yuan:,}.{fen:02d}"


def yuan(whole: int) -> int:
    """Whole yuan to fen, for readable examples and tests: ``yuan(500) == 50_000``."""
    return check_amount(whole * FEN_PER_YUAN)
