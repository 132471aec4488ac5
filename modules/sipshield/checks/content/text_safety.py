"""Injection into what people read, and into the logs, CDRs and web pages that show it.

Four rules, each with its own action (``off``, ``alert``, ``refuse``, and for
IM text also ``sanitise``), on requests from outside
(:mod:`sipshield.sip.readable_text` says what is looked for):

- ``im_text``: bidirectional controls, invisible and control characters in
  the text of an IM (text/plain, or text inside message/cpim).  ``sanitise``
  removes them and relays the rest, still a valid text body; refusal is 488;
- ``im_payloads``: markup, script, SQL, lookups or escaped line breaks in IM
  text (people write odd things to each other: alert by default): 488;
- ``html``: a text/html IM with markup or script in it (phones and web
  clients render it): 415 with Accept text/plain;
- ``identities``: the same characters or payloads in display names (From,
  To, P-Asserted/Preferred-Identity, Remote-Party-ID, Diversion, Contact; every
  address of a list), User-Agent and Subject,
  which PBXs write to CDRs and show in web UIs: 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Alert, Outcome, Reject, Rewrite
from sipshield.sip.body_parts import ReadableText, readable_texts
from sipshield.sip.readable_text import (
    display_name,
    payload,
    unsafe_characters,
    without_unsafe_characters,
)
from sipshield.sip.sdp_body import BodyProblem, SdpPart
from sipshield.sip.sip_syntax import SipSyntaxError, split_address_list

if TYPE_CHECKING:
    from sipshield.core.hop import Hop
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

Action = Literal["off", "alert", "refuse"]
IDENTITY_HEADERS = (
    "from", "to", "p-asserted-identity", "p-preferred-identity", "remote-party-id",
    "diversion", "contact",
)  # fmt: skip
PLAIN_HEADERS = ("user-agent", "subject")
NOT_ACCEPTABLE_HERE = 488


class TextSafetyConfig(ModuleConfig):
    name: Literal["text_safety"] = "text_safety"
    im_text: Literal["off", "alert", "refuse", "sanitise"] = "sanitise"
    im_payloads: Action = "alert"
    html: Action = "refuse"
    identities: Action = "alert"


class TextSafety(SecurityModule):
    name = "text_safety"
    Config = TextSafetyConfig
    checks_relay = True

    def __init__(self, config: TextSafetyConfig) -> None:
        super().__init__(config)
        self.settings = config

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.from_pbx:
            return CONTINUE
        rules = self.settings
        if rules.identities != "off":
            found = self._identity_problem(msg)
            if found:
                return _act(rules.identities, found, 403)
        for text in self._texts(msg):
            if text.media_type == "text/html":
                kind = payload(text.text) if rules.html != "off" else ""
                if kind:
                    return _act(
                        rules.html,
                        f"text/html {msg.method} with {kind}",
                        415,
                        (("Accept", "text/plain"),),
                    )
                continue
            if rules.im_text in ("alert", "refuse"):
                unsafe = unsafe_characters(text.text)
                if unsafe:
                    return _act(rules.im_text, f"{msg.method} text with {unsafe}", 488)
            if rules.im_payloads != "off":
                kind = payload(text.text)
                if kind:
                    return _act(rules.im_payloads, f"{msg.method} text with {kind}", 488)
        return CONTINUE

    def check_relay(self, msg: SipRequest, hop: Hop, state: SharedState) -> Outcome:
        if msg.from_pbx or self.settings.im_text != "sanitise":
            return CONTINUE
        found = [
            (text, unsafe)
            for text in self._texts(msg)
            if text.media_type == "text/plain" and (unsafe := unsafe_characters(text.text))
        ]
        if not found:
            return CONTINUE
        text, unsafe = found[0]
        cleaned = without_unsafe_characters(text.text)
        body = msg.body
        content_type = msg.header("content-type") or "text/plain"
        # One rewrite per module: several texts to clean are refused, as is a
        # text Kamailio cannot put back, or one that would be left empty.
        if len(found) > 1 or not cleaned.strip() or not _rewritable(body, text, content_type):
            return Reject(f"{msg.method} text with {unsafe} (cannot be sanitised)", 488)
        return Rewrite(
            f"{msg.method} text with {unsafe}; removed",
            part=SdpPart(body, text.start, text.end, multipart=not text.whole_body),
            text=cleaned,
            verb="sanitise",
            content_type=content_type,
        )

    def _texts(self, msg: SipRequest) -> list[ReadableText]:
        if not msg.body:
            return []
        parts = msg.body_parts
        if isinstance(parts, BodyProblem):
            return []
        return readable_texts(parts)

    def _identity_problem(self, msg: SipRequest) -> str:
        named = [
            (h, display_name(value))
            for h in IDENTITY_HEADERS
            for line in msg.header_values(h)
            for value in _addresses(line)
        ]
        named += [(h, v) for h in PLAIN_HEADERS for v in msg.header_values(h)]
        for header, text in named:
            if not text:
                continue
            found = unsafe_characters(text) or payload(text)
            if found:
                return f"{header} with {found}"
        return ""


def _addresses(line: str) -> list[str]:
    """The comma-separated addresses of one header line (the whole line if it cannot be split)."""
    try:
        return split_address_list(line)
    except SipSyntaxError:
        return [line]


def _rewritable(body: bytes, text: ReadableText, content_type: str) -> bool:
    """Whether Kamailio can put the sanitised text in place of this one.

    KEMI strings carry only valid UTF-8 without NUL: the text must be its
    bytes in UTF-8; a whole body is set again with its Content-Type, which
    must then be plain text; a part is found by its own bytes, which must be
    the first match in the body.
    """
    if not text.rewritable:
        return False
    if text.whole_body:
        return content_type.isascii() and content_type.isprintable()
    data = body[text.start : text.end]
    return b"\x00" not in data and body.find(data) == text.start


def _act(action: str, reason: str, code: int, headers: tuple[tuple[str, str], ...] = ()) -> Outcome:
    if action == "alert":
        return Alert(reason)
    return Reject(reason, code=code, headers=headers)
