"""Limits no other test reaches: flood's global limit and NAT allowance, brute_force per source.

Each test has its own lab and its own source addresses; the windows are an
hour long so that none closes during a test.
"""

from __future__ import annotations

import time

import pytest

from sipshield.lab.sipp import credentials_file, run_sipp
from tests.integration.lab_fixture import RunningLab

pytestmark = pytest.mark.integration

BASE = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
"""


def options_from(lab: RunningLab, source: str, count: int) -> list[int | None]:
    return [lab.options(source_ip=source, timeout=0.5) for _ in range(count)]


def test_the_global_limit_counts_every_source_together(make_lab):
    lab = make_lab(
        BASE + "  - {name: flood, window_s: 3600, global_limit: 10, response: reject,"
        " limits: {options: 100}}\n"
    )
    # Twelve sources, one request each, every one far under its own limit.
    answers = [lab.options(source_ip=f"127.0.0.{n}", timeout=0.5) for n in range(51, 63)]
    # Served until the window's 11th request (the lab's start-up probes count
    # too), refused from then on, whoever sends.
    served = answers.count(200)
    assert answers == [200] * served + [503] * (12 - served)
    assert 8 <= served < 12
    refused = lab.wait_for_event(module="flood", action="reject")
    assert refused["src"].startswith(f"127.0.0.{51 + served}:")
    assert refused["reason"] == "11 requests from all sources in 3600s (limit 10)"


def test_authenticated_users_raise_a_source_allowance_up_to_nat_max_factor(make_lab):
    lab = make_lab(
        BASE + "  - {name: flood, window_s: 3600, response: reject, nat_max_factor: 2,"
        " limits: {options: 3, register: 100}}\n"
    )
    office, stranger = "127.0.0.61", "127.0.0.62"
    # Three users authenticate from the office's address (REGISTER, 401, REGISTER, 200).
    for user in ("alice", "bob", "carol"):
        registered = lab.register(user, local_ip=office)
        assert registered.ok, registered.explain()
    # Three users, capped at two: the office may send 2 x 3 OPTIONS.
    assert options_from(lab, office, 7) == [200] * 6 + [503]
    refused = lab.wait_for_event(module="flood", action="reject")
    assert refused["src"].startswith(f"{office}:")
    assert refused["reason"] == (
        f"7 options requests from {office} in 3600s (allowance 6 for 3 authenticated users)"
    )
    # A source where nobody authenticated keeps the base limit.
    assert options_from(lab, stranger, 4) == [200] * 3 + [503]


def test_brute_force_bans_a_source_guessing_across_users(make_lab, tmp_path):
    lab = make_lab(
        BASE + "  - {name: bans}\n"
        "  - {name: brute_force, max_failures_per_user: 5, max_failures_per_source: 8}\n"
    )
    guesser, neighbour = "127.0.0.71", "127.0.0.72"
    failures = f"sipshield:authfail:source:{guesser}"

    def guess(count: int, first: int) -> None:
        # Three accounts in turn, wrong passwords: never 5 failures for one user.
        guesses = credentials_file(
            tmp_path / f"guesses{first}.csv",
            [(f"u{n % 3}", f"guess{n}") for n in range(first, first + count)],
        )
        run_sipp("register_many", lab.sip_target(), local_ip=guesser, calls=count, rate=20,
                 injection_file=guesses, keys={"domain": lab.domain}, timeout_s=10)  # fmt: skip

    guess(8, 0)
    wait_until(lambda: lab.redis.get(failures) == "8", "8 failures counted")
    assert not lab.redis.exists(f"sipshield:ban:ip:{guesser}"), "8 failures are allowed"
    guess(1, 8)
    wait_until(lambda: lab.redis.exists(f"sipshield:ban:ip:{guesser}"), "the 9th failure bans")
    ban = lab.redis.hgetall(f"sipshield:ban:ip:{guesser}")
    assert ban["module"] == "brute_force"
    assert ban["reason"].startswith(f"9 failed authentications from {guesser} in 300s")
    # The guesser is dropped now; its neighbour registers as usual.
    assert lab.options(source_ip=guesser, timeout=0.5) is None
    registered = lab.register("alice", local_ip=neighbour)
    assert registered.ok, registered.explain()


def wait_until(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
