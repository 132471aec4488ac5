"""The legitimate traffic: an office of users behind 127.0.0.1, for the whole soak.

Every stream is one SIPp that runs from start to end (soak.sipp_stream), all
from 127.0.0.1 as one busy NAT address would be:

  calls          the 60 numbered lab users call bob (call_uac_many), each call
                 authenticated, with SDP that the SBC anchors in rtpengine, and
                 answered by bob's SIPp (call_uas, registered by bench.labs);
  registrations  the same users refresh their registrations (register_many);
  keepalives     OPTIONS to the SBC itself (options);
  messages       alice sends carol instant messages (message_uac), answered by
                 carol's SIPp (message_uas), through the content modules.

Why these rates (docs/soak.md): the benchmark measured about 600 calls/s for
the SBC alone on a pinned core, without media.  A soak call costs much more:
three rtpengine offers, two answers and three deletes from the Python ng
client besides its eight SIP requests; the soak itself measures about 6 ms
of SBC CPU per call, so the capacity with media is near 160 calls/s.  Half of
that would take half a core for the SBC and as much again for SIPp, the PBX
and rtpengine on a 2-core machine that other labs share; 30 calls/s keeps
the SBC at a fifth of a core and still fills every state the modules keep.

The example policy's flood limits (30 requests of a class per source in 10 s)
still let this through: each user that authenticates from an address raises
that address's allowance by one limit (flood's NAT rule), and 63 users do
from 127.0.0.1.  So the users register once before anything else is sent
(warm_up), as an office's phones do before they call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from bench.labs import BenchLab
from bench.workloads import CALLEE
from sipshield.lab.net import free_port
from sipshield.lab.sipp import credentials_file, run_sipp
from soak.sipp_stream import SippStream, StreamCounts

CALLER_OF_MESSAGES, MESSAGE_CALLEE = "alice", "carol"
# A UAS answers until it is told to stop.
UNBOUNDED_CALLS = 10_000_000
# Registrations and calls last longer than the soak itself (at most this).
MAX_MINUTES = 110
REGISTER_EXPIRES_S = 120
# A call waiting longer than this for a message has failed.
RECV_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class Rates:
    """What the legitimate streams ask SIPp for, per second."""

    calls: float = 30.0
    # Short, so that concurrent calls (and rtpengine sessions) stay around 100.
    talk_ms: int = 2000
    # Each of the 60 users every 12 s: phones behind NAT refresh often.
    registrations: float = 5.0
    keepalives: float = 10.0
    # Under spit's 30 messages a minute per sender (monitor mode): no alert.
    messages: float = 0.4

    def as_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StreamOutcome:
    name: str
    # Asked: calls per second; achieved: SIPp's successful calls over its wall time.
    rate: float
    counts: StreamCounts
    wall_s: float
    exit_status: int | None
    errors: str

    @property
    def achieved(self) -> float:
        return self.counts.successful / self.wall_s if self.wall_s else 0.0

    def as_json(self) -> dict:
        return {**asdict(self), "achieved": self.achieved}


class LegitLoad:
    """The streams, their answering SIPps, and their counts."""

    def __init__(
        self, lab: BenchLab, rates: Rates, seconds: float, workdir: Path, stat_interval_s: int
    ) -> None:
        if seconds > MAX_MINUTES * 60:
            raise ValueError(f"the lab's registrations last {MAX_MINUTES} minutes at most")
        self.lab, self.rates, self.seconds = lab, rates, seconds
        self.workdir, self.stat_interval_s = workdir, stat_interval_s
        workdir.mkdir(parents=True, exist_ok=True)
        self.target = lab.endpoint.target
        self.domain = lab.endpoint.domain
        self.passwords = lab.endpoint.passwords
        self.crowd = credentials_file(
            workdir / "crowd.csv",
            [(u, p) for u, p in sorted(self.passwords.items()) if u.startswith("u")],
        )
        self.callers: list[SippStream] = []
        self.answerers: list[SippStream] = []

    def warm_up(self) -> None:
        """Register every user once, so the office's allowance is known before it calls."""
        crowd = run_sipp(
            "register_many",
            self.target,
            calls=len(self.crowd.read_text().splitlines()) - 1,
            rate=20,
            injection_file=self.crowd,
            keys={"domain": self.domain, "expires": str(REGISTER_EXPIRES_S)},
            timeout_s=30,
        )
        if not crowd.ok:
            raise RuntimeError(f"the users' first registrations failed\n{crowd.explain()}")

    def start(self) -> None:
        keys = {"domain": self.domain}
        timeout_s = int(self.seconds) + 120
        message_port = free_port()
        carol = run_sipp(
            "register",
            self.target,
            service=MESSAGE_CALLEE,
            local_port=message_port,
            auth=(MESSAGE_CALLEE, self.passwords[MESSAGE_CALLEE]),
            keys={**keys, "expires": str(MAX_MINUTES * 60)},
        )
        if not carol.ok:
            raise RuntimeError(f"{MESSAGE_CALLEE}'s registration failed\n{carol.explain()}")

        def stream(name: str, scenario: str, target: str, **options: object) -> SippStream:
            return SippStream(
                name,
                scenario,
                target,
                self.workdir / name,
                self.stat_interval_s,
                timeout_s=timeout_s,
                **options,
            )

        self.answerers = [
            stream(
                "bob answers",
                "call_uas",
                "",
                local_port=self.lab.endpoint.callee_port,
                calls=UNBOUNDED_CALLS,
                keys=keys,
            ),
            stream(
                "carol reads",
                "message_uas",
                "",
                local_port=message_port,
                calls=UNBOUNDED_CALLS,
                keys=keys,
            ),
        ]
        rates = self.rates

        def calls(rate: float) -> int:
            return max(1, round(rate * self.seconds))

        self.callers = [
            stream(
                "calls",
                "call_uac_many",
                self.target,
                service=CALLEE,
                calls=calls(rates.calls),
                rate=rates.calls,
                talk_ms=rates.talk_ms,
                recv_timeout_ms=RECV_TIMEOUT_MS,
                injection_file=self.crowd,
                keys=keys,
            ),
            stream(
                "registrations",
                "register_many",
                self.target,
                calls=calls(rates.registrations),
                rate=rates.registrations,
                recv_timeout_ms=RECV_TIMEOUT_MS,
                injection_file=self.crowd,
                keys={**keys, "expires": str(REGISTER_EXPIRES_S)},
            ),
            stream(
                "keepalives",
                "options",
                self.target,
                calls=calls(rates.keepalives),
                rate=rates.keepalives,
                recv_timeout_ms=RECV_TIMEOUT_MS,
                keys=keys,
            ),
            stream(
                "messages",
                "message_uac",
                self.target,
                service=MESSAGE_CALLEE,
                calls=calls(rates.messages),
                rate=rates.messages,
                recv_timeout_ms=RECV_TIMEOUT_MS,
                auth=(CALLER_OF_MESSAGES, self.passwords[CALLER_OF_MESSAGES]),
                keys={**keys, "caller": CALLER_OF_MESSAGES},
            ),
        ]

    @property
    def streams(self) -> list[SippStream]:
        return self.callers + self.answerers

    def counts(self) -> dict[str, StreamCounts]:
        return {s.name: s.counts() for s in self.streams}

    def finish(self, grace_s: float) -> list[StreamOutcome]:
        """Wait for the callers' last calls (stopping those still going), then stop the UASs."""
        statuses: dict[str, int | None] = {}
        for caller in self.callers:
            if not caller.wait(grace_s):
                print(f"  {caller.name}: still sending after the soak; stopped", flush=True)
            statuses[caller.name] = caller.stop()
        for answerer in self.answerers:
            statuses[answerer.name] = answerer.stop()
        asked = {
            "calls": self.rates.calls,
            "registrations": self.rates.registrations,
            "keepalives": self.rates.keepalives,
            "messages": self.rates.messages,
        }
        return [
            StreamOutcome(
                name=s.name,
                rate=asked.get(s.name, 0.0),
                counts=s.counts(),
                wall_s=s.wall_s,
                exit_status=statuses[s.name],
                errors=s.errors() if s.counts().failed else "",
            )
            for s in self.streams
        ]
