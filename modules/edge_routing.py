"""Reference routing of the edge proxy: everything from outside goes to the PBX.

- Requests from outside (remote users, trunks) go to the inside PBX.  Their
  preloaded Route headers are removed, so nobody outside can use the SBC as an
  open relay.  REGISTERs get a Path header (with the received address) so that
  the PBX reaches the user back through the SBC, NAT included.
- Requests from the PBX follow their Route set (the Path the PBX stored at
  registration) or, when the Request-URI names a trunk's domain, go out
  through that trunk.
- In-dialog requests follow their Record-Route set.

Operators with their own routing keep it and call only the pipeline
(see the drop-in configuration); this class is what the reference
``kamailio.cfg`` uses.
"""

from __future__ import annotations

from typing import Any

from sipshield.message import SipRequest
from sipshield.policy import Policy

OUTSIDE_DIALOG_FORMING = "IS"  # KSR.is_method_in letters: INVITE, SUBSCRIBE


def _sip_uri(host_port: str, transport: str) -> str:
    return f"sip:{host_port};transport={transport}"


class EdgeRouter:
    def __init__(self, policy: Policy, ksr: Any) -> None:
        self.ksr = ksr
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
                self._relay()
            return
        if msg.in_dialog:
            self._route_in_dialog(msg)
            return
        if msg.method == "ACK":
            # An ACK for a negative reply is absorbed by its transaction.
            if k.tm.t_check_trans() > 0:
                self._relay()
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
            self._route_from_pbx()
        else:
            self._route_from_outside(msg)

    def _route_in_dialog(self, msg: SipRequest) -> None:
        k = self.ksr
        if k.rr.loose_route() > 0:
            self._relay()
        elif msg.method == "ACK":
            if k.tm.t_check_trans() > 0:
                self._relay()
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
        self._relay()

    def _route_from_pbx(self) -> None:
        k = self.ksr
        if k.is_method_in(OUTSIDE_DIALOG_FORMING):
            k.rr.record_route()
        # The PBX preloads the Path it stored at registration; the "received"
        # parameter in it becomes the destination (NAT traversal).
        if k.rr.loose_route_preloaded() > 0:
            self._relay()
            return
        trunk = self.trunk_by_domain.get(str(k.pv.get("$rd") or "").lower())
        if trunk is None:
            k.sl.send_reply(404, "No Route")
            return
        k.setdsturi(trunk)
        self._relay()

    def _relay(self) -> None:
        if self.ksr.tm.t_relay() < 0:
            self.ksr.sl.sl_reply_error()
