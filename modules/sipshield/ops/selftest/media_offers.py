"""Media offers an SBC should not accept: plain RTP where SRTP is mandatory, SDES keys over UDP."""

from __future__ import annotations

import base64
import secrets

from sipshield.core.policy import Policy
from sipshield.lab.sip_ua import sdp
from sipshield.ops.selftest.attack import Attack, Expectation, Outcome, expect_enforced
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
            call = caller.call(callee.user, sdp(ctx.media().port, "RTP/AVP", ctx.user_source))
            code = call.reply.status if call.reply else None
            if code == 200:
                call.bye()
        return Outcome(code != 200, f"plain RTP offer answered {code or 'nothing'}")


class SdesOverPlain(Attack):
    name = "sdes-plain"
    summary = "a call offering SDES keys (a=crypto) over UDP, where anyone on the path reads them"
    needs = ("accounts",)

    def expect(self, policy: Policy) -> Expectation:
        return expect_enforced(policy, "sdes_guard")

    def run(self, ctx: Context) -> Outcome:
        key = base64.b64encode(secrets.token_bytes(30)).decode()
        crypto = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}"
        with phones(ctx) as (caller, callee):
            answering = callee.answer_in_background(offer(ctx))
            call = caller.call(
                callee.user, sdp(ctx.media().port, "RTP/SAVP", ctx.user_source, crypto)
            )
            code = call.reply.status if call.reply else None
            received = answering.invite.body if code == 200 and answering.invite else ""
            if code == 200:
                call.bye()
        if code != 200:
            return Outcome(True, f"SDES offer over UDP refused: {code or 'no answer'}")
        # Accepted: keys sent in clear were taken, whatever became of them further on.
        further = "our key reached the far end" if key in received else "the far end got other keys"
        if "a=crypto" not in received:
            further = "the far end got no SDES keys"
        return Outcome(False, f"SDES offer over UDP accepted (200); {further}")
