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

from sipshield.checks.content.event_header import event_packages
from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Outcome, Reject
from sipshield.sip.body_parts import opened
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
# Vendor documents that make a phone act: XML element names (a root anywhere in
# an XML part) and media types (those with a "/").
DEFAULT_CONTROL_DOCUMENTS = (
    "snomipphone", "aastraipphoneexecute", "ciscoipphoneexecute", "yealinkipphoneexecute",
    "application/x-snom-action", "message/external-body",
)  # fmt: skip
_PROVISIONING_URL = re.compile(rb"\b(?:https?|ftps?|tftp)://", re.IGNORECASE)
# XML character references ("h&#116;tp") spell a URL as much as its letters do.
_CHARACTER_REFERENCE = re.compile(rb"&#(x[0-9a-fA-F]{1,6}|[0-9]{1,7});")


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
        roots = [re.escape(d.encode()) for d in config.control_documents if "/" not in d]
        self._control_element = re.compile(
            rb"<\s*(?:[\w.-]+:)?(" + b"|".join(roots or [b"(?!)"]) + rb")(?=[\s/>])", re.IGNORECASE
        )

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        method = msg.method
        if method not in ("NOTIFY", "MESSAGE") or self._may_control(msg):
            return CONTINUE
        if method == "NOTIFY" and not msg.in_dialog:
            # Every Event header, and every value of each: a phone may act on any.
            events = event_packages(msg) or [""]
            control = next((e for e in events if e in self.settings.control_events), None)
            if control is not None:
                return self._refuse(msg, f"NOTIFY Event: {control}")
            linkless = [e for e in events if e not in self.settings.link_events]
            if linkless and _PROVISIONING_URL.search(_unescaped(msg.body)):
                return self._refuse(msg, f"NOTIFY Event: {linkless[0] or '(none)'} with a URL")
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
        for part in opened(parts):
            if part.media_type in self.documents:
                return part.media_type
            # Anywhere in the part, with or without a namespace prefix: a
            # comment or a processing instruction before it must not hide it.
            element = self._control_element.search(part.decoded) if part.is_xml else None
            if element is not None:
                return f"a vendor {element.group(1).decode('ascii', 'replace')} document"
        return None

    def _refuse(self, msg: SipRequest, what: str) -> Reject:
        return Reject(
            f"device control from {msg.src_ip}, not a provisioning source: {what}", code=403
        )


def _unescaped(data: bytes) -> bytes:
    def character(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        number = int(code[1:], 16) if code[:1] in (b"x", b"X") else int(code)
        return chr(number).encode("utf-8", "replace") if number < 0x110000 else b"?"

    return _CHARACTER_REFERENCE.sub(character, data)
