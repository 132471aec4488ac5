"""SPIT and IM floods: one sender messaging many people, the same text sent to
many people, strangers writing to many users, and sheer MESSAGE rate.

Counted per fixed window (aligned on the wall clock, so every node counts the
same window) in Redis, so the limits hold for the whole cluster: one Lua
script (one round trip, atomic) per text MESSAGE from outside.  The script
spans the sender's, the recipient's and the text's keys, so it needs one Redis
(or Sentinel), not a Redis Cluster.  Typing notifications and delivery
reports (is-composing, IMDN, CPIM-wrapped or not) are not counted: a lively
chat sends many of them.

- ``max_messages``: text MESSAGEs per sender (a retransmission, or the retry
  after a digest challenge, is one message: same Call-ID, same body);
- ``max_recipients``: distinct recipients per sender;
- ``max_recipients_per_body``: distinct recipients of one text of at least
  20 characters, whoever sends it (spam campaigns rotate senders, not texts;
  "ok" is everybody's);
- ``max_first_contacts``: distinct recipients per sender who never wrote to
  that sender within ``contact_memory_s`` (a stranger working through a
  directory; replies in a conversation are never first contacts).  Having
  written means a MESSAGE the registrar authenticated and answered 2xx.

The sender is the From URI as claimed, from its source address (a spoofed
From elsewhere does not use up the real user's allowance); the recipient is
the Request-URI, where the PBX delivers.  Over a limit: 403, and the event
names the limit.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Outcome, Reject
from sipshield.sip.body_parts import ContentPart, opened, readable_texts
from sipshield.sip.message import uri_of
from sipshield.sip.sdp_body import BodyProblem

if TYPE_CHECKING:
    from sipshield.core.state import SharedState
    from sipshield.core.verdict import Ban
    from sipshield.sip.message import SipRequest
    from sipshield.sip.reply import ReplyFacts

# One round trip, atomic.  KEYS: messages, recipients, one text's recipients,
# first contacts (sets per window), "the recipient wrote to the sender".  ARGV:
# the message (Call-ID and text), the recipient, the window TTL, whether the
# text is counted.  Returns the four counts (first contacts 0 when known).
COUNT_SCRIPT = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local reach = 0
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[3], ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  reach = redis.call('SCARD', KEYS[3])
end
local firsts = 0
if redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('SADD', KEYS[4], ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[3])
  firsts = redis.call('SCARD', KEYS[4])
end
return {redis.call('SCARD', KEYS[1]), redis.call('SCARD', KEYS[2]), reach, firsts}
"""
# Shorter texts ("ok", "thanks") are sent by everybody to everybody: only a
# longer text repeated to many people is a campaign.
MIN_COUNTED_TEXT = 20
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
    observes_replies = True

    def __init__(self, config: SpitConfig, clock: Callable[[], float] = time.time) -> None:
        super().__init__(config)
        self.settings = config
        self._clock = clock

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.method != "MESSAGE" or msg.in_dialog or msg.from_pbx or not msg.body:
            return CONTINUE
        parts = msg.body_parts
        if isinstance(parts, BodyProblem):
            return CONTINUE
        if all(part.media_type in NOT_COUNTED for part in opened(parts)):
            return CONTINUE
        limits = self.settings
        # The sender as claimed, from where it sends: a spoofed From elsewhere
        # cannot use up the real user's allowance.  The recipient is the one
        # the PBX delivers to: the Request-URI, whatever To says.
        claimed = _address(msg.header("from") or "")
        sender = f"{claimed}|{msg.src_ip}"
        recipient = msg.ruri.split(";", 1)[0].partition(":")[2].lower()
        window = int(self._clock() // limits.window_s)
        text = _readable(parts)

        def key(*parts: str | int) -> str:
            return state.key("spit", *parts, window)

        keys = [
            key("n", sender),
            key("to", sender),
            key("body", hashlib.blake2b(text.encode(), digest_size=12).hexdigest()),
            key("new", sender),
            state.key("spit", "knows", user_of_address(recipient), user_of_address(claimed)),
        ]
        # A retransmission, or the retry after a digest challenge, is the same message.
        message = f"{msg.call_id}|{hashlib.blake2b(msg.body, digest_size=8).hexdigest()}"
        counted = "1" if len(text) >= MIN_COUNTED_TEXT else "0"
        args = [message, recipient, limits.window_s * 2, counted]
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

    def observe_reply(self, reply: ReplyFacts, state: SharedState) -> Ban | None:
        """A MESSAGE the registrar authenticated and delivered: its sender knows its recipient.

        Only such a message counts as contact, so that a spoofed one cannot
        make a spammer's targets look like its acquaintances.
        """
        if reply.method != "MESSAGE" or not 200 <= reply.status < 300 or not reply.had_credentials:
            return None
        key = state.key("spit", "knows", reply.auth_user.lower(), reply.to_user.lower())
        memory = self.settings.contact_memory_s
        state.defer(lambda client: client.set(key, 1, ex=memory))
        return None

    def _refuse(self, sender: str, what: str) -> Reject:
        return Reject(f"messaging abuse by {sender}: {what}", code=403)


def _address(name_addr: str) -> str:
    """user@host of a From/To value, without scheme or parameters."""
    uri = uri_of(name_addr).split(";", 1)[0]
    return uri.partition(":")[2].lower()


def user_of_address(address: str) -> str:
    return address.partition("@")[0]


def _readable(parts: list[ContentPart]) -> str:
    """The text people read, white space and case folded."""
    return " ".join(" ".join(t.text.split()) for t in readable_texts(parts)).lower()
