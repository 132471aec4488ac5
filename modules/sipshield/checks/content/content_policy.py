"""Method and body policy per peer class: which methods remote users and trunks
may send, and for each method which body types, how large, how deeply nested.

Validation already holds every request to one site-wide list of methods and
media types; this module narrows it per peer class and per method, because
what is normal differs: a phone sends MESSAGE, PUBLISH and SUBSCRIBE, a
carrier never registers or publishes presence, and an IM carries text, not
an ISUP blob.  Requests from the PBX are the inside's own and are not judged.

- a method the class may not send: 405 with Allow;
- a body type not allowed for the method (the body's own type and each part
  of a multipart): 415 with Accept;
- a body over the method's size: 413;
- parts nested deeper than ``max_nesting`` multiparts: 415;
- with ``disallowed_parts: strip``, a multipart body with one part of a type
  not allowed (and the others allowed) is relayed without that part, when the
  part is text Kamailio can cut out; otherwise 415 as above.

A method without a body rule keeps validation's site-wide rules only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sipshield.checks.content.peer_class import peer_class
from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Outcome, Reject, Rewrite
from sipshield.sip.body_parts import ContentPart, opened
from sipshield.sip.sdp_body import BodyProblem, SdpPart, media_type

if TYPE_CHECKING:
    from sipshield.core.hop import Hop
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

TRUNK_METHODS = (
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "PRACK", "UPDATE",
    "INFO", "MESSAGE", "REFER", "NOTIFY",
)  # fmt: skip
_MULTIPARTS = ("multipart/mixed", "multipart/related", "multipart/alternative")


class BodyRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    content_types: tuple[str, ...] = Field(min_length=1)
    max_bytes: int = Field(default=8192, ge=0, le=65535)

    @field_validator("content_types")
    @classmethod
    def _lower_case(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.strip().lower() for name in names)


class ClassPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # None: every method validation accepts.
    methods: tuple[str, ...] | None = None
    # Per method (upper case); methods not named keep validation's rules only.
    bodies: dict[str, BodyRule] = Field(default_factory=dict)
    # Presence lists (RLMI) nest multipart/related in multipart/related.
    max_nesting: int = Field(default=2, ge=0, le=3)

    @field_validator("methods")
    @classmethod
    def _upper_methods(cls, methods: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if methods is None else tuple(m.strip().upper() for m in methods)

    @field_validator("bodies")
    @classmethod
    def _upper_keys(cls, bodies: dict[str, BodyRule]) -> dict[str, BodyRule]:
        return {method.strip().upper(): rule for method, rule in bodies.items()}


def _user_bodies() -> dict[str, BodyRule]:
    return {
        "MESSAGE": BodyRule(
            content_types=(
                "text/plain",
                "message/cpim",
                "application/im-iscomposing+xml",
                "message/imdn+xml",
                *_MULTIPARTS,
            ),
            max_bytes=8192,
        ),
        "PUBLISH": BodyRule(
            content_types=("application/pidf+xml", "application/xpidf+xml"), max_bytes=8192
        ),
        "SUBSCRIBE": BodyRule(
            content_types=("application/resource-lists+xml", "application/simple-filter+xml"),
            max_bytes=4096,
        ),
        "NOTIFY": BodyRule(
            content_types=(
                "application/pidf+xml",
                "application/xpidf+xml",
                "application/dialog-info+xml",
                "application/watcherinfo+xml",
                "application/rlmi+xml",
                "application/reginfo+xml",
                "application/conference-info+xml",
                "application/simple-message-summary",
                "message/sipfrag",
                *_MULTIPARTS,
            ),
            max_bytes=16384,
        ),
        "INFO": BodyRule(
            content_types=(
                "application/dtmf-relay",
                "application/dtmf",
                "application/media_control+xml",
            ),
            max_bytes=2048,
        ),
    }


def _users() -> ClassPolicy:
    return ClassPolicy(bodies=_user_bodies())


def _trunks() -> ClassPolicy:
    # A carrier places and ends calls, sends DTMF, SMS and transfer progress;
    # it never registers, publishes presence or subscribes to our users.
    # SIP-T/SIP-I carriers send ISUP in INFO too.
    bodies = _user_bodies()
    info = bodies["INFO"]
    bodies["INFO"] = BodyRule(
        content_types=(*info.content_types, "application/isup", *_MULTIPARTS),
        max_bytes=info.max_bytes,
    )
    return ClassPolicy(methods=TRUNK_METHODS, bodies=bodies)


class ContentPolicyConfig(ModuleConfig):
    name: Literal["content_policy"] = "content_policy"
    users: ClassPolicy = Field(default_factory=_users)
    trunks: ClassPolicy = Field(default_factory=_trunks)
    # A multipart body with one part of a type not allowed (the rest allowed):
    # refuse it (415), or strip that part and relay the rest.  Only a text part
    # can be stripped (KEMI strings carry text); any other is refused.
    disallowed_parts: Literal["refuse", "strip"] = "refuse"


class ContentPolicy(SecurityModule):
    name = "content_policy"
    Config = ContentPolicyConfig
    checks_relay = True

    def __init__(self, config: ContentPolicyConfig) -> None:
        super().__init__(config)
        self.settings = config
        self.classes = {"users": config.users, "trunks": config.trunks}

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.from_pbx:
            return CONTINUE
        who = peer_class(msg)
        rules = self.classes[who]
        method = msg.method
        if rules.methods is not None and method not in rules.methods:
            return Reject(
                f"{method} not allowed from {who} (content_policy.{who}.methods)",
                code=405,
                headers=(("Allow", ", ".join(rules.methods)),),
            )
        body = msg.body
        if not body:
            return CONTINUE
        rule = rules.bodies.get(method)
        parts = msg.body_parts
        if isinstance(parts, BodyProblem):
            return Reject(f"{method} body: {parts.reason}", code=parts.code)
        deepest = max(part.nesting for part in parts) if parts else 0
        if deepest > rules.max_nesting:
            return Reject(
                f"{method} body nested {deepest} multiparts deep "
                f"(content_policy.{who}.max_nesting: {rules.max_nesting})",
                code=415,
            )
        if rule is None:
            return CONTINUE
        if len(body) > rule.max_bytes:
            return Reject(
                f"{method} body of {len(body)} bytes from {who} "
                f"(content_policy.{who}.bodies.{method}.max_bytes: {rule.max_bytes})",
                code=413,
            )
        judged = self._parts_to_strip(msg, who, rule, parts)
        return judged if isinstance(judged, Reject) else CONTINUE

    def check_relay(self, msg: SipRequest, hop: Hop, state: SharedState) -> Outcome:
        """Strip the one disallowed part that check() let through (``disallowed_parts: strip``)."""
        if msg.from_pbx or self.settings.disallowed_parts != "strip" or not msg.body:
            return CONTINUE
        who = peer_class(msg)
        rule = self.classes[who].bodies.get(msg.method)
        parts = msg.body_parts
        if rule is None or isinstance(parts, BodyProblem):
            return CONTINUE
        judged = self._parts_to_strip(msg, who, rule, parts)
        if not isinstance(judged, ContentPart):
            return CONTINUE  # nothing to strip, or check() refused it already
        return Rewrite(
            f"{msg.method} with a {judged.media_type} part (not in content_policy's "
            f"content_types for {msg.method}); the part removed",
            part=SdpPart(msg.body, judged.segment_start, judged.end, multipart=True),
            text="",
            verb="strip",
        )

    def _parts_to_strip(
        self, msg: SipRequest, who: str, rule: BodyRule, parts: list[ContentPart]
    ) -> Reject | ContentPart | None:
        """The refusal of a body whose types the rule does not allow, the one part to
        strip instead (``disallowed_parts: strip``), or None when all is allowed."""
        method = msg.method
        top = media_type(msg.header("content-type") or "text/plain")
        refused = [p for p in parts if p.nesting and p.media_type not in rule.content_types]
        inner = [p for p in opened(parts) if p.in_cpim and p.media_type not in rule.content_types]
        if top not in rule.content_types or inner or len(refused) > 1 or len(refused) == len(parts):
            kind = top if top not in rule.content_types else (refused or inner)[0].media_type
            return self._unsupported(method, kind, who, rule)
        if not refused:
            return None
        if self.settings.disallowed_parts == "refuse" or not _strippable(msg.body, refused[0]):
            return self._unsupported(method, refused[0].media_type, who, rule)
        return refused[0]

    def _unsupported(self, method: str, kind: str, who: str, rule: BodyRule) -> Reject:
        return Reject(
            f"{method} with a {kind} body from {who} "
            f"(content_policy.{who}.bodies.{method}.content_types)",
            code=415,
            headers=(("Accept", ", ".join(rule.content_types)),),
        )


def _strippable(body: bytes, part: ContentPart) -> bool:
    """Whether Kamailio can cut the part out: KEMI strings are UTF-8 without NUL, and
    textops replaces the first match of the part's bytes, which must be this part."""
    segment = body[part.segment_start : part.end]
    try:
        segment.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in segment and body.find(segment) == part.segment_start
