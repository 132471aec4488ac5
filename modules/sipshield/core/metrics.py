"""What sipshield counts for Prometheus, and the one interface that counts it.

Every metric is declared here, once: :data:`METRICS` names it, its kind, its
labels and its help text.  Kamailio's configuration declares the same ones to
``xhttp_prom`` (a test holds the two together), and docs/metrics.md describes
them.  Label values come only from bounded sets: a method class, a module
name from the policy, a verdict's action, a ban's scope kind, an ng command,
an rtpengine address from the policy.  Never a source address or a user.

The counting goes through a :class:`MetricsBackend`: inside Kamailio that is
``KSR.xhttp_prom`` (one KSR call per update, into shared memory, no Redis);
:data:`NO_METRICS` costs nothing where metrics are off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Kind = Literal["counter", "gauge", "histogram"]

REQUESTS = "sipshield_requests_total"
PIPELINE_SECONDS = "sipshield_pipeline_seconds"
VERDICTS = "sipshield_verdicts_total"
BANS_ACTIVE = "sipshield_bans_active"
BANS_ADDED = "sipshield_bans_added_total"
BANS_EXPIRED = "sipshield_bans_expired_total"
REDIS_UP = "sipshield_redis_up"
REDIS_RTT = "sipshield_redis_rtt_seconds"
EVENTS_BUFFERED = "sipshield_events_buffered_total"
EVENTS_LOST = "sipshield_events_lost_total"
RTPENGINE_RTT = "sipshield_rtpengine_rtt_seconds"
RTPENGINE_FAILURES = "sipshield_rtpengine_failures_total"
CALLS_ANCHORED = "sipshield_calls_anchored_total"
POLICY_INFO = "sipshield_policy_info"
POLICY_LOADED = "sipshield_policy_loaded_timestamp_seconds"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str
    # Histograms only: upper bounds, in seconds.
    buckets: tuple[float, ...] = ()


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        REQUESTS,
        "counter",
        ("method_class", "outcome"),
        "Requests the pipeline screened; outcome is passed or blocked.",
    ),
    MetricSpec(
        PIPELINE_SECONDS,
        "histogram",
        ("method_class",),
        "Time the request phase of the pipeline took per request (wall clock).",
        (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
    ),
    MetricSpec(
        VERDICTS,
        "counter",
        ("module", "action", "mode"),
        "Security events by the module that raised them, their action and mode.",
    ),
    MetricSpec(BANS_ACTIVE, "gauge", ("scope",), "Bans in force, cluster-wide, by scope kind."),
    MetricSpec(
        BANS_ADDED, "counter", ("scope", "module"), "Bans this node decided, by scope kind."
    ),
    MetricSpec(BANS_EXPIRED, "counter", (), "Expired bans this node removed from the index."),
    MetricSpec(REDIS_UP, "gauge", (), "1 when the timer process's last Redis ping answered."),
    MetricSpec(REDIS_RTT, "gauge", (), "Round-trip time of the last Redis ping, in seconds."),
    MetricSpec(
        EVENTS_BUFFERED,
        "counter",
        (),
        "Events that could not go to the Redis stream at once and waited in memory.",
    ),
    MetricSpec(EVENTS_LOST, "counter", (), "Events dropped from a full in-memory buffer."),
    MetricSpec(
        RTPENGINE_RTT,
        "histogram",
        ("command",),
        "Round-trip time of answered ng commands (retransmissions included).",
        (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
    ),
    MetricSpec(
        RTPENGINE_FAILURES,
        "counter",
        ("rtpengine",),
        "ng commands an rtpengine did not answer (it is then marked dead for a while).",
    ),
    MetricSpec(
        CALLS_ANCHORED,
        "counter",
        (),
        "Answered initial INVITEs whose media rtpengine anchored, per crossing of the SBC.",
    ),
    MetricSpec(POLICY_INFO, "gauge", ("digest",), "1, labelled with the loaded policy's digest."),
    MetricSpec(POLICY_LOADED, "gauge", (), "When the loaded policy was read (Unix time)."),
)

# Methods with a class of their own; every other method (an extension, a
# scanner's invention) is "other", so the label set stays bounded.
METHOD_CLASSES = frozenset(
    (
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "REGISTER",
        "OPTIONS",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "MESSAGE",
        "REFER",
        "INFO",
        "UPDATE",
        "PRACK",
    )
)
OUTCOMES = ("passed", "blocked")
BAN_SCOPES = ("ip", "user", "account")


def method_class(method: str) -> str:
    return method.lower() if method in METHOD_CLASSES else "other"


def scope_kind(scope: str) -> str:
    """``ip``, ``user`` or ``account`` from a ban's scope key (``ip:...``, ``user:...``)."""
    return scope.partition(":")[0]


class MetricsBackend(Protocol):
    def counter_inc(self, name: str, amount: int, *labels: str) -> None: ...

    def gauge_set(self, name: str, value: float, *labels: str) -> None: ...

    def histogram_observe(self, name: str, value: float, *labels: str) -> None: ...


class Metrics:
    """The typed updates sipshield makes; each is one backend call."""

    def __init__(self, backend: MetricsBackend | None) -> None:
        self.backend = backend

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    def request_screened(self, method: str, blocked: bool, seconds: float) -> None:
        if self.backend is None:
            return
        kind = method_class(method)
        self.backend.counter_inc(REQUESTS, 1, kind, OUTCOMES[blocked])
        self.backend.histogram_observe(PIPELINE_SECONDS, seconds, kind)

    def verdict(self, module: str, action: str, mode: str) -> None:
        if self.backend is not None:
            self.backend.counter_inc(VERDICTS, 1, module, action, mode)

    def ban_added(self, scope: str, module: str) -> None:
        if self.backend is not None:
            self.backend.counter_inc(BANS_ADDED, 1, scope_kind(scope), module)

    def bans_expired(self, count: int) -> None:
        if self.backend is not None and count > 0:
            self.backend.counter_inc(BANS_EXPIRED, count)

    def bans_active(self, by_scope: dict[str, int]) -> None:
        if self.backend is not None:
            for scope in BAN_SCOPES:
                self.backend.gauge_set(BANS_ACTIVE, by_scope.get(scope, 0), scope)

    def redis(self, up: bool, rtt_s: float | None) -> None:
        if self.backend is not None:
            self.backend.gauge_set(REDIS_UP, 1 if up else 0)
            if rtt_s is not None:
                self.backend.gauge_set(REDIS_RTT, rtt_s)

    def event_buffered(self) -> None:
        if self.backend is not None:
            self.backend.counter_inc(EVENTS_BUFFERED, 1)

    def events_lost(self, count: int) -> None:
        if self.backend is not None and count > 0:
            self.backend.counter_inc(EVENTS_LOST, count)

    def rtpengine_round_trip(self, command: str, seconds: float) -> None:
        if self.backend is not None:
            self.backend.histogram_observe(RTPENGINE_RTT, seconds, command)

    def rtpengine_failure(self, instance: str) -> None:
        if self.backend is not None:
            self.backend.counter_inc(RTPENGINE_FAILURES, 1, instance)

    def call_anchored(self) -> None:
        if self.backend is not None:
            self.backend.counter_inc(CALLS_ANCHORED, 1)

    def policy_loaded(self, digest: str, loaded_at: float) -> None:
        if self.backend is not None:
            self.backend.gauge_set(POLICY_INFO, 1, digest)
            self.backend.gauge_set(POLICY_LOADED, loaded_at)

    def declare(self, rtpengines: tuple[str, ...]) -> None:
        """Make the series a dashboard expects exist at 0 before anything happened.

        Counters are created by adding 0, never reset: a worker may have
        counted already when the timer process gets here.
        """
        if self.backend is None:
            return
        for kind in sorted({method_class(m) for m in METHOD_CLASSES} | {"other"}):
            for outcome in OUTCOMES:
                self.backend.counter_inc(REQUESTS, 0, kind, outcome)
        for name in (BANS_EXPIRED, EVENTS_BUFFERED, EVENTS_LOST, CALLS_ANCHORED):
            self.backend.counter_inc(name, 0)
        for instance in rtpengines:
            self.backend.counter_inc(RTPENGINE_FAILURES, 0, instance)


NO_METRICS = Metrics(None)
