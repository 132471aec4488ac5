"""A CANCEL is relayed only when it comes from where its INVITE came from.

Kamailio's transaction layer (tm) already matches a CANCEL to its INVITE
transaction by the top Via's branch and sent-by (RFC 3261 section 9.2), but
both are written by the sender and seen by anyone on the path: a forged
CANCEL with a copied Via would stop a ringing call.  So, once tm has found
the INVITE, the relay phase compares the CANCEL's source with the INVITE's
(``$T_inv($si)``, ``$T_inv($sp)``, ``$T_inv($pr)``, read by the router into
:attr:`sipshield.core.hop.Hop.invite_source`): another address, port (unless
``nat_rebinding: port``) or transport gets 403, and the callee never sees
it.  A CANCEL that matches no INVITE gets 481.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from sipshield.core.hop import Source
from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Outcome, Reject

if TYPE_CHECKING:
    from sipshield.core.hop import Hop
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest


class CancelGuardConfig(ModuleConfig):
    name: Literal["cancel_guard"] = "cancel_guard"
    # none: the CANCEL must come from the INVITE's address and port (UDP);
    # port: the same IP from another port is accepted.
    nat_rebinding: Literal["none", "port"] = "none"


class CancelGuard(SecurityModule):
    name = "cancel_guard"
    Config = CancelGuardConfig
    checks_relay = True

    def __init__(self, config: CancelGuardConfig) -> None:
        super().__init__(config)
        self.settings = config

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        # The comparison needs the INVITE transaction: the relay phase has it.
        return CONTINUE

    def check_relay(self, msg: SipRequest, hop: Hop, state: SharedState) -> Outcome:
        if msg.method != "CANCEL":
            return CONTINUE
        if hop.invite_source is None:
            return Reject("CANCEL matches no INVITE transaction", code=481)
        cancel = (msg.src_ip, msg.src_port, msg.transport)
        problem = cancel_problem(self.settings, cancel, hop.invite_source)
        return CONTINUE if problem is None else Reject(problem, code=403)


def cancel_problem(config: CancelGuardConfig, cancel: Source, invite: Source) -> str | None:
    """Why a CANCEL from ``cancel`` may not cancel an INVITE from ``invite``; None if it may."""
    (ip, port, transport), (invite_ip, invite_port, invite_transport) = cancel, invite
    where = f"CANCEL from {ip}:{port}/{transport}"
    invited = f"its INVITE came from {invite_ip}:{invite_port}/{invite_transport}"
    if ip != invite_ip or transport != invite_transport:
        return f"{where}, but {invited}"
    if port != invite_port and transport == "udp" and config.nat_rebinding != "port":
        return f"{where}, but {invited} (nat_rebinding: none)"
    return None
