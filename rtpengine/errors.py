"""Exceptions raised by the rtpengine ng client.

Everything derives from NgError so a caller (a Kamailio route) can catch one type and
fail the call cleanly, while tests and logs can still tell the causes apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from .address import Address, format_address


class NgError(Exception):
    """Base class of every error raised by sipshield.rtpengine."""


class NgTimeout(NgError):
    """No usable reply from any tried instance after all retransmissions."""

    def __init__(self, command: str, instances: Sequence[Address]) -> None:
        self.command = command
        self.instances = tuple(instances)
        tried = ", ".join(format_address(a) for a in self.instances) or "none"
        super().__init__(f"rtpengine {command!r}: no reply from {tried}")


class NgUnavailable(NgError):
    """Every configured instance is currently marked dead, so nothing was sent.

    Failing fast here keeps Kamailio workers from blocking on timeouts during an outage.
    """

    def __init__(self, command: str, instances: Sequence[Address]) -> None:
        self.command = command
        self.instances = tuple(instances)
        dead = ", ".join(format_address(a) for a in self.instances)
        super().__init__(f"rtpengine {command!r}: all instances marked dead ({dead})")


class NgErrorReply(NgError):
    """rtpengine answered, but with ``result`` other than ok/pong (usually ``error``)."""

    def __init__(self, command: str, reason: str, instance: Address, result: str = "error") -> None:
        self.command = command
        self.reason = reason
        self.instance = instance
        self.result = result
        super().__init__(
            f"rtpengine {format_address(instance)} refused {command!r}: {result}: {reason}"
        )


class NgBadReply(NgError):
    """A reply carrying our cookie could not be decoded or lacks what the protocol requires."""

    def __init__(self, detail: str, instance: Address | None = None) -> None:
        self.detail = detail
        self.instance = instance
        where = f" from {format_address(instance)}" if instance else ""
        super().__init__(f"malformed rtpengine reply{where}: {detail}")
