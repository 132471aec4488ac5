"""The parts of a SIP body as the content modules read them: type, bytes, nesting, text.

A body is one part (its Content-Type) or the leaves of a multipart body, split
by :mod:`sipshield.sip.sdp_body`'s strict RFC 2046 reader, so the content
modules judge exactly the parts the SDP anchoring and validation see.  A
``message/cpim`` wrapper (RFC 3862, what RCS and many IM clients send) is
opened: what people read is the MIME content inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipshield.sip.sdp_body import BodyProblem, media_type, multipart_parts

CPIM_TYPE = "message/cpim"
# Media types whose content is text a person reads (an IM).
READABLE_TYPES = frozenset({"text/plain", "text/html"})
_XML_TYPES = frozenset({"application/xml", "text/xml"})


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

    @property
    def is_xml(self) -> bool:
        return self.media_type.endswith("+xml") or self.media_type in _XML_TYPES


@dataclass(frozen=True)
class ReadableText:
    """Text a person reads: where it sits in the body, its media type and the text."""

    media_type: str
    start: int
    end: int
    text: str
    # True when the text fills the whole body (it can be replaced with set_body).
    whole_body: bool


def body_parts(content_type: str | None, body: bytes) -> list[ContentPart] | BodyProblem:
    """The leaves of a body ([] for none); a problem when a multipart cannot be split."""
    if not body:
        return []
    kind = media_type(content_type or "text/plain")
    if not kind.startswith("multipart/"):
        return [ContentPart(kind, body, 0, len(body))]
    parts = multipart_parts(content_type or "", body)
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
        )
        for p in parts
    ]


def readable_texts(parts: list[ContentPart], single_body: bool) -> list[ReadableText]:
    """The texts people read in these parts, CPIM wrappers opened; undecodable ones skipped
    (bytes that are not UTF-8 are no text a phone shows as such)."""
    texts = []
    for part in parts:
        kind, start, data = part.media_type, part.start, part.data
        if kind == CPIM_TYPE:
            inner = _cpim_content(data)
            if inner is None:
                continue
            kind, offset, data = inner
            start += offset
        if kind not in READABLE_TYPES:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        whole = single_body and part.media_type != CPIM_TYPE
        texts.append(ReadableText(kind, start, start + len(data), text, whole))
    return texts


def _cpim_content(data: bytes) -> tuple[str, int, bytes] | None:
    """A CPIM message's inner media type, offset and content (RFC 3862 section 3:
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
                    content_type = media_type(value.decode("latin-1"))
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
