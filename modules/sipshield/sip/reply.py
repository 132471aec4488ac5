"""What reply-observing modules see: a final reply and the request it answers.

Replies are observed, not blocked: brute-force and scanner detection count
failures (401/403/404) per source and user, and a success resets the count.
Inside Kamailio the facts of a received reply come from the transaction
(``$T_req``) in the reply route that sipshield arms for initial requests from
outside.  A reply Kamailio sends itself (a registrar's 401 challenge, its 200
for ``save()``) never passes a reply route; the drop-in sees the stateless
ones in ``event_route[sl:local-response]`` instead, where the request is no
longer at hand (:class:`RoutedRequest`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sipshield.sip.ksr_message import read_pv

if TYPE_CHECKING:
    from sipshield.sip.message import SipRequest

_USERNAME = re.compile(r'username\s*=\s*"([^"]*)"', re.IGNORECASE)


def credentials_username(authorization: str) -> str:
    """The digest ``username`` of an Authorization/Proxy-Authorization value."""
    match = _USERNAME.search(authorization)
    return match.group(1) if match else ""


@dataclass(frozen=True)
class ReplyFacts:
    status: int
    method: str
    src_ip: str
    src_port: int
    call_id: str
    to_user: str
    from_user: str
    # The digest username the request carried, "" when it carried no credentials.
    auth_user: str
    user_agent: str = ""

    @property
    def had_credentials(self) -> bool:
        return bool(self.auth_user)

    @property
    def user(self) -> str:
        """The account the request was about: its credentials, else its To user."""
        return self.auth_user or self.to_user

    @classmethod
    def from_ksr(cls, ksr: Any) -> ReplyFacts:
        pv = ksr.pv

        def req(name: str) -> str:
            return read_pv(pv, f"$T_req({name})") or ""

        authorization = req("$hdr(Authorization)") or req("$hdr(Proxy-Authorization)")
        return cls(
            status=int(pv.get("$rs") or 0),
            method=req("$rm"),
            src_ip=req("$si"),
            src_port=int(req("$sp") or 0),
            call_id=read_pv(pv, "$ci") or "",
            to_user=req("$tU"),
            from_user=req("$fU"),
            auth_user=credentials_username(authorization),
            user_agent=req("$ua"),
        )

    @classmethod
    def from_local_reply(cls, ksr: Any, request: RoutedRequest) -> ReplyFacts | None:
        """A reply Kamailio sent itself to ``request``; None when it is not to count.

        ``ksr`` is in ``event_route[sl:local-response]``.  Not counted: a
        provisional reply, a reply whose Call-ID and CSeq are not the
        request's (it answers another request than the one this worker is
        routing), and a success to a request for no user (the stock
        configuration's "200 Keepalive" to OPTIONS): it says nothing about any
        account, and a scanner could send one between probes to clear its
        failure count.
        """
        pv = ksr.pv
        status = int(pv.get("$rs") or 0)
        if status < 200 or (status < 300 and not request.to_user):
            return None
        if read_pv(pv, "$ci") != request.call_id or read_pv(pv, "$hdr(CSeq)") != request.cseq:
            return None
        return cls(
            status=status,
            method=request.method,
            src_ip=request.src_ip,
            src_port=request.src_port,
            call_id=request.call_id,
            to_user=request.to_user,
            from_user=request.from_user,
            auth_user=request.auth_user,
            user_agent=request.user_agent,
        )


@dataclass(frozen=True)
class RoutedRequest:
    """The request a configuration is routing now, as a reply sent for it will need it.

    In ``event_route[sl:local-response]`` the current message is the reply
    Kamailio built (Kamailio 5.6, measured): its status, Call-ID, CSeq, From
    and To are there, but not the request's source (``$si`` is empty, ``$sp``
    0), its credentials or its User-Agent, and ``$T_req(...)`` is null.  The
    event route runs in the worker that is routing the request, inside the
    call that sent the reply, so the drop-in reads the request here, while it
    is routed, and :meth:`ReplyFacts.from_local_reply` checks that a local
    reply answers this very request.
    """

    call_id: str
    # The CSeq header as received: Kamailio copies it into its replies verbatim.
    cseq: str
    method: str
    src_ip: str
    src_port: int
    to_user: str
    from_user: str
    auth_user: str
    user_agent: str

    @classmethod
    def from_view(cls, view: SipRequest) -> RoutedRequest:
        authorization = view.header("Authorization") or view.header("Proxy-Authorization") or ""
        return cls(
            call_id=view.call_id,
            cseq=view.header("CSeq") or "",
            method=view.method,
            src_ip=view.src_ip,
            src_port=view.src_port,
            to_user=view.to_user,
            from_user=view.from_user,
            auth_user=credentials_username(authorization),
            user_agent=view.user_agent,
        )
