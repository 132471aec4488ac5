"""Presence privacy: who may watch whom, and sweeps that map who is online.

A presence or dialog subscription tells the watcher when someone is at their
desk, on the phone, and with whom.  For an out-of-dialog SUBSCRIBE from outside
to one of the ``watched_events`` packages:

- the watcher (From) must be in the policy's domain or in ``watcher_domains``;
  a trunk may not subscribe unless ``trunks_may_subscribe``: 403;
- with ``require_registered_watcher``, a watcher of our own domain must hold a registration
  made through sipshield from the same address (an authenticated REGISTER the
  registrar accepted, remembered for ``registration_memory_s``): a stranger
  cannot watch by putting a user's name in From, even where the PBX does not
  challenge SUBSCRIBEs: 403;
- one source subscribing to more than ``max_presentities`` distinct
  presentities per ``window_s`` is sweeping the directory: 403.

The registrations and the counts are in Redis (one round trip per watched
SUBSCRIBE), so every node knows them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from sipshield.checks.content.event_header import event_packages
from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Outcome, Reject
from sipshield.sip.message import uri_of

if TYPE_CHECKING:
    from sipshield.core.site import Site
    from sipshield.core.state import SharedState
    from sipshield.core.verdict import Ban
    from sipshield.sip.message import SipRequest
    from sipshield.sip.reply import ReplyFacts


class PresencePrivacyConfig(ModuleConfig):
    name: Literal["presence_privacy"] = "presence_privacy"
    watched_events: tuple[str, ...] = ("presence", "dialog", "presence.winfo")
    # Domains whose users may watch ours, besides our own.
    watcher_domains: tuple[str, ...] = ()
    trunks_may_subscribe: bool = False
    require_registered_watcher: bool = True
    registration_memory_s: int = Field(default=3600, ge=60)
    # A receptionist's busy-lamp field watches a few dozen extensions.
    max_presentities: int = Field(default=100, ge=1)
    window_s: int = Field(default=300, ge=10, le=86400)

    @field_validator("watched_events", "watcher_domains")
    @classmethod
    def _lower_case(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.strip().lower() for name in names)


class PresencePrivacy(SecurityModule):
    name = "presence_privacy"
    Config = PresencePrivacyConfig
    observes_replies = True

    def __init__(self, config: PresencePrivacyConfig, clock: Callable[[], float] = time.time):
        super().__init__(config)
        self.settings = config
        self.domains = frozenset(config.watcher_domains)
        self.own_domain = ""
        self._clock = clock

    def bind(self, site: Site) -> None:
        self.own_domain = site.domain.lower()
        self.domains = frozenset({self.own_domain, *self.settings.watcher_domains})

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.method != "SUBSCRIBE" or msg.in_dialog or msg.from_pbx:
            return CONTINUE
        settings = self.settings
        watched = [e for e in event_packages(msg) if e in settings.watched_events]
        if not watched:
            return CONTINUE
        event = watched[0]
        if msg.trunk is not None and not settings.trunks_may_subscribe:
            return Reject(f"{event} SUBSCRIBE from trunk {msg.trunk.name}", code=403)
        watcher = uri_of(msg.header("from") or "").split(";", 1)[0].partition(":")[2]
        user, _, host = watcher.rpartition("@")
        host = host.split(":", 1)[0].lower()
        if host not in self.domains:
            return Reject(f"{event} SUBSCRIBE by {watcher!r}: domain {host!r} may not watch", 403)
        # The presentity is the one the PBX serves: the Request-URI's, whatever To says.
        presentity = msg.ruri.split(";", 1)[0].lower()
        sweep = state.key("pres", "sweep", msg.src_ip, int(self._clock() // settings.window_s))
        registered = state.key("pres", "reg", user)

        def look(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.get(registered)
            pipe.sadd(sweep, presentity)
            pipe.expire(sweep, settings.window_s * 2)
            pipe.scard(sweep)
            return pipe.execute()

        registered_from, _, _, watched = state.run(look)
        # Watchers of other domains register elsewhere; ours register here.
        own = host == self.own_domain
        if settings.require_registered_watcher and own and registered_from != msg.src_ip:
            return Reject(
                f"{event} SUBSCRIBE by {user!r} from {msg.src_ip}: no registration of "
                f"{user!r} from there (require_registered_watcher)",
                code=403,
            )
        if watched > settings.max_presentities:
            return Reject(
                f"{event} SUBSCRIBE sweep from {msg.src_ip}: {watched} presentities in "
                f"{settings.window_s}s (max_presentities)",
                code=403,
            )
        return CONTINUE

    def observe_reply(self, reply: ReplyFacts, state: SharedState) -> Ban | None:
        if reply.method != "REGISTER" or not 200 <= reply.status < 300:
            return None
        if not reply.had_credentials or reply.auth_user != reply.to_user:
            return None
        key = state.key("pres", "reg", reply.to_user)
        ttl = self.settings.registration_memory_s
        state.defer(lambda client: client.set(key, reply.src_ip, ex=ttl))
        return None
