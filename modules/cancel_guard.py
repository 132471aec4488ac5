"""A CANCEL is relayed only when it comes from where its INVITE came from.

Kamailio's transaction layer (tm) already matches a CANCEL to its INVITE
transaction by the top Via's branch and sent-by (RFC 3261 section 9.2), but
both are written by the sender and seen by anyone on the path: a forged
CANCEL with a copied Via would stop a ringing call.  So, once tm has found
the INVITE (``t_check_trans``), the router compares the CANCEL's source with
the INVITE's (``$T_inv($si)``, ``$T_inv($sp)``, ``$T_inv($pr)``): another
address, port (unless ``nat_rebinding: port``) or transport gets 403, and the
callee never sees it.  A CANCEL that matches no INVITE gets 481.

The check needs the transaction, so it runs in the router, where the CANCEL is
handled (:mod:`sipshield.edge_routing`); this module gives it its place, its
mode and its settings in the policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from sipshield.ksr_message import read_pv
from sipshield.module import ModuleConfig, SecurityModule
from sipshield.verdict import CONTINUE, Outcome

if TYPE_CHECKING:
    from sipshield.message import SipRequest
    from sipshield.policy import Policy
    from sipshield.state import SharedState

Source = tuple[str, int, str]


class CancelGuardConfig(ModuleConfig):
    name: Literal["cancel_guard"] = "cancel_guard"
    # none: the CANCEL must come from the INVITE's address and port (UDP);
    # port: the same IP from another port is accepted.
    nat_rebinding: Literal["none", "port"] = "none"


class CancelGuard(SecurityModule):
    name = "cancel_guard"
    Config = CancelGuardConfig

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        # The comparison needs the INVITE transaction: see cancel_problem.
        return CONTINUE


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


def invite_source(ksr: Any) -> Source:
    """The source of the INVITE that the current CANCEL matched (after t_check_trans)."""
    pv = ksr.pv
    return (
        read_pv(pv, "$T_inv($si)") or "",
        int(pv.get("$T_inv($sp)") or 0),
        (read_pv(pv, "$T_inv($pr)") or "").lower(),
    )


def find_config(policy: Policy) -> CancelGuardConfig | None:
    """The policy's cancel_guard settings, or None when the module is absent or off."""
    for entry in policy.modules:
        if isinstance(entry, CancelGuardConfig) and entry.mode != "off":
            return entry
    return None
