"""What the dialog module tells about a call the SBC tracks: answered, or over.

Kamailio's dialog module follows the calls the router hands it (those that
leave through a trunk) and raises an event when one is answered, ends (a
BYE, or its timeout) or fails (a final reply of 300 or more: busy, cancelled,
timed out).  Modules that count calls until they end take these
(:meth:`sipshield.core.module.SecurityModule.on_call`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CallEventKind = Literal["answered", "ended", "failed"]
# The dialog module's event names (its event_callback's argument).
DIALOG_EVENTS: dict[str, CallEventKind] = {
    "dialog:start": "answered",
    "dialog:end": "ended",
    "dialog:failed": "failed",
}


@dataclass(frozen=True)
class CallEvent:
    kind: CallEventKind
    call_id: str
    # Where the message that caused it came from ("" for a timeout), for events.
    src_ip: str = ""
    src_port: int = 0
    # The method of the message that caused it ("BYE"; a reply's CSeq method).
    method: str = ""
    # The dialog's tags (with the Call-ID, what finds it again to end it).
    from_tag: str = ""
    to_tag: str = ""
