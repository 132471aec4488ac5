"""Topology hiding: what leaves towards the outside names nothing of the inside.

Kamailio's ``topos`` module does the routing headers (docs/topology-hiding.md):
on every message it sends it replaces Via, Record-Route and Contact with the
SBC's own and keeps the originals in Redis (``topos_redis``), so the next
request of a dialog gets them back on any node that shares that Redis.  It
works beneath the routing logic, so sipshield's Python (dialog tokens
included) still sees full messages.  What topos does not do, this class does:
it removes the headers that name the inside's software or host (Server,
User-Agent, Warning, Organization, per policy) from what the PBX sends out.
The policy and kamailio.cfg must agree (topos loaded exactly when hiding is
on): the router then routes in-dialog requests as topos leaves them.

SDP ``o=`` and ``c=`` are rewritten by the media anchoring (rtpengine's
``replace-origin``/``session-connection``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sipshield.core import remediation
from sipshield.core.module import FailureMode
from sipshield.core.policy_types import PolicyError
from sipshield.core.state import SharedState, StateUnavailable
from sipshield.sip.ksr_message import read_pv

if TYPE_CHECKING:
    from sipshield.core.node_counters import NodeCounters
    from sipshield.sip.message import SipRequest

log = logging.getLogger("sipshield.edge.topology_hiding")

# The ndb_redis server that kamailio.cfg's topos_redis uses.
TOPOS_SERVER = "topos"
# Requests that Kamailio's topos never hides (they end at the registrar).
TOPOS_SKIPS = ("REGISTER", "PUBLISH")
# The node's htable item saying topos's Redis did not answer the last ping
# (1), or did (0); window_counts' merge skips items of other kinds.
REDIS_DOWN = "topology_hiding|redis-down"
PING_INTERVAL_S = 1.0
# topos_redis's records: a branch per request sent ("b:x:" + its Via branch,
# with the dialog's uuid in a_uuid), a dialog per dialog-forming request
# ("d:z:" + that uuid, its first letter made "a"), and the header topos adds
# to a reply it received, naming the branch (Kamailio 5.6).
BRANCH_RECORD, DIALOG_RECORD = "b:x:", "d:z:"
REPLY_BRANCH = "$T_rpl($hdr(P-SR-XBranch))"
# What topos gives a dialog that ended with a BYE: a failed call's is cut to this
# too, instead of the full dialog lifetime (TOPOS_DIALOG_EXPIRE).
ENDED_DIALOG_LIFETIME_S = 180
_TOKEN = re.compile(r"^[A-Za-z0-9!%'*+.^_`|~-]+$")
# Headers the SIP exchange itself needs: stripping them would break calls.
# The routing ones among them are topos's business, not a list's.
_NEEDED = frozenset(
    name.lower()
    for name in (
        "Via",
        "Route",
        "Record-Route",
        "Contact",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Max-Forwards",
        "Content-Length",
        "Content-Type",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authorization",
        "Proxy-Authorization",
        "Event",
        "Subscription-State",
        "Refer-To",
        "Replaces",
        "Expires",
    )
)


def _token(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"{value!r} is not a SIP header name")
    return value


def _header_name(value: str) -> str:
    _token(value)
    if value.lower() in _NEEDED:
        raise ValueError(f"{value} is needed by SIP itself and cannot be stripped")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
TokenName = Annotated[str, AfterValidator(_token)]


class TopologyHidingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Hide the inside from what goes out; needs kamailio.cfg's topos
    # (define TOPOS_REDIS), or Kamailio refuses to start.
    enabled: bool = False
    # Headers removed from what the PBX sends out: they name its software,
    # its host or its organisation.  Applied with or without ``enabled``
    # (a few KSR calls per message from the PBX); [] keeps them.
    strip_headers: list[HeaderName] = Field(
        default_factory=lambda: ["Server", "User-Agent", "Warning", "Organization"]
    )
    # Headers of what the PBX sends out in which its own address (with any
    # port) becomes the SIP domain: identities and transfer targets.  Also
    # applied with or without ``enabled``.
    rewrite_headers: list[TokenName] = Field(
        default_factory=lambda: [
            "P-Asserted-Identity",
            "P-Preferred-Identity",
            "Remote-Party-ID",
            "Refer-To",
            "Referred-By",
        ]
    )


class TopologyHiding:
    """What KEMI's handler asks about hiding: one instance per Kamailio process."""

    def __init__(
        self,
        settings: TopologyHidingSettings,
        ksr: Any,
        on_redis_failure: FailureMode = "open",
        node: NodeCounters | None = None,
        failure_route: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = settings.enabled
        self.strip_headers = tuple(settings.strip_headers)
        self.rewrite_headers = tuple(settings.rewrite_headers)
        self.ksr = ksr
        self.inside: tuple[str, str] | None = None  # the PBX's host, the SIP domain
        self.on_redis_failure = on_redis_failure
        # The node's htable, where the timer process says whether Redis answers.
        self.node = node
        # The KEMI failure route a failed initial INVITE comes back to.
        self.failure_route = failure_route
        self.clock = clock
        self._next_ping = 0.0
        self._outage_seen = False
        topos_loaded = hasattr(ksr, "topos")
        if self.enabled and not topos_loaded:
            raise PolicyError(
                "topology_hiding",
                [
                    "topology_hiding.enabled: Kamailio's topos module is not loaded; "
                    "define TOPOS_REDIS in kamailio.cfg (see docs/topology-hiding.md)"
                ],
            )
        if topos_loaded and not self.enabled:
            # topos would hide anyway, and the routing would not expect it.
            raise PolicyError(
                "topology_hiding",
                [
                    "topology_hiding.enabled is false but kamailio.cfg loads topos "
                    "(TOPOS_REDIS is defined); turn one on or the other off"
                ],
            )

    def name_the_inside(self, pbx_host: str, domain: str) -> None:
        """Whose address :meth:`strip_inside_headers` replaces, and with what."""
        self.inside = (pbx_host, domain)

    def strip_inside_headers(self, from_pbx: bool) -> None:
        """Remove the policy's headers from a message the PBX sent (request or reply),
        and put the domain where the others name the PBX's address.

        Whether or not topos hides the routing headers (``enabled``): these
        cost a few KSR calls, and without them the first 401 names the PBX's
        software and version.
        """
        if not from_pbx:
            return
        remediation.remove_headers(self.ksr, self.strip_headers)
        if self.inside is None:
            return
        host, domain = self.inside
        for name in self.rewrite_headers:
            value = read_pv(self.ksr.pv, f"$(hdr({name})[*])")
            if value and host in value:
                remediation.replace_header(self.ksr, name, hide_address(value, host, domain))

    def arm(self, msg: SipRequest) -> None:
        """A call being set up: if it fails, :meth:`on_failed_call` cuts its dialog record short."""
        if self.enabled and self.failure_route and msg.method == "INVITE" and not msg.in_dialog:
            self.ksr.tm.t_on_failure(self.failure_route)

    def on_failed_call(self, state: SharedState) -> None:
        """An initial INVITE failed (Kamailio's failure route): its topos dialog record goes.

        topos keeps a failed call's record (the 407 challenge of every call
        included) for the whole dialog lifetime, 12 hours by default; an ended
        call's only for three minutes.  The failed reply names its branch
        record, which names the dialog.  A local timeout (no reply) is left to
        the lifetime.
        """
        if not self.enabled:
            return
        branch = read_pv(self.ksr.pv, REPLY_BRANCH)
        if not branch:
            return
        uuid = state.run(lambda client: client.hget(BRANCH_RECORD + branch, "a_uuid"))
        if not uuid:
            return
        dialog = DIALOG_RECORD + "a" + uuid[1:]
        state.run(lambda client: client.expire(dialog, ENDED_DIALOG_LIFETIME_S))

    def on_timer(self, state: SharedState) -> None:
        """The node's timer process: whether topos's Redis answers, for every worker to read."""
        if not self.enabled or self.node is None or self.clock() < self._next_ping:
            return
        self._next_ping = self.clock() + PING_INTERVAL_S
        try:
            state.run(lambda client: client.ping())
            self.node.put(REDIS_DOWN, 0)
        except StateUnavailable:
            self.node.put(REDIS_DOWN, 1)

    def refuses(self, msg: SipRequest) -> bool:
        """True when ``msg`` must be refused: topos would hide it, and cannot (no Redis).

        With ``redis.on_failure: open`` it is relayed, the inside visible,
        and the outage is logged once per worker.
        """
        if not self.enabled or self.node is None or msg.in_dialog:
            return False
        if msg.method in (*TOPOS_SKIPS, "ACK", "CANCEL"):
            return False
        if msg.method == "OPTIONS" and "@" not in msg.ruri:
            return False  # a keepalive to the SBC itself, answered here
        down = self.node.value(REDIS_DOWN) == 1
        if down != self._outage_seen:
            self._outage_seen = down
            if down:
                log.error(
                    "topology hiding: Redis does not answer, topos cannot hide; requests "
                    "outside dialogs are %s (redis.on_failure: %s)",
                    "refused (503)" if self.on_redis_failure == "closed" else "relayed unhidden",
                    self.on_redis_failure,
                )
            else:
                log.warning("topology hiding: Redis answers again")
        return down and self.on_redis_failure == "closed"


def hide_address(value: str, host: str, domain: str) -> str:
    """``value`` with every SIP URI host ``host`` (and its port) replaced by ``domain``.

    Only a host that follows ``sip:``, ``sips:`` or ``@`` and ends where a URI
    host ends is replaced, so a longer address that starts the same is kept.
    """
    pattern = re.compile(rf"(@|\bsips?:){re.escape(host)}(?::\d+)?(?=[;>?,\s]|$)")
    return pattern.sub(lambda m: m.group(1) + domain, value)


def topos_redis_server(redis_url: str) -> str:
    """kamailio.cfg's TOPOS_REDIS for the policy's Redis URL (an ndb_redis server named "topos")."""
    url = urlsplit(redis_url)
    database = url.path.strip("/") or "0"
    fields = [f"name={TOPOS_SERVER}", f"addr={url.hostname}", f"port={url.port or 6379}"]
    fields.append(f"db={database}")
    if url.password:
        fields.append(f"pass={url.password}")
    return ";".join(fields)
