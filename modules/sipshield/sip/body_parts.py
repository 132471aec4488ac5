"""The parts of a SIP body as the content modules read them: type, bytes, nesting, text.

A body is one part (its Content-Type) or the leaves of a multipart body, split
by :mod:`sipshield.sip.sdp_body`'s strict RFC 2046 reader, so the content
modules judge exactly the parts the SDP anchoring and validation see.

What the far end will read is what is judged: a ``message/cpim`` wrapper
(RFC 3862, what RCS and IMDN use) is opened, a part in base64 or
quoted-printable transfer encoding is decoded, and text is decoded with the
charset its Content-Type names.  Whatever cannot be read that way is still
judged on the bytes as they are, and marked so that nobody tries to rewrite it.
"""

from __future__ import annotations

import base64
import binascii
import quopri
from dataclasses import dataclass

from sipshield.sip.sdp_body import BodyProblem, media_type, multipart_parts

CPIM_TYPE = "message/cpim"
# Media types whose content is text a person reads (an IM).
READABLE_TYPES = frozenset({"text/plain", "text/html"})
_XML_TYPES = frozenset({"application/xml", "text/xml"})
_TEXT_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
# CPIM inside CPIM is opened this many times at most.
MAX_CPIM_DEPTH = 2


@dataclass(frozen=True)
class ContentPart:
    """One leaf of a body: ``data`` is ``body[start:end]`` of the message body."""

    media_type: str
    data: bytes
    start: int
    end: int
    # Multiparts holding it: 0 for a body that is not multipart.
    nesting: int = 0
    # Where the part with its delimiter line begins (multipart parts; sdp_body.BodyPart).
    segment_start: int = 0
    # Its Content-Type's charset parameter, lower case ("" when none).
    charset: str = ""
    # Its Content-Transfer-Encoding, lower case ("" when none).
    transfer_encoding: str = ""
    # True when it was inside a message/cpim wrapper.
    in_cpim: bool = False

    @property
    def is_xml(self) -> bool:
        return self.media_type.endswith("+xml") or self.media_type in _XML_TYPES

    @property
    def decoded(self) -> bytes:
        """The content as the far end reads it (base64 and quoted-printable undone)."""
        if self.transfer_encoding == "base64":
            try:
                return base64.b64decode(self.data, validate=False)
            except (binascii.Error, ValueError):
                return self.data
        if self.transfer_encoding == "quoted-printable":
            return quopri.decodestring(self.data)
        return self.data

    @property
    def as_sent(self) -> bool:
        """True when ``data`` is the content itself (no transfer encoding to undo)."""
        return self.transfer_encoding in ("", "7bit", "8bit", "binary")


@dataclass(frozen=True)
class ReadableText:
    """Text a person reads: where it sits in the body, its media type and the text."""

    media_type: str
    start: int
    end: int
    text: str
    # True when the text fills the whole body (it can be replaced with set_body).
    whole_body: bool
    # True when ``text`` is exactly body[start:end] as UTF-8: only then can it
    # be rewritten in place (a KEMI string is UTF-8).
    rewritable: bool


def body_parts(content_type: str | None, body: bytes) -> list[ContentPart] | BodyProblem:
    """The leaves of a body ([] for none); a problem when a multipart cannot be split."""
    if not body:
        return []
    content_type = content_type or "text/plain"
    kind = media_type(content_type)
    if not kind.startswith("multipart/"):
        return [ContentPart(kind, body, 0, len(body), charset=_charset(content_type))]
    parts = multipart_parts(content_type, body)
    if isinstance(parts, BodyProblem):
        return parts
    return [
        ContentPart(
            media_type(p.content_type),
            body[p.start : p.end],
            p.start,
            p.end,
            p.nesting,
            p.segment_start,
            _charset(p.content_type),
            p.headers.get("content-transfer-encoding", "").strip().lower(),
        )
        for p in parts
    ]


def opened(parts: list[ContentPart]) -> list[ContentPart]:
    """The parts with each message/cpim wrapper replaced by what it carries."""
    out = []
    for part in parts:
        for _ in range(MAX_CPIM_DEPTH):
            if part.media_type != CPIM_TYPE or not part.as_sent:
                break
            inner = _cpim_content(part.data)
            if inner is None:
                break
            content_type, offset, data = inner
            part = ContentPart(
                media_type(content_type),
                data,
                part.start + offset,
                part.end,
                part.nesting,
                part.segment_start,
                _charset(content_type),
                "",
                in_cpim=True,
            )
        out.append(part)
    return out


def is_single_body(parts: list[ContentPart]) -> bool:
    return len(parts) == 1 and parts[0].nesting == 0


def readable_texts(parts: list[ContentPart]) -> list[ReadableText]:
    """The texts people read in these parts (CPIM opened, encodings undone)."""
    single = is_single_body(parts)
    texts = []
    for part in opened(parts):
        if part.media_type not in READABLE_TYPES:
            continue
        text, rewritable = _text_of(part)
        whole = single and not part.in_cpim
        texts.append(ReadableText(part.media_type, part.start, part.end, text, whole, rewritable))
    return texts


def _text_of(part: ContentPart) -> tuple[str, bool]:
    """The part's text, and whether it is exactly its bytes in UTF-8."""
    data = part.decoded
    charset = part.charset or "utf-8"
    if part.as_sent and charset in _TEXT_CHARSETS:
        try:
            return data.decode("utf-8"), True
        except UnicodeDecodeError:
            return data.decode("utf-8", errors="replace"), False
    try:
        # bytes.decode refuses a codec that is not a text encoding (LookupError).
        return data.decode(charset, errors="replace"), False
    except (LookupError, ValueError, UnicodeError, TypeError):
        pass  # a charset name Python does not know, or one that is not text
    return data.decode("utf-8", errors="replace"), False


def _charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return ""


def _cpim_content(data: bytes) -> tuple[str, int, bytes] | None:
    """A CPIM message's inner Content-Type, offset and content (RFC 3862 section 3:
    message headers, a blank line, MIME headers, a blank line, the content)."""
    at = 0
    content_type = "text/plain"
    for block in range(2):
        end = _blank_line(data, at)
        if end is None:
            return None
        if block == 1:
            for line in data[at:end].splitlines():
                name, colon, value = line.partition(b":")
                if colon and name.strip().lower() == b"content-type":
                    content_type = value.decode("latin-1").strip()
        at = _after_blank_line(data, end)
    return content_type, at, data[at:]


def _blank_line(data: bytes, start: int) -> int | None:
    """Where the blank line that ends a header block starting at ``start`` begins."""
    if data.startswith((b"\r\n", b"\n"), start):
        return start
    found = [i for i in (data.find(b"\r\n\r\n", start), data.find(b"\n\n", start)) if i != -1]
    if not found:
        return None
    first = min(found)
    return first + (2 if data.startswith(b"\r\n\r\n", first) else 1)


def _after_blank_line(data: bytes, at: int) -> int:
    return at + (2 if data.startswith(b"\r\n", at) else 1)
