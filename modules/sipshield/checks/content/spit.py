"""SPIT and IM floods: one sender messaging many people, the same text sent to
many people, strangers writing to many users, and sheer MESSAGE rate.

Counted per fixed window (aligned on the wall clock, so every node counts the
same window) in Redis, so the limits hold for the whole cluster: one
pipelined round trip per text MESSAGE from outside, and a second one only for a
first contact.  Typing notifications and delivery reports (is-composing, IMDN)
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
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Outcome, Reject
from sipshield.sip.body_parts import readable_texts
from sipshield.sip.message import uri_of
from sipshield.sip.sdp_body import BodyProblem, media_type

if TYPE_CHECKING:
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

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
        ttl = limits.window_s * 2

        def key(*parts: str | int) -> str:
            return state.key("spit", *parts, window)

        rate, recipients = key("n", sender), key("to", sender)
        same_body = key("body", _fingerprint(msg))
        knows_sender = state.key("spit", "knows", recipient, sender)
        knows_recipient = state.key("spit", "knows", sender, recipient)

        def count(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.sadd(rate, msg.call_id)
            pipe.expire(rate, ttl)
            pipe.scard(rate)
            pipe.sadd(recipients, recipient)
            pipe.expire(recipients, ttl)
            pipe.scard(recipients)
            pipe.sadd(same_body, recipient)
            pipe.expire(same_body, ttl)
            pipe.scard(same_body)
            pipe.exists(knows_sender)
            pipe.set(knows_recipient, 1, ex=limits.contact_memory_s)
            return pipe.execute()

        _, _, sent, _, _, distinct, _, _, body_reach, known, _ = state.run(count)
        if sent > limits.max_messages:
            return self._refuse(sender, f"{sent} MESSAGEs in {limits.window_s}s (max_messages)")
        if distinct > limits.max_recipients:
            return self._refuse(
                sender, f"{distinct} recipients in {limits.window_s}s (max_recipients)"
            )
        if body_reach > limits.max_recipients_per_body:
            return self._refuse(
                sender,
                f"one text sent to {body_reach} recipients in {limits.window_s}s "
                "(max_recipients_per_body)",
            )
        if not known:
            strangers = key("new", sender)

            def first_contact(client: Any) -> int:
                pipe = client.pipeline(transaction=False)
                pipe.sadd(strangers, recipient)
                pipe.expire(strangers, ttl)
                pipe.scard(strangers)
                return int(pipe.execute()[2])

            firsts = state.run(first_contact)
            if firsts > limits.max_first_contacts:
                return self._refuse(
                    sender,
                    f"first contact with {firsts} users in {limits.window_s}s (max_first_contacts)",
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
