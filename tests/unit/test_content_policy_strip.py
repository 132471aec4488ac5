"""content_policy's ``disallowed_parts: strip``: one disallowed text part is cut out.

The expected bodies are written out here, byte for byte, not computed by the
module's own multipart reader.
"""

from __future__ import annotations

from sipshield.checks.content.content_policy import ContentPolicy, ContentPolicyConfig
from sipshield.core.hop import Hop
from sipshield.core.verdict import CONTINUE, Reject, Rewrite
from sipshield.sip.message import RawSipMessage

HOP = Hop(next_hop="sip:127.0.0.1:5090", ruri="sip:bob@sipshield.lab", tls=False)
STRIP = ContentPolicy(ContentPolicyConfig(disallowed_parts="strip"))
REFUSE = ContentPolicy(ContentPolicyConfig())
TEXT = b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
HTML = b"--b1\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n"
END = b"--b1--\r\n"


def message(body: bytes) -> RawSipMessage:
    return RawSipMessage(
        b"MESSAGE sip:bob@sipshield.lab SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx;rport\r\n"
        b"From: <sip:alice@sipshield.lab>;tag=a\r\nTo: <sip:bob@sipshield.lab>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nContent-Type: multipart/mixed;boundary=b1\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def stripped(msg: RawSipMessage) -> bytes:
    assert STRIP.check(msg, state=None) is CONTINUE  # type: ignore[arg-type]
    rewrite = STRIP.check_relay(msg, HOP, state=None)  # type: ignore[arg-type]
    assert isinstance(rewrite, Rewrite) and rewrite.action == "strip" and rewrite.text == ""
    # What textops' replace_body_str does: the first match of the part's text, replaced.
    return msg.body.replace(rewrite.part.text.encode(), b"", 1)


def test_a_disallowed_last_part_is_cut_with_its_delimiter() -> None:
    assert stripped(message(TEXT + HTML + END)) == TEXT + END


def test_a_disallowed_first_part_is_cut_with_its_delimiter() -> None:
    assert stripped(message(HTML + TEXT + END)) == b"\r\n" + TEXT + END


def test_refuse_mode_answers_415_with_accept() -> None:
    outcome = REFUSE.check(message(TEXT + HTML + END), state=None)  # type: ignore[arg-type]
    assert isinstance(outcome, Reject) and outcome.code == 415
    assert dict(outcome.headers)["Accept"].startswith("text/plain")


def test_a_binary_part_cannot_be_cut_and_is_refused() -> None:
    isup = b"--b1\r\nContent-Type: text/html\r\n\r\n\xff\x00\x01\r\n"
    outcome = STRIP.check(message(TEXT + isup + END), state=None)  # type: ignore[arg-type]
    assert isinstance(outcome, Reject) and outcome.code == 415


def test_only_disallowed_parts_are_refused_not_emptied() -> None:
    outcome = STRIP.check(message(HTML + END), state=None)  # type: ignore[arg-type]
    assert isinstance(outcome, Reject) and outcome.code == 415
