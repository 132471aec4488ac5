"""Requests an attacker writes by hand, outside any dialog, and the ACK a failed INVITE needs."""

from __future__ import annotations

import secrets


def request(
    method: str,
    ruri: str,
    source: str,
    domain: str,
    *,
    from_user: str = "probe",
    to: str | None = None,
    headers: tuple[str, ...] = (),
    body: str = "",
) -> bytes:
    """One request from ``source`` (its Via and Contact), unique Call-ID, branch and tag."""
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {source}:5060;branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards: 70",
        f"From: <sip:{from_user}@{domain}>;tag={secrets.token_hex(4)}",
        f"To: <{to or ruri}>",
        f"Call-ID: {secrets.token_hex(12)}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:{from_user}@{source}:5060>",
        *headers,
        f"Content-Length: {len(body.encode())}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def ack_for(invite: bytes, replies: bytes) -> bytes:
    """The ACK of a negative final reply to ``invite`` (RFC 3261 17.1.1.3: same branch)."""
    head = invite.decode(errors="replace").split("\r\n\r\n")[0].split("\r\n")
    to = next(
        (
            line
            for line in replies.decode(errors="replace").split("\r\n")
            if line.lower().startswith("to:")
        ),
        next(line for line in head if line.startswith("To:")),
    )
    keep = [line for line in head[1:] if line.split(":")[0] in ("Via", "From", "Call-ID")]
    cseq = next(line for line in head if line.startswith("CSeq:")).replace("INVITE", "ACK")
    lines = [head[0].replace("INVITE", "ACK", 1), *keep, to, cseq, "Max-Forwards: 70"]
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
