"""Turning a decoded ng reply into a result, an exception, or a logged warning."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .address import Address, format_address
from .codec import NgDict
from .errors import NgBadReply, NgErrorReply

logger = logging.getLogger(__name__)

_SUCCESS = frozenset({"ok", "pong"})
# What rtpengine 10.5 says about a Call-ID it does not have: an error for answer and
# query, a warning on an "ok" for delete (unless the "fatal" flag is given).
_UNKNOWN_CALL = "Unknown call-id"
_DELETE_NOT_FOUND = "Call-ID not found"


@dataclass(frozen=True, slots=True)
class NgReply:
    """A successful reply. ``warning`` is set when rtpengine did the work but complained."""

    command: str
    instance: Address
    result: str
    warning: str | None
    data: NgDict

    def get_str(self, key: str) -> str:
        """Return a required string field, or raise NgBadReply naming what is missing."""
        value = self.data.get(key)
        if not isinstance(value, str):
            raise NgBadReply(f"{self.command!r} reply has no string {key!r}", self.instance)
        return value


def interpret_reply(command: str, data: NgDict, instance: Address) -> NgReply:
    """Raise for error results; log and keep warnings, since they often precede failures
    (e.g. a delete for a call rtpengine no longer knows)."""
    result = data.get("result")
    if not isinstance(result, str):
        raise NgBadReply(f"{command!r} reply has no 'result'", instance)
    if result not in _SUCCESS:
        reason = data.get("error-reason")
        # Results other than "error" (e.g. "load limit") have no reason; report the result.
        raise NgErrorReply(command, reason if isinstance(reason, str) else result, instance, result)
    warning = data.get("warning")
    if warning is not None and not isinstance(warning, str):
        raise NgBadReply(f"{command!r} reply has a non-string 'warning'", instance)
    if warning:
        logger.warning("rtpengine %s warned on %r: %s", format_address(instance), command, warning)
    return NgReply(command, instance, result, warning or None, data)


def holds_call(data: NgDict) -> bool:
    """False when a reply says the answering instance does not have the call."""
    if data.get("result") == "error" and data.get("error-reason") == _UNKNOWN_CALL:
        return False
    warning = data.get("warning")
    return not (isinstance(warning, str) and warning.startswith(_DELETE_NOT_FOUND))
