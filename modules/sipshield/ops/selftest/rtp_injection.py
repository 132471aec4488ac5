"""RTP injection: packets from a third address to the port a call's media goes through.

Both phones talk long enough for rtpengine to commit to their sources
(strict source applies from then on); then the attacker sends to the relay
port the caller sends to, and the callee's socket tells whether any of the
attacker's packets (by SSRC) arrived.  The caller's own packets sent after
them must still arrive.
"""

from __future__ import annotations

from sipshield.core.policy import Policy
from sipshield.lab.sip_ua import media_address, media_port, talk
from sipshield.ops.selftest.attack import Attack, Expectation, NotRunnable, Outcome
from sipshield.ops.selftest.calls import answered_call, offer, phones, srtp_mandatory
from sipshield.ops.selftest.target import Context

CALLER_SSRC, CALLEE_SSRC, ATTACKER_SSRC = 0xA11CE, 0xB0B, 0xBAD


class RtpInjection(Attack):
    name = "rtp-injection"
    summary = "RTP from a third address into an anchored call, measured at the callee"
    needs = ("accounts",)

    def expect(self, policy: Policy) -> Expectation:
        if policy.media is None:
            return Expectation(False, "media is not anchored (no media section)")
        strict = policy.media.users.strict_source
        return Expectation(strict, f"media.users.strict_source is {str(strict).lower()}")

    def run(self, ctx: Context) -> Outcome:
        if srtp_mandatory(ctx.policy):
            # Plain RTP into an SRTP call is dropped for want of keys, not by strict source.
            raise NotRunnable("media.users.srtp is mandatory: the selftest has no SRTP phone")
        caller_media, callee_media = ctx.media(), ctx.media()
        injector = ctx.media(ctx.attacker)
        try:
            with phones(ctx) as (caller, callee):
                call, answering = answered_call(
                    ctx, caller, callee, offer(ctx, caller_media), offer(ctx, callee_media)
                )
                assert call.reply is not None and answering.invite is not None
                relay_host = media_address(call.reply.body)
                if relay_host == ctx.user_source:
                    call.bye()
                    return Outcome(False, "media is not anchored: the SDP points at the phone")
                to_callee = (relay_host, media_port(call.reply.body))
                to_caller = (
                    media_address(answering.invite.body),
                    media_port(answering.invite.body),
                )
                talk((caller_media, to_callee, CALLER_SSRC), (callee_media, to_caller, CALLEE_SSRC))
                heard = {int.from_bytes(p[8:12], "big") for p in callee_media.receive(0.2)}
                if CALLER_SSRC not in heard:
                    call.bye()
                    raise NotRunnable(
                        "no RTP from the caller reached the callee: nothing to measure"
                    )
                injector.send(to_callee, ssrc=ATTACKER_SSRC, count=20)
                caller_media.send(to_callee, ssrc=CALLER_SSRC, count=5)
                arrived = {int.from_bytes(p[8:12], "big") for p in callee_media.receive(1.0)}
                call.bye()
        finally:
            for sock in (caller_media, callee_media, injector):
                sock.close()
        if ATTACKER_SSRC in arrived:
            return Outcome(False, "the attacker's RTP reached the callee")
        legit = "still arrives" if CALLER_SSRC in arrived else "did NOT arrive either"
        return Outcome(True, f"the attacker's RTP was dropped; the caller's RTP {legit}")
