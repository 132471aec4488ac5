"""Finding the SDP of a SIP body: single, multipart (SIP-I: SDP + ISUP), malformed, hostile."""

from __future__ import annotations

import pytest

from sipshield.sip.sdp_body import (
    BAD_REQUEST,
    MAX_PARTS,
    UNSUPPORTED_MEDIA_TYPE,
    BodyProblem,
    SdpPart,
    find_sdp,
    multipart_parts,
)

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
# An ISUP IAM as SIP-I carries it: binary, NUL bytes, bytes that are not UTF-8,
# and CR/LF bytes that are not line ends.
ISUP = bytes.fromhex("0100200a0002000a0883908908200153ff0f000d0a0d0a2d2d0a07031306543210")
ISUP_HEADERS = (
    b"Content-Type: application/ISUP;version=itu-t92+;base=itu-t92+\r\n"
    b"Content-Disposition: signal;handling=optional\r\n"
)
MIXED = "multipart/mixed;boundary=unique-boundary-1"


def multipart(
    *parts: bytes, boundary: bytes = b"unique-boundary-1", preamble: bytes = b""
) -> bytes:
    """Parts (headers, blank line and content each) joined by delimiters, then closed."""
    delimiter = b"--" + boundary + b"\r\n"
    return (
        preamble + delimiter + (b"\r\n" + delimiter).join(parts) + b"\r\n--" + boundary + b"--\r\n"
    )


SDP_PART = b"Content-Type: application/sdp\r\n\r\n" + SDP
ISUP_PART = ISUP_HEADERS + b"\r\n" + ISUP


def nest(part: bytes, boundary: bytes) -> bytes:
    """A part holding a multipart whose only part is ``part``."""
    content_type = b"Content-Type: multipart/mixed;boundary=" + boundary
    return content_type + b"\r\n\r\n" + multipart(part, boundary=boundary)


def located(content_type: str | None, body: bytes) -> SdpPart:
    found = find_sdp(content_type, body)
    assert isinstance(found, SdpPart), found
    return found


def refused(content_type: str | None, body: bytes) -> BodyProblem:
    found = find_sdp(content_type, body)
    assert isinstance(found, BodyProblem), found
    return found


def rewritten(part: SdpPart, sdp: bytes) -> bytes:
    """What Kamailio's first-match replace_body_str makes of the body."""
    return part.body.replace(part.sdp, sdp, 1)


# --- found --------------------------------------------------------------------------


def test_a_single_sdp_body_is_the_whole_body():
    part = located("application/sdp", SDP)
    assert (part.sdp, part.multipart, part.text) == (SDP, False, SDP.decode())
    assert located("Application/SDP; charset=utf-8", SDP).sdp == SDP


def test_sip_i_sdp_and_binary_isup_the_isup_is_kept_byte_for_byte():
    body = multipart(SDP_PART, ISUP_PART)
    part = located(MIXED, body)
    assert part.multipart and part.sdp == SDP and part.text == SDP.decode()
    new = rewritten(part, b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 0\r\n")
    # Everything but the SDP (delimiters, part headers, the ISUP bytes) is unchanged.
    assert new[: part.start] == body[: part.start]
    assert new.endswith(body[part.end :])
    assert body[part.end :].startswith(b"\r\n--unique-boundary-1\r\n" + ISUP_HEADERS)
    assert located(MIXED, new).text.startswith("v=0\r\nc=IN IP4 127.0.0.1")


def test_sdp_not_first_quoted_boundary_preamble_and_epilogue():
    boundary = b"==_Part 0.1'(x)+,-./:=?"
    body = multipart(ISUP_PART, SDP_PART, boundary=boundary, preamble=b"This is SIP-I.\r\n")
    body += b"epilogue, ignored\r\n"
    part = located('multipart/mixed; boundary="==_Part 0.1\'(x)+,-./:=?"; x=y', body)
    assert part.sdp == SDP
    assert body[: part.start].endswith(b"\r\nContent-Type: application/sdp\r\n\r\n")


def test_bare_lf_line_ends_and_transport_padding_are_read():
    body = b"--b \t\nContent-Type: application/sdp\n\n" + SDP + b"\n--b--  \n"
    assert located("multipart/mixed;boundary=b", body).sdp == SDP


def test_part_headers_compact_form_folding_and_encodings_that_leave_text():
    part = b"c: application/sdp\r\nContent-Transfer-Encoding:\r\n 8bit\r\n\r\n" + SDP
    assert located(MIXED, multipart(ISUP_PART, part)).sdp == SDP


def test_nested_multipart_sdp_is_found():
    inner = multipart(SDP_PART, boundary=b"inner")
    outer = multipart(
        ISUP_PART, b"Content-Type: multipart/alternative;boundary=inner\r\n\r\n" + inner
    )
    part = located(MIXED, outer)
    assert part.sdp == SDP
    assert outer[part.end :].startswith(b"\r\n--inner--\r\n\r\n--unique-boundary-1--")


def test_multipart_parts_are_listed_in_order_nested_ones_in_their_place():
    body = multipart(ISUP_PART, nest(SDP_PART, b"inner"), b"\r\nno headers")
    parts = multipart_parts(MIXED, body)
    assert not isinstance(parts, BodyProblem), parts
    types = [part.content_type for part in parts]
    assert types == [
        "application/ISUP;version=itu-t92+;base=itu-t92+",
        "application/sdp",
        "text/plain",
    ]
    assert [body[p.start : p.end] for p in parts] == [ISUP, SDP, b"no headers"]


# --- no SDP -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (None, b""),
        ("application/sdp", b""),
        ("application/sdp", b"\r\n"),
        ("application/isup", ISUP),
        ("text/plain", SDP),
        (MIXED, multipart(ISUP_PART)),
        # A part without Content-Type is text/plain (RFC 2046), whatever it holds.
        (MIXED, multipart(b"\r\n" + SDP, ISUP_PART)),
        (MIXED, multipart(b"Content-Type: application/sdp\r\n\r\n", ISUP_PART)),
        (MIXED, multipart(b"Content-Type: application/sdp\r\n", ISUP_PART)),
    ],
)
def test_no_sdp_only_when_there_is_truly_no_sdp(content_type, body):
    assert find_sdp(content_type, body) is None


# --- refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "code", "reason"),
    [
        (None, SDP, BAD_REQUEST, "body without Content-Type"),
        ("multipart/mixed", multipart(SDP_PART), BAD_REQUEST, "no boundary"),
        ('multipart/mixed;boundary=""', multipart(SDP_PART), BAD_REQUEST, "no boundary"),
        (MIXED + ";boundary=other", multipart(SDP_PART), BAD_REQUEST, "two boundaries"),
        ("multipart/mixed;boundary=a\\b", multipart(SDP_PART), BAD_REQUEST, "Content-Type"),
        ('multipart/mixed;boundary="a b "', multipart(SDP_PART), BAD_REQUEST, "boundary"),
        ("multipart/mixed;boundary=" + "b" * 71, SDP, BAD_REQUEST, "boundary"),
        (MIXED, SDP, BAD_REQUEST, "no delimiter"),
        (MIXED, b"--unique-boundary-1\r\n" + SDP_PART, BAD_REQUEST, "no closing delimiter"),
        (MIXED, b"--unique-boundary-1", BAD_REQUEST, "no closing delimiter"),
        (MIXED, b"--unique-boundary-1--\r\n", BAD_REQUEST, "no part"),
        (MIXED, multipart(b"Content-Type: application/sdp\r\n" + SDP), BAD_REQUEST, "header"),
        (MIXED, multipart(b"Content-Type: application/sdp"), BAD_REQUEST, "not terminated"),
        (MIXED, multipart(b" Content-Type: application/sdp\r\n\r\n" + SDP), BAD_REQUEST, "header"),
        (
            MIXED,
            multipart(b"Content-Type: text/plain\r\nc: application/sdp\r\n\r\n" + SDP),
            BAD_REQUEST,
            "two content-type headers",
        ),
        (MIXED, multipart(SDP_PART, SDP_PART), UNSUPPORTED_MEDIA_TYPE, "more than one SDP"),
        (
            MIXED,
            multipart(
                b"Content-Type: application/sdp\r\nContent-Transfer-Encoding: base64\r\n\r\ndj0w"
            ),
            UNSUPPORTED_MEDIA_TYPE,
            "base64",
        ),
        (
            MIXED,
            multipart(b"Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n\r\n" + SDP),
            UNSUPPORTED_MEDIA_TYPE,
            "content encoding",
        ),
        (MIXED, multipart(SDP_PART + b"\xff\xfe"), UNSUPPORTED_MEDIA_TYPE, "not UTF-8"),
        (MIXED, multipart(SDP_PART + b"\x00"), UNSUPPORTED_MEDIA_TYPE, "not UTF-8"),
    ],
)
def test_a_body_whose_sdp_cannot_be_located_safely_is_a_problem(content_type, body, code, reason):
    problem = refused(content_type, body)
    assert problem.code == code and reason in problem.reason, problem


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # Lax parsers split here: the SDP would be read differently by the far end.
        (multipart(SDP_PART + b"x--unique-boundary-1", ISUP_PART), "inside a line"),
        (multipart(SDP_PART, ISUP_PART.replace(b"\r\n\r\n", b"\r\n\r\n--unique-boundary-1x\r\n")),
         "followed by other text"),
        (multipart(SDP_PART) + b"--unique-boundary-1\r\n" + SDP_PART, "after the closing"),
        # The SBC rewrites by first match: the SDP's text must not come earlier.
        (multipart(SDP_PART, preamble=SDP), "appears before it"),
    ],
)  # fmt: skip
def test_a_boundary_or_sdp_where_two_parsers_could_disagree_is_refused(body, reason):
    problem = refused(MIXED, body)
    assert problem.code == BAD_REQUEST and reason in problem.reason, problem


def test_nesting_is_walked_three_multiparts_deep_and_refused_deeper():
    three_deep = multipart(nest(nest(SDP_PART, b"l2"), b"l1"), boundary=b"l0")
    assert located("multipart/mixed;boundary=l0", three_deep).sdp == SDP
    four_deep = multipart(nest(nest(nest(SDP_PART, b"l3"), b"l2"), b"l1"), boundary=b"l0")
    assert "too deep" in refused("multipart/mixed;boundary=l0", four_deep).reason


# --- hostile ------------------------------------------------------------------------


def test_many_parts_are_refused_without_reading_them_all():
    body = multipart(*[ISUP_PART] * 200_000, SDP_PART)
    problem = refused(MIXED, body)
    assert problem.code == UNSUPPORTED_MEDIA_TYPE and str(MAX_PARTS) in problem.reason
    # Up to the limit they are read.
    assert located(MIXED, multipart(*[ISUP_PART] * (MAX_PARTS - 1), SDP_PART)).sdp == SDP


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"--unique-boundary-1\r\n" * 100_000, "over 32 parts"),
        (multipart(b"X-Header: x\r\n" * 200_000 + b"\r\n" + SDP), None),
        (multipart(b"Content-Type: application/sdp\r\n" + b" ;x=y\r\n" * 200_000 + b"\r\n" + SDP),
         SDP),
        (multipart(SDP_PART, b"Content-Type: text/plain\r\n\r\n" + b"-" * 2_000_000), SDP),
        (b"-" * 2_000_000, "no delimiter"),
        (b"\r\n" * 1_000_000, None),
        (b"--unique-boundary-" * 100_000, "no delimiter"),
        (multipart(SDP_PART, ISUP_PART)[:-30], "no closing delimiter"),
        (bytes(range(256)) * 4000, "no delimiter"),
    ],
)  # fmt: skip
def test_hostile_bodies_are_answered_in_one_pass_never_with_an_exception(body, expected):
    found = find_sdp(MIXED, body)
    if isinstance(expected, bytes):
        assert isinstance(found, SdpPart) and found.sdp == expected, found
    elif expected is None:
        assert found is None
    else:
        assert isinstance(found, BodyProblem) and expected in found.reason, found
