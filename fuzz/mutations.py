"""Random mutations of whole SIP messages, driven by a seeded RNG.

Each mutation takes the message bytes and the RNG and returns new bytes; a
fuzzed message is a seed with one to three mutations stacked.  They aim at
what SIP parsers get wrong: line structure, counts, lengths, escapes, quotes
and sizes, methods, and plain noise.  ``make fuzz`` (fuzz.corpus) and the
in-suite fuzz test (tests/integration/test_fuzz.py) both use them; the body
mutations are in fuzz.body_mutations.
"""

from __future__ import annotations

import random
from collections.abc import Callable

Mutation = Callable[[bytes, random.Random], bytes]

# Values that have broken SIP parsers: empty, signs and overflows, unclosed
# quotes and brackets, stray separators, escapes, NUL and non-UTF-8 bytes.
INTERESTING = (
    b"", b" ", b"\t", b"0", b"-1", b"2147483648", b"4294967296", b"99999999999999999999",
    b"%", b"%0", b"%00", b"%zz", b"<", b">", b"<<>>", b'"', b'"\\', b";", b";;;", b",",
    b",,,", b"=", b":", b"@", b"@@", b"[", b"]", b"[::1", b"\x00", b"\xff\xfe", b"\xc3\x28",
    b"\x7f", b"sip:", b"sips:", b"tel:", b"SIP/2.0", b"SIP/2.0/", b"SIP/2.0/UDP", b";branch=",
    b";tag=", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\r\n ", b"Via: SIP/2.0/UDP x;branch=z9hG4bKx",
    b"Content-Length: 0", b"Content-Length: 99999", b"multipart/mixed;boundary=",
)  # fmt: skip


def _lines(message: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = message.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def _join(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def flip_bytes(message: bytes, rng: random.Random) -> bytes:
    data = bytearray(message)
    for _ in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def truncate(message: bytes, rng: random.Random) -> bytes:
    return message[: rng.randrange(len(message) + 1)]


def duplicate_header(message: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(message)
    if len(lines) > 1:
        index = rng.randrange(1, len(lines))
        lines.insert(rng.randrange(1, len(lines) + 1), lines[index])
    return _join(lines, body)


def delete_header(message: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(message)
    if len(lines) > 1:
        del lines[rng.randrange(1, len(lines))]
    return _join(lines, body)


def swap_lines(message: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(message)
    a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[a], lines[b] = lines[b], lines[a]
    return _join(lines, body)


def replace_value(message: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(message)
    index = rng.randrange(len(lines))
    name, colon, _ = lines[index].partition(b":")
    value = rng.choice(INTERESTING) * rng.choice((1, 1, 2, 50))
    lines[index] = name + (colon or b":") + b" " + value
    return _join(lines, body)


def insert_interesting(message: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(message) + 1)
    return message[:at] + rng.choice(INTERESTING) + message[at:]


def huge_value(message: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(message)
    size = rng.choice((1000, 2049, 5000, 17000, 50000, 60000))
    filler = bytes([rng.choice(b'a;,<"%\xe9 ')]) * size
    lines.insert(rng.randrange(1, len(lines) + 1), b"X-Huge: " + filler)
    return _join(lines, body)


def many_headers(message: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(message)
    extra = [b"Via: SIP/2.0/UDP h%d;branch=z9hG4bK%d" % (n, n) for n in range(rng.randint(50, 400))]
    return _join(lines[:1] + extra + lines[1:], body)


def crlf_injection(message: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(message)
    index = rng.randrange(len(lines))
    at = rng.randrange(len(lines[index]) + 1)
    breaker = rng.choice((b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\n\n", b"\r\n "))
    lines[index] = lines[index][:at] + breaker + lines[index][at:]
    return _join(lines, body)


def wrong_content_length(message: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(message)
    length = rng.choice((b"-1", b"x", b"", b"0", b"1", b"65536", b"%d" % (len(body) + 1)))
    lines = [line for line in lines if not line.lower().startswith((b"content-length", b"l:"))]
    lines.append(b"Content-Length: " + length)
    return _join(lines, body)


def delete_range(message: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(message) + 1)
    return message[:start] + message[start + rng.randint(1, 64) :]


def repeat_chunk(message: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(message) + 1)
    chunk = message[start : start + rng.randint(1, 32)]
    return message[:start] + chunk * rng.randint(2, 200) + message[start:]


def random_bytes(message: bytes, rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(0, 2000))


# Every method the validation module knows, a few it does not, and spellings
# that only look like methods: each module branches on the method.
METHODS = (
    b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"REGISTER", b"PRACK", b"SUBSCRIBE",
    b"NOTIFY", b"PUBLISH", b"INFO", b"REFER", b"MESSAGE", b"UPDATE", b"invite", b"FOO",
    b"!interesting-Method0123456789_*+`.%~", b"REGISTER%20", b"INVITE\x00", b"",
)  # fmt: skip


def change_method(message: bytes, rng: random.Random) -> bytes:
    """Another method on the request line, and in CSeq too unless the mismatch is the point."""
    lines, body = _lines(message)
    old, _, rest = lines[0].partition(b" ")
    new = rng.choice(METHODS)
    lines[0] = new + b" " + rest
    if rng.random() < 0.8:
        for index, line in enumerate(lines):
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() == b"cseq":
                lines[index] = name + b":" + value.replace(old, new, 1)
    return _join(lines, body)


def append_message(message: bytes, rng: random.Random) -> bytes:
    """Two requests in one datagram or one TCP write (RFC 4475's dblreq)."""
    return (
        message
        + (rng.choice((b"", b"\r\n", b"\r\n\r\n")) + message)[: rng.randint(1, len(message) + 4)]
    )


MUTATIONS: tuple[Mutation, ...] = (
    flip_bytes,
    truncate,
    duplicate_header,
    delete_header,
    swap_lines,
    replace_value,
    replace_value,
    insert_interesting,
    insert_interesting,
    huge_value,
    many_headers,
    crlf_injection,
    wrong_content_length,
    delete_range,
    repeat_chunk,
    random_bytes,
    change_method,
    append_message,
)


def mutate_named(message: bytes, rng: random.Random) -> tuple[bytes, tuple[str, ...]]:
    """One to three stacked mutations of ``message``, and their names (for the report)."""
    names = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        mutation = rng.choice(MUTATIONS)
        message = mutation(message, rng)
        names.append(mutation.__name__)
    return message, tuple(names)


def mutate(message: bytes, rng: random.Random) -> bytes:
    """One to three stacked mutations of ``message``."""
    return mutate_named(message, rng)[0]
