"""ng datagram framing: ``<cookie> <bencoded dict>`` in both directions, no I/O.

The cookie is how rtpengine pairs a reply with its request; it also caches replies by
cookie, so a retransmission carrying the same cookie is answered from cache instead of
being executed twice (which would, for instance, allocate a second set of media ports).
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Mapping
from typing import TypeAlias

from . import bencode
from .bencode import BencodeError, Decoded, Encodable
from .errors import NgBadReply

NgValue: TypeAlias = "int | str | list[NgValue] | dict[str, NgValue]"
NgDict: TypeAlias = "dict[str, NgValue]"

_counter = itertools.count(1)


def make_cookie() -> str:
    """Return a cookie unique across Kamailio worker processes and their restarts.

    The pid separates concurrent workers sharing one rtpengine, the counter separates
    requests within a worker, and the random part keeps a restarted worker that reuses a
    pid from colliding with replies still cached by rtpengine for its predecessor.
    """
    return f"{os.getpid():x}_{next(_counter):x}_{secrets.token_hex(4)}"


def encode_request(cookie: str, command: Mapping[str, Encodable]) -> bytes:
    if not cookie or not cookie.isascii() or " " in cookie:
        raise ValueError(f"invalid cookie {cookie!r}")
    return cookie.encode() + b" " + bencode.encode(command)


def decode_reply(datagram: bytes) -> tuple[str, NgDict]:
    """Split and decode a reply datagram; anything malformed raises NgBadReply."""
    cookie, sep, body = datagram.partition(b" ")
    if not sep or not cookie or not cookie.isascii():
        raise NgBadReply("missing or invalid cookie")
    try:
        decoded = _to_text(bencode.decode(body))
    except BencodeError as exc:
        raise NgBadReply(f"bencode: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise NgBadReply("string is not valid UTF-8") from exc
    if not isinstance(decoded, dict):
        raise NgBadReply(f"top level is {type(decoded).__name__}, not a dict")
    return cookie.decode(), decoded


def match_reply(cookie: str, datagram: bytes) -> NgDict | None:
    """Return the decoded reply if ``datagram`` answers ``cookie``, else None.

    A datagram without our cookie is not ours (a late reply to an earlier request, or
    noise), so it is ignored rather than treated as a failure. One that carries our cookie
    but is malformed raises, because no valid reply with that cookie can follow.
    """
    if not datagram.startswith(cookie.encode() + b" "):
        return None
    return decode_reply(datagram)[1]


def _to_text(value: Decoded) -> NgValue:
    # ng strings are UTF-8 text (SDP, tags, reasons); a strict decode rejects garbage early
    # instead of letting it reach SIP messages.
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_to_text(v) for v in value]
    if isinstance(value, dict):
        return {k.decode(): _to_text(v) for k, v in value.items()}
    return value


__all__ = [
    "NgDict",
    "NgValue",
    "decode_reply",
    "encode_request",
    "make_cookie",
    "match_reply",
]
