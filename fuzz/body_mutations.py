"""Mutations of a message's body, and of the headers that describe it.

A body-focused fuzzed message is a MESSAGE, NOTIFY or PUBLISH seed whose body
gets one to three mutations: XML-aware ones (fuzz.xml_mutations), text ones
(Unicode that reorders or hides, invalid UTF-8, line ends, a SIP message
hidden in the body), multipart ones, and the byte-level ones of
fuzz.mutations.  Its Content-Type or method may change too, so that every
body meets every parser and every method.

Most of them are *framed*: Content-Length is rewritten to the new body's
length and the rest of the head is left as it was, so the message is SIP that
Kamailio parses and hands to sipshield, and only the body is hostile.  The
others keep a wrong length on purpose (stale, absent, off by a few, absurd),
which over TCP decides where the next message starts.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from fuzz import mutations, xml_mutations

BodyMutation = Callable[[bytes, random.Random], bytes]

# Share of body-focused messages whose Content-Length matches their body.
FRAMED_SHARE = 0.85
RETYPE_SHARE = 0.3
REMETHOD_SHARE = 0.2
BODY_METHODS = (b"MESSAGE", b"NOTIFY", b"PUBLISH")

_LENGTH_NAMES = (b"content-length", b"l")
_TYPE_NAMES = (b"content-type", b"c")


def split(message: bytes) -> tuple[bytes, bytes, bytes]:
    """(head, separator, body): the separator is the first blank line, CRLF or bare LF."""
    positions = [(message.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if sep in message]
    if not positions:
        return message, b"", b""
    at, separator = min(positions)
    return message[:at], separator, message[at + len(separator) :]


def _eol(separator: bytes) -> bytes:
    return b"\n" if separator == b"\n\n" else b"\r\n"


def _header_name(line: bytes) -> bytes:
    name, colon, _ = line.partition(b":")
    return name.strip().lower() if colon else b""


def set_length(head: bytes, eol: bytes, length: bytes | None) -> bytes:
    """The head with one Content-Length of ``length`` where the first was; None removes them."""
    lines = head.split(eol)
    places = [i for i, line in enumerate(lines) if i and _header_name(line) in _LENGTH_NAMES]
    at = places[0] if places else len(lines)
    kept = [line for i, line in enumerate(lines) if i not in places]
    if length is not None:
        kept.insert(at, b"Content-Length: " + length)
    return eol.join(kept)


def reframe(head: bytes, separator: bytes, body: bytes) -> bytes:
    """The message with a Content-Length that matches ``body`` exactly."""
    separator = separator or b"\r\n\r\n"
    head = set_length(head, _eol(separator), str(len(body)).encode())
    return head + separator + body


# --- text ---------------------------------------------------------------------

UNICODE = tuple(
    text.encode()
    for text in (
        "\u202e", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069", "\u200f", "\u200e",
        "\u061c", "\u200b", "\u200d", "\u2060", "\ufeff", "\ufffe", "\uffff", "\ufdd0",
        "\u2028", "\u2029", "\u0085", "\U000e0001", "\ufe0f", "e" + "\u0301" * 300,
        "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466", "\U0001f1e9\U0001f1ea",
        "\U0001f44b\U0001f3fd", "مرحبا", "שלום", "﷽", "Z̷̡̛̤̈́ă̴͍l̸̰̈́g̵̱̅o̶͈͐", "\U0010ffff",
    )
)  # fmt: skip


def unicode_chaos(body: bytes, rng: random.Random) -> bytes:
    """Valid UTF-8 that misleads: bidi overrides, invisible joiners, combining floods."""
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(body) + 1)
        body = body[:at] + rng.choice(UNICODE) * rng.choice((1, 1, 1, 20)) + body[at:]
    return body


def invalid_utf8(body: bytes, rng: random.Random) -> bytes:
    """Overlong forms, surrogates, stray continuation bytes, sequences cut short."""
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(body) + 1)
        body = body[:at] + rng.choice(xml_mutations.INVALID_UTF8) + body[at:]
    return body


def line_ends(body: bytes, rng: random.Random) -> bytes:
    """Every CRLF made LF or CR, bare CRs, or a line of one dot (old SMTP framing)."""
    variant = rng.randrange(4)
    if variant == 0:
        return body.replace(b"\r\n", rng.choice((b"\n", b"\r", b"\n\r")))
    if variant == 1:
        return body.replace(b"\n", b"\r\n\r\n")
    at = rng.randrange(len(body) + 1)
    return body[:at] + rng.choice((b"\r", b"\r\n.\r\n")) * rng.randint(1, 20) + body[at:]


SMUGGLED = (
    b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKsmuggled\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:x@x>;tag=s\r\nTo: <sip:bob@127.0.0.1>\r\n"
    b"Call-ID: smuggled\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKsmuggled\r\n"
    b"Call-ID: smuggled\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    b"Content-Length: 0\r\n\r\n",
    b"\r\n\r\n",
)


def embedded_message(body: bytes, rng: random.Random) -> bytes:
    """A SIP request or response inside the body: what a wrong length would smuggle."""
    smuggled = rng.choice(SMUGGLED)
    return rng.choice((smuggled + body, body + smuggled, smuggled))


# Pieces that XML and text parsers, and whatever reads IM text (logs, web
# UIs), have choked on; the content modules' own fuzz test uses them too
# (tests/unit/test_content_modules_never_crash.py).
PAYLOADS = (
    b"<!DOCTYPE x [<!ENTITY a SYSTEM 'file:///etc/passwd'>]>", b"&a;", b"<![CDATA[", b"]]>",
    b"<?xml version='1.1' encoding='UTF-7'?>", b"<" * 50, b"</" * 50, b"\x00", b"\xff\xfe",
    b"\xef\xbb\xbf", b"\xe2\x80\xae", b"\xe2\x81\xa6", b"--", b"--b1--", b"\r\n\r\n",
    b"Content-Type: text/html\r\n\r\n", b"javascript:", b"data:", b"http://", b"www.",
    b"%0d%0a", b"${jndi:", b"' OR '1'='1", b"<script>", b"\xf0\x9f\x91\xa8\xe2\x80\x8d",
)  # fmt: skip


def insert_payloads(body: bytes, rng: random.Random) -> bytes:
    """One to four attack pieces (XML, bidi, links, script, SQL, JNDI) anywhere in the body."""
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) + 1)
        piece = rng.choice(PAYLOADS) * rng.choice((1, 1, 1, 30))
        data[at:at] = piece
    return bytes(data)


# --- multipart ----------------------------------------------------------------

_DELIMITER = re.compile(rb"^--([^\r\n]{1,70}?)\r?$", re.MULTILINE)


def multipart_chaos(body: bytes, rng: random.Random) -> bytes:
    """No closing delimiter, parts repeated, nested in itself, a part of headers only."""
    found = _DELIMITER.search(body)
    boundary = found.group(1) if found else b"fz"
    delimiter = b"--" + boundary
    variant = rng.randrange(6)
    if variant == 0:
        return body.replace(delimiter + b"--", b"")
    if variant == 1:
        first, _, rest = body.partition(delimiter)
        return first + (delimiter + rest.split(delimiter, 1)[0]) * rng.choice((5, 40, 200)) + body
    if variant == 2:
        inner = body
        for level in range(rng.choice((2, 10, 50))):
            mark = boundary if rng.random() < 0.5 else b"n%d" % level
            inner = (
                b"--" + mark + b"\r\nContent-Type: multipart/mixed;boundary=" + mark + b"\r\n\r\n"
                + inner + b"\r\n--" + mark + b"--\r\n"
            )  # fmt: skip
        return inner
    if variant == 3:
        headers = b"".join(b"X-H%d: %d\r\n" % (n, n) for n in range(rng.choice((10, 200))))
        return delimiter + b"\r\n" + headers + b"\r\n" + body
    if variant == 4:
        return delimiter + b"\r\nContent-Type: text/plain\r\n" + delimiter + b"--\r\n"
    return body.replace(b"\r\n" + delimiter, delimiter)  # delimiters not at a line start


# --- byte level ---------------------------------------------------------------


def empty(body: bytes, rng: random.Random) -> bytes:
    return rng.choice((b"", b" ", b"\r\n", b"\x00"))


BODY_MUTATIONS: tuple[BodyMutation, ...] = (
    *xml_mutations.XML_MUTATIONS,
    *xml_mutations.XML_MUTATIONS,  # XML twice: most body seeds are XML
    unicode_chaos,
    invalid_utf8,
    line_ends,
    embedded_message,
    insert_payloads,
    insert_payloads,
    multipart_chaos,
    mutations.flip_bytes,
    mutations.truncate,
    mutations.insert_interesting,
    mutations.delete_range,
    mutations.repeat_chunk,
    mutations.random_bytes,
    empty,
)

# --- the head that describes the body -----------------------------------------

CONTENT_TYPES = (
    b"application/pidf+xml", b"application/xpidf+xml", b"application/watcherinfo+xml",
    b"application/dialog-info+xml", b"application/im-iscomposing+xml", b"message/imdn+xml",
    b"application/resource-lists+xml", b"application/rlmi+xml", b"application/reginfo+xml",
    b"application/conference-info+xml", b"application/simple-message-summary", b"text/plain",
    b"text/plain;charset=UTF-8", b"text/plain; charset=utf-16", b'text/plain;charset="x-bogus"',
    b"text/html", b"message/cpim", b"message/sipfrag", b"application/sdp",
    b"multipart/mixed;boundary=fz", b"multipart/mixed", b'multipart/alternative;boundary=""',
    b'multipart/related;type="application/rlmi+xml";boundary=x', b"application/octet-stream",
    b"text/xml", b"application/xml", b"*/*", b"", b"APPLICATION/PIDF+XML",
    b'application/pidf+xml ; charset = "UTF-8"', b"text/plain;charset=utf-8;charset=latin1",
    b"application/pidf+xml;" + b"p=v;" * 300, b"text/plain;charset=" + b"x" * 3000,
)  # fmt: skip
EXTRA_HEADERS = (
    b"Content-Encoding: gzip", b"Content-Encoding: deflate", b"Content-Encoding: x-bogus",
    b"Content-Transfer-Encoding: base64", b"Content-Disposition: render;handling=required",
    b"Content-Language: ar", b"MIME-Version: 9.9", b"c: text/plain",
)  # fmt: skip


def retype(head: bytes, eol: bytes, rng: random.Random) -> bytes:
    """Another Content-Type (or none, or two), or a header that changes how the body reads."""
    lines = head.split(eol)
    typed = [i for i, line in enumerate(lines) if i and _header_name(line) in _TYPE_NAMES]
    variant = rng.random()
    if variant < 0.6 and typed:
        lines[typed[0]] = b"Content-Type: " + rng.choice(CONTENT_TYPES)
    elif variant < 0.7:
        lines = [line for i, line in enumerate(lines) if i not in typed]
    elif variant < 0.8:
        lines.append(b"Content-Type: " + rng.choice(CONTENT_TYPES))
    else:
        lines.append(rng.choice(EXTRA_HEADERS))
    return eol.join(lines)


def remethod(head: bytes, eol: bytes, rng: random.Random) -> bytes:
    """Another of MESSAGE, NOTIFY and PUBLISH, in CSeq too, with the Event the new one needs."""
    lines = head.split(eol)
    old, _, rest = lines[0].partition(b" ")
    new = rng.choice(BODY_METHODS)
    lines[0] = new + b" " + rest
    for index, line in enumerate(lines):
        if index and _header_name(line) == b"cseq":
            lines[index] = line.replace(old, new)
    if new != b"MESSAGE" and not any(_header_name(line) in (b"event", b"o") for line in lines):
        lines.append(b"Event: presence")
    return eol.join(lines)


def wrong_length(head: bytes, eol: bytes, body: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A Content-Length that does not match: left stale, removed, off by a few, or absurd."""
    variant = rng.randrange(4)
    if variant == 0:
        return head, "length_stale"
    if variant == 1:
        return set_length(head, eol, None), "length_absent"
    if variant == 2:
        off = len(body) + rng.choice((-10, -2, -1, 1, 2, 10))
        off = off if off >= 0 else len(body) + 1
        return set_length(head, eol, str(off).encode()), "length_off"
    absurd = rng.choice((b"-1", b"65536", b"4294967296", b"1e3", b"0x10", b" 00012", b""))
    return set_length(head, eol, absurd), "length_absurd"


@dataclass(frozen=True)
class BodyMutated:
    message: bytes
    mutations: tuple[str, ...]
    # Content-Length matches the body and the rest of the head is the seed's
    # (but for a retype or remethod, which the names say).
    framed: bool


def mutate_body(message: bytes, rng: random.Random) -> BodyMutated:
    """One to three mutations of ``message``'s body, framed or not (see the module doc)."""
    head, separator, body = split(message)
    eol = _eol(separator)
    names = []
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        mutation = rng.choice(BODY_MUTATIONS)
        body = mutation(body, rng)
        names.append(mutation.__name__)
    if rng.random() < RETYPE_SHARE:
        head = retype(head, eol, rng)
        names.append("retype")
    if rng.random() < REMETHOD_SHARE:
        head = remethod(head, eol, rng)
        names.append("remethod")
    if rng.random() < FRAMED_SHARE:
        return BodyMutated(reframe(head, separator, body), tuple(names), framed=True)
    head, how = wrong_length(head, eol, body, rng)
    return BodyMutated(head + (separator or b"\r\n\r\n") + body, (*names, how), framed=False)
