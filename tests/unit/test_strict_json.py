"""The protocol's JSON reader: equal keys, NaN and Infinity are refused wherever they are; a
float is read (for the field checks to refuse by name) unless floats are refused here."""

from __future__ import annotations

import pytest

from cbdc.domain.strict_json import JsonRefused, loads_strict


@pytest.mark.parametrize(("text", "reason"), [
    ('{"a": 1, "a": 1}', "duplicate key 'a'"),  # even with equal values
    ('{"a": {"b": 1, "c": {"b": 2, "b": 3}}}', "duplicate key 'b'"),
    ('{"items": [{"x": 1}, {"x": 1, "x": 2}]}', "duplicate key 'x'"),
    ('[{"k": 1, "k": 1}]', "duplicate key 'k'"),
    ('{"a": NaN}', "NaN is not a JSON number"),
    ('{"a": [1, -Infinity]}', "-Infinity is not a JSON number"),
    ('{"a": Infinity}', "Infinity is not a JSON number"),
    ('{"a": 1', "Expecting"),
    ("", "Expecting value"),
])
def test_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(JsonRefused, match=reason):
        loads_strict(text)
    with pytest.raises(JsonRefused, match=reason):
        loads_strict(text.encode())


def test_the_same_keys_in_different_objects_are_fine_and_integers_are_exact() -> None:
    text = '{"a": {"id": 1}, "b": {"id": 2}, "n": 9007199254740993, "f": 1.5}'
    assert loads_strict(text) == {"a": {"id": 1}, "b": {"id": 2}, "n": 9007199254740993,
                                  "f": 1.5}


def test_floats_can_be_refused_and_bytes_must_be_utf8() -> None:
    with pytest.raises(JsonRefused, match=r"not an integer: 1\.0"):
        loads_strict('{"amount_fen": 1.0}', floats=False)
    assert loads_strict('{"amount_fen": 1}', floats=False) == {"amount_fen": 1}
    assert loads_strict('{"memo": "谢谢"}'.encode()) == {"memo": "谢谢"}
    with pytest.raises(JsonRefused):
        loads_strict('{"memo": "x"}'.encode("utf-16"))
    with pytest.raises(JsonRefused):
        loads_strict(b'{"memo": "\xff"}')


def test_a_number_too_big_for_a_float_and_nesting_too_deep_are_refused() -> None:
    with pytest.raises(JsonRefused, match="1e400 is not a finite number"):
        loads_strict('{"a": 1e400}')
    assert loads_strict('{"a": 1e300}') == {"a": 1e300}
    with pytest.raises(JsonRefused, match="nested too deeply"):
        loads_strict("[" * 100_000 + "]" * 100_000)


def test_a_qr_payload_nested_too_deeply_is_qr_invalid() -> None:
    import base64

    from cbdc.domain.errors import InvalidQr
    from cbdc.domain.qr import decode_qr

    body = ("[" * 1_000 + "]" * 1_000).encode()  # within the QR length limit
    text = "CBDC1:" + base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    assert len(text) <= 2_953
    with pytest.raises(InvalidQr, match="nested too deeply"):
        decode_qr(text)
