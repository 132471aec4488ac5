"""sipshield composed into an operator's own KEMI script.

tests/integration/operator_kemi/ holds what an operator would have: a
kamailio.cfg with ``cfgengine "python"`` and a routing class of their own,
which builds a :class:`sipshield.edge.dropin.Shield` in ``mod_init`` and calls it
once in its request route (a verdict object back), once in its reply route,
and after ``record_route()``.  The operator's routing still registers and
connects calls; what sipshield blocks never reaches it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.dropin_peer import (
    attack,
    bans,
    calls,
    events,
    final_status_line,
    logged,
    request,
    sweep_refused_extensions,
    wait_for_ban,
)
from tests.integration.test_dropin_stock import POLICY
from tests.support.stock_kamailio import StockKamailio, start

pytestmark = pytest.mark.integration

OPERATOR = Path(__file__).resolve().parent / "operator_kemi"


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockKamailio]:
    running = start(
        tmp_path_factory.mktemp("operator-kemi"),
        POLICY,
        config=(OPERATOR / "kamailio.cfg").read_text(),
        defines={"OPERATOR_SCRIPT": f'"{OPERATOR / "routing.py"}"'},
    )
    yield running
    running.stop()


def test_the_operators_routing_registers_and_connects_calls(operator):
    assert calls(operator) == (3, 3)
    keepalive = request(operator, "OPTIONS", f"sip:{operator.domain}")
    assert final_status_line(operator, keepalive) == "SIP/2.0 200 Keepalive"
    unknown = request(operator, "INVITE", f"sip:nobody@{operator.domain}")
    assert final_status_line(operator, unknown) == "SIP/2.0 404 Not Found"
    assert not bans(operator)


def test_the_verdict_object_tells_the_operators_route_what_was_blocked(operator):
    bad = request(operator, "OPTIONS", f"sip:{operator.domain}", "User-Agent: evil\x07phone\r\n")
    assert (final_status_line(operator, bad) or "").startswith("SIP/2.0 400 ")
    assert logged(operator, "operator: sipshield reject by validation:")
    assert any(e["module"] == "validation" for e in events(operator))


def test_scanner_and_flood_are_banned_before_the_operators_routing(operator):
    attack(operator, "options_sweep", "127.0.0.31", 5, 10, user_agent="friendly-scanner")
    assert bans(operator)["ip:127.0.0.31"]["module"] == "scanner"
    assert logged(operator, "operator: sipshield ban by scanner:")
    attack(operator, "invite_flood", "127.0.0.32", 300, 150)
    assert bans(operator)["ip:127.0.0.32"]["module"] == "flood"
    for banned in ("127.0.0.31", "127.0.0.32"):
        probe = request(operator, "OPTIONS", f"sip:{operator.domain}")
        assert final_status_line(operator, probe, source_ip=banned, timeout=0.5) is None
    assert calls(operator) == (3, 3)


def test_the_reply_route_call_feeds_the_sweep_detection(operator):
    sweep_refused_extensions(operator, "127.0.0.33")
    ban = wait_for_ban(operator, "ip:127.0.0.33")
    assert ban["module"] == "scanner"
    assert "sweep" in ban["reason"]
