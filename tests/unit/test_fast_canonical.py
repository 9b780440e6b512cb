"""The fast canonical encoder gives exactly RFC 8785's bytes for every message shape it takes."""

from typing import Any

import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from cbdc.domain.signing import _fast_canonical, canonical

ascii_keys = st.text(alphabet=st.characters(max_codepoint=127), max_size=12)
scalars = (
    st.text()
    | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
    | st.booleans()
    | st.none()
)
objects = st.recursive(
    st.dictionaries(ascii_keys, scalars, max_size=8),
    lambda inner: st.dictionaries(ascii_keys, scalars | inner, max_size=6),
    max_leaves=30,
)


@given(objects)
def test_fast_path_equals_rfc8785(message: dict[str, Any]) -> None:
    try:
        expected = bytes(rfc8785.dumps(message))
    except rfc8785.CanonicalizationError:
        assert _fast_canonical(message) is None  # lone surrogates go to the full encoder
        return
    assert _fast_canonical(message) == expected
    assert canonical(message) == expected


def test_control_characters_and_non_ascii_match() -> None:
    message: dict[str, str | int] = {
        "memo": "\x00\x01\x1f\b\f\n\r\t\"\\/\x7f\u2028é中😀", "b": 1, "a": -(2**53 - 1)
    }
    assert _fast_canonical(message) == bytes(rfc8785.dumps(message))


def test_shapes_outside_the_fast_path_fall_back() -> None:
    assert _fast_canonical({"n": 2**53}) is None
    assert _fast_canonical({"é": 1}) is None
    assert _fast_canonical({"list": [1, 2]}) is None
