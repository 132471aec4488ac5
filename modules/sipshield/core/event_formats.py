"""What a security event looks like to a SIEM: its severity, syslog fields and body.

One severity table serves every format, so a SIEM sees the same severity
whichever it reads: the syslog PRI, ``log.syslog.severity`` and
``event.severity`` of the Elastic Common Schema (ECS) document and the
ArcSight Common Event Format (CEF) severity all come from :func:`severity`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from sipshield import __version__
from sipshield.core.syslog import FACILITIES, SyslogSettings, field_text, frame

if TYPE_CHECKING:
    from sipshield.core.events import Event

ECS_VERSION = "8.11.0"


class Severity(NamedTuple):
    code: int  # RFC 5424: 0 emergency ... 7 debug
    name: str
    cef: int  # CEF: 0 (lowest) ... 10, in the same order


WARNING = Severity(4, "warning", 7)
NOTICE = Severity(5, "notice", 5)
INFO = Severity(6, "informational", 3)
ERROR = Severity(3, "error", 8)

# By action: a ban is the strongest answer to an attack; a refusal or a
# silent drop stops one request; a module that failed is sipshield's own
# error; anything else (an alert, a rewrite, media passed through) informs.
SEVERITY_BY_ACTION = {
    "ban": WARNING,
    "reject": NOTICE,
    "drop": NOTICE,
    "error": ERROR,
}
# What stopped a request, for ECS's event.type.
DENYING = frozenset(("ban", "reject", "drop"))


def severity(action: str) -> Severity:
    return SEVERITY_BY_ACTION.get(action, INFO)


def split_source(src: str) -> tuple[str, int | None]:
    """``ip:port`` (IPv6 without brackets too) -> (ip, port)."""
    host, colon, port = src.rpartition(":")
    if colon and port.isdigit():
        return host.strip("[]"), int(port)
    return src, None


def _json(document: object) -> str:
    # ASCII only: every control character, line separator and non-ASCII
    # character becomes a \\u escape, so nothing in it ends a line or a frame.
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=True)


def ecs_document(event: Event, settings: SyslogSettings) -> dict[str, object]:
    """The event in Elastic Common Schema fields."""
    level = severity(event.action)
    ip, port = split_source(event.src)
    source: dict[str, object] = {"address": event.src, "ip": ip}
    if port is not None:
        source["port"] = port
    document: dict[str, object] = {
        "@timestamp": datetime.fromtimestamp(event.ts, UTC).isoformat(timespec="milliseconds"),
        "ecs": {"version": ECS_VERSION},
        "message": f"{event.module} {event.action}: {event.reason}",
        "event": {
            "kind": "alert" if event.action in DENYING else "event",
            "category": ["network", "intrusion_detection"],
            "type": ["denied"] if event.action in DENYING else ["info"],
            "action": event.action,
            "reason": event.reason,
            "severity": level.code,
            "module": "sipshield",
            "dataset": "sipshield.security",
        },
        "rule": {"name": event.module},
        "source": source,
        "observer": {"hostname": event.node, "product": "sipshield", "type": "sbc"},
        "log": {
            "level": level.name,
            "syslog": {
                "severity": {"code": level.code, "name": level.name},
                "facility": {"code": FACILITIES[settings.facility], "name": settings.facility},
            },
        },
        # ECS has no SIP fields: the SIP identifiers are labels.
        "labels": {
            name: value
            for name, value in (
                ("mode", event.mode),
                ("sip_method", event.method),
                ("sip_call_id", event.call_id),
            )
            if value
        },
    }
    if event.user:
        document["user"] = {"name": event.user}
    return document


# CEF escapes: "\" and "|" in the header, "\" and "=" in extension values.
_CEF_HEADER_SPECIAL = re.compile(r"([\\|])")
_CEF_VALUE_SPECIAL = re.compile(r"([\\=])")


def _cef_header(value: str) -> str:
    return _CEF_HEADER_SPECIAL.sub(r"\\\1", field_text(value))


def _cef_value(value: str) -> str:
    return _CEF_VALUE_SPECIAL.sub(r"\\\1", field_text(value))


def cef_line(event: Event) -> str:
    """The event as one ArcSight Common Event Format record (CEF:0)."""
    ip, port = split_source(event.src)
    header = "|".join(
        _cef_header(field)
        for field in (
            "sipshield",
            "sipshield",
            __version__,
            f"{event.module}:{event.action}",
            f"{event.module} {event.action}",
        )
    )
    extension = {
        "rt": str(int(event.ts * 1000)),
        "dvchost": event.node,
        "src": ip,
        "spt": "" if port is None else str(port),
        "act": event.action,
        "cat": event.module,
        "reason": event.reason,
        "suser": event.user,
        "cs1Label": "sipMethod",
        "cs1": event.method,
        "cs2Label": "sipCallId",
        "cs2": event.call_id,
        "cs3Label": "mode",
        "cs3": event.mode,
    }
    fields = " ".join(f"{key}={_cef_value(value)}" for key, value in extension.items() if value)
    return f"CEF:0|{header}|{severity(event.action).cef}|{fields}"


def syslog_message(event: Event, settings: SyslogSettings, procid: int) -> bytes:
    """The event as one RFC 5424 message, its body in the format the policy chose."""
    if settings.format == "ecs":
        body = _json(ecs_document(event, settings))
    elif settings.format == "cef":
        body = cef_line(event)
    else:
        body = _json(asdict(event))
    return frame(
        facility=settings.facility,
        severity=severity(event.action).code,
        timestamp=event.ts,
        hostname=event.node,
        app_name=settings.app_name,
        procid=procid,
        msgid=event.action,
        params={
            "module": event.module,
            "action": event.action,
            "mode": event.mode,
            "src": event.src,
            "user": event.user,
            "method": event.method,
            "call_id": event.call_id,
            "reason": event.reason,
        },
        body=body,
    )
