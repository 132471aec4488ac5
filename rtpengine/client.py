"""RtpengineClient: typed ng commands over the UDP transport."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from .address import Address
from .codec import NgDict, encode_request, make_cookie
from .commands import (
    Answer,
    Delete,
    ListCalls,
    MediaOptions,
    NgCommand,
    Offer,
    Ping,
    Query,
    Statistics,
)
from .errors import NgBadReply, NgError, NgTimeout
from .reply import NgReply, holds_call, interpret_reply
from .transport import ExchangeObserver, UdpTransport


@dataclass(frozen=True, slots=True)
class SdpResult:
    """Result of offer/answer: the SDP to forward, and the full reply (warning included)."""

    sdp: str
    reply: NgReply


class RtpengineClient:
    """Blocking ng client. Create it in Kamailio's child_init: nothing is opened before the
    first request, and each worker process needs its own sockets."""

    def __init__(
        self,
        instances: Sequence[Address],
        *,
        timeout: float = 1.0,
        retries: int = 2,
        dead_retry_interval: float = 30.0,
        observer: ExchangeObserver | None = None,
    ) -> None:
        self.transport = UdpTransport(
            instances,
            timeout=timeout,
            retries=retries,
            dead_retry_interval=dead_retry_interval,
            observer=observer,
        )

    def ping(self, instance: Address | None = None) -> NgReply:
        """Ping ``instance``, or the first live one; raises NgError unless it answers pong."""
        reply = self.request(Ping(), instance)
        if reply.result != "pong":
            raise NgBadReply(f"ping answered {reply.result!r}, not 'pong'", reply.instance)
        return reply

    def offer(
        self,
        sdp: str,
        call_id: str,
        from_tag: str,
        options: MediaOptions | None = None,
        via_branch: str | None = None,
        existing: bool = False,
    ) -> SdpResult:
        """``existing``: a re-offer in a dialog, which goes to the instance that has the call.

        An offer creates a call wherever it lands, so a re-offer sent to an instance that
        lost the call (it died and came back, while its partner restored the call from
        Redis) would split the call in two.  With several instances live, a query first
        finds the one that has it: one round trip more per re-INVITE or UPDATE with SDP.
        When none has it, the offer anchors the call afresh, like an initial one.
        """
        offer = Offer(sdp, call_id, from_tag, options or MediaOptions(), via_branch)
        reply = None
        holder = self._holder(call_id) if existing else None
        if holder is not None:
            with contextlib.suppress(NgTimeout):  # it died since the query: anchor afresh
                reply = self.request(offer, holder)
        if reply is None:
            reply = self.request(offer)
        return SdpResult(reply.get_str("sdp"), reply)

    def _holder(self, call_id: str) -> Address | None:
        """The live instance that has the call, when there is a choice to make."""
        if len(self.transport.candidates(call_id)) < 2:
            return None
        try:
            return self.query(call_id).instance
        except NgError:
            return None

    def answer(
        self,
        sdp: str,
        call_id: str,
        from_tag: str,
        to_tag: str,
        options: MediaOptions | None = None,
        via_branch: str | None = None,
    ) -> SdpResult:
        answer = Answer(sdp, call_id, from_tag, to_tag, options or MediaOptions(), via_branch)
        reply = self.request(answer)
        return SdpResult(reply.get_str("sdp"), reply)

    def delete(
        self,
        call_id: str,
        from_tag: str | None = None,
        to_tag: str | None = None,
        delete_delay: int | None = None,
        via_branch: str | None = None,
    ) -> NgReply:
        """Delete a call (or one branch of it). rtpengine answers an unknown call with
        ok plus a warning."""
        return self.request(Delete(call_id, from_tag, to_tag, delete_delay, via_branch))

    def query(self, call_id: str, from_tag: str | None = None) -> NgReply:
        """Return rtpengine's call state (tags, streams, counters) in ``reply.data``."""
        return self.request(Query(call_id, from_tag))

    def list_calls(self, limit: int | None = None, instance: Address | None = None) -> list[str]:
        """Call-IDs known to one instance (the first live one unless ``instance`` is given)."""
        reply = self.request(ListCalls(limit), instance)
        calls = reply.data.get("calls")
        if not isinstance(calls, list) or not all(isinstance(c, str) for c in calls):
            raise NgBadReply("'list' reply has no list of Call-IDs", reply.instance)
        return [c for c in calls if isinstance(c, str)]

    def statistics(self, instance: Address | None = None) -> NgDict:
        reply = self.request(Statistics(), instance)
        stats = reply.data.get("statistics")
        if not isinstance(stats, dict):
            raise NgBadReply("'statistics' reply has no statistics dict", reply.instance)
        return stats

    def request(self, command: NgCommand, instance: Address | None = None) -> NgReply:
        """Send any typed command; the escape hatch the helpers above are built on.

        Commands about an existing call (answer, delete, query) go on to the next live
        instance when one answers that it does not have the call.
        """
        cookie = make_cookie()
        datagram = encode_request(cookie, command.to_ng())
        holds = holds_call if command.existing_call else None
        address, data = self.transport.exchange(
            command.name, cookie, datagram, command.call_id, instance, holds
        )
        return interpret_reply(command.name, data, address)

    def close(self) -> None:
        self.transport.close()
