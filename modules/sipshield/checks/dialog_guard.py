"""In-dialog requests must carry a dialog token that binds where they come from.

Call hijack and call disruption (a forged BYE, a re-INVITE or UPDATE that moves
the media, a REFER that transfers the call) need only the Call-ID and the tags,
which anyone on the signalling path sees.  sipshield therefore signs every
dialog it record-routes (:mod:`sipshield.sip.dialog_tokens`): each of its
Record-Route entries carries a token that binds the outside peer of that leg.

- The caller leg is bound when the INVITE (or SUBSCRIBE) arrives from outside:
  its source address, port and transport.
- The callee leg is bound when the INVITE leaves towards outside: the next hop
  it is relayed to, that is the address the callee registered from (the
  ``received`` of its Path) or the trunk.  It is the address the 2xx and the
  callee's later requests come from, and it is known before the 2xx, so
  nothing has to be written when the dialog is answered.

An in-dialog request from outside must present, in its topmost Route entry
(the SBC's own), a token that verifies for its Call-ID, its dialog From tag
(the ``ftag`` that Kamailio's rr module adds) and its own source.  Otherwise it
is answered 403 (or dropped) and an event says why.  Requests from the inside
PBX skip the modules (``peers.pbx.inspect``), so in-dialog requests from the
PBX side are trusted, not token-checked.

NAT: the port may be allowed to change (``nat_rebinding: port``, same IP
only).  Over TCP and TLS the port is never compared: a TCP source cannot be
spoofed blind, and phones reconnect from new ports.

A proxy that record-routes a dialog once (the drop-in) puts both parties'
tokens into that one entry (:data:`~sipshield.sip.dialog_tokens.BRANCH_PARAM`);
either may verify.

Optionally, a re-INVITE or UPDATE may not move the media outside
``media_networks`` (a check on the SDP, stateless too), and ``records`` keeps
a small Redis record per dialog: the highest CSeq each side has sent, so that
a replayed or lower-CSeq request is refused even from the bound address.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.policy_types import Network, PolicyError
from sipshield.core.verdict import CONTINUE, Outcome, Reject
from sipshield.sip import dialog_tokens
from sipshield.sip.dialog_tokens import CALLEE, CALLER, Binding, KeyFileError, KeyRing
from sipshield.sip.ksr_message import read_pv
from sipshield.sip.message import SipRequest
from sipshield.sip.sdp import SdpFacts

if TYPE_CHECKING:
    from sipshield.core.site import Site
    from sipshield.core.state import SharedState

log = logging.getLogger("sipshield.checks.dialog_guard")

DEFAULT_METHODS = [
    "BYE",
    "INVITE",
    "UPDATE",
    "REFER",
    "INFO",
    "NOTIFY",
    "MESSAGE",
    "PRACK",
    "ACK",
    "SUBSCRIBE",
]
_DEFAULT_PORT = {"tls": 5061, "wss": 443}
DIALOG_FORMING = ("INVITE", "SUBSCRIBE")
# KEYS[1]: the dialog record; ARGV: side (token role), CSeq, TTL.  Returns -1
# when the CSeq is not below the side's last one (and records it), else the last.
CSEQ_SCRIPT = """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local cseq = tonumber(ARGV[2])
if cseq < last then return last end
redis.call('HSET', KEYS[1], ARGV[1], cseq)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return -1
"""


class DialogGuardConfig(ModuleConfig):
    name: Literal["dialog_guard"] = "dialog_guard"
    # The dialog-token keys, newest first (see sipshield.sip.dialog_tokens).
    key_file: Path = Path("/etc/sipshield/dialog-keys")
    # In-dialog methods that must carry a valid token (CANCEL: see cancel_guard).
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS))
    # none: the exact address and port the token binds (UDP); port: the same IP
    # from another port is accepted (a NAT that rebinds).
    nat_rebinding: Literal["none", "port"] = "none"
    # reject: 403; drop: no answer at all.
    response: Literal["reject", "drop"] = "reject"
    # When set, a re-INVITE or UPDATE whose SDP puts media outside these
    # networks is refused (488).
    media_networks: list[Network] = Field(default_factory=list)
    # Dialog records in Redis (off: tokens need no state).  On, each dialog
    # keeps the highest CSeq each side has sent (one small hash, TTL
    # record_ttl_s, refreshed by each request); a lower one is a replay (403).
    # Costs one Redis round trip per INVITE/SUBSCRIBE and per in-dialog request.
    records: bool = False
    record_ttl_s: int = Field(default=7200, ge=60)


def route_uris(values: list[str]) -> list[str]:
    """The URIs of Route headers, in order; one header may hold several, comma-separated."""
    uris: list[str] = []
    for value in values:
        depth, start = 0, 0
        for index, char in enumerate(value + ","):
            if char == "<":
                depth += 1
            elif char == ">":
                depth -= 1
            elif char == "," and depth <= 0:
                entry = value[start:index].strip()
                start = index + 1
                if entry:
                    inside = re.search(r"<([^>]*)>", entry)
                    uris.append((inside.group(1) if inside else entry).strip())
    return uris


def uri_params(uri: str) -> dict[str, str]:
    """The URI parameters (names lower-cased); headers after '?' are left out."""
    params: dict[str, str] = {}
    for part in uri.split("?", 1)[0].split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip():
            params[name.strip().lower()] = value.strip()
    return params


def _media_outside(body: bytes, networks: list[Any]) -> str | None:
    for text in SdpFacts.parse(body.decode("utf-8", errors="replace")).addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return text
        if address.is_unspecified:
            continue  # 0.0.0.0: the old way to put a call on hold
        if not any(address in network for network in networks):
            return text
    return None


class DialogGuard(SecurityModule):
    name = "dialog_guard"
    Config = DialogGuardConfig
    response_setting = "response"

    def __init__(self, config: DialogGuardConfig) -> None:
        super().__init__(config)
        self.settings = config
        self.keys = load_key_ring(config)
        self.methods = frozenset(method.upper() for method in config.methods)
        self.media_networks = [ipaddress.ip_network(n) for n in config.media_networks]
        self.site: Site | None = None

    def bind(self, site: Site) -> None:
        self.site = site

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.method not in self.methods:
            return CONTINUE
        if not msg.in_dialog:
            if self.settings.records and msg.method in DIALOG_FORMING:
                # The caller's first in-dialog request must not go below its INVITE.
                self._cseq_problem(msg, state, CALLER, msg.from_tag)
            return CONTINUE
        uris = route_uris(msg.header_values("route"))
        if msg.method == "ACK" and (not uris or (msg.acks_failed_invite and not msg.body)):
            # The ACK of a failed INVITE is hop by hop: it carries the INVITE's
            # Route (the outbound proxy), not our Record-Route, and its
            # transaction absorbs it.  It never has a body: one that does is
            # not such an ACK, whatever transaction it names.
            return CONTINUE
        problem, role, dialog_tag = self.verify(msg, uris)
        if problem is None and self.settings.records and msg.method != "ACK":
            problem = self._cseq_problem(msg, state, role, dialog_tag)
        if problem is None:
            problem = self._media_problem(msg)
            if problem is not None:
                return Reject(problem, code=488)
            return CONTINUE
        return Reject(problem, code=403, droppable=True)

    def problem(self, msg: SipRequest, uris: list[str]) -> str | None:
        """Why the request's token does not let it in, or None when it does."""
        return self.verify(msg, uris)[0]

    def verify(self, msg: SipRequest, uris: list[str]) -> tuple[str | None, str, str]:
        """``(problem, role, dialog_tag)``: problem None when a token lets the request in.

        The topmost Route entry holds one token (sipshield's own routing
        record-routes each leg) or two, one per party (a proxy that
        record-routes once: the drop-in); one of them must verify.  ``role``
        and ``dialog_tag`` say which side of which dialog it verified for.
        """
        what = f"in-dialog {msg.method} from {msg.src_ip}:{msg.src_port}"
        params = uri_params(uris[0]) if uris else {}
        values = [params[name] for name in dialog_tokens.PARAMS if params.get(name)]
        if not values:
            return f"{what} carries no dialog token", "", ""
        outcomes = [self._token_problem(msg, params.get("ftag"), value, what) for value in values]
        return next((o for o in outcomes if o[0] is None), outcomes[0])

    def _token_problem(
        self, msg: SipRequest, ftag: str | None, value: str, what: str
    ) -> tuple[str | None, str, str]:
        token = dialog_tokens.decode(value)
        if token is None:
            return f"{what}: malformed dialog token", "", ""
        secret = self.keys.secret(token.key_id)
        if secret is None:
            return f"{what}: dialog token signed with unknown key {token.key_id!r}", "", ""
        # The dialog's From tag: rr's ftag when the proxy adds it (it must be
        # the request's From or To tag); otherwise the caller sends it as its
        # From tag and the callee as its To tag.
        if ftag is None:
            dialog_tag = msg.from_tag if token.role == CALLER else msg.to_tag
        elif ftag in (msg.from_tag, msg.to_tag):
            dialog_tag = ftag
        else:
            return f"{what}: dialog token belongs to another dialog (ftag)", "", ""
        if token.transport != msg.transport:
            problem = f"{what}: token binds {token.transport}, request came over {msg.transport}"
            return problem, "", ""
        for host in self._bound_hosts(msg, token.role):
            binding = Binding(
                msg.call_id, dialog_tag, token.role, token.transport, host, token.port
            )
            if dialog_tokens.token_matches(secret, token, binding):
                return self._port_problem(msg, token.port, what), token.role, dialog_tag
        return f"{what}: dialog token does not verify for this dialog and source", "", ""

    def _cseq_problem(
        self, msg: SipRequest, state: SharedState, role: str, dialog_tag: str
    ) -> str | None:
        """Record this side's CSeq in the dialog record; a lower one than before is a replay.

        An equal CSeq is a retransmission (or the ACK of an INVITE), which the
        transaction layer absorbs.
        """
        try:
            cseq = int((msg.header("cseq") or "").split()[0])
        except (ValueError, IndexError):
            return f"in-dialog {msg.method} from {msg.src_ip}:{msg.src_port}: no CSeq number"
        key = state.key("dlg", msg.call_id, dialog_tag)
        ttl = self.settings.record_ttl_s
        last = int(state.script(CSEQ_SCRIPT, [key], [role, cseq, ttl]))
        if last < 0:
            return None
        side = "caller" if role == CALLER else "callee"
        return (
            f"in-dialog {msg.method} from {msg.src_ip}:{msg.src_port}: CSeq {cseq} is below "
            f"the {side}'s {last} (a replay)"
        )

    def _bound_hosts(self, msg: SipRequest, role: str) -> list[str]:
        # A callee token binds the next hop the INVITE went to: for a trunk,
        # its target, while the trunk answers from any of its sources.
        hosts = [msg.src_ip]
        if role == CALLEE and self.site is not None:
            hosts += [trunk.host for trunk in self.site.trunks_of(msg.src_ip)]
        return hosts

    def _port_problem(self, msg: SipRequest, bound_port: int, what: str) -> str | None:
        if msg.transport != "udp" or msg.src_port == bound_port:
            return None
        if self.settings.nat_rebinding == "port":
            return None
        return f"{what}: port {msg.src_port} is not the bound {bound_port} (nat_rebinding: none)"

    def _media_problem(self, msg: SipRequest) -> str | None:
        if not self.media_networks or msg.method not in ("INVITE", "UPDATE"):
            return None
        if "sdp" not in (msg.header("content-type") or "").lower():
            return None
        outside = _media_outside(msg.body, self.media_networks)
        if outside is None:
            return None
        return f"in-dialog {msg.method} moves media to {outside}, outside media_networks"


def load_key_ring(config: DialogGuardConfig) -> KeyRing:
    """The key ring of ``config``; an unusable key file is a policy error (no start)."""

    try:
        return KeyRing(config.key_file, on_reload_error=log.error)
    except KeyFileError as exc:
        raise PolicyError(config.key_file, [f"dialog_guard.key_file: {exc}"]) from None


class DialogTokens:
    """Puts the token into the Record-Route of dialog-forming requests.

    Called where the dialog is record-routed: by the reference router
    (:mod:`sipshield.edge.edge_routing`) and by an operator's own routing through
    the drop-in's record-route hook.
    """

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    def record_route_params(
        self,
        msg: SipRequest,
        role: str,
        peer: tuple[str, int, str],
        param: str = dialog_tokens.PARAM,
    ) -> str:
        """The ``;shd=...`` Record-Route parameter binding ``peer`` (ip, port, transport)."""
        ip, port, transport = peer
        token = self.keys.sign(Binding(msg.call_id, msg.from_tag, role, transport, ip, port))
        return f";{param}={token}"

    def sign_leg(
        self, ksr: Any, msg: SipRequest, towards_outside: bool, param: str = dialog_tokens.PARAM
    ) -> None:
        """Add the token to this request's Record-Route (before or after record_route()).

        ``towards_outside`` False: the request came from outside, its source is
        bound.  True: it leaves towards outside, so call this once its
        destination is set (or in a branch route); the next hop is bound.
        ``param`` is :data:`~sipshield.sip.dialog_tokens.BRANCH_PARAM` for the
        second token of an entry that must bind both parties (drop-in).
        """
        if towards_outside:
            pv = ksr.pv
            transport = (read_pv(pv, "$nh(P)") or "udp").lower()
            host = (read_pv(pv, "$nh(d)") or "").strip("[]")
            port = int(read_pv(pv, "$nh(p)") or 0) or _DEFAULT_PORT.get(transport, 5060)
            param_text = self.record_route_params(msg, CALLEE, (host, port, transport), param)
        else:
            peer = (msg.src_ip, msg.src_port, msg.transport)
            param_text = self.record_route_params(msg, CALLER, peer, param)
        ksr.rr.add_rr_param(param_text)
