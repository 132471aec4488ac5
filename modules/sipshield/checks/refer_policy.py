"""REFER and transfer policy: where a call may be transferred, and who may transfer.

A REFER asks the other party to call the Refer-To target: transferring a call
to a premium or international number is a classic fraud path, and a trunk
has no business transferring the PBX's calls.

- REFERs from a trunk's sources are refused unless ``trunks_may_refer``.
- The Refer-To URI (without its headers and parameters) must not match any
  ``deny`` pattern, and must match an ``allow`` pattern; with no ``allow``
  patterns, only targets in the policy's own domain are allowed.

The patterns are regular expressions matched against the start of the URI,
e.g. ``sip:[0-9]{3,4}@`` for internal extensions.  They see the target the
way the far end will dial it: the user part percent-decoded and, when it is a
number, without RFC 3966 visual separators, so ``sip:%2B44...``,
``sip:0-900-...`` or ``tel:(0900)...`` meet the same patterns as ``+44`` and
``0900``.  A REFER carries exactly one Refer-To (RFC 3515); one with more is
refused, since only one target could be checked and the far end may act on
another.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

from pydantic import Field, field_validator

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Outcome, Reject
from sipshield.sip.message import uri_of

if TYPE_CHECKING:
    from sipshield.core.site import Site
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

# International and premium-rate prefixes in tel: or sip: user parts.
# 011 is the North American international prefix.
DEFAULT_DENY = [
    r"(tel:|sips?:)\+",
    r"(tel:|sips?:)00",
    r"(tel:|sips?:)011",
    r"(tel:|sips?:)(09|190|0900)",
]
# RFC 3966 visual separators: "0-900-123" and "(0900)123" dial as "0900123".
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")
_DIALLED_NUMBER = re.compile(r"\+?[0-9*#]+")


class ReferPolicyConfig(ModuleConfig):
    name: Literal["refer_policy"] = "refer_policy"
    trunks_may_refer: bool = False
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=lambda: list(DEFAULT_DENY))

    @field_validator("allow", "deny")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad pattern {pattern!r}: {exc}") from None
        return patterns


class ReferPolicy(SecurityModule):
    name = "refer_policy"
    Config = ReferPolicyConfig

    def __init__(self, config: ReferPolicyConfig) -> None:
        super().__init__(config)
        self.settings = config
        self.allow = [re.compile(p, re.IGNORECASE) for p in config.allow]
        self.deny = [re.compile(p, re.IGNORECASE) for p in config.deny]
        self.domain = ""

    def bind(self, site: Site) -> None:
        self.domain = site.domain

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.method != "REFER":
            return CONTINUE
        if not self.settings.trunks_may_refer and msg.trunk is not None:
            return Reject(f"REFER from trunk {msg.trunk.name} (trunks_may_refer: false)", code=403)
        values = [v for h in msg.header_values("refer-to") for v in _header_values(h)]
        if len(values) > 1:
            return Reject(f"REFER with {len(values)} Refer-To targets (RFC 3515: one)", code=400)
        target = re.split(r"[?;]", uri_of(values[0]) if values else "", maxsplit=1)[0]
        if not target:
            return Reject("REFER without a Refer-To target", code=400)
        dialled, host = dialled_target(target)
        if any(p.match(target) or p.match(dialled) for p in self.deny):
            return Reject(f"transfer to {target} denied by refer_policy.deny", code=403)
        if self.allow:
            if not any(pattern.match(dialled) for pattern in self.allow):
                return Reject(f"transfer to {target} not in refer_policy.allow", code=403)
            return CONTINUE
        if host != self.domain:
            return Reject(f"transfer to {target} outside the domain {self.domain}", code=403)
        return CONTINUE


def dialled_target(target: str) -> tuple[str, str]:
    """The target as the far end dials it (``scheme:user@host``), and its host ("" for tel:).

    The user part is percent-decoded; a number loses its visual separators.
    """
    scheme, _, rest = target.partition(":")
    user, at, host = rest.rpartition("@") if "@" in rest else (rest, "", "")
    user = unquote(user)
    number = user.translate(_VISUAL_SEPARATORS)
    if _DIALLED_NUMBER.fullmatch(number):
        user = number
    host = host.split(":", 1)[0].lower()
    return f"{scheme.lower()}:{user}{at}{host}", host


def _header_values(header: str) -> list[str]:
    """The comma-separated values of one header line (commas in quotes or <> don't count)."""
    values, start, quoted, angled, index = [], 0, False, False, 0
    while index < len(header):
        char = header[index]
        if quoted and char == "\\":
            index += 1
        elif char == '"':
            quoted = not quoted
        elif not quoted and char in "<>":
            angled = char == "<"
        elif char == "," and not quoted and not angled:
            values.append(header[start:index])
            start = index + 1
        index += 1
    values.append(header[start:])
    return [v.strip() for v in values if v.strip()]
