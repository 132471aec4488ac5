"""Mutations that break XML bodies the way XML parsers get broken.

Each takes a body and the seeded RNG and returns a new body.  They know just
enough XML to aim (where the root's start tag is, where text goes) and work on
any body: applied to text or to a multipart body they still produce something
a parser must refuse or survive.  Sizes are chosen mostly below the
validation module's 16 KiB message limit, so that the modules after it, the
ones that read bodies, see them.
"""

from __future__ import annotations

import random
import re

_DECLARATION = re.compile(rb"<\?xml[^>]*\?>")
_START_TAG = re.compile(rb"<([A-Za-z_][\w:.-]*)([^<>]*?)(/?)>")
_CLOSE_TAG = re.compile(rb"</[A-Za-z_][\w:.-]*\s*>")


def _root(body: bytes) -> re.Match[bytes] | None:
    """The first start tag that is not a declaration, doctype or comment."""
    return _START_TAG.search(body)


def _after_prolog(body: bytes) -> int:
    """Where a DOCTYPE goes: after the XML declaration, or at the start."""
    declaration = _DECLARATION.search(body)
    return declaration.end() if declaration else 0


def _inside_root(body: bytes) -> int:
    """A place for content: just after the root's start tag, or the end of the body."""
    root = _root(body)
    return root.end() if root else len(body)


def _text_position(body: bytes, rng: random.Random) -> int:
    """A random place between two tags (text content), or anywhere when there are no tags."""
    gaps = [m.end() for m in re.finditer(rb">", body)]
    return rng.choice(gaps) if gaps else rng.randrange(len(body) + 1)


def _insert(body: bytes, at: int, data: bytes) -> bytes:
    return body[:at] + data + body[at:]


def entity_expansion(body: bytes, rng: random.Random) -> bytes:
    """A DOCTYPE with nested entities (billion laughs) or one big entity used many times."""
    root = _root(body)
    name = root.group(1) if root else b"x"
    if rng.random() < 0.6:
        levels, width = rng.choice((3, 5, 9, 12)), rng.choice((2, 5, 10))
        entities = b'<!ENTITY e0 "' + b"lol" * rng.choice((1, 10)) + b'">'
        for level in range(1, levels + 1):
            entities += b'<!ENTITY e%d "%s">' % (level, b"&e%d;" % (level - 1) * width)
        reference = b"&e%d;" % levels
    else:  # quadratic blowup: no nesting, so depth limits do not catch it
        entities = b'<!ENTITY big "' + b"A" * rng.choice((1000, 5000, 10000)) + b'">'
        reference = b"&big;" * rng.choice((10, 100, 1000))
    doctype = b"<!DOCTYPE " + name + b" [" + entities + b"]>"
    body = _insert(body, _after_prolog(body), doctype)
    return _insert(body, _inside_root(body), reference)


EXTERNAL = (
    b'<!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>',
    b'<!DOCTYPE x [<!ENTITY ext SYSTEM "http://127.0.0.1:9/ext">]>',
    b'<!DOCTYPE x [<!ENTITY % p SYSTEM "file:///dev/zero"> %p;]>',
    b"<!DOCTYPE x [<!ENTITY % p \"<!ENTITY ext 'x'>\"> %p;]>",
    b'<!DOCTYPE x SYSTEM "http://127.0.0.1:9/presence.dtd">',
    b'<!DOCTYPE x PUBLIC "-//FUZZ//DTD X//EN" "file:///proc/self/environ">',
)
EXTERNAL_USES = (
    b"&ext;",
    b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" '
    b'parse="text"/>',
    b'<x xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    b'xsi:schemaLocation="urn:x http://127.0.0.1:9/x.xsd"/>',
)


def external_entity(body: bytes, rng: random.Random) -> bytes:
    """External entities, parameter entities, external DTDs, XInclude, remote schemas."""
    body = _insert(body, _after_prolog(body), rng.choice(EXTERNAL))
    return _insert(body, _inside_root(body), rng.choice(EXTERNAL_USES))


def deep_nesting(body: bytes, rng: random.Random) -> bytes:
    """Thousands of nested elements inside the root, closed or not."""
    depth = rng.choice((32, 128, 512, 1000, 2000, 5000))
    root = _root(body)
    tag = rng.choice((b"a", b"x:y", root.group(1) if root else b"tuple"))
    opening, closing = b"<" + tag + b">", b"</" + tag + b">"
    nested = opening * depth + (closing * depth if rng.random() < 0.7 else b"")
    return _insert(body, _inside_root(body), nested)


def truncate_markup(body: bytes, rng: random.Random) -> bytes:
    """Cut inside a tag, inside a multi-byte character, or before the closing tags."""
    tags = [m.start() for m in re.finditer(rb"<", body)]
    choice = rng.random()
    if tags and choice < 0.5:
        return body[: rng.choice(tags) + rng.randint(1, 12)]
    wide = [i for i, byte in enumerate(body) if byte >= 0xC0]
    if wide and choice < 0.7:
        return body[: rng.choice(wide) + 1]
    closing = [m.start() for m in _CLOSE_TAG.finditer(body)]
    return body[: rng.choice(closing)] if closing else body[: len(body) // 2]


def attribute_flood(body: bytes, rng: random.Random) -> bytes:
    """Many attributes, one attribute repeated, or one huge or unterminated value."""
    root = _root(body)
    at = root.end(1) if root else 0
    variant = rng.randrange(4)
    count = rng.choice((100, 500, 1000, 2000))
    if variant == 0:
        attributes = b"".join(b' a%d="%d"' % (n, n) for n in range(count))
    elif variant == 1:
        attributes = b' id="x"' * count
    elif variant == 2:
        attributes = b' v="' + b"&amp;<>'" * rng.choice((500, 1500)) + b'"'
    else:
        attributes = b' open="' + b"x" * rng.choice((10, 5000))
    return _insert(body, at, attributes)


ENCODINGS = (
    b"UTF-16", b"UTF-32", b"UCS-4", b"EBCDIC-US", b"ISO-2022-JP", b"UTF-7", b"x-made-up",
    b"", b"UTF-8\x00", b"utf-8 utf-16", b"ISO-8859-1",
)  # fmt: skip
INVALID_UTF8 = (
    b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\x80", b"\xbf\xbf",
    b"\xfe", b"\xff", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80", b"\xc3", b"\xe2\x82",
    b"\xf4\x90\x80\x80", b"\xef\xbf\xbe",
)  # fmt: skip
BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf\xef\xbb\xbf", b"\x00\x00\xfe\xff")


def bad_encoding(body: bytes, rng: random.Random) -> bytes:
    """A declared encoding that is not the body's, a transcoded body, BOMs, invalid UTF-8."""
    variant = rng.randrange(4)
    if variant == 0:
        declaration = b'<?xml version="1.0" encoding="' + rng.choice(ENCODINGS) + b'"?>'
        found = _DECLARATION.search(body)
        if found:
            return body[: found.start()] + declaration + body[found.end() :]
        return declaration + body
    if variant == 1:
        codec = rng.choice(("utf-16", "utf-16-le", "utf-16-be", "utf-32"))
        return body.decode("utf-8", errors="replace").encode(codec)
    if variant == 2:
        at = rng.choice((0, 0, _after_prolog(body), rng.randrange(len(body) + 1)))
        return _insert(body, at, rng.choice(BOMS))
    for _ in range(rng.randint(1, 5)):
        body = _insert(body, _text_position(body, rng), rng.choice(INVALID_UTF8))
    return body


def nul_bytes(body: bytes, rng: random.Random) -> bytes:
    """NUL bytes in text, in a tag name, at the start, or a run of them."""
    variant = rng.randrange(4)
    if variant == 0:
        for _ in range(rng.randint(1, 10)):
            body = _insert(body, rng.randrange(len(body) + 1), b"\x00")
        return body
    if variant == 1:
        root = _root(body)
        at = root.start(1) + 1 if root else 0
        return _insert(body, at, b"\x00")
    if variant == 2:
        return b"\x00" + body
    return _insert(body, _text_position(body, rng), b"\x00" * rng.choice((16, 1000, 8000)))


CHARACTER_REFERENCES = (
    b"&#0;", b"&#x0;", b"&#xD800;", b"&#xDFFF;", b"&#x110000;", b"&#99999999999999999999;",
    b"&#-1;", b"&#x;", b"&#;", b"&;", b"&lt", b"&unknown;", b"&amp;amp;", b"&#x1F600;",
    b"&#x202E;", b"&#65535;", b"&#xFFFE;", b"&#8;", b"&#x1B;[2J",
)  # fmt: skip


def character_references(body: bytes, rng: random.Random) -> bytes:
    """Character references to NUL, surrogates, beyond Unicode, and references to nothing."""
    for _ in range(rng.randint(1, 6)):
        reference = rng.choice(CHARACTER_REFERENCES)
        body = _insert(body, _text_position(body, rng), reference * rng.choice((1, 1, 50)))
    return body


def namespace_chaos(body: bytes, rng: random.Random) -> bytes:
    """Undeclared prefixes, reserved prefixes rebound, thousands of declarations, huge URIs."""
    root = _root(body)
    at = root.end(1) if root else 0
    variant = rng.randrange(5)
    if variant == 0:
        return _insert(body, _inside_root(body), b"<undeclared:tag undeclared:attr='1'/>")
    if variant == 1:
        rebound = rng.choice((b' xmlns:xml="urn:evil"', b' xmlns:xmlns="urn:evil"', b' xmlns=""'))
        return _insert(body, at, rebound)
    if variant == 2:
        count = rng.choice((100, 1000))
        return _insert(body, at, b"".join(b' xmlns:p%d="urn:p:%d"' % (n, n) for n in range(count)))
    if variant == 3:
        return _insert(body, at, b' xmlns:long="urn:' + b"x" * rng.choice((2000, 12000)) + b'"')
    return _insert(body, at, b' xmlns:d="urn:one" xmlns:d="urn:two"')


UNBALANCED = (
    b"<![CDATA[", b"]]>", b"<!--", b"<!-- -- -->", b"<?xml version='1.0'?>", b"<?php echo 1; ?>",
    b"</wrongclose>", b"<a><b></a></b>", b"<", b">", b"<>", b"</>", b"<!DOCTYPE", b"<!ELEMENT",
    b"<!ATTLIST presence entity CDATA #FIXED 'x'>", b"<a b=c>", b"<a b='1' b='2'/>", b"<1tag/>",
    b"<?target", b"<![CDATA[" + b"]" * 1000,
)  # fmt: skip


def unbalanced_markup(body: bytes, rng: random.Random) -> bytes:
    """Unterminated sections, stray markup, a second root, a closing tag removed."""
    variant = rng.randrange(3)
    if variant == 0:
        return _insert(body, rng.randrange(len(body) + 1), rng.choice(UNBALANCED))
    if variant == 1:
        return body + body  # two roots (and two declarations)
    closing = list(_CLOSE_TAG.finditer(body))
    if not closing:
        return body + b"</" + (b"x" * rng.randint(1, 50)) + b">"
    chosen = rng.choice(closing)
    return body[: chosen.start()] + body[chosen.end() :]


HUGE_TEXT = (b"A", b"&amp;", "\U0001f600".encode(), "\u202e".encode(), b" ", b"\t\r\n", b"<b/>")


def huge_text(body: bytes, rng: random.Random) -> bytes:
    """A long text node of one repeated piece (characters, entities, elements)."""
    piece = rng.choice(HUGE_TEXT)
    size = rng.choice((1000, 5000, 12000, 15000, 40000))
    return _insert(body, _text_position(body, rng), piece * (size // len(piece)))


XML_MUTATIONS = (
    entity_expansion,
    external_entity,
    deep_nesting,
    truncate_markup,
    attribute_flood,
    bad_encoding,
    nul_bytes,
    character_references,
    namespace_chaos,
    unbalanced_markup,
    huge_text,
)
