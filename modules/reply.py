"""What reply-observing modules see: a final reply and the request it answers.

Replies are observed, not blocked: brute-force and scanner detection count
failures (401/403/404) per source and user, and a success resets the count.
Inside Kamailio the facts come from the transaction (``$T_req``) in the
reply route that sipshield arms for initial requests from outside.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sipshield.ksr_message import read_pv

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
