"""Is the server that answers an internet call the domain that was called? (RFC 5922)

The router sends a request for ``sip:bob@example.org`` to whatever server
RFC 3263 finds for example.org (Kamailio's resolver).  Over TLS, that server's
certificate must name example.org: as a ``sip:example.org`` URI or a DNS
subjectAltName, the CN only when there is no subjectAltName.

Where the check runs, and why there: Kamailio 5.6 verifies the chain of a
server's certificate (the client profile's ``verify_certificate``) but not
its name, and its ``tls:connection-out`` event, meant for such checks, runs
only when a handshake completes in the process that sends; a real handshake
needs the server's answer, which the TCP reader process reads, and there the
event is skipped (seen in the lab: it never fires).  So the check runs on
every reply to the request, in Kamailio's core reply route, before the
transaction layer sees it: a reply from a server that does not prove the
domain called is dropped (a 200 as well as a 100: tm cannot drop a final
reply in its own reply route) and that connection closed; the call fails
and an event says why.  The domain travels in our own Via of the request
(``;sinet=DOMAIN``, through Kamailio's ``xavp_via_params``), which every
reply brings back and the transaction layer strips before relaying.  The
request itself has reached that server by then; docs/internet-calling.md says
what that means.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sipshield.core import remediation
from sipshield.core.events import Event, EventSink
from sipshield.core.internet import InternetSettings, certificate_problem
from sipshield.sip.cert_names import BadCertificate, pem_certificates, read_certificate
from sipshield.sip.ksr_message import read_pv

log = logging.getLogger("sipshield.edge.internet_server")

# Our Via parameter naming the domain an internet request was sent to; the
# xavp whose fields Kamailio adds to the Via (kamailio.cfg: xavp_via_params).
VIA_PARAM = "sinet"
VIA_XAVP = f"$xavp(sipshield_via=>{VIA_PARAM})"
_VIA_DOMAIN = re.compile(rf";\s*{VIA_PARAM}=([A-Za-z0-9.-]+)")
# Connections already shown to serve a domain, per worker: (connection id, domain).
MAX_REMEMBERED = 4096
MODULE = "internet"


class InternetServerCheck:
    def __init__(self, settings: InternetSettings, ksr: Any, events: EventSink | None) -> None:
        self.settings = settings
        self.ksr = ksr
        self.events = events
        self.proven: set[tuple[str, str]] = set()

    def arm(self, domain: str) -> None:
        """Have the replies of the request being relayed to ``domain`` checked."""
        k = self.ksr
        # SNI: the server learns which of its domains is called (tls module's xavp_cfg).
        k.pv.sets("$xavp(tls=>server_name)", domain)
        k.pv.sets(VIA_XAVP, domain)
        k.corex.via_add_xavp_params(1)

    def refuses_reply(self) -> bool:
        """The current reply (core reply route): True when it came from a server that is
        not the domain called; its connection is then closed and the reply dropped."""
        k = self.ksr
        found = _VIA_DOMAIN.search(read_pv(k.pv, "$(hdr(Via)[0])") or "")
        if found is None:
            return False
        domain = found.group(1).lower()
        transport = (read_pv(k.pv, "$pr") or "").lower()
        if transport != "tls":
            if not self.settings.require_tls:
                return False  # no identity to check over a plain transport
            return self._refuse(domain, f"the server for {domain} answered over {transport}")
        connection = str(k.pv.get("$conid") or "")
        if (connection, domain) in self.proven:
            return False
        problem = self._certificate_problem(domain)
        if problem is None:
            if len(self.proven) >= MAX_REMEMBERED:
                self.proven.clear()
            self.proven.add((connection, domain))
            return False
        remediation.close_connection(k, connection)
        return self._refuse(domain, problem)

    def _certificate_problem(self, domain: str) -> str | None:
        pv = self.ksr.pv
        certificates = pem_certificates(read_pv(pv, "$tls_peer_raw_cert") or "")
        if not certificates:
            return f"the server for {domain} sent no certificate"
        try:
            names = read_certificate(certificates[0])
        except BadCertificate as exc:
            return f"the server for {domain} sent an unreadable certificate: {exc}"
        verified = (read_pv(pv, "$tls_peer_verified") or "") == "1"
        return certificate_problem(domain, verified, names.sip_domains())

    def _refuse(self, domain: str, problem: str) -> bool:
        k = self.ksr
        pv = k.pv
        log.warning("internet call to %s refused: %s", domain, problem)
        if self.events is not None:
            self.events.emit(
                Event(
                    module=MODULE,
                    action="drop",
                    src=f"{read_pv(pv, '$si') or ''}:{pv.get('$sp') or 0}",
                    reason=problem,
                    call_id=read_pv(pv, "$ci") or "",
                    method=read_pv(pv, "$rm") or "",
                )
            )
        remediation.drop_reply(k)
        return True
