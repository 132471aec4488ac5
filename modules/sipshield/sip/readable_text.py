"""Text that fools the people who read it, or the logs and web pages that show it.

- **Bidirectional controls** (the "Trojan Source" characters, CVE-2021-42574):
  embeddings, overrides and isolates make text display in another order than
  it is stored, so "invoice_exe.pdf" can really be "invoice_fdp.exe".  The
  implicit marks (LRM, RLM, ALM) are left alone: right-to-left scripts need them.
- **Invisible characters**: zero-width space, word joiner, invisible
  operators, a BOM inside text, Hangul fillers (blank-looking display names).
  ZWJ and ZWNJ are left alone: emoji sequences and Persian script need them.
- **Control characters**: C0 (but TAB, LF and CR) and C1, DEL; the Unicode
  line and paragraph separators (U+2028, U+2029).
- **Payloads** for what shows or stores the text: markup and script, SQL,
  Log4Shell-style lookups, and line breaks or NULs spelt as escapes
  (``%0d%0a``, ``\\r\\n``) that a log or CDR writer may decode.
"""

from __future__ import annotations

import re

_BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
_INVISIBLE = "\u200b\u2060-\u2064\ufeff\u115f\u1160\u3164\uffa0\ufff9-\ufffb\u180e"
# Line and paragraph separators: a new line in a log or a CDR that shows none.
_SEPARATORS = "\u2028\u2029"
_CONTROLS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_UNSAFE_CHARS = re.compile(f"[{_BIDI_CONTROLS}{_INVISIBLE}{_SEPARATORS}{_CONTROLS}]")

_PAYLOADS = (
    ("markup or script", r"<\s*/?\s*(?:script|iframe|img|svg|object|embed|body|meta|link|style)\b"),
    ("script URL", r"\b(?:javascript|vbscript)\s*:"),
    (
        "event handler",
        r"\bon(?:error|load|click|focus|blur|submit|change|input|toggle|begin"
        r"|mouse\w+|key\w+|pointer\w+|animation\w+)\s*=",
    ),
    ("SQL", r"['\"]\s*(?:or|and)\s+['\"]?\w+['\"]?\s*(?:=|like)\s*['\"]?\w+"),
    ("SQL", r"\bunion\s+(?:all\s+)?select\b"),
    (
        "SQL",
        r";\s*(?:(?:drop|alter|truncate)\s+table|delete\s+from|insert\s+into"
        r"|update\s+\w+\s+set|exec(?:ute)?\s+\w)",
    ),
    ("SQL", r"\b(?:sleep|benchmark|pg_sleep)\s*\(\s*\d|\bwaitfor\s+delay\s*'"),
    ("lookup", r"\$\{\s*(?:jndi|env|sys|lower|upper|date|java)\b"),
    ("command", r"\$\([^)]*\)"),
    ("escaped line break or NUL", r"%0[0ad]|\\[rn0]|\\x0[0ad]|\\u000[0ad]"),
)
_PAYLOAD = re.compile("|".join(f"(?P<p{i}>{p})" for i, (_, p) in enumerate(_PAYLOADS)), re.I)


def unsafe_characters(text: str) -> str:
    """A description of the first unsafe character in ``text`` ("" when none)."""
    match = _UNSAFE_CHARS.search(text)
    if match is None:
        return ""
    char = match.group()
    kind = (
        "bidirectional control"
        if re.match(f"[{_BIDI_CONTROLS}]", char)
        else "control character"
        if re.match(f"[{_CONTROLS}]", char)
        else "line separator"
        if char in _SEPARATORS
        else "invisible character"
    )
    return f"{kind} U+{ord(char):04X}"


def without_unsafe_characters(text: str) -> str:
    return _UNSAFE_CHARS.sub("", text)


def payload(text: str) -> str:
    """The kind of the first payload found in ``text`` ("" when none)."""
    match = _PAYLOAD.search(text)
    if match is None:
        return ""
    index = int(next(name for name, value in match.groupdict().items() if value)[1:])
    return _PAYLOADS[index][0]


def display_name(name_addr: str) -> str:
    """The display name of a From/To/P-Asserted-Identity value ("" for none), unquoted."""
    text = name_addr.strip()
    if text.startswith('"'):
        end, escaped = 1, False
        while end < len(text):
            if escaped:
                escaped = False
            elif text[end] == "\\":
                escaped = True
            elif text[end] == '"':
                break
            end += 1
        return text[1:end]
    before, angle, _ = text.partition("<")
    return before.strip() if angle else ""
