"""text_safety sanitises only what Kamailio can put back; otherwise it refuses (488).

Found by `make fuzz`: a CPIM text holding a NUL (KEMI strings cannot carry one,
so textops could not find it to replace it) and a Content-Type that is not
plain text (set_body could not take it) both made the relay phase fail.
"""

from __future__ import annotations

from sipshield.checks.content.text_safety import TextSafety, TextSafetyConfig
from sipshield.core.hop import Hop
from sipshield.core.verdict import Reject, Rewrite
from sipshield.sip.message import RawSipMessage

MODULE = TextSafety(TextSafetyConfig())
HOP = Hop(next_hop="sip:127.0.0.1:5090", ruri="sip:bob@sipshield.lab", tls=False)


def message(content_type: bytes, body: bytes) -> RawSipMessage:
    return RawSipMessage(
        b"MESSAGE sip:bob@sipshield.lab SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx;rport\r\n"
        b"From: <sip:alice@sipshield.lab>;tag=a\r\nTo: <sip:bob@sipshield.lab>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nContent-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


CPIM_HEAD = b"From: <sip:alice@sipshield.lab>\r\n\r\nContent-Type: text/plain\r\n\r\n"


def test_a_cpim_text_with_a_nul_is_refused_not_rewritten() -> None:
    msg = message(b"message/cpim", CPIM_HEAD + b"pay \xe2\x80\xae now\x00\r\n")
    outcome = MODULE.check_relay(msg, HOP, state=None)  # type: ignore[arg-type]
    assert isinstance(outcome, Reject) and outcome.code == 488
    assert "cannot be sanitised" in outcome.reason


def test_a_cpim_text_without_a_nul_is_rewritten_in_place() -> None:
    msg = message(b"message/cpim", CPIM_HEAD + b"pay \xe2\x80\xae now\r\n")
    outcome = MODULE.check_relay(msg, HOP, state=None)  # type: ignore[arg-type]
    assert isinstance(outcome, Rewrite)
    assert outcome.part.multipart and outcome.text == "pay  now\r\n"


def test_a_content_type_kemi_cannot_carry_is_refused_not_rewritten() -> None:
    msg = message(b"text/plain; x=\xff", "pay \u202e now".encode())
    outcome = MODULE.check_relay(msg, HOP, state=None)  # type: ignore[arg-type]
    assert isinstance(outcome, Reject) and outcome.code == 488
