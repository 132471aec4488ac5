"""Device control from outside: requests that make phones reboot, re-provision,
answer, hold or run a vendor action.

Many phones act on an out-of-dialog NOTIFY without authentication: ``Event:
check-sync`` (Polycom, Yealink, Cisco: reboot or fetch a new configuration,
``;reboot=true``), ``resync``, ``reboot``, ``talk`` and ``hold`` (remote
answer and hold, BroadSoft-style), ``ua-profile`` (RFC 6080: a provisioning
URL), vendor actions such as ``snom-action`` or ``aastra-xml``.  Whoever can
send one can reboot a whole site, or point its phones at their own
provisioning server.  Only the provisioning sources the policy names (and the
PBX, unless the policy says otherwise) may send them:

- an out-of-dialog NOTIFY whose Event package is a control event: 403;
- an out-of-dialog NOTIFY for any other package whose body carries a
  provisioning URL (http, https, ftp, tftp) or a ``message/external-body``
  part, except the packages that carry links as content: 403;
- a MESSAGE (or NOTIFY) whose body is a vendor control document (its XML root
  or its media type is on the ``control_documents`` list): 403.

In-dialog NOTIFYs belong to a subscription the phone made itself (and
dialog_guard checks who sends them).
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Outcome, Reject
from sipshield.sip.sdp_body import BodyProblem

if TYPE_CHECKING:
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

DEFAULT_CONTROL_EVENTS = (
    "check-sync", "resync", "reboot", "talk", "hold", "ua-profile",
    "service-control", "snom-action", "aastra-xml",
)  # fmt: skip
# Event packages whose bodies may carry links as content (a PIDF note, a
# voicemail summary): a URL there is not an order to fetch it.
DEFAULT_LINK_EVENTS = (
    "presence", "presence.winfo", "dialog", "message-summary", "refer",
    "conference", "reg", "as-feature-event",
)  # fmt: skip
# Vendor documents that make a phone act (XML roots, lower case) and media types.
DEFAULT_CONTROL_DOCUMENTS = (
    "snomipphone", "aastraipphoneexecute", "ciscoipphoneexecute", "yealinkipphoneexecute",
    "application/x-snom-action", "message/external-body",
)  # fmt: skip
_PROVISIONING_URL = re.compile(rb"\b(?:https?|ftps?|tftp)://", re.IGNORECASE)
_XML_ROOT = re.compile(rb"<\s*([A-Za-z_][\w.-]*)(?=[\s/>])")


class DeviceControlConfig(ModuleConfig):
    name: Literal["device_control"] = "device_control"
    # Who may send control requests (provisioning servers, device managers).
    provisioning_sources: list[str] = Field(default_factory=list)
    pbx_may_control: bool = True
    control_events: tuple[str, ...] = DEFAULT_CONTROL_EVENTS
    link_events: tuple[str, ...] = DEFAULT_LINK_EVENTS
    control_documents: tuple[str, ...] = DEFAULT_CONTROL_DOCUMENTS

    @field_validator("provisioning_sources")
    @classmethod
    def _networks(cls, sources: list[str]) -> list[str]:
        for source in sources:
            try:
                ipaddress.ip_network(source, strict=False)
            except ValueError:
                raise ValueError(f"not an address or network: {source!r}") from None
        return sources

    @field_validator("control_events", "link_events", "control_documents")
    @classmethod
    def _lower_case(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.strip().lower() for name in names)


class DeviceControl(SecurityModule):
    name = "device_control"
    Config = DeviceControlConfig

    def __init__(self, config: DeviceControlConfig) -> None:
        super().__init__(config)
        self.settings = config
        self.sources = [ipaddress.ip_network(s, strict=False) for s in config.provisioning_sources]
        self.documents = frozenset(config.control_documents)

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        method = msg.method
        if method not in ("NOTIFY", "MESSAGE") or self._may_control(msg):
            return CONTINUE
        if method == "NOTIFY" and not msg.in_dialog:
            event = (msg.header("event") or "").partition(";")[0].strip().lower()
            if event in self.settings.control_events:
                return self._refuse(msg, f"NOTIFY Event: {event}")
            if event not in self.settings.link_events and _PROVISIONING_URL.search(msg.body):
                return self._refuse(msg, f"NOTIFY Event: {event or '(none)'} with a URL")
        document = self._control_document(msg)
        if document is not None:
            return self._refuse(msg, f"{method} carrying {document}")
        return CONTINUE

    def _may_control(self, msg: SipRequest) -> bool:
        if msg.from_pbx:
            return self.settings.pbx_may_control
        try:
            source = ipaddress.ip_address(msg.src_ip)
        except ValueError:
            return False
        return any(source in network for network in self.sources)

    def _control_document(self, msg: SipRequest) -> str | None:
        parts = msg.body_parts
        if isinstance(parts, BodyProblem):
            return None
        for part in parts:
            if part.media_type in self.documents:
                return part.media_type
            if part.is_xml:
                root = _XML_ROOT.search(part.data)
                name = root.group(1).decode("ascii", "replace") if root else ""
                if name.rpartition(":")[2].lower() in self.documents:
                    return f"a vendor {name} document"
        return None

    def _refuse(self, msg: SipRequest, what: str) -> Reject:
        return Reject(
            f"device control from {msg.src_ip}, not a provisioning source: {what}", code=403
        )
