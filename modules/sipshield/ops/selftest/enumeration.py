"""Extension enumeration: does the answer for a real account differ from one for a made-up one?

A 401 for a real user and a 404 (or another reason phrase, or a missing
challenge) for an unknown one is a directory handed out for free.  The
attacker compares the unauthenticated REGISTER and INVITE replies, code,
reason and the challenge's presence, for the operator's test account and a
random name.
"""

from __future__ import annotations

import re
import secrets

from sipshield.core.policy import Policy
from sipshield.ops.selftest.attack import Attack, Expectation, NotRunnable, Outcome
from sipshield.ops.selftest.raw_requests import ack_for, request
from sipshield.ops.selftest.target import Context, final

_FINAL = re.compile(r"^SIP/2\.0 ([2-6]\d\d) ([^\r\n]*)", re.MULTILINE)
_CHALLENGE = re.compile(r"^(WWW|Proxy)-Authenticate:", re.MULTILINE | re.IGNORECASE)


def answer_shape(replies: bytes) -> str:
    """What an attacker can compare: final code, reason phrase, whether it challenges."""
    text = replies.decode(errors="replace")
    match = _FINAL.search(text)
    if match is None:
        return "no answer"
    challenge = " (challenge)" if _CHALLENGE.search(text) else ""
    return f"{match.group(1)} {match.group(2)}{challenge}"


class ExtensionEnumeration(Attack):
    name = "enumeration"
    summary = "unauthenticated REGISTER and INVITE: a real account answers as a made-up one does"
    needs = ("accounts",)

    def expect(self, policy: Policy) -> Expectation:
        return Expectation(True, "the SBC and PBX must answer every name alike (401/407)")

    def run(self, ctx: Context) -> Outcome:
        real, made_up = ctx.target.accounts[0].user, f"x{secrets.token_hex(4)}"
        differences, seen = [], []
        for method in ("REGISTER", "INVITE"):
            shapes = {}
            for user in (real, made_up):
                domain = ctx.target.domain
                raw = (
                    request(
                        "REGISTER",
                        f"sip:{domain}",
                        ctx.attacker,
                        domain,
                        from_user=user,
                        to=f"sip:{user}@{domain}",
                    )
                    if method == "REGISTER"
                    else request("INVITE", f"sip:{user}@{domain}", ctx.attacker, domain)
                )
                replies = ctx.exchange(raw, timeout=2.0)
                if method == "INVITE" and final(replies) is not None:
                    ctx.exchange(ack_for(raw, replies), timeout=0.05)
                shapes[user] = answer_shape(replies)
            seen.append(f"{method}: {shapes[real]}")
            if shapes[real] != shapes[made_up]:
                differences.append(
                    f"{method}: real account {shapes[real]!r}, unknown {shapes[made_up]!r}"
                )
        if all(s.endswith("no answer") for s in seen):
            raise NotRunnable("no answer to REGISTER or INVITE")
        return Outcome(
            not differences, "; ".join(differences) or "answers alike: " + "; ".join(seen)
        )
