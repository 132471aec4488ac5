"""Registration hijack: third-party REGISTERs, bindings that move, foreign de-registrations.

Whoever registers a Contact for an AOR receives its calls, so a REGISTER is
checked before the registrar sees it:

- third party: the To user (the AOR) must be the From user and, when the
  request carries credentials, their username.  ``third_party_allowed``
  lists the AORs that others may register (a receptionist's phone, say).
- binding move: each AOR's fingerprint (source address and User-Agent family
  of its last successful authenticated registration) is kept in Redis for
  ``fingerprint_ttl_s``.  A REGISTER from another IP, or from another
  User-Agent family, within ``move_window_s`` of that registration is an
  ``alert`` (event, let through) or denied (403), as ``on_move`` says.
- de-registration (``Expires: 0``, every Contact ``expires=0``, or
  ``Contact: *``) without credentials is only accepted from the address that
  holds the binding (port included unless ``nat_rebinding: port``); with
  credentials it goes to the registrar, which verifies them.
- a Contact whose address differs from the source while the top Via shows no
  NAT (sent-by is the source) is flagged (``contact_mismatch``).

The fingerprint is written from the 2xx of an authenticated REGISTER (the
registrar has verified the credentials by then), never from a request, so a
failed hijack attempt cannot move it.  One Redis read per REGISTER, one write
per successful registration.
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Alert, Ban, Outcome, Reject
from sipshield.sip.message import uri_of
from sipshield.sip.reply import credentials_username

if TYPE_CHECKING:
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest
    from sipshield.sip.reply import ReplyFacts

_HOST_PORT = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:(?:[^@;?]*@)?(\[[^\]]+\]|[^:;?>]+)(?::(\d+))?")
_EXPIRES_PARAM = re.compile(r";\s*expires\s*=\s*(\d+)", re.IGNORECASE)
_VIA_SENT_BY = re.compile(r"^SIP/2\.0/\S+\s+(\[[^\]]+\]|[^:;\s]+)(?::(\d+))?", re.IGNORECASE)
_UA_FAMILY = re.compile(r"^\s*([A-Za-z][A-Za-z_.\- ]*?)[\s/\-_]*(?:v?\d|\(|$)")
Action = Literal["alert", "deny"]


class RegistrationGuardConfig(ModuleConfig):
    name: Literal["registration_guard"] = "registration_guard"
    # AORs (user parts) that may be registered by another user.
    third_party_allowed: list[str] = Field(default_factory=list)
    # A binding moving (new source IP or User-Agent family) this soon after the
    # last successful registration is judged by on_move.
    move_window_s: int = Field(default=3600, gt=0)
    on_move: Action = "alert"
    # How long a fingerprint is kept; at least the registrations' lifetime.
    fingerprint_ttl_s: int = Field(default=7200, gt=0)
    # none: an unauthenticated de-registration must come from the bound
    # address and port (UDP); port: the same IP from another port is accepted.
    nat_rebinding: Literal["none", "port"] = "none"
    # A Contact address other than the source while no NAT is seen.
    contact_mismatch: Literal["off", "alert", "deny"] = "alert"


def user_agent_family(user_agent: str) -> str:
    """The product part of a User-Agent, lower-cased: "Zoiper rv2.10" and "Zoiper 5" match."""
    match = _UA_FAMILY.match(user_agent)
    family = (match.group(1) if match else user_agent).strip().lower()
    return family.split()[0] if family else ""


def host_port(uri: str) -> tuple[str, int | None]:
    match = _HOST_PORT.match(uri)
    if match is None:
        return "", None
    return match.group(1).strip("[]"), int(match.group(2)) if match.group(2) else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_deregistration(msg: SipRequest) -> bool:
    contacts = [c.strip() for value in msg.header_values("contact") for c in value.split(",")]
    if any(contact == "*" for contact in contacts):
        return True
    expires = (msg.header("expires") or "").strip()
    params = [_EXPIRES_PARAM.search(contact.rsplit(">", 1)[-1]) for contact in contacts]
    if contacts and all(p is not None and p.group(1).strip("0") == "" for p in params):
        return True
    if contacts and all(p is None for p in params) and expires.isdigit():
        return int(expires) == 0
    return False


class RegistrationGuard(SecurityModule):
    name = "registration_guard"
    Config = RegistrationGuardConfig
    observes_replies = True

    def __init__(self, config: RegistrationGuardConfig, clock: Any = time.time) -> None:
        super().__init__(config)
        self.settings = config
        self.third_party_allowed = frozenset(config.third_party_allowed)
        self._clock = clock

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.method != "REGISTER":
            return CONTINUE
        aor = msg.to_user
        auth_user = credentials_username(msg.header("authorization") or "")
        if aor not in self.third_party_allowed and (
            msg.from_user != aor or (auth_user and auth_user != aor)
        ):
            by = auth_user or msg.from_user
            return Reject(f"third-party registration of {aor!r} by {by!r}", code=403)
        key = state.key("regfp", aor)
        fingerprint: dict[str, str] = state.run(lambda client: client.hgetall(key))
        if is_deregistration(msg):
            if not auth_user and fingerprint and not self._holds_binding(msg, fingerprint):
                return Reject(
                    f"unauthenticated de-registration of {aor!r} from {msg.src_ip}:"
                    f"{msg.src_port}; the binding is held by {fingerprint['ip']}:"
                    f"{fingerprint['port']}",
                    code=403,
                )
            return CONTINUE
        moved = self._move(msg, fingerprint)
        if moved:
            if self.settings.on_move == "deny":
                return Reject(moved, code=403)
            return Alert(moved)
        return self._contact_outcome(msg)

    def _holds_binding(self, msg: SipRequest, fingerprint: dict[str, str]) -> bool:
        if msg.src_ip != fingerprint.get("ip"):
            return False
        if msg.transport != "udp" or self.settings.nat_rebinding == "port":
            return True
        return str(msg.src_port) == fingerprint.get("port")

    def _move(self, msg: SipRequest, fingerprint: dict[str, str]) -> str | None:
        if not fingerprint:
            return None
        age = self._clock() - float(fingerprint.get("ts", 0))
        if age > self.settings.move_window_s:
            return None
        changes = []
        if msg.src_ip != fingerprint.get("ip"):
            changes.append(f"source {fingerprint.get('ip')} -> {msg.src_ip}")
        family = user_agent_family(msg.user_agent)
        if family != fingerprint.get("ua", family):
            changes.append(f"user agent {fingerprint.get('ua')!r} -> {family!r}")
        if not changes:
            return None
        return (
            f"binding of {msg.to_user!r} moves {int(age)}s after its last registration: "
            + ", ".join(changes)
        )

    def _contact_outcome(self, msg: SipRequest) -> Outcome:
        if self.settings.contact_mismatch == "off":
            return CONTINUE
        via_host, via_port = host_port("SIP:" + _via_sent_by(msg.header("via") or ""))
        if via_host != msg.src_ip or (via_port or 5060) != msg.src_port:
            return CONTINUE  # NAT: the Contact is the private address, as expected
        for value in msg.header_values("contact"):
            for contact in value.split(","):
                host, port = host_port(uri_of(contact))
                if not _is_ip(host):
                    continue
                if host != msg.src_ip or (port is not None and port != msg.src_port):
                    reason = (
                        f"Contact {host}:{port or ''} of {msg.to_user!r} is not the source "
                        f"{msg.src_ip}:{msg.src_port}, and no NAT is seen"
                    )
                    if self.settings.contact_mismatch == "deny":
                        return Reject(reason, code=403)
                    return Alert(reason)
        return CONTINUE

    def observe_reply(self, reply: ReplyFacts, state: SharedState) -> Ban | None:
        if reply.method != "REGISTER" or not reply.had_credentials:
            return None
        if not 200 <= reply.status < 300:
            return None
        key = state.key("regfp", reply.user)
        fields = {
            "ip": reply.src_ip,
            "port": str(reply.src_port),
            "ua": user_agent_family(reply.user_agent),
            "ts": f"{self._clock():.0f}",
        }
        ttl = self.settings.fingerprint_ttl_s

        def operation(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl)
            pipe.execute()

        state.run(operation)
        return None


def _via_sent_by(via: str) -> str:
    match = _VIA_SENT_BY.match(via.strip())
    if match is None:
        return ""
    host, port = match.group(1), match.group(2)
    return f"{host}:{port}" if port else host
