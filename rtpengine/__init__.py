"""Client for rtpengine's ng control protocol (bencode over UDP).

Protocol code (bencode, codec, commands, reply) does no I/O; only transport touches sockets.
"""

from .address import Address
from .bencode import BencodeError
from .client import RtpengineClient, SdpResult
from .codec import NgDict, NgValue, decode_reply, encode_request, make_cookie, match_reply
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
from .errors import NgBadReply, NgError, NgErrorReply, NgTimeout, NgUnavailable
from .reply import NgReply, holds_call, interpret_reply
from .transport import UdpTransport, rendezvous_order

__all__ = [
    "Address",
    "Answer",
    "BencodeError",
    "Delete",
    "ListCalls",
    "MediaOptions",
    "NgBadReply",
    "NgCommand",
    "NgDict",
    "NgError",
    "NgErrorReply",
    "NgReply",
    "NgTimeout",
    "NgUnavailable",
    "NgValue",
    "Offer",
    "Ping",
    "Query",
    "RtpengineClient",
    "SdpResult",
    "Statistics",
    "UdpTransport",
    "decode_reply",
    "encode_request",
    "holds_call",
    "interpret_reply",
    "make_cookie",
    "match_reply",
    "rendezvous_order",
]
