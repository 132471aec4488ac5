"""Malformed requests: RFC 3261 violations that Kamailio's own parser lets through.

Each one is a well-formed OPTIONS to a made-up extension with one defect, of
the kinds the validation module's samples (tests/samples/validation/) are
about: they reach the PBX unless the SBC refuses them.  Stopped means the SBC
answered 400 or said nothing; any other answer came from behind it.  A
well-formed OPTIONS afterwards must still be answered: the SBC keeps serving.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from sipshield.core.policy import Policy
from sipshield.ops.selftest.attack import Attack, Expectation, NotRunnable, Outcome, enforced
from sipshield.ops.selftest.raw_requests import request
from sipshield.ops.selftest.target import Context, final

Defect = Callable[[str], str]


def _replace_header(name: str, value: str) -> Defect:
    def apply(message: str) -> str:
        lines = message.split("\r\n")
        return "\r\n".join(
            f"{name}: {value}" if line.lower().startswith(name.lower() + ":") else line
            for line in lines
        )

    return apply


def _add_headers(*lines: str) -> Defect:
    return lambda message: message.replace("\r\n\r\n", "\r\n" + "\r\n".join(lines) + "\r\n\r\n", 1)


DEFECTS: dict[str, Defect] = {
    "call-id-with-space": _replace_header("Call-ID", "abc def@x"),
    "cseq-method-mismatch": _replace_header("CSeq", "1 INVITE"),
    "cseq-not-numeric": _replace_header("CSeq", "one OPTIONS"),
    "max-forwards-too-large": _replace_header("Max-Forwards", "700"),
    "control-char-in-header": _add_headers("Subject: a\x01b"),
    "nul-in-header": _add_headers("Subject: abc\x00def"),
    "header-value-too-long": _add_headers("Subject: " + "a" * 4000),
    "too-many-headers": _add_headers(*(f"X-Filler-{i}: {i}" for i in range(120))),
}


class MalformedRequests(Attack):
    name = "malformed"
    summary = f"{len(DEFECTS)} requests with one RFC 3261 defect each, then a well-formed one"

    def expect(self, policy: Policy) -> Expectation:
        entry, phrase = enforced(policy, "validation")
        if entry is None:
            return Expectation(False, phrase)
        return Expectation(True, f"{phrase}: refused with 400 or dropped ({entry.response})")

    def run(self, ctx: Context) -> Outcome:
        domain, passed = ctx.target.domain, []
        for name, defect in DEFECTS.items():
            ruri = f"sip:m{secrets.token_hex(3)}@{domain}"
            raw = defect(request("OPTIONS", ruri, ctx.attacker, domain).decode()).encode()
            code = final(ctx.exchange(raw, timeout=1.0))
            if code not in (None, 400):
                passed.append(f"{name}: {code}")
        host, port = ctx.target.sip()
        alive = final(ctx.exchange(request("OPTIONS", f"sip:{host}:{port}", ctx.attacker, domain)))
        if alive is None:
            raise NotRunnable("the SBC did not answer a well-formed OPTIONS afterwards")
        if passed:
            return Outcome(False, "answered from behind the SBC: " + "; ".join(passed))
        return Outcome(True, f"all {len(DEFECTS)} refused or dropped; the SBC still answers")
