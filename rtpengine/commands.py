"""Typed ng commands, so call sites never assemble raw ng dicts with hand-typed keys.

Each command knows its ng dict (``to_ng``), the Call-ID used to pick an instance
(``call_id``; None for commands about an instance rather than a call), and whether it is
about a call the instance must already have (``existing_call``: those follow the call to
the instance that has it, see ``UdpTransport.exchange``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, TypeAlias

from .bencode import Encodable

TransportProtocol = Literal[
    "RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF"
]
IceMode = Literal["remove", "force", "default", "force-relay", "optional"]
DtlsMode = Literal["off", "passive", "active"]


@dataclass(frozen=True, slots=True)
class MediaOptions:
    """Options shared by offer and answer; unset fields are omitted so rtpengine's own
    defaults (or its configuration) apply."""

    flags: tuple[str, ...] = ()  # e.g. "trust-address", "symmetric", "strict-source"
    replace: tuple[str, ...] = ()  # e.g. "origin", "session-connection"
    transport_protocol: TransportProtocol | None = None
    ice: IceMode | None = None
    sdes: tuple[str, ...] = ()  # e.g. "off", "no-NULL_HMAC_SHA1_32", "only-AES_CM_128_HMAC_SHA1_80"
    # DTLS towards the party the SDP goes to; DTLS-reverse towards the one it came from.
    dtls: DtlsMode | None = None
    dtls_reverse: DtlsMode | None = None
    direction: tuple[str, str] | None = None  # logical interface names, in -> out
    media_address: str | None = None
    record_call: bool | None = None
    codec_strip: tuple[str, ...] = ()  # codec names removed from the SDP rtpengine sends on

    def to_ng(self) -> dict[str, Encodable]:
        ng: dict[str, Encodable] = {}
        if self.flags:
            ng["flags"] = list(self.flags)
        if self.replace:
            ng["replace"] = list(self.replace)
        if self.transport_protocol is not None:
            ng["transport-protocol"] = self.transport_protocol
        if self.ice is not None:
            ng["ICE"] = self.ice
        if self.sdes:
            ng["SDES"] = list(self.sdes)
        if self.dtls is not None:
            ng["DTLS"] = self.dtls
        if self.dtls_reverse is not None:
            ng["DTLS-reverse"] = self.dtls_reverse
        if self.direction is not None:
            ng["direction"] = list(self.direction)
        if self.media_address is not None:
            ng["media-address"] = self.media_address
        if self.record_call is not None:
            ng["record call"] = "yes" if self.record_call else "no"
        if self.codec_strip:
            ng["codec"] = {"strip": list(self.codec_strip)}
        return ng


@dataclass(frozen=True, slots=True)
class Ping:
    name: ClassVar[str] = "ping"
    call_id: ClassVar[None] = None
    existing_call: ClassVar[bool] = False

    def to_ng(self) -> dict[str, Encodable]:
        return {"command": self.name}


@dataclass(frozen=True, slots=True)
class Offer:
    name: ClassVar[str] = "offer"
    existing_call: ClassVar[bool] = False
    sdp: str
    call_id: str
    from_tag: str
    options: MediaOptions = field(default_factory=MediaOptions)
    # The request's top Via branch: with a forking proxy upstream, offers with the
    # same tags reach several callees, and each branch then gets its own media.
    via_branch: str | None = None

    def to_ng(self) -> dict[str, Encodable]:
        return _with_branch(
            {
                **self.options.to_ng(),
                "command": self.name,
                "sdp": self.sdp,
                "call-id": self.call_id,
                "from-tag": self.from_tag,
            },
            self.via_branch,
        )


@dataclass(frozen=True, slots=True)
class Answer:
    name: ClassVar[str] = "answer"
    existing_call: ClassVar[bool] = True
    sdp: str
    call_id: str
    from_tag: str
    to_tag: str
    options: MediaOptions = field(default_factory=MediaOptions)
    via_branch: str | None = None  # the offer's branch, which this answers

    def to_ng(self) -> dict[str, Encodable]:
        return _with_branch(
            {
                **self.options.to_ng(),
                "command": self.name,
                "sdp": self.sdp,
                "call-id": self.call_id,
                "from-tag": self.from_tag,
                "to-tag": self.to_tag,
            },
            self.via_branch,
        )


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete a call, or only one branch of it when tags or a via-branch are given.

    rtpengine deletes the whole call when its last branch goes.
    """

    name: ClassVar[str] = "delete"
    existing_call: ClassVar[bool] = True
    call_id: str
    from_tag: str | None = None
    to_tag: str | None = None
    # Seconds rtpengine keeps the deleted call; None: its configured delay.  0 frees
    # the ports at once, so a new offer with the same Call-ID (an INVITE retried after
    # a 407) starts a fresh call instead of reviving the doomed one.
    delete_delay: int | None = None
    via_branch: str | None = None

    def to_ng(self) -> dict[str, Encodable]:
        ng = _with_tags({"command": self.name, "call-id": self.call_id}, self.from_tag, self.to_tag)
        if self.delete_delay is not None:
            ng["delete-delay"] = self.delete_delay
        return _with_branch(ng, self.via_branch)


@dataclass(frozen=True, slots=True)
class Query:
    name: ClassVar[str] = "query"
    existing_call: ClassVar[bool] = True
    call_id: str
    from_tag: str | None = None

    def to_ng(self) -> dict[str, Encodable]:
        return _with_tags({"command": self.name, "call-id": self.call_id}, self.from_tag, None)


@dataclass(frozen=True, slots=True)
class ListCalls:
    name: ClassVar[str] = "list"
    call_id: ClassVar[None] = None
    existing_call: ClassVar[bool] = False
    limit: int | None = None  # None: rtpengine applies its own default limit

    def to_ng(self) -> dict[str, Encodable]:
        ng: dict[str, Encodable] = {"command": self.name}
        if self.limit is not None:
            ng["limit"] = self.limit
        return ng


@dataclass(frozen=True, slots=True)
class Statistics:
    name: ClassVar[str] = "statistics"
    call_id: ClassVar[None] = None
    existing_call: ClassVar[bool] = False

    def to_ng(self) -> dict[str, Encodable]:
        return {"command": self.name}


NgCommand: TypeAlias = Ping | Offer | Answer | Delete | Query | ListCalls | Statistics


def _with_tags(
    ng: dict[str, Encodable], from_tag: str | None, to_tag: str | None
) -> dict[str, Encodable]:
    if from_tag is not None:
        ng["from-tag"] = from_tag
    if to_tag is not None:
        ng["to-tag"] = to_tag
    return ng


def _with_branch(ng: dict[str, Encodable], via_branch: str | None) -> dict[str, Encodable]:
    if via_branch:
        ng["via-branch"] = via_branch
    return ng
