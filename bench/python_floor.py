"""The Python floor: a KEMI script that does no more than Python must (bench/python-floor.cfg).

An OPTIONS gets its 200 from ``KSR.sl.sl_send_reply`` and nothing else: that
is the cost of handing a request to Python at all.  Every other request is
routed as bench/native-reference.cfg routes it (itself sipshield's routing,
sipshield.edge.edge_routing), written as the KSR calls sipshield makes, with
no check of any kind (no sanity, no pipeline): what sipshield's routing costs
in Python, without its security modules and its message view.

Kamailio's app_python3 loads this file by path; it is not imported by the
benchmark.  The PBX's address comes from the defines that ``sipshield lab up``
passes, read through ``$defn`` (a define's text, quotes included, hence
``{s.unquote}``: ``$defn`` alone reads as a number in KEMI).
"""

import KSR

DOMAIN = "sipshield.lab"  # the lab's SIP domain (sipshield.lab.stack.DOMAIN)
# nathelper's nat_uac_test flags as sipshield uses them (edge_routing): a
# private Contact, or a source that differs from the Via; in a reply, the
# Contact alone.
NAT_TEST_REQUEST = 1 | 2 | 16
NAT_TEST_REPLY = 1
CONTACT_HOST = "$(ct{nameaddr.uri}{uri.host})"


def _define(name: str) -> str:
    return str(KSR.pv.get(f"$(defn({name}){{s.unquote}})") or "")


class Floor:
    def __init__(self) -> None:
        self.pbx: tuple[str, int, str] | None = None

    def child_init(self, rank: int) -> int:
        return 0

    def _pbx(self) -> tuple[str, int, str]:
        """The PBX's address, port and URI."""
        if self.pbx is None:
            # Read once per worker, at its first message: $defn needs none,
            # but KSR.pv is only usable while one is being routed.
            self.pbx = (_define("PBX_ADDR"), int(_define("PBX_PORT")), _define("PBX_URI"))
        return self.pbx

    def _from_pbx(self) -> bool:
        address, port, _ = self._pbx()
        return KSR.pv.get("$si") == address and KSR.pv.get("$sp") == port

    def ksr_request_route(self, msg: object) -> int:
        if KSR.is_OPTIONS():
            KSR.sl.sl_send_reply(200, "OK")
            return 1
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return 1
        if KSR.is_CANCEL():
            if KSR.tm.t_check_trans() > 0:
                self._relay()
            return 1
        if KSR.siputils.has_totag() > 0:
            self._in_dialog()
            return 1
        if KSR.is_ACK():
            if KSR.tm.t_check_trans() > 0:
                self._relay()
            return 1
        if KSR.tmx.t_precheck_trans() > 0:
            KSR.tm.t_check_trans()
            return 1
        if KSR.tm.t_check_trans() == 0:
            return 1
        if self._from_pbx():
            if KSR.is_method_in("IS"):
                KSR.rr.record_route()
            if KSR.rr.loose_route_preloaded() > 0:
                self._relay()
            else:
                KSR.sl.sl_send_reply(404, "No Route")
            return 1
        KSR.hdr.remove("Route")
        self._keep_reachable()
        if KSR.is_REGISTER():
            KSR.path.add_path_received()
        elif KSR.is_method_in("IS"):
            self._alias_contact(NAT_TEST_REQUEST)
            KSR.rr.record_route()
        KSR.setdsturi(self._pbx()[2])
        self._relay()
        return 1

    def _in_dialog(self) -> None:
        if KSR.is_ACK() and KSR.tm.t_lookup_request() > 0:
            KSR.tm.t_check_trans()
            return
        if KSR.rr.loose_route() > 0:
            if not self._from_pbx():
                self._alias_contact(NAT_TEST_REQUEST)
                self._keep_reachable()
            if not KSR.pv.get("$du"):
                KSR.nathelper.handle_ruri_alias()
                if not KSR.pv.get("$du") and str(KSR.pv.get("$rd") or "").lower() == DOMAIN:
                    KSR.setdsturi(self._pbx()[2])
            self._relay()
        elif KSR.is_ACK():
            if KSR.tm.t_check_trans() > 0:
                self._relay()
        else:
            KSR.sl.sl_send_reply(404, "Not Here")

    def _alias_contact(self, test: int) -> None:
        if KSR.is_method_in("ISUN") and (
            KSR.nathelper.nat_uac_test(test) > 0
            or str(KSR.pv.get(CONTACT_HOST) or "").lower() == DOMAIN
        ):
            KSR.nathelper.add_contact_alias()

    def _keep_reachable(self) -> None:
        if (
            KSR.pv.get("$pr") == "udp"
            and KSR.is_method_in("RS")
            and KSR.nathelper.nat_uac_test(NAT_TEST_REQUEST) > 0
        ):
            KSR.nat_traversal.nat_keepalive()

    def _relay(self) -> None:
        # The next-hop rule sipshield's router keeps: a sips: R-URI never leaves
        # over a plain hop (BYE and CANCEL are relayed first, as there).
        if not KSR.is_method_in("ABC"):
            next_hop = str(KSR.pv.get("$du") or KSR.pv.get("$ru") or "")
            if str(KSR.pv.get("$(ru{uri.scheme})") or "") == "sips" and not _is_tls(next_hop):
                KSR.sl.sl_send_reply(403, "SIPS Needs TLS")
                return
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()

    def ksr_reply_route(self, msg: object) -> int:
        status = int(KSR.pv.get("$rs") or 0)
        if 100 < status < 300 and not self._from_pbx():
            self._alias_contact(NAT_TEST_REPLY)
        return 1


def _is_tls(uri: str) -> bool:
    return uri.lower().startswith("sips:") or ";transport=tls" in uri.lower()


def mod_init() -> Floor:
    return Floor()
