"""Toll fraud by transfer: a REFER in a call that sends the far end to a premium number."""

from __future__ import annotations

from contextlib import suppress

from sipshield.core.policy import Policy
from sipshield.ops.selftest.attack import Attack, Expectation, Outcome, expect_enforced
from sipshield.ops.selftest.calls import answered_call, offer, phones
from sipshield.ops.selftest.target import Context

# A premium-rate number written as phones dial it (international, 900 range).
PREMIUM = "+19005550123"


class PremiumRefer(Attack):
    name = "premium-refer"
    summary = f"a REFER in a call to {PREMIUM} (premium rate)"
    needs = ("accounts",)

    def expect(self, policy: Policy) -> Expectation:
        return expect_enforced(policy, "refer_policy")

    def run(self, ctx: Context) -> Outcome:
        target = f"<sip:{PREMIUM}@{ctx.target.domain};user=phone>"
        with phones(ctx) as (caller, callee):
            call, _ = answered_call(ctx, caller, callee, offer(ctx), offer(ctx))
            caller.cseq += 10
            refer = call._in_dialog("REFER", caller.cseq)
            refer.headers.append(("Refer-To", target))
            caller.send(refer)
            try:
                code: int | None = caller.response(3.0).status
            except TimeoutError:
                code = None
            with suppress(TimeoutError):
                call.bye()
        stopped = code is None or code >= 300
        return Outcome(stopped, f"REFER to {target} answered {code or 'nothing'}")
