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
  To, P-Asserted-Identity, P-Preferred-Identity), User-Agent and Subject,
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

if TYPE_CHECKING:
    from sipshield.core.hop import Hop
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

Action = Literal["off", "alert", "refuse"]
IDENTITY_HEADERS = ("from", "to", "p-asserted-identity", "p-preferred-identity")
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
        for text in self._texts(msg):
            unsafe = unsafe_characters(text.text)
            if not unsafe or text.media_type != "text/plain":
                continue
            body = msg.body
            data = body[text.start : text.end]
            content_type = msg.header("content-type") or "text/plain"
            if not _rewritable(body, data, text, content_type):
                return Reject(f"{msg.method} text with {unsafe} (cannot be sanitised)", 488)
            return Rewrite(
                f"{msg.method} text with {unsafe}; removed",
                part=SdpPart(body, text.start, text.end, multipart=not text.whole_body),
                text=without_unsafe_characters(text.text),
                verb="sanitise",
                content_type=content_type,
            )
        return CONTINUE

    def _texts(self, msg: SipRequest) -> list[ReadableText]:
        if not msg.body:
            return []
        parts = msg.body_parts
        if isinstance(parts, BodyProblem):
            return []
        return readable_texts(parts, single_body=len(parts) == 1 and parts[0].nesting == 0)

    def _identity_problem(self, msg: SipRequest) -> str:
        named = [(h, display_name(v)) for h in IDENTITY_HEADERS for v in msg.header_values(h)]
        named += [(h, v) for h in PLAIN_HEADERS for v in msg.header_values(h)]
        for header, text in named:
            if not text:
                continue
            found = unsafe_characters(text) or payload(text)
            if found:
                return f"{header} with {found}"
        return ""


def _rewritable(body: bytes, data: bytes, text: ReadableText, content_type: str) -> bool:
    """Whether Kamailio can put the sanitised text in place of this one.

    KEMI strings carry no NUL and only valid UTF-8: the Content-Type set with a
    whole body must be plain text, and a part is found by its own text (which
    must then be that, and be the first match in the body).
    """
    if not (content_type.isascii() and content_type.isprintable()):
        return False
    if text.whole_body:
        return True
    return b"\x00" not in data and body.find(data) == text.start


def _act(action: str, reason: str, code: int, headers: tuple[tuple[str, str], ...] = ()) -> Outcome:
    if action == "alert":
        return Alert(reason)
    return Reject(reason, code=code, headers=headers)
