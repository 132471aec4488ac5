"""Strict bencode encoder/decoder for rtpengine's ng control protocol.

Why our own codec instead of a PyPI package: bencode is tiny (four types, about a hundred
lines), the existing packages are either unmaintained or lenient (they accept leading zeros,
trailing data or unbounded nesting), and the decoder here parses datagrams from the network,
which we treat as hostile input. Owning the code lets us bound every resource the decoder
uses and raise one typed error for every malformed input.

Encoding accepts ``str`` (sent as UTF-8) and ``bytes``; decoding always yields ``bytes`` for
strings, because bencode strings are byte strings and only the caller knows what they mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

Encodable: TypeAlias = (
    "int | str | bytes | Sequence[Encodable] | Mapping[str, Encodable] | Mapping[bytes, Encodable]"
)
Decoded: TypeAlias = "int | bytes | list[Decoded] | dict[bytes, Decoded]"

# rtpengine nests query replies about eight levels deep; 32 leaves room while keeping the
# recursive decoder far from Python's recursion limit on hostile input.
DEFAULT_MAX_DEPTH = 32
# rtpengine's integers are 64-bit; refusing longer digit runs also avoids the quadratic cost
# of converting huge decimal strings.
_MAX_INT_DIGITS = 20
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class BencodeError(ValueError):
    """Raised for any input the strict decoder (or the encoder) refuses."""


def encode(value: Encodable) -> bytes:
    """Encode ``value``; dict keys are sorted by their encoded bytes as bencode requires."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Encodable, out: list[bytes]) -> None:
    # bool is an int subclass; sending True as i1e would hide a caller's type mistake.
    if isinstance(value, bool):
        raise BencodeError("cannot encode bool; use an int or a string")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str | bytes):
        raw = value.encode() if isinstance(value, str) else value
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, Mapping):
        items = sorted((_key_bytes(k), v) for k, v in value.items())
        out.append(b"d")
        for key, item in items:
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, Sequence):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot encode {type(value).__name__}")


def _key_bytes(key: object) -> bytes:
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes):
        return key
    raise BencodeError(f"dict keys must be str or bytes, not {type(key).__name__}")


def decode(data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Decoded:
    """Decode exactly one value from ``data``; anything malformed raises BencodeError."""
    value, end = _Decoder(data, max_depth).value(0, 0)
    if end != len(data):
        raise BencodeError(f"trailing data at offset {end}")
    return value


class _Decoder:
    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.max_depth = max_depth

    def value(self, pos: int, depth: int) -> tuple[Decoded, int]:
        if pos >= len(self.data):
            raise BencodeError("truncated input")
        lead = self.data[pos : pos + 1]
        if lead == b"i":
            return self.integer(pos)
        if lead.isdigit():
            return self.string(pos)
        if lead in (b"l", b"d"):
            if depth >= self.max_depth:
                raise BencodeError(f"nesting deeper than {self.max_depth}")
            if lead == b"l":
                return self.list(pos, depth + 1)
            return self.dict(pos, depth + 1)
        raise BencodeError(f"unexpected byte {lead!r} at offset {pos}")

    def integer(self, pos: int) -> tuple[int, int]:
        # Search only as far as the longest allowed integer ("i", "-", digits, "e") reaches,
        # so a hostile run of digits is rejected without being scanned or converted.
        end = self.data.find(b"e", pos + 1, pos + 3 + _MAX_INT_DIGITS)
        if end < 0:
            raise BencodeError(f"unterminated or oversized integer at offset {pos}")
        digits = self.data[pos + 1 : end]
        negative = digits.startswith(b"-")
        magnitude = digits[1:] if negative else digits
        # Canonical form only: no empty, no '+', no leading zeros, no '-0'.
        if not magnitude.isdigit():
            raise BencodeError(f"malformed integer at offset {pos}")
        if (magnitude.startswith(b"0") and len(magnitude) > 1) or (negative and magnitude == b"0"):
            raise BencodeError(f"non-canonical integer at offset {pos}")
        number = int(digits)
        if not _INT_MIN <= number <= _INT_MAX:
            raise BencodeError(f"integer out of 64-bit range at offset {pos}")
        return number, end + 1

    def string(self, pos: int) -> tuple[bytes, int]:
        colon = self.data.find(b":", pos, pos + _MAX_INT_DIGITS + 1)
        if colon < 0:
            raise BencodeError(f"malformed string length at offset {pos}")
        digits = self.data[pos:colon]
        if not digits.isdigit():
            raise BencodeError(f"malformed string length at offset {pos}")
        if digits.startswith(b"0") and len(digits) > 1:
            raise BencodeError(f"non-canonical string length at offset {pos}")
        start = colon + 1
        end = start + int(digits)
        if end > len(self.data):
            raise BencodeError(f"truncated string at offset {pos}")
        return self.data[start:end], end

    def list(self, pos: int, depth: int) -> tuple[list[Decoded], int]:
        items: list[Decoded] = []
        pos += 1
        while self.data[pos : pos + 1] != b"e":
            item, pos = self.value(pos, depth)
            items.append(item)
        return items, pos + 1

    def dict(self, pos: int, depth: int) -> tuple[dict[bytes, Decoded], int]:
        # Key order is not checked: rtpengine itself emits unsorted keys. Duplicates are
        # refused, since which one "wins" would be an ambiguity an attacker could use.
        result: dict[bytes, Decoded] = {}
        pos += 1
        while self.data[pos : pos + 1] != b"e":
            if not self.data[pos : pos + 1].isdigit():
                if pos >= len(self.data):
                    raise BencodeError("truncated input")
                raise BencodeError(f"dict key is not a byte string at offset {pos}")
            key, pos = self.string(pos)
            if key in result:
                raise BencodeError(f"duplicate dict key {key!r}")
            result[key], pos = self.value(pos, depth)
        return result, pos + 1
