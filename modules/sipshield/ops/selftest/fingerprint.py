"""Fingerprinting: what the SBC's own replies, and the replies it relays, say about the software.

A scanner picks its exploits from the Server and User-Agent headers (and
from Warning headers and reason phrases): a product name followed by a
version is what it looks for.
"""

from __future__ import annotations

import re
import secrets

from sipshield.core.policy import Policy
from sipshield.ops.selftest.attack import Attack, Expectation, NotRunnable, Outcome
from sipshield.ops.selftest.raw_requests import request
from sipshield.ops.selftest.target import Context

# Headers that name software, and a product name or version in them.
_REVEALING_HEADERS = ("server", "user-agent", "warning")
_PRODUCT = re.compile(
    r"(kamailio|opensips|asterisk|freeswitch|sip express router|ser\b|yate|3cx|"
    r"sipshield|\d+\.\d+(\.\d+)?)",
    re.IGNORECASE,
)


def revealing(replies: bytes) -> list[str]:
    """The header lines of the replies that name a product or a version."""
    found = []
    for line in replies.decode(errors="replace").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() in _REVEALING_HEADERS and _PRODUCT.search(value):
            found.append(line.strip())
    return found


class OwnRepliesFingerprint(Attack):
    name = "fingerprint-sbc"
    summary = "the SBC's own reply (an OPTIONS to it, which it answers itself) names no product"

    def expect(self, policy: Policy) -> Expectation:
        return Expectation(True, "kamailio.cfg hides Kamailio's signature (server_signature=no)")

    def run(self, ctx: Context) -> Outcome:
        host, port = ctx.target.sip()
        replies = ctx.exchange(
            request("OPTIONS", f"sip:{host}:{port}", ctx.attacker, ctx.target.domain)
        )
        if not replies:
            raise NotRunnable("the SBC did not answer an OPTIONS to itself")
        found = revealing(replies)
        return Outcome(not found, "; ".join(found) or "no product or version in the replies")


class RelayedRepliesFingerprint(Attack):
    name = "fingerprint-relayed"
    summary = (
        "replies relayed from the PBX (REGISTER, OPTIONS to a user) name no product or version"
    )

    def expect(self, policy: Policy) -> Expectation:
        stripped = {name.lower() for name in policy.topology_hiding.strip_headers}
        missing = [
            name for name in ("Server", "User-Agent", "Warning") if name.lower() not in stripped
        ]
        if missing:
            return Expectation(
                False,
                f"topology_hiding.strip_headers keeps {', '.join(missing)} in what the PBX sends",
            )
        return Expectation(
            True, "topology_hiding.strip_headers removes Server, User-Agent, Warning"
        )

    def run(self, ctx: Context) -> Outcome:
        domain = ctx.target.domain
        unknown = f"sip:probe-{secrets.token_hex(3)}@{domain}"
        replies = ctx.exchange(request("REGISTER", f"sip:{domain}", ctx.attacker, domain))
        replies += ctx.exchange(request("OPTIONS", unknown, ctx.attacker, domain))
        # An unknown method: refused by the SBC when validation enforces, else the PBX answers.
        replies += ctx.exchange(request("XFINGER", f"sip:{domain}", ctx.attacker, domain))
        if not replies:
            raise NotRunnable("no relayed reply came back")
        found = revealing(replies)
        return Outcome(not found, "; ".join(found) or "no product or version in the replies")
