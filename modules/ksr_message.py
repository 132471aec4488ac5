"""The lazy :class:`~sipshield.message.SipRequest` view backed by Kamailio's KSR.

Each property asks Kamailio for one pseudo-variable the first time a module
reads it and caches the answer for the rest of the request, so the cost of a
request is only what the enabled modules actually look at.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any


def _str(value: Any) -> str:
    return "" if value is None else str(value)


class KsrMessage:
    """A request as Kamailio parsed it; ``ksr`` is the ``KSR`` module object."""

    def __init__(self, ksr: Any) -> None:
        self._pv = ksr.pv

    def _get(self, spec: str) -> str:
        return _str(self._pv.get(spec))

    @cached_property
    def method(self) -> str:
        return self._get("$rm")

    @cached_property
    def ruri(self) -> str:
        return self._get("$ru")

    @cached_property
    def src_ip(self) -> str:
        return self._get("$si")

    @cached_property
    def src_port(self) -> int:
        return int(self._pv.get("$sp") or 0)

    @cached_property
    def transport(self) -> str:
        return self._get("$pr").lower()

    @cached_property
    def call_id(self) -> str:
        return self._get("$ci")

    @cached_property
    def from_user(self) -> str:
        return self._get("$fU")

    @cached_property
    def from_tag(self) -> str:
        return self._get("$ft")

    @cached_property
    def to_user(self) -> str:
        return self._get("$tU")

    @cached_property
    def to_tag(self) -> str:
        return self._get("$tt")

    @cached_property
    def user_agent(self) -> str:
        return self._get("$ua")

    @cached_property
    def raw(self) -> bytes:
        # $mb is the message buffer as received, before any change by the config.
        return self._get("$mb").encode("utf-8", errors="surrogateescape")

    def header(self, name: str) -> str | None:
        value = self._pv.get(f"$hdr({name})")
        return None if value is None else str(value)

    def header_values(self, name: str) -> list[str]:
        count = int(self._pv.get(f"$hdrc({name})") or 0)
        values = (self._pv.get(f"$(hdr({name})[{index}])") for index in range(count))
        return [_str(value) for value in values]

    @property
    def in_dialog(self) -> bool:
        return bool(self.to_tag)
