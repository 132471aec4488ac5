"""Is the TLS server that answers the one meant?  Internet domains (RFC 5922) and trunks.

Two kinds of request leave for a server whose certificate must name it:

- an internet call: the router sends ``sip:bob@example.org`` to whatever
  server RFC 3263 finds for example.org; its certificate must carry
  example.org as a ``sip:`` URI or DNS subjectAltName, the CN only when there
  is no subjectAltName, compared whole
  (:func:`sipshield.core.internet.certificate_problem`);
- a call out through a TLS trunk: its server's certificate must name the
  trunk's ``server_name`` (or its target's host), as a DNS or IP
  subjectAltName, or the CN without one
  (:func:`sipshield.checks.tls_policy.trunk_server_problem`).

Where the check runs, and why there: Kamailio 5.6 verifies the chain of a
server's certificate (the client profile's ``verify_certificate``) but not
its name, and its ``tls:connection-out`` event, meant for such checks, runs
only when a handshake completes in the process that sends; a real handshake
needs the server's answer, which the TCP reader process reads, and there the
event is skipped (seen in the lab: it never fires, for trunks either).  So
the check runs on every reply to the request, in Kamailio's core reply
route, before the transaction layer sees it: a reply from a server that does
not prove what was meant is dropped (a 200 as well as a 100: tm cannot drop
a final reply in its own reply route) and that connection closed; the call
fails and an event says why.  What was meant travels in our own Via of the
request (``;sinet=DOMAIN`` or ``;strunk=INDEX``, through Kamailio's
``xavp_via_params``), which every reply brings back and the transaction
layer strips before relaying.  The request itself has reached that server by
then; docs/internet-calling.md says what that means.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from sipshield.checks.tls_policy import trunk_server_problem
from sipshield.core import remediation
from sipshield.core.events import Event, EventSink
from sipshield.core.internet import InternetSettings, certificate_problem
from sipshield.sip.cert_names import BadCertificate, pem_certificates, read_certificate
from sipshield.sip.ksr_message import read_pv

if TYPE_CHECKING:
    from sipshield.core.policy import Trunk

log = logging.getLogger("sipshield.edge.server_identity")

# Our Via parameters: the domain an internet request was sent to, or the
# index of the trunk (in peers.trunks) a request went out through; the xavp
# whose fields Kamailio adds to the Via (kamailio.cfg: xavp_via_params).
INTERNET_PARAM = "sinet"
TRUNK_PARAM = "strunk"
VIA_XAVP = "$xavp(sipshield_via=>{})"
_VIA_MEANT = re.compile(rf";\s*({INTERNET_PARAM}|{TRUNK_PARAM})=([A-Za-z0-9.-]+)")
# Connections already shown to serve what was meant, per worker: (connection id, meant).
MAX_REMEMBERED = 4096


class ServerIdentityCheck:
    def __init__(
        self,
        settings: InternetSettings,
        trunks: list[Trunk],
        ksr: Any,
        events: EventSink | None,
    ) -> None:
        self.settings = settings
        self.trunks = trunks
        self.ksr = ksr
        self.events = events
        self.proven: set[tuple[str, str]] = set()
        # Nothing is ever armed without calls out to the internet or a TLS
        # trunk: then no reply costs a look at its Via.
        self.active = settings.outbound or any(t.transport == "tls" for t in trunks)

    def arm_internet(self, domain: str) -> None:
        """Have the replies of the request being relayed to ``domain`` checked."""
        k = self.ksr
        # SNI: the server learns which of its domains is called (tls module's xavp_cfg).
        k.pv.sets("$xavp(tls=>server_name)", domain)
        self._meant(INTERNET_PARAM, domain)

    def arm_trunk(self, index: int) -> None:
        """Have the replies of the request going out through trunk ``index`` checked."""
        self._meant(TRUNK_PARAM, str(index))

    def _meant(self, param: str, value: str) -> None:
        k = self.ksr
        k.pv.sets(VIA_XAVP.format(param), value)
        k.corex.via_add_xavp_params(1)

    def refuses_reply(self) -> bool:
        """The current reply (core reply route): True when it came from a server that is
        not the one meant; its connection is then closed and the reply dropped."""
        if not self.active:
            return False
        k = self.ksr
        found = _VIA_MEANT.search(read_pv(k.pv, "$(hdr(Via)[0])") or "")
        if found is None:
            return False
        param, value = found.group(1), found.group(2).lower()
        if param == TRUNK_PARAM:
            if not value.isdigit() or int(value) >= len(self.trunks):
                return self._refuse("tls_policy", f"a reply names no trunk of ours ({value})")
            trunk: Trunk | None = self.trunks[int(value)]
            meant = f"trunk {trunk.name}"  # type: ignore[union-attr]
            required = True
        else:
            trunk, meant, required = None, value, self.settings.require_tls
        module = "internet" if trunk is None else "tls_policy"
        transport = (read_pv(k.pv, "$pr") or "").lower()
        if transport != "tls":
            if not required:
                return False  # no identity to check over a plain transport
            return self._refuse(module, f"the server of {meant} answered over {transport}")
        connection = str(k.pv.get("$conid") or "")
        if (connection, param + value) in self.proven:
            return False
        problem = self._certificate_problem(value, trunk)
        if problem is None:
            if len(self.proven) >= MAX_REMEMBERED:
                self.proven.clear()
            self.proven.add((connection, param + value))
            return False
        remediation.close_connection(k, connection)
        return self._refuse(module, problem)

    def _certificate_problem(self, domain: str, trunk: Trunk | None) -> str | None:
        pv = self.ksr.pv
        certificates = pem_certificates(read_pv(pv, "$tls_peer_raw_cert") or "")
        verified = (read_pv(pv, "$tls_peer_verified") or "") == "1"
        certificate = certificates[0] if certificates else b""
        if trunk is not None:
            return trunk_server_problem(trunk, verified, certificate)
        if not certificate:
            return f"the server for {domain} sent no certificate"
        try:
            names = read_certificate(certificate)
        except BadCertificate as exc:
            return f"the server for {domain} sent an unreadable certificate: {exc}"
        return certificate_problem(domain, verified, names.sip_domains())

    def _refuse(self, module: str, problem: str) -> bool:
        k = self.ksr
        pv = k.pv
        log.warning("reply refused: %s", problem)
        if self.events is not None:
            self.events.emit(
                Event(
                    module=module,
                    action="drop",
                    src=f"{read_pv(pv, '$si') or ''}:{pv.get('$sp') or 0}",
                    reason=problem,
                    call_id=read_pv(pv, "$ci") or "",
                    method=read_pv(pv, "$rm") or "",
                )
            )
        remediation.drop_reply(k)
        return True
