"""The pipeline's rules: order, modes, and what a failing module does.

These are pure-logic tests with small modules written for the purpose; the
same rules are proven end to end against the real Kamailio in
tests/integration/test_pipeline_lab.py.
"""

from typing import ClassVar, Literal

import pytest

from sipshield.core.events import EventSink
from sipshield.core.hop import Hop
from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.pipeline import PASS, Pipeline, Stage
from sipshield.core.policy import EventSettings
from sipshield.core.state import RedisSettings, SharedState, StateUnavailable
from sipshield.core.verdict import CONTINUE, Accept, Drop, Reject, Rewrite
from sipshield.sip.message import RawSipMessage

REQUEST = RawSipMessage(
    b"OPTIONS sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\n"
    b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    src_ip="192.0.2.9",
)


class Config(ModuleConfig):
    name: Literal["fixed"] = "fixed"


class Fixed(SecurityModule):
    """Answers whatever it was built with, and counts its calls."""

    name = "fixed"
    Config = Config
    calls: ClassVar[list[str]] = []

    def __init__(self, answer, label="fixed"):
        super().__init__(Config())
        self.answer = answer
        self.label = label

    def check(self, msg, state):
        Fixed.calls.append(self.label)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class FixedAtRelay(Fixed):
    """Answers in the relay phase only."""

    checks_relay = True

    def check(self, msg, state):
        return CONTINUE

    def check_relay(self, msg, hop, state):
        return Fixed.check(self, msg, state)


@pytest.fixture
def sink(tmp_path):
    # Redis at a closed port: events still reach the file, the stream copy waits.
    state = SharedState(RedisSettings(url="redis://127.0.0.1:1/0", timeout_ms=50))
    return EventSink(EventSettings(file=tmp_path / "events.jsonl"), state, "test-node")


def pipeline(sink, *stages, on_redis_failure="open"):
    Fixed.calls.clear()
    built = tuple(
        Stage(label, Fixed(answer, label), mode, on_error)
        for label, answer, mode, on_error in stages
    )
    return Pipeline(built, sink.state, sink, on_redis_failure)


def events(sink):
    import json

    return [json.loads(line) for line in sink.settings.file.read_text().splitlines()]


def test_first_stopping_verdict_wins_and_later_modules_do_not_run(sink):
    p = pipeline(
        sink,
        ("a", CONTINUE, "enforce", "open"),
        ("b", Reject("bad", code=400), "enforce", "open"),
        ("c", Drop("never"), "enforce", "open"),
    )
    decision = p.run(REQUEST)
    assert decision.verdict == Reject("bad", code=400)
    assert decision.module == "b"
    assert Fixed.calls == ["a", "b"]
    (event,) = events(sink)
    assert event["module"] == "b"
    assert event["action"] == "reject"
    assert event["src"] == "192.0.2.9:5060"
    assert event["call_id"] == "c1"
    assert event["node"] == "test-node"


def test_monitor_mode_logs_but_does_not_stop(sink):
    p = pipeline(
        sink,
        ("watch", Drop("would drop"), "monitor", "open"),
        ("last", CONTINUE, "enforce", "open"),
    )
    assert p.run(REQUEST) is PASS
    assert Fixed.calls == ["watch", "last"]
    (event,) = events(sink)
    assert (event["action"], event["mode"]) == ("drop", "monitor")


def test_accept_stops_the_chain_without_an_event(sink):
    p = pipeline(
        sink,
        ("allow", Accept("trusted peer"), "enforce", "open"),
        ("never", Drop("x"), "enforce", "open"),
    )
    assert p.run(REQUEST).verdict == Accept("trusted peer")
    assert Fixed.calls == ["allow"]
    assert not sink.settings.file.exists()


def test_crash_fails_open_and_the_next_module_still_runs(sink):
    p = pipeline(
        sink,
        ("boom", RuntimeError("kaput"), "enforce", "open"),
        ("next", Reject("caught", code=403), "enforce", "open"),
    )
    decision = p.run(REQUEST)
    assert decision.module == "next"
    assert [e["action"] for e in events(sink)] == ["error", "reject"]
    assert events(sink)[0]["reason"] == "RuntimeError: kaput"


def test_crash_fails_closed_with_500(sink):
    p = pipeline(
        sink,
        ("boom", ValueError("kaput"), "enforce", "closed"),
        ("never", CONTINUE, "enforce", "open"),
    )
    decision = p.run(REQUEST)
    assert isinstance(decision.verdict, Reject)
    assert decision.verdict.code == 500
    assert Fixed.calls == ["boom"]


def test_wrong_return_value_is_a_bug_that_names_the_class(sink):
    p = pipeline(sink, ("odd", "yes please", "enforce", "closed"))
    decision = p.run(REQUEST)
    assert decision.verdict.code == 500
    (event,) = events(sink)
    assert "Fixed.check returned 'yes please'" in event["reason"]


@pytest.mark.parametrize(("policy", "expected_code"), [("open", None), ("closed", 503)])
def test_redis_outage_follows_policy(sink, policy, expected_code):
    p = pipeline(
        sink,
        ("needs-redis", StateUnavailable("down"), "enforce", "closed"),
        on_redis_failure=policy,
    )
    decision = p.run(REQUEST)
    code = decision.verdict.code if decision.verdict else None
    assert code == expected_code


def test_reject_refuses_non_error_codes():
    with pytest.raises(ValueError):
        Reject("ok?", code=200)


HOP = Hop(next_hop="sip:192.0.2.20;transport=udp", ruri="sip:b@x", tls=False)


def test_the_relay_phase_runs_only_the_modules_that_judge_it(sink):
    p = pipeline(sink, ("arrival", Drop("no"), "enforce", "open"))
    relay = Stage("relay", FixedAtRelay(Reject("sips needs tls", code=403), "relay"), "enforce",
                  "open")  # fmt: skip
    p = Pipeline((*p.stages, relay), sink.state, sink)
    assert p.relay_stages == (relay,)
    decision = p.run_relay(REQUEST, HOP)
    assert Fixed.calls == ["relay"]
    assert decision.module == "relay" and decision.verdict == Reject("sips needs tls", code=403)
    assert [(e["module"], e["action"]) for e in events(sink)] == [("relay", "reject")]


def test_a_rewrite_is_carried_with_the_decision_and_the_chain_goes_on(sink):
    strip = Rewrite("keys stripped", part="PART", text="v=0", verb="strip")
    stages = tuple(
        Stage(label, FixedAtRelay(answer, label), mode, "open")
        for label, answer, mode in (
            ("watching", Rewrite("would strip", verb="strip"), "monitor"),
            ("sdes", strip, "enforce"),
            ("later", CONTINUE, "enforce"),
        )
    )
    Fixed.calls.clear()
    decision = Pipeline(stages, sink.state, sink).run_relay(REQUEST, HOP)
    assert Fixed.calls == ["watching", "sdes", "later"]
    assert decision.verdict is None and decision.rewrites == (strip,)
    assert [(e["module"], e["action"], e["mode"]) for e in events(sink)] == [
        ("watching", "strip", "monitor"),
        ("sdes", "strip", "enforce"),
    ]


def test_a_rewrite_as_the_request_arrives_is_a_bug_that_names_the_class(sink):
    # The media anchoring would overwrite it: only the relay phase rewrites.
    p = pipeline(sink, ("early", Rewrite("too early", text="v=0"), "enforce", "closed"))
    decision = p.run(REQUEST)
    assert decision.verdict == Reject("module early failed", code=500)
    assert "Fixed.check returned Rewrite" in events(sink)[0]["reason"]


ACK = RawSipMessage(
    REQUEST.raw.replace(b"OPTIONS sip", b"ACK sip", 1).replace(b"1 OPTIONS", b"1 ACK"),
    src_ip="192.0.2.9",
)


def test_the_decide_step_drops_what_the_policy_says_to_drop(sink):
    droppable = Reject("flooding", code=503, droppable=True)
    fixed = Reject("media moved", code=488)
    for answer, drops, expected in (
        (droppable, True, Drop("flooding")),
        (droppable, False, droppable),
        (fixed, True, fixed),  # the module says which refusals the policy may drop
    ):
        stage = Stage("m", Fixed(answer), "enforce", "open", drops=drops)
        assert Pipeline((stage,), sink.state, sink).run(REQUEST).verdict == expected
    # An ACK is never answered, whatever the module or its policy.
    stage = Stage("m", Fixed(fixed), "enforce", "open")
    assert Pipeline((stage,), sink.state, sink).run(ACK).verdict == Drop("media moved")
    assert [e["action"] for e in events(sink)] == ["drop", "reject", "reject", "drop"]
