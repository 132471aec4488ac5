"""Media offers an SBC should not accept: plain RTP where SRTP is mandatory, SDES keys over UDP."""

from __future__ import annotations

import base64
import secrets

from sipshield.core.policy import Policy
from sipshield.ops.selftest.attack import Attack, Expectation, Outcome, enforced
from sipshield.ops.selftest.calls import offer, phones
from sipshield.ops.selftest.target import Context


class SrtpDowngrade(Attack):
    name = "srtp-downgrade"
    summary = "a call offering plain RTP only"
    needs = ("accounts",)

    def expect(self, policy: Policy) -> Expectation:
        if policy.media is None:
            return Expectation(False, "media is not anchored (no media section)")
        srtp = policy.media.users.srtp
        return Expectation(srtp == "mandatory", f"media.users.srtp is {srtp}")

    def run(self, ctx: Context) -> Outcome:
        with phones(ctx) as (caller, callee):
            callee.answer_in_background(offer(ctx))
            call = caller.call(callee.user, offer(ctx, None, "RTP/AVP"))
            code = call.reply.status if call.reply else None
            if code == 200:
                call.bye()
        return Outcome(code != 200, f"plain RTP offer answered {code or 'nothing'}")


class SdesOverPlain(Attack):
    name = "sdes-plain"
    summary = "a call offering SDES keys (a=crypto) over UDP, where anyone on the path reads them"
    needs = ("accounts",)

    def expect(self, policy: Policy) -> Expectation:
        entry, phrase = enforced(policy, "sdes_guard")
        return Expectation(entry is not None, phrase)

    def run(self, ctx: Context) -> Outcome:
        key = base64.b64encode(secrets.token_bytes(30)).decode()
        crypto = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}"
        with phones(ctx) as (caller, callee):
            answering = callee.answer_in_background(offer(ctx, None, "RTP/SAVP", crypto))
            call = caller.call(callee.user, offer(ctx, None, "RTP/SAVP", crypto))
            code = call.reply.status if call.reply else None
            received = answering.invite.body if code == 200 and answering.invite else ""
            if code == 200:
                call.bye()
        if code != 200:
            return Outcome(True, f"SDES offer over UDP refused: {code or 'no answer'}")
        if "a=crypto" in received:
            reached = "our key" if key in received else "SDES keys"
            return Outcome(False, f"call answered; {reached} reached the far end")
        return Outcome(True, "call answered with the keys stripped before the far end")
