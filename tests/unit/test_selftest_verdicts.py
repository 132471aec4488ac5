"""The selftest's pure logic: expectations read from a policy, and outcomes read from replies."""

from __future__ import annotations

import pytest

from sipshield.core.policy import parse_policy
from sipshield.ops.selftest.catalogue import CATALOGUE, by_name
from sipshield.ops.selftest.enumeration import answer_shape
from sipshield.ops.selftest.fingerprint import revealing
from sipshield.ops.selftest.floods import (
    burst_fits,
    burst_outcome,
    burst_size,
    wait_for_one_window,
)
from sipshield.ops.selftest.runner import SourcePlan
from tests.conftest import REPO

EXAMPLE = (REPO / "kamailio-cfg" / "policy.example.yaml").read_text()
# Attack -> the module whose mode decides its expectation.
GUARDED_BY = {
    "malformed": "validation",
    "forged-bye": "dialog_guard",
    "forged-cancel": "cancel_guard",
    "premium-refer": "refer_policy",
    "sdes-plain": "sdes_guard",
    "notify-check-sync": "device_control",
    "password-guessing": "brute_force",
    "slow-sweep": "scanner",
    "flood-options": "flood",
    "flood-register": "flood",
    "flood-invite": "flood",
}


def _with_mode(module: str, mode: str) -> str:
    enforcing = f"  - name: {module}\n    mode: enforce"
    assert enforcing in EXAMPLE
    return EXAMPLE.replace(enforcing, f'  - name: {module}\n    mode: "{mode}"', 1)


@pytest.mark.parametrize(("attack", "module"), GUARDED_BY.items())
@pytest.mark.parametrize("mode", ["off", "monitor"])
def test_an_attack_expects_to_get_through_a_module_that_does_not_enforce(attack, module, mode):
    [chosen] = by_name([attack])
    assert chosen.expect(parse_policy(EXAMPLE)).stopped is True
    expectation = chosen.expect(parse_policy(_with_mode(module, mode)))
    assert expectation.stopped is False
    assert expectation.because == (
        f"{module} is off" if mode == "off" else f"{module} is in monitor mode"
    )


def test_media_settings_decide_the_media_attacks():
    optional = parse_policy(EXAMPLE)
    mandatory = parse_policy(
        EXAMPLE.replace("    srtp: optional             #", "    srtp: mandatory #", 1)
    )
    loose = parse_policy(
        EXAMPLE.replace("    strict_source: true ", "    strict_source: false ", 1)
    )
    [downgrade, injection] = by_name(["srtp-downgrade", "rtp-injection"])
    assert (downgrade.expect(optional).stopped, downgrade.expect(mandatory).stopped) == (
        False,
        True,
    )
    assert (injection.expect(optional).stopped, injection.expect(loose).stopped) == (True, False)


def test_the_pbx_software_headers_are_expected_hidden_only_when_stripped():
    [relayed] = by_name(["fingerprint-relayed"])
    default = "  strip_headers: [Server, User-Agent, Warning, Organization]"
    assert default in EXAMPLE
    keeps_server = parse_policy(EXAMPLE.replace(default, "  strip_headers: [User-Agent, Warning]"))
    assert relayed.expect(parse_policy(EXAMPLE)).stopped is True
    expectation = relayed.expect(keeps_server)
    assert (expectation.stopped, expectation.because) == (
        False,
        "topology_hiding.strip_headers keeps Server in what the PBX sends",
    )


def test_every_attack_has_a_unique_name_and_says_what_it_leaves():
    names = [a.name for a in CATALOGUE]
    assert len(names) == len(set(names)) == 18
    assert all(a.leaves != "nothing" for a in CATALOGUE if a.fresh_source)
    with pytest.raises(ValueError, match="unknown attack"):
        by_name(["flood-everything"])


def test_bursts_are_sized_from_the_policy():
    limits = "limits: {register: 30, invite: 30, options: "
    policy = parse_policy(EXAMPLE.replace(limits + "30", limits + "7", 1))
    assert burst_size(policy, "options") == 7 * 3 + 10
    assert burst_size(policy, "invite") == 30 * 3 + 10


def test_a_burst_too_slow_to_cross_the_limit_is_not_sent():
    # 100 requests in a 10 s window: at 20/s they take 5 s, at 19/s longer.
    assert burst_fits(100, 20.0, 10) is True
    assert burst_fits(100, 19.0, 10) is False


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (1000.0, 0.5),  # at a boundary: clear of it by the clock margin
        (1001.0, 0.0),  # a burst of 2 s fits before 1010 with the margin
        (1007.6, 2.9),  # it would cross 1010: wait for 1010.5
        (1009.9, 0.6),
    ],
)
def test_a_burst_waits_until_it_fits_in_one_flood_window(now, expected):
    assert wait_for_one_window(now, 2.0, 10) == pytest.approx(expected)


def test_a_burst_is_stopped_only_when_its_whole_tail_goes_unanswered():
    stopped = burst_outcome([200] * 30 + [None] * 70)
    assert (stopped.stopped, stopped.evidence) == (
        True,
        "30 of 100 answered; first unanswered: #31",
    )
    through = burst_outcome([200] * 95 + [None] + [200] * 4)
    assert through.stopped is False
    assert through.evidence == (
        "99 of 100 answered; first unanswered: #96; 9 of the last 10 answered"
    )


def test_product_names_and_versions_in_software_headers_are_found():
    replies = (
        b"SIP/2.0 200 OK\r\nServer: kamailio (5.6.3 (x86_64/linux))\r\n"
        b"User-Agent: acme\r\nSubject: kamailio 5.6\r\nContent-Length: 0\r\n\r\n"
    )
    assert revealing(replies) == ["Server: kamailio (5.6.3 (x86_64/linux))"]
    assert revealing(b"SIP/2.0 200 OK\r\nServer: sbc\r\n\r\n") == []


def test_answers_are_compared_by_code_reason_and_challenge():
    challenge = (
        b"SIP/2.0 100 Trying\r\n\r\nSIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest x\r\n\r\n"
    )
    assert answer_shape(challenge) == "401 Unauthorized (challenge)"
    assert answer_shape(b"SIP/2.0 404 Not Found\r\n\r\n") == "404 Not Found"
    assert answer_shape(b"") == "no answer"


def test_banning_attacks_get_sources_of_their_own_until_none_is_left():
    plan = SourcePlan(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    quiet, banning = by_name(["enumeration"])[0], by_name(["flood-options"])[0]
    assert plan.user_source == "10.0.0.1"
    assert [plan.source_for(quiet), plan.source_for(banning), plan.source_for(quiet)] == [
        "10.0.0.2", "10.0.0.3", "10.0.0.2",
    ]  # fmt: skip
    assert plan.source_for(banning) is None
    with pytest.raises(ValueError, match="two --source"):
        SourcePlan(["10.0.0.1"])
