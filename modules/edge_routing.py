"""Reference routing of the edge proxy: everything from outside goes to the PBX.

- Requests from outside (remote users, trunks) go to the inside PBX.  Their
  preloaded Route headers are removed, so nobody outside can use the SBC as an
  open relay.  REGISTERs get a Path header (with the received address) so that
  the PBX reaches the user back through the SBC, NAT included.
- Requests from the PBX follow their Route set (the Path the PBX stored at
  registration) or, when the Request-URI names a trunk's domain, go out
  through that trunk.
- In-dialog requests follow their Record-Route set.
- Before relaying, a ``sips:`` Request-URI must have a TLS next hop, and SDES
  keys must not leave towards the outside over a plain hop
  (:mod:`sipshield.tls_policy`, :mod:`sipshield.sdes_guard`).  The refusal is
  a 403 for SIPS: the next hop is the policy's, so a retry would meet the same
  hop (480 would invite one); SDES gets 488 like an unacceptable offer.

Operators with their own routing keep it and call only the pipeline
(see the drop-in configuration); this class is what the reference
``kamailio.cfg`` uses.
"""

from __future__ import annotations

import contextlib
from typing import Any

from sipshield import sdes_guard
from sipshield.events import Event, EventSink
from sipshield.ksr_message import read_pv
from sipshield.message import SipRequest
from sipshield.policy import Policy
from sipshield.tls_policy import next_hop_is_tls, sips_next_hop_problem

OUTSIDE_DIALOG_FORMING = "IS"  # KSR.is_method_in letters: INVITE, SUBSCRIBE


def _sip_uri(host_port: str, transport: str) -> str:
    return f"sip:{host_port};transport={transport}"


class EdgeRouter:
    def __init__(self, policy: Policy, ksr: Any, events: EventSink | None = None) -> None:
        self.ksr = ksr
        self.events = events
        self.sdes = sdes_guard.find_config(policy)
        pbx = policy.peers.pbx
        host, _, port = pbx.address.rpartition(":")
        self.pbx_source = (host, int(port))
        self.pbx_uri = _sip_uri(pbx.address, pbx.transport)
        self.trunk_by_domain = {
            domain.lower(): _sip_uri(trunk.target, trunk.transport)
            for trunk in policy.peers.trunks
            for domain in trunk.domains
        }

    def route(self, msg: SipRequest) -> None:
        k = self.ksr
        if k.maxfwd.process_maxfwd(10) < 0:
            k.sl.send_reply(483, "Too Many Hops")
            return
        if msg.method == "CANCEL":
            if k.tm.t_check_trans() > 0:
                self._relay(msg)
            return
        if msg.in_dialog:
            self._route_in_dialog(msg)
            return
        if msg.method == "ACK":
            # An ACK for a negative reply is absorbed by its transaction.
            if k.tm.t_check_trans() > 0:
                self._relay(msg)
            return
        if msg.method == "OPTIONS" and not k.corex.has_ruri_user() > 0 and k.is_myself_ruri():
            k.sl.send_reply(200, "OK")
            return
        # Retransmissions are absorbed by the transaction they belong to.
        if k.tmx.t_precheck_trans() > 0:
            k.tm.t_check_trans()
            return
        if k.tm.t_check_trans() == 0:
            return
        if (msg.src_ip, msg.src_port) == self.pbx_source:
            self._route_from_pbx(msg)
        else:
            self._route_from_outside(msg)

    def _route_in_dialog(self, msg: SipRequest) -> None:
        k = self.ksr
        if k.rr.loose_route() > 0:
            self._relay(msg)
        elif msg.method == "ACK":
            if k.tm.t_check_trans() > 0:
                self._relay(msg)
        else:
            k.sl.send_reply(404, "Not Here")

    def _route_from_outside(self, msg: SipRequest) -> None:
        k = self.ksr
        k.hdr.remove("Route")
        if msg.method == "REGISTER":
            k.path.add_path_received()
        elif k.is_method_in(OUTSIDE_DIALOG_FORMING):
            k.rr.record_route()
        k.setdsturi(self.pbx_uri)
        self._relay(msg)

    def _route_from_pbx(self, msg: SipRequest) -> None:
        k = self.ksr
        if k.is_method_in(OUTSIDE_DIALOG_FORMING):
            k.rr.record_route()
        # The PBX preloads the Path it stored at registration; the "received"
        # parameter in it becomes the destination (NAT traversal).
        if k.rr.loose_route_preloaded() > 0:
            self._relay(msg)
            return
        trunk = self.trunk_by_domain.get((read_pv(k.pv, "$rd") or "").lower())
        if trunk is None:
            k.sl.send_reply(404, "No Route")
            return
        k.setdsturi(trunk)
        self._relay(msg)

    def _relay(self, msg: SipRequest) -> None:
        k = self.ksr
        # ACK cannot be answered and CANCEL follows its INVITE.
        if msg.method not in ("ACK", "CANCEL") and not self._hop_allowed(msg):
            return
        if k.tm.t_relay() < 0:
            k.sl.sl_reply_error()

    def _hop_allowed(self, msg: SipRequest) -> bool:
        """Refuse (and report) what must not cross the next hop; False when refused."""
        k = self.ksr
        ruri = read_pv(k.pv, "$ru") or ""
        next_hop = read_pv(k.pv, "$du") or ruri
        problem = sips_next_hop_problem(ruri, next_hop)
        if problem:
            self._report(msg, "tls_policy", "reject", problem)
            k.sl.send_reply(403, "SIPS Needs TLS Hop")
            return False
        if self.sdes is None:
            return True
        from_pbx = (msg.src_ip, msg.src_port) == self.pbx_source
        plain = (msg.transport != "tls") if not from_pbx else not next_hop_is_tls(next_hop)
        body = sdes_guard.sdp_body(msg) if plain else b""
        if not body:
            return True
        action, stripped = sdes_guard.plain_hop_outcome(self.sdes.on_plain_hop, body)
        if action == "pass":
            return True
        if action == "reject" and not from_pbx:
            # The arrival hop: sdes_guard in the pipeline decided (and reported).
            return True
        why = "SDES keys (a=crypto) in SDP " + (
            f"would leave over a plain hop to {next_hop}"
            if from_pbx
            else f"arrived over {msg.transport}"
        )
        if self.sdes.mode == "monitor":
            self._report(msg, "sdes_guard", action, why, "monitor")
            return True
        if action == "strip":
            self._report(msg, "sdes_guard", "strip", why + "; stripped, DTLS-SRTP offered")
            content_type = msg.header("content-type") or "application/sdp"
            k.textops.set_body(stripped.decode("utf-8", errors="replace"), content_type)
            return True
        self._report(msg, "sdes_guard", "reject", why)
        k.sl.send_reply(sdes_guard.NOT_ACCEPTABLE, "Not Acceptable Here")
        return False

    def _report(
        self, msg: SipRequest, module: str, action: str, reason: str, mode: str = "enforce"
    ) -> None:
        if self.events is None:
            return
        # A full disk must not turn into a failed call.
        with contextlib.suppress(Exception):
            self.events.emit(
                Event(
                    module=module,
                    action=action,
                    src=f"{msg.src_ip}:{msg.src_port}",
                    reason=reason,
                    call_id=msg.call_id,
                    method=msg.method,
                    user=msg.from_user,
                    mode=mode,
                )
            )
