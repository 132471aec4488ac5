"""Device control: an out-of-dialog NOTIFY check-sync that makes a phone reboot or reprovision."""

from __future__ import annotations

from sipshield.core.policy import Policy
from sipshield.ops.selftest.attack import Attack, Expectation, Outcome, expect_enforced
from sipshield.ops.selftest.calls import phones
from sipshield.ops.selftest.raw_requests import request
from sipshield.ops.selftest.target import Context, final


class CheckSyncNotify(Attack):
    name = "notify-check-sync"
    summary = "NOTIFY Event: check-sync;reboot=true to a registered phone, outside any dialog"
    needs = ("accounts",)

    def expect(self, policy: Policy) -> Expectation:
        return expect_enforced(policy, "device_control", "the attacker is no provisioning source")

    def run(self, ctx: Context) -> Outcome:
        domain = ctx.target.domain
        with phones(ctx) as (_, callee):
            raw = request(
                "NOTIFY",
                f"sip:{callee.user}@{domain}",
                ctx.attacker,
                domain,
                headers=("Event: check-sync;reboot=true", "Subscription-State: terminated"),
            )
            sock = ctx.udp_socket(timeout=3.0)
            try:
                sock.sendto(raw, ctx.target.sip())
                try:
                    reached = callee.next_request(timeout=2.0)
                    callee.reply(reached, 200, "OK")
                except TimeoutError:
                    reached = None
                replies = b""
                try:
                    while final(replies) is None:
                        replies += sock.recv(65535)
                except TimeoutError:
                    pass
            finally:
                sock.close()
        code = final(replies)
        if reached is not None and reached.method == "NOTIFY":
            return Outcome(False, f"the phone received the NOTIFY (answer {code})")
        return Outcome(True, f"NOTIFY answered {code or 'nothing'}; the phone never saw it")
