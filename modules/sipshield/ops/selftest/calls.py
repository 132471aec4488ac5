"""The operator's two test accounts as phones at the users' address, and a call between them.

Attacks that need a call (forged BYE and CANCEL, REFER, media offers, RTP
injection) set one up here: the callee registers, the caller calls it, both
with the user agent the integration tests use (sipshield.lab.sip_ua).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sipshield.core.policy import Policy
from sipshield.lab.sip_ua import Answering, Call, RtpPeer, UserAgent, sdp
from sipshield.ops.selftest.attack import NotRunnable
from sipshield.ops.selftest.target import Context


@contextmanager
def phones(ctx: Context) -> Iterator[tuple[UserAgent, UserAgent]]:
    """(caller, callee), the callee registered; unregistered and closed on the way out."""
    caller_account, callee_account = ctx.target.accounts[:2]
    callee = ctx.phone(callee_account)
    caller = ctx.phone(caller_account)
    try:
        try:
            status = callee.register()
        except TimeoutError:
            raise NotRunnable(f"{callee.user} could not register: no answer") from None
        if status != 200:
            raise NotRunnable(f"{callee.user} could not register: {status}")
        yield caller, callee
    finally:
        # An answering thread still waiting would swallow the REGISTER's replies.
        for answering in callee.answering:
            answering.stop()
        with suppress(OSError, TimeoutError):
            callee.register(expires=0)
        caller.close()
        callee.close()


def srtp_mandatory(policy: Policy) -> bool:
    return policy.media is not None and policy.media.users.srtp == "mandatory"


def offer(ctx: Context, media: RtpPeer | None = None) -> str:
    """An SDP offer the policy accepts from a user, for media at the users' address.

    Plain RTP, or DTLS-SRTP where the policy makes SRTP mandatory (the
    fingerprint is random: enough for signalling, no DTLS handshake follows).
    """
    port = media.port if media else ctx.media().port
    if not srtp_mandatory(ctx.policy):
        return sdp(port, "RTP/AVP", ctx.user_source)
    fingerprint = ":".join(f"{b:02X}" for b in secrets.token_bytes(32))
    return sdp(
        port,
        "UDP/TLS/RTP/SAVP",
        ctx.user_source,
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:actpass",
    )


def answered_call(
    ctx: Context, caller: UserAgent, callee: UserAgent, caller_offer: str, callee_answer: str
) -> tuple[Call, Answering]:
    """A call from caller to callee, answered; NotRunnable when it is not."""
    answering = callee.answer_in_background(callee_answer)
    call = caller.call(callee.user, caller_offer)
    if call.reply is None or call.reply.status != 200:
        status = call.reply.start if call.reply else "no answer"
        raise NotRunnable(f"a call between the test accounts failed: {status}")
    answering.wait()
    return call, answering
