"""The one-pattern fast forms of the syntax checks accept only what the full reading accepts.

check_via, check_name_addr and check_uri first try one pattern for the form
nearly every message uses and read the value piece by piece only when it does
not match.  A pattern that accepted something the full reading refuses would
let a malformed request through, so each is held against the full reading
on the common forms and on many thousands of mutations of them (seeded, so a
failure repeats).
"""

from __future__ import annotations

import random

import pytest

from sipshield.sip import sip_syntax
from sipshield.sip.sip_syntax import SipSyntaxError, read_name_addr, read_uri, read_via

VIAS = [
    "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1234-1-0",
    "SIP/2.0/TLS phone.example.com;branch=z9hG4bK776asdhds;rport;received=192.0.2.1",
    "SIP/2.0/TCP 10.0.0.1:65535;rport=5060;branch=z9hG4bKnashds7;alias",
]
NAME_ADDRS = [
    "sipp <sip:sipp@127.0.0.1:5061>;tag=1234SIPpTag001",
    '"Alice Smith" <sips:alice@atlanta.example.com;transport=tls>;tag=9fxced76sl',
    "<sip:bob@biloxi.example.com>",
    "sip:sipp@127.0.0.1:5061",
    "<sip:127.0.0.1:5060;lr;r2=on;ftag=a1b2>",
    "sip:+15551234567@gw.example.net;tag=x.y-z",
]
URIS = [
    "sip:127.0.0.1:5060",
    "sip:bob@sipshield.lab;transport=tcp",
    "sips:alice@192.0.2.4:5061;maddr=[2001:db8::1]",
]
# What a mutation inserts: separators, quoting, escapes, brackets, whitespace,
# control characters, non-ASCII and the characters at the edge of each class.
ALPHABET = list(" \t\"\\<>@;:,=?%#[]/'`~!*()&+$.-_|{}^\x00\x7f\r\n") + ["é", "0", "a", "Z"]


def mutations(seed_values: list[str], count: int, rng: random.Random) -> list[str]:
    out = []
    for _ in range(count):
        text = list(rng.choice(seed_values))
        for _ in range(rng.randint(1, 3)):
            where = rng.randrange(len(text) + 1)
            action = rng.random()
            if action < 0.4 and text:
                del text[min(where, len(text) - 1)]
            elif action < 0.7:
                text.insert(where, rng.choice(ALPHABET))
            elif text:
                text[min(where, len(text) - 1)] = rng.choice(ALPHABET)
        out.append("".join(text))
    return out


def accepted(read, value: str) -> bool:
    try:
        read(value)
    except SipSyntaxError:
        return False
    return True


@pytest.mark.parametrize(
    ("pattern", "read", "seeds"),
    [
        (sip_syntax._COMMON_VIA, read_via, VIAS),
        (sip_syntax._COMMON_NAME_ADDR, read_name_addr, NAME_ADDRS),
        (sip_syntax._COMMON_URI, read_uri, URIS),
    ],
    ids=["via", "name-addr", "uri"],
)
def test_the_fast_form_accepts_only_what_the_full_reading_accepts(pattern, read, seeds):
    rng = random.Random(20261130)
    fast_accepted = 0
    for value in seeds + mutations(seeds, 20000, rng):
        if pattern.fullmatch(value) and (read is not read_via or ";branch=" in value.lower()):
            fast_accepted += 1
            assert accepted(read, value), f"fast form accepts {value!r}, full reading refuses it"
    # The mutations must reach both sides, or the test proves nothing.
    assert fast_accepted > 1000


@pytest.mark.parametrize(
    ("pattern", "values"),
    [
        (sip_syntax._COMMON_VIA, VIAS),
        (sip_syntax._COMMON_NAME_ADDR, NAME_ADDRS),
        (sip_syntax._COMMON_URI, URIS),
    ],
    ids=["via", "name-addr", "uri"],
)
def test_the_common_forms_take_the_fast_path(pattern, values):
    assert [v for v in values if not pattern.fullmatch(v)] == []


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP 127.0.0.1:5061",  # no branch
        "SIP/2.0/UDP 127.0.0.1:65536;branch=z9hG4bK1",  # port out of range
        "SIP/2.0/UDP 127.0.0.1:5061;branch=",  # empty branch
        "SIP/3.0/UDP 127.0.0.1;branch=z9hG4bK1",
    ],
)
def test_a_malformed_via_is_still_refused(value):
    with pytest.raises(SipSyntaxError):
        sip_syntax.check_via(value)


@pytest.mark.parametrize(
    "value",
    [
        "<sip:bob@>",
        '"unterminated <sip:bob@example.com>',
        "<sip:bob@exa mple.com>",
        "sip:bob@example.com>",
        "<sip:bob%zz@example.com>",
    ],
)
def test_a_malformed_name_addr_is_still_refused(value):
    with pytest.raises(SipSyntaxError):
        sip_syntax.check_name_addr(value)
