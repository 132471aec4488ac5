"""REFER and transfer policy: where a call may be transferred, and who may transfer.

A REFER asks the other party to call the Refer-To target: transferring a call
to a premium or international number is a classic fraud path, and a trunk
has no business transferring the PBX's calls.

- REFERs from a trunk's sources are refused unless ``trunks_may_refer``.
- The Refer-To URI (without its headers and parameters) must not match any
  ``deny`` pattern, and must match an ``allow`` pattern; with no ``allow``
  patterns, only targets in the policy's own domain are allowed.

The patterns are regular expressions matched against the start of the URI,
e.g. ``sip:[0-9]{3,4}@`` for internal extensions.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from sipshield.message import uri_of
from sipshield.module import ModuleConfig, SecurityModule
from sipshield.verdict import CONTINUE, Outcome, Reject

if TYPE_CHECKING:
    from sipshield.message import SipRequest
    from sipshield.policy import Policy
    from sipshield.state import SharedState

# International and premium-rate prefixes in tel: or sip: user parts.
DEFAULT_DENY = [r"(tel:|sips?:)\+", r"(tel:|sips?:)00", r"(tel:|sips?:)(09|190|0900)"]


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
        self.trunk_networks: list[tuple[Any, str]] = []

    def bind(self, policy: Policy) -> None:
        self.domain = policy.domain.lower()
        for trunk in policy.peers.trunks:
            self.trunk_networks += [(ipaddress.ip_network(n), trunk.name) for n in trunk.sources]

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.method != "REFER":
            return CONTINUE
        if not self.settings.trunks_may_refer and self.trunk_networks:
            address = ipaddress.ip_address(msg.src_ip)
            trunk = next((name for net, name in self.trunk_networks if address in net), None)
            if trunk is not None:
                return Reject(f"REFER from trunk {trunk} (trunks_may_refer: false)", code=403)
        refer_to = msg.header("refer-to") or ""
        target = re.split(r"[?;]", uri_of(refer_to), maxsplit=1)[0]
        if not target:
            return Reject("REFER without a Refer-To target", code=400)
        if any(pattern.match(target) for pattern in self.deny):
            return Reject(f"transfer to {target} denied by refer_policy.deny", code=403)
        if self.allow:
            if not any(pattern.match(target) for pattern in self.allow):
                return Reject(f"transfer to {target} not in refer_policy.allow", code=403)
            return CONTINUE
        host = target.split("@", 1)[-1].split(":", 1)[0].lower() if "@" in target else ""
        if host != self.domain:
            return Reject(f"transfer to {target} outside the domain {self.domain}", code=403)
        return CONTINUE
