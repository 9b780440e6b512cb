"""Reading JSON text the way the protocol requires (docs/protocol.md, section 2.1 rule 5 and
section 6): an object with a key twice is refused, never read as its last value, so that no two
readers of one text can see different messages. ``NaN`` and ``Infinity``, which Python's reader
takes by default, are not JSON and are refused too.

Integers are read exactly (Python's ints); a number with a fraction or an exponent is read as a
float for the field checks to refuse with their own code, unless ``floats=False`` refuses it
here (a QR payload, which must already be canonical).
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn


class JsonRefused(ValueError):
    """The text is not JSON this ledger reads; the message says why."""


def loads_strict(text: str | bytes, *, floats: bool = True) -> Any:
    """The value of a JSON text; :class:`JsonRefused` for duplicate keys, ``NaN`` or
    ``Infinity``, a float when ``floats`` is false, and anything that is not JSON."""
    try:
        if isinstance(text, bytes):  # JSON exchanged between systems is UTF-8 (RFC 8259)
            text = text.decode("utf-8")
        return json.loads(
            text,
            object_pairs_hook=_refuse_duplicates,
            parse_constant=_refuse_constant,
            parse_float=_finite if floats else _refuse_float,
        )
    except JsonRefused:
        raise
    except RecursionError as exc:
        raise JsonRefused("nested too deeply") from exc
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise JsonRefused(str(exc)) from exc


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonRefused(f"duplicate key {key!r} in a JSON object")
        result[key] = value
    return result


def _refuse_constant(text: str) -> NoReturn:
    raise JsonRefused(f"{text} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as infinity
        raise JsonRefused(f"{text} is not a finite number")
    return value


def _refuse_float(text: str) -> NoReturn:
    raise JsonRefused(f"not an integer: {text}")
