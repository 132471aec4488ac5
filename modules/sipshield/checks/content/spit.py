"""SPIT and IM floods: one sender messaging many people, the same text sent to
many people, strangers writing to many users, and sheer MESSAGE rate.

Counted per fixed window (aligned on the wall clock, so every node counts the
same window) in Redis, so the limits hold for the whole cluster: one Lua
script (one round trip, atomic) per text MESSAGE from outside.  The script
spans the sender's, the recipient's and the text's keys, so it needs one Redis
(or Sentinel), not a Redis Cluster.  Typing notifications and delivery reports (is-composing, IMDN)
are not counted: a lively chat sends many of them.

- ``max_messages``: text MESSAGEs per sender (distinct Call-IDs, so that a
  retransmission or the retry after a digest challenge is one message);
- ``max_recipients``: distinct recipients per sender;
- ``max_recipients_per_body``: distinct recipients of one text, whoever sends it
  (spam campaigns rotate senders, not texts);
- ``max_first_contacts``: distinct recipients per sender who never wrote to
  that sender within ``contact_memory_s`` (a stranger working through a
  directory; replies in a conversation are never first contacts).

The sender is the From URI (user@host); the recipient the To URI.  Over a
limit: 403, and the event names the limit.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Outcome, Reject
from sipshield.sip.body_parts import readable_texts
from sipshield.sip.message import uri_of
from sipshield.sip.sdp_body import BodyProblem, media_type

if TYPE_CHECKING:
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

# One round trip, atomic: KEYS messages, recipients, one text's recipients,
# first contacts (sets per window), "the recipient wrote to the sender",
# "the sender wrote to the recipient"; ARGV Call-ID, recipient, window TTL,
# contact memory.  Returns the four counts (first contacts 0 when known).
COUNT_SCRIPT = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
local firsts = 0
if redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('SADD', KEYS[4], ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[3])
  firsts = redis.call('SCARD', KEYS[4])
end
redis.call('SET', KEYS[6], 1, 'EX', ARGV[4])
return {redis.call('SCARD', KEYS[1]), redis.call('SCARD', KEYS[2]),
        redis.call('SCARD', KEYS[3]), firsts}
"""
NOT_COUNTED = frozenset({"application/im-iscomposing+xml", "message/imdn+xml"})


class SpitConfig(ModuleConfig):
    name: Literal["spit"] = "spit"
    window_s: int = Field(default=60, ge=1, le=3600)
    max_messages: int = Field(default=30, ge=1)
    max_recipients: int = Field(default=10, ge=1)
    max_recipients_per_body: int = Field(default=10, ge=1)
    max_first_contacts: int = Field(default=5, ge=1)
    contact_memory_s: int = Field(default=30 * 86400, ge=60)


class Spit(SecurityModule):
    name = "spit"
    Config = SpitConfig

    def __init__(self, config: SpitConfig, clock: Callable[[], float] = time.time) -> None:
        super().__init__(config)
        self.settings = config
        self._clock = clock

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.method != "MESSAGE" or msg.in_dialog or msg.from_pbx or not msg.body:
            return CONTINUE
        if media_type(msg.header("content-type") or "text/plain") in NOT_COUNTED:
            return CONTINUE
        limits = self.settings
        sender = _address(msg.header("from") or "")
        recipient = _address(msg.header("to") or "")
        window = int(self._clock() // limits.window_s)

        def key(*parts: str | int) -> str:
            return state.key("spit", *parts, window)

        keys = [
            key("n", sender),
            key("to", sender),
            key("body", _fingerprint(msg)),
            key("new", sender),
            state.key("spit", "knows", recipient, sender),
            state.key("spit", "knows", sender, recipient),
        ]
        args = [msg.call_id, recipient, limits.window_s * 2, limits.contact_memory_s]
        sent, distinct, body_reach, firsts = state.script(COUNT_SCRIPT, keys, args)
        per = f"in {limits.window_s}s"
        if sent > limits.max_messages:
            return self._refuse(sender, f"{sent} MESSAGEs {per} (max_messages)")
        if distinct > limits.max_recipients:
            return self._refuse(sender, f"{distinct} recipients {per} (max_recipients)")
        if body_reach > limits.max_recipients_per_body:
            return self._refuse(
                sender,
                f"one text sent to {body_reach} recipients {per} (max_recipients_per_body)",
            )
        if firsts > limits.max_first_contacts:
            return self._refuse(
                sender, f"first contact with {firsts} users {per} (max_first_contacts)"
            )
        return CONTINUE

    def _refuse(self, sender: str, what: str) -> Reject:
        return Reject(f"messaging abuse by {sender}: {what}", code=403)


def _address(name_addr: str) -> str:
    """user@host of a From/To value, without scheme or parameters."""
    uri = uri_of(name_addr).split(";", 1)[0]
    return uri.partition(":")[2].lower()


def _fingerprint(msg: SipRequest) -> str:
    """The text people read (white space and case folded), else the body."""
    parts = msg.body_parts
    texts = [] if isinstance(parts, BodyProblem) else readable_texts(parts, single_body=True)
    data = " ".join(" ".join(t.text.split()) for t in texts).lower().encode() or msg.body
    return hashlib.blake2b(data, digest_size=12).hexdigest()
