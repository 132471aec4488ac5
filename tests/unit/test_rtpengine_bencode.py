"""The strict bencode codec: round trips and refusal of every malformed input."""

from __future__ import annotations

import pytest

from sipshield.rtpengine.bencode import BencodeError, decode, encode


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, b"i0e"),
        (-42, b"i-42e"),
        (2**63 - 1, b"i9223372036854775807e"),
        (b"", b"0:"),
        (b"spam", b"4:spam"),
        ("héllo", "6:héllo".encode()),
        ([], b"le"),
        ([1, b"a", [b"b"]], b"li1e1:al1:bee"),
        ({}, b"de"),
        ({"b": 1, "a": [b"x"]}, b"d1:al1:xe1:bi1ee"),
    ],
)
def test_encode_known_wire_forms(value: object, wire: bytes) -> None:
    assert encode(value) == wire  # type: ignore[arg-type]


def test_round_trip_nested() -> None:
    value = {b"command": b"offer", b"flags": [b"trust-address"], b"n": {b"x": [-1, 0, 7]}}
    assert decode(encode(value)) == value


def test_encode_sorts_keys_by_bytes_not_by_str() -> None:
    # "Z" (0x5a) sorts before "a" (0x61) in raw bytes, which is what bencode requires.
    assert encode({"a": 1, "Z": 2}) == b"d1:Zi2e1:ai1ee"


@pytest.mark.parametrize("value", [True, 1.5, None, {1: b"x"}, object()])
def test_encode_rejects_unsupported_types(value: object) -> None:
    with pytest.raises(BencodeError):
        encode(value)  # type: ignore[arg-type]


def test_decode_accepts_unsorted_keys_like_rtpengine_sends() -> None:
    assert decode(b"d3:sdp1:x6:result2:oke") == {b"sdp": b"x", b"result": b"ok"}


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"i42", id="truncated-int"),
        pytest.param(b"5:abc", id="truncated-string"),
        pytest.param(b"l1:a", id="truncated-list"),
        pytest.param(b"d1:a", id="truncated-dict-value"),
        pytest.param(b"d1:ai1e", id="truncated-dict"),
        pytest.param(b"i03e", id="int-leading-zero"),
        pytest.param(b"i-0e", id="negative-zero"),
        pytest.param(b"ie", id="empty-int"),
        pytest.param(b"i-e", id="bare-minus"),
        pytest.param(b"i+1e", id="plus-sign"),
        pytest.param(b"i1.5e", id="float"),
        pytest.param(b"i 1e", id="space-in-int"),
        pytest.param(b"03:abc", id="length-leading-zero"),
        pytest.param(b"i1ei2e", id="trailing-value"),
        pytest.param(b"4:spamX", id="trailing-garbage"),
        pytest.param(b"di1e1:ae", id="int-dict-key"),
        pytest.param(b"dl1:ae1:be", id="list-dict-key"),
        pytest.param(b"d1:ai1e1:ai2ee", id="duplicate-key"),
        pytest.param(b"x", id="unknown-type"),
        pytest.param(b"i" + b"9" * 30 + b"e", id="huge-int"),
        pytest.param(b"i" + b"9" * 5000 + b"e", id="enormous-int"),
        pytest.param(b"i18446744073709551616e", id="int-above-64-bit"),
        pytest.param(b"99999999999999999999999:x", id="huge-string-length"),
    ],
)
def test_decode_rejects_malformed(wire: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(wire)


def test_decode_limits_nesting_depth() -> None:
    assert decode(b"l" * 32 + b"e" * 32) is not None
    with pytest.raises(BencodeError, match="nesting"):
        decode(b"l" * 33 + b"e" * 33)
    # Far beyond Python's recursion limit: must be a clean BencodeError, not RecursionError.
    with pytest.raises(BencodeError):
        decode(b"l" * 100_000)


def test_decode_depth_limit_is_configurable() -> None:
    with pytest.raises(BencodeError):
        decode(b"lle" + b"e", max_depth=1)
