"""flood's global limit and its NAT allowance, through a real SBC.

Each test has its own lab and its own source addresses; the windows are an
hour long so that none closes during a test.
"""

from __future__ import annotations

import pytest

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
