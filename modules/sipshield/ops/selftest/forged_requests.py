"""Call disruption: a BYE and a CANCEL copied off the wire, sent from the attacker's address.

The attacker has seen the caller's request (Call-ID, tags, Via, the route
set with its dialog token) and sends it unchanged from elsewhere.  Stopped
when the SBC refuses it and the call is still there for its own party:
the caller's real BYE gets 200, or its real CANCEL ends the ringing call.
"""

from __future__ import annotations

from sipshield.core.policy import Policy
from sipshield.ops.selftest.attack import Attack, Expectation, NotRunnable, Outcome, expect_enforced
from sipshield.ops.selftest.calls import answered_call, offer, phones
from sipshield.ops.selftest.target import Context, final


class ForgedBye(Attack):
    name = "forged-bye"
    summary = "the caller's BYE, copied, from another address during a call"
    needs = ("accounts",)

    def expect(self, policy: Policy) -> Expectation:
        return expect_enforced(policy, "dialog_guard", "signed dialog tokens bind the address")

    def run(self, ctx: Context) -> Outcome:
        with phones(ctx) as (caller, callee):
            call, _ = answered_call(ctx, caller, callee, offer(ctx), offer(ctx))
            caller.cseq += 10
            forged = call._in_dialog("BYE", caller.cseq)
            code = final(ctx.exchange(forged.to_bytes(), timeout=2.0))
            try:
                own = call.bye()
            except TimeoutError:
                own = None
        if code is not None and code < 300:
            return Outcome(False, f"forged BYE answered {code}; the caller's own BYE got {own}")
        return Outcome(
            True, f"forged BYE answered {code or 'nothing'}; the caller's own BYE got {own}"
        )


class ForgedCancel(Attack):
    name = "forged-cancel"
    summary = "the caller's CANCEL, copied, from another address while the call rings"
    needs = ("accounts",)

    def expect(self, policy: Policy) -> Expectation:
        return expect_enforced(
            policy, "cancel_guard", "a CANCEL must come from its INVITE's source"
        )

    def run(self, ctx: Context) -> Outcome:
        with phones(ctx) as (caller, callee):
            ringing = callee.answer_in_background(offer(ctx), status=180)
            call = caller.ring(callee.user, offer(ctx))
            if call.invite is None or call.reply is None or call.reply.status >= 200:
                raise NotRunnable(
                    f"the call did not ring: {call.reply.start if call.reply else ''}"
                )
            forged = caller._cancel(call.invite)
            code = final(ctx.exchange(forged.to_bytes(), timeout=2.0))
            cancelled_by_forgery = ringing.done.wait(1.0) and ringing.cancelled
            try:
                own: int | None = call.cancel(5.0).status
            except TimeoutError:
                own = None
        if cancelled_by_forgery or (code is not None and code < 300):
            return Outcome(False, f"forged CANCEL answered {code}; the ringing phone stopped")
        return Outcome(
            True, f"forged CANCEL answered {code or 'nothing'}; the caller's own CANCEL got {own}"
        )
