"""The drop-in in a configuration nobody here wrote: Debian's stock kamailio.cfg.

The stock file is read from the kamailio package and copied at test time; the
copy gets only the include and the four route calls, in code
(sipshield.dropin.add_to_native_config).  The same file runs as shipped beside
it.  What is shown:
- the edit is five marked lines, and taking them out gives back the stock
  file byte for byte;
- the stock behaviour still works through the drop-in: registration into the
  in-memory location table and calls between registered users, with the same
  replies as the stock file gives on its own;
- malformed SIP, a flood and a scanner are stopped as the policy says, where
  the stock file alone lets them through.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sipshield.dropin import MARK, add_to_native_config, remove_from_native_config
from sipshield.net import free_port
from sipshield.stock_kamailio import StockKamailio, start, stock_text
from tests.integration.dropin_peer import (
    attack,
    bans,
    calls,
    events,
    final_status_line,
    register,
    request,
    sweep_refused_extensions,
    wait_for_ban,
)

pytestmark = pytest.mark.integration

POLICY = {
    "bans": {"base_ttl_s": 300},
    "modules": [
        {"name": "ip_controls"},
        {"name": "bans"},
        {"name": "validation"},
        {
            "name": "flood",
            "window_s": 10,
            "limits": {"invite": 20, "register": 40, "options": 20},
            "ban_after": 3,
        },
        {"name": "scanner", "max_distinct_failed_users": 10, "max_failures": 30},
        {"name": "brute_force", "max_failures_per_user": 5, "max_failures_per_source": 30},
    ],
}


@pytest.fixture(scope="module")
def shielded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockKamailio]:
    running = start(tmp_path_factory.mktemp("stock-dropin"), POLICY)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockKamailio]:
    running = start(tmp_path_factory.mktemp("stock-plain"))
    yield running
    running.stop()


# --- the edit ---------------------------------------------------------------


def test_the_edit_is_the_include_and_four_calls_and_comes_out_exactly():
    original = stock_text()
    edited = add_to_native_config(original, "/usr/share/sipshield/sipshield-dropin.cfg")
    added = [line for line in edited.splitlines() if line not in original.splitlines()]
    assert [line.strip() for line in added] == [
        f'include_file "/usr/share/sipshield/sipshield-dropin.cfg"  {MARK}',
        f"route(SIPSHIELD);  {MARK}",
        f"route(SIPSHIELD_RECORD_ROUTE);  {MARK}",
        f"route(SIPSHIELD_BRANCH);  {MARK}",
        f"route(SIPSHIELD_REPLY);  {MARK}",
    ]
    assert len(edited.splitlines()) == len(original.splitlines()) + 5
    assert remove_from_native_config(edited) == original


def test_the_running_copy_is_the_stock_file_plus_the_edit(shielded, stock):
    assert stock.config.read_text() == stock_text()
    assert remove_from_native_config(shielded.config.read_text()) == stock_text()
    assert "sipshield loaded policy" in shielded.log()


# --- the stock behaviour, with and without the drop-in -----------------------


def stock_answers(kamailio: StockKamailio) -> dict[str, str | None]:
    """Status lines for what the stock configuration answers itself."""
    port = free_port()
    assert register(kamailio, "carol", port).ok
    domain = kamailio.domain
    return {
        "keepalive": final_status_line(kamailio, request(kamailio, "OPTIONS", f"sip:{domain}")),
        "unknown user": final_status_line(
            kamailio, request(kamailio, "INVITE", f"sip:nobody@{domain}")
        ),
        "foreign domain": final_status_line(
            kamailio, request(kamailio, "INVITE", "sip:bob@example.invalid")
        ),
        "no user part": final_status_line(kamailio, request(kamailio, "INVITE", f"sip:{domain}")),
        "in-dialog, no route": final_status_line(
            kamailio,
            request(kamailio, "BYE", f"sip:carol@{domain}").replace(
                f"To: <sip:carol@{domain}>".encode(), f"To: <sip:carol@{domain}>;tag=x".encode()
            ),
        ),
    }


def test_registration_and_calls_work_through_the_dropin(shielded):
    assert calls(shielded) == (3, 3)
    assert not bans(shielded)


def test_the_dropin_gives_the_same_answers_as_the_stock_file(shielded, stock):
    assert calls(stock) == (3, 3)
    with_dropin, without = stock_answers(shielded), stock_answers(stock)
    assert with_dropin == without
    assert without["keepalive"] == "SIP/2.0 200 Keepalive"
    assert without["unknown user"] == "SIP/2.0 404 Not Found"
    assert without["foreign domain"] == "SIP/2.0 403 Not relaying"


# --- what the drop-in stops --------------------------------------------------


def test_malformed_sip_is_rejected_by_sipshield_validation(shielded, stock):
    # A control character in a header value: the stock checks let it through.
    bad = request(stock, "OPTIONS", f"sip:{stock.domain}", "User-Agent: evil\x07phone\r\n")
    assert final_status_line(stock, bad) == "SIP/2.0 200 Keepalive"
    bad = request(shielded, "OPTIONS", f"sip:{shielded.domain}", "User-Agent: evil\x07phone\r\n")
    assert final_status_line(shielded, bad) is not None
    assert final_status_line(shielded, bad).startswith("SIP/2.0 400 ")
    assert any(e["module"] == "validation" and e["action"] == "reject" for e in events(shielded))


def test_invite_flood_is_banned_and_calls_go_on(shielded):
    attack(shielded, "invite_flood", "127.0.0.23", 300, 150)
    assert bans(shielded)["ip:127.0.0.23"]["module"] == "flood"
    keepalive = request(shielded, "OPTIONS", f"sip:{shielded.domain}")
    assert final_status_line(shielded, keepalive, source_ip="127.0.0.23", timeout=0.5) is None
    assert calls(shielded) == (3, 3)


def test_scanner_is_banned_at_once_where_the_stock_file_only_drops_its_probes(shielded, stock):
    for kamailio in (shielded, stock):
        attack(kamailio, "options_sweep", "127.0.0.21", 5, 10, user_agent="friendly-scanner")
    assert bans(shielded)["ip:127.0.0.21"]["module"] == "scanner"
    # Once banned, the source gets nothing more, whatever User-Agent it shows;
    # the stock file on its own recognised only the User-Agent.
    probe = request(shielded, "OPTIONS", f"sip:{shielded.domain}", "User-Agent: Zoiper\r\n")
    assert final_status_line(shielded, probe, source_ip="127.0.0.21", timeout=0.5) is None
    probe = request(stock, "OPTIONS", f"sip:{stock.domain}", "User-Agent: Zoiper\r\n")
    assert final_status_line(stock, probe, source_ip="127.0.0.21") == "SIP/2.0 200 Keepalive"


def test_replies_from_user_agents_feed_the_sweep_detection(shielded):
    """The reply call: 404s that callees answer count towards the scanner's sweep limit."""
    sweep_refused_extensions(shielded, "127.0.0.26")
    ban = wait_for_ban(shielded, "ip:127.0.0.26")
    assert ban["module"] == "scanner"
    assert "sweep" in ban["reason"]
