"""An operator's own KEMI routing script with sipshield composed into it.

The routing is the operator's (a small registrar and proxy, as Debian's stock
kamailio.cfg does it); sipshield adds one call in the request route, one in
the reply route and the record-route hook.  Nothing else changes.
"""

import os
import site

# sipshield is in a venv on PYTHONPATH (see kamailio-cfg/sipshield_kemi.py).
for _entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    if _entry:
        site.addsitedir(_entry)

import KSR  # noqa: E402 - provided by Kamailio at run time

from sipshield.edge.dropin import Shield  # noqa: E402


def mod_init():
    return OperatorRouting(Shield.load(KSR))


class OperatorRouting:
    def __init__(self, shield: Shield) -> None:
        self.shield = shield

    def child_init(self, rank):
        return self.shield.child_init(rank)

    def ksr_request_route(self, msg):
        verdict = self.shield.request()
        if verdict.blocked:
            KSR.info(
                f"operator: sipshield {verdict.action} by {verdict.module}: {verdict.reason}\n"
            )
            return 1
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.send_reply(483, "Too Many Hops")
            return 1
        if KSR.is_CANCEL():
            if KSR.tm.t_check_trans() > 0:
                self.relay()
            return 1
        if KSR.siputils.has_totag() > 0:
            if KSR.rr.loose_route() > 0 or (KSR.is_ACK() and KSR.tm.t_check_trans() > 0):
                self.relay()
            elif not KSR.is_ACK():
                KSR.sl.send_reply(404, "Not here")
            return 1
        if KSR.is_OPTIONS() and KSR.pv.is_null("$rU"):
            KSR.sl.send_reply(200, "Keepalive")
            return 1
        if KSR.is_REGISTER():
            if KSR.registrar.save("location", 0) < 0:
                KSR.sl.sl_reply_error()
            return 1
        if KSR.is_method_in("IS"):  # INVITE, SUBSCRIBE
            KSR.rr.record_route()
            self.shield.record_route()
        if KSR.registrar.lookup("location") < 0:
            KSR.sl.send_reply(404, "Not Found")
            return 1
        self.relay()
        return 1

    def relay(self):
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()

    def ksr_reply_route(self, msg):
        self.shield.reply()
        return 1

    def ksr_timer(self, msg, timer):
        self.shield.timer()
        return 1
