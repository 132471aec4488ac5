"""The SDP of a SIP body: a single ``application/sdp`` body, or the SDP part of a multipart one.

SIP-I and SIP-T trunks (and some phones) send ``multipart/mixed`` bodies: SDP
beside a binary ISUP message (RFC 2046 section 5.1, RFC 5621).  Whatever the
packaging, the media policy must judge the SDP and rtpengine must rewrite it;
a body whose SDP cannot be located safely is a :class:`BodyProblem`, never
"no SDP", so the caller can refuse it instead of relaying media unanchored.

What counts as well formed is RFC 2046 read strictly wherever two parsers
could disagree, because a body that the SBC and the far end read differently
is how media gets past the anchor:

- a delimiter is ``--boundary`` at the start of a line, followed only by
  transport padding (spaces, tabs) and a line end; any other occurrence of
  ``--boundary`` (inside a line, as the prefix of a longer line, after the
  closing delimiter) is refused, since lax parsers take it as a delimiter;
- the closing delimiter ``--boundary--`` is required;
- a part's ``Content-Type`` (or SIP's compact ``c``) says what it is; none means
  text/plain; two are refused;
- more than one SDP part anywhere (``multipart/alternative`` receivers take
  the *last* one they understand, ``multipart/mixed`` ones usually the first)
  is refused, as is an SDP part in a transfer or content encoding.

Line ends are CRLF or bare LF, as SIP parsers accept both.  Nested multiparts
are walked to :data:`MAX_DEPTH`, and at most :data:`MAX_PARTS` parts are read:
the scan is linear in the body whatever it holds.

The standard library's :mod:`email` parser is not used: it hands parts back
decoded and re-serialises them with its own line ends, header folding and
boundaries, and it records malformations as "defects" instead of failing.  The
SBC needs the opposite: offsets into the bytes received, so that only the SDP
is replaced and every other byte stays where it was, and a hard "no" on
anything ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from sipshield.sip.sip_syntax import SipSyntaxError, check_params, is_token, split_outside_quotes

# Nested multiparts beyond this are refused rather than walked.
MAX_DEPTH = 3
# SIP-I carries two parts; RFC 5621's examples three.  Far above either.
MAX_PARTS = 32
MAX_BOUNDARY = 70  # RFC 2046 section 5.1.1
SDP_TYPE = "application/sdp"
# Encodings that leave the SDP as the text it is (RFC 2045 section 6.1).
IDENTITY_TRANSFER_ENCODINGS = ("7bit", "8bit", "binary")
BAD_REQUEST = 400
UNSUPPORTED_MEDIA_TYPE = 415


@dataclass(frozen=True)
class SdpPart:
    """Where the SDP sits in a body: ``body[start:end]``."""

    body: bytes
    start: int
    end: int
    multipart: bool

    @property
    def sdp(self) -> bytes:
        return self.body[self.start : self.end]

    @property
    def text(self) -> str:
        return self.sdp.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class BodyProblem:
    """A body that may carry SDP but whose SDP cannot be located or rewritten safely."""

    code: int  # 400 for a malformed body, 415 for one the SBC cannot anchor
    reason: str


@dataclass(frozen=True)
class BodyPart:
    """One part of a multipart body: ``body[start:end]`` and its headers."""

    headers: dict[str, str]  # Content-* by lower-cased name (SIP's compact "c" too)
    start: int
    end: int
    # How many multiparts hold it: 1 for a part of the body's own multipart.
    nesting: int = 1
    # Where the line end before its opening delimiter begins: body[segment_start:end]
    # is the whole part with its delimiter, what removing the part removes.
    segment_start: int = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "text/plain")  # RFC 2046 section 5.1


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.problem = BodyProblem(code, reason)


def media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def find_sdp(content_type: str | None, body: bytes) -> SdpPart | BodyProblem | None:
    """The SDP of a message body, a problem, or None when the body carries no SDP."""
    if not body.strip():
        return None
    if content_type is None or not content_type.strip():
        # Some parsers sniff a body without a type; what they would find is unknown.
        return BodyProblem(BAD_REQUEST, "body without Content-Type")
    kind = media_type(content_type)
    if kind == SDP_TYPE:
        return SdpPart(body, 0, len(body), multipart=False)
    if not kind.startswith("multipart/"):
        return None
    parts = multipart_parts(content_type, body)
    if isinstance(parts, BodyProblem):
        return parts
    sdp = [part for part in parts if media_type(part.content_type) == SDP_TYPE]
    if not sdp:
        return None
    if len(sdp) > 1:
        return BodyProblem(UNSUPPORTED_MEDIA_TYPE, "more than one SDP part")
    return _rewritable(body, sdp[0])


def multipart_parts(
    content_type: str, body: bytes, *, with_containers: bool = False
) -> list[BodyPart] | BodyProblem:
    """The parts of a multipart body in order, the parts of nested multiparts in their place.

    With ``with_containers``, each nested multipart is listed too, just before its
    parts, for callers that judge every part's type (validation's allowlist).
    """
    scan = _Scan(body, with_containers)
    try:
        scan.walk(content_type, 0, len(body), 0)
    except _Refused as refused:
        return refused.problem
    return scan.parts


def _rewritable(body: bytes, part: BodyPart) -> SdpPart | BodyProblem | None:
    """The SDP part when it can be anchored and put back, as Kamailio does it.

    KEMI takes strings only (UTF-8, no NUL), and textops' replace_body_str
    replaces the first occurrence: the SDP must be text, and the first place
    its text appears must be its part.
    """
    encoding = part.headers.get("content-transfer-encoding", "7bit").lower()
    if encoding not in IDENTITY_TRANSFER_ENCODINGS:
        return BodyProblem(UNSUPPORTED_MEDIA_TYPE, f"SDP part in {encoding} encoding")
    if part.headers.get("content-encoding", "identity").lower() != "identity":
        return BodyProblem(UNSUPPORTED_MEDIA_TYPE, "SDP part with a content encoding")
    sdp = body[part.start : part.end]
    if not sdp.strip():
        return None  # an empty SDP part, like an empty body: nothing to anchor
    try:
        sdp.decode("utf-8")
    except UnicodeDecodeError:
        return BodyProblem(UNSUPPORTED_MEDIA_TYPE, "SDP part is not UTF-8 text")
    if b"\x00" in sdp:
        return BodyProblem(UNSUPPORTED_MEDIA_TYPE, "SDP part is not UTF-8 text")
    if body.find(sdp) != part.start:
        return BodyProblem(BAD_REQUEST, "the SDP part's text also appears before it")
    return SdpPart(body, part.start, part.end, multipart=True)


# RFC 2046 bchars (a boundary may not end with its space).
_BOUNDARY_CHARS = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "
)


def _boundary(content_type: str) -> bytes:
    _, semicolon, params = content_type.partition(";")
    try:
        boundary = check_params(semicolon + params).get("boundary", "")
        names = [p.partition("=")[0].strip().lower() for p in split_outside_quotes(params, ";")]
    except SipSyntaxError as exc:
        raise _Refused(BAD_REQUEST, f"malformed multipart Content-Type: {exc}") from None
    if names.count("boundary") > 1:
        # Parsers differ on which one counts.
        raise _Refused(BAD_REQUEST, "multipart Content-Type with two boundaries")
    if len(boundary) > 1 and boundary[0] == boundary[-1] == '"':
        boundary = boundary[1:-1]
    if not boundary:
        raise _Refused(BAD_REQUEST, "multipart body with no boundary")
    if (
        len(boundary) > MAX_BOUNDARY
        or not set(boundary) <= _BOUNDARY_CHARS
        or boundary.endswith(" ")
    ):
        raise _Refused(BAD_REQUEST, "malformed multipart boundary (RFC 2046 section 5.1.1)")
    return boundary.encode()


def _line_end(body: bytes, at: int, end: int) -> int | None:
    """Past the end of the line that goes on at ``at`` with transport padding only;
    ``end`` when the range ends there; None when other text comes first."""
    while at < end and body[at] in b" \t":
        at += 1
    if at == end:
        return end
    if body[at] == 0x0A:
        return at + 1
    if body[at] == 0x0D and at + 1 < end and body[at + 1] == 0x0A:
        return at + 2
    return None


class _Scan:
    """One walk over a multipart body, nested parts included."""

    def __init__(self, body: bytes, with_containers: bool) -> None:
        self.body = body
        self.with_containers = with_containers
        self.parts: list[BodyPart] = []
        self.read = 0  # parts read, nested multiparts included

    def walk(self, content_type: str, start: int, end: int, depth: int) -> None:
        if depth >= MAX_DEPTH:
            raise _Refused(UNSUPPORTED_MEDIA_TYPE, "multipart nested too deep")
        delimiters = self.delimiters(start, end, _boundary(content_type))
        for (segment_start, part_start), (part_end, _) in pairwise(delimiters):
            self.read += 1
            if self.read > MAX_PARTS:
                raise _Refused(UNSUPPORTED_MEDIA_TYPE, f"multipart body over {MAX_PARTS} parts")
            headers, content = self.part_headers(part_start, part_end)
            part = BodyPart(headers, content, part_end, depth + 1, segment_start)
            if media_type(part.content_type).startswith("multipart/"):
                if self.with_containers:
                    self.parts.append(part)
                self.walk(part.content_type, content, part_end, depth + 1)
            else:
                self.parts.append(part)

    def delimiters(self, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
        """For each delimiter in ``body[start:end]``, the closing one last: where the part
        before it ends and where the part after it begins."""
        body, dash = self.body, b"--" + boundary
        out: list[tuple[int, int]] = []
        closed = False
        at = body.find(dash, start, end)
        while at != -1:
            if closed:
                raise _Refused(BAD_REQUEST, "multipart boundary after the closing delimiter")
            if at != start and body[at - 1] != 0x0A:
                raise _Refused(BAD_REQUEST, "multipart boundary inside a line")
            # The line end before a delimiter is the delimiter's (RFC 2046), not the part's.
            before = at - 2 if at - 2 >= start and body[at - 2] == 0x0D else max(at - 1, start)
            after = at + len(dash)
            closed = body.startswith(b"--", after, end)
            next_line = _line_end(body, after + 2 if closed else after, end)
            if next_line is None:
                raise _Refused(BAD_REQUEST, "multipart boundary followed by other text")
            if next_line == end and not closed:
                raise _Refused(BAD_REQUEST, "multipart body with no closing delimiter")
            out.append((before, next_line))
            if len(out) > MAX_PARTS + 1:
                raise _Refused(UNSUPPORTED_MEDIA_TYPE, f"multipart body over {MAX_PARTS} parts")
            at = body.find(dash, next_line, end)
        if not out:
            raise _Refused(BAD_REQUEST, "multipart body with no delimiter")
        if not closed:
            raise _Refused(BAD_REQUEST, "multipart body with no closing delimiter")
        if len(out) < 2:
            raise _Refused(BAD_REQUEST, "multipart body with no part")
        return out

    def part_headers(self, start: int, end: int) -> tuple[dict[str, str], int]:
        """A part's Content-* headers by lower-cased name (SIP's compact ``c`` is
        Content-Type) and where its content begins."""
        body = self.body
        values: dict[str, list[bytes]] = {}
        name: str | None = None  # of the header being read; "" for one not kept
        at = start
        while at < end:  # at the end: headers and no content (RFC 2046 body-part)
            newline = body.find(b"\n", at, end)
            if newline == -1:
                raise _Refused(BAD_REQUEST, "multipart part headers not terminated")
            line = body[at:newline].removesuffix(b"\r")
            at = newline + 1
            if not line:
                break
            if line[:1] in (b" ", b"\t"):
                if name is None:
                    raise _Refused(BAD_REQUEST, "malformed multipart part header")
                if name:
                    values[name].append(line.strip())  # a folded line
                continue
            raw_name, colon, value = line.partition(b":")
            name = raw_name.strip().decode("ascii", errors="replace").lower()
            if not colon or not is_token(name):
                raise _Refused(BAD_REQUEST, "malformed multipart part header")
            name = "content-type" if name == "c" else name
            if not name.startswith("content-"):
                name = ""
            elif name in values:
                raise _Refused(BAD_REQUEST, f"multipart part with two {name} headers")
            else:
                values[name] = [value.strip()]
        headers = {k: b" ".join(v).strip().decode("utf-8", "replace") for k, v in values.items()}
        return headers, at
