"""Hand-built requests for the integration tests (what SIPp cannot send)."""

from __future__ import annotations

import secrets


def options(target: str, extra_headers: str = "", user: str = "") -> tuple[bytes, str]:
    """An OPTIONS request (to the SBC itself unless ``user``); returns (bytes, call_id)."""
    call_id = secrets.token_hex(10)
    ruri = f"sip:{user}@{target}" if user else f"sip:{target}"
    raw = (
        f"OPTIONS {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:tester@{target}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <{ruri}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"{extra_headers}"
        "Content-Length: 0\r\n\r\n"
    )
    return raw.encode(), call_id
