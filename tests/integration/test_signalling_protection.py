"""Signalling protection against real attacks, with legitimate traffic beside each.

Every attacker runs from its own loopback address (127.0.0.x) while users
register and call from 127.0.0.1.  Each attack test checks that the attacker
is banned within a bounded number of requests, that the PBX saw no more than
that bound, and that the legitimate calls succeeded.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipshield.lab.net import free_port
from sipshield.lab.sipp import credentials_file, run_sipp
from tests.integration.lab_fixture import RunningLab, lab_with_policy
from tests.integration.sip_messages import options

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
bans: {base_ttl_s: 300}
modules:
  - {name: ip_controls, allow: [127.0.0.50/32], deny: [127.0.0.66/32]}
  - {name: bans}
  - {name: flood, window_s: 10, limits: {invite: 20, register: 40, options: 20}, ban_after: 3}
  - {name: scanner, max_distinct_failed_users: 10, max_failures: 30}
  - {name: brute_force, max_failures_per_user: 5, max_failures_per_source: 30}
"""


@pytest.fixture(scope="module")
def shield(tmp_path_factory: pytest.TempPathFactory):
    with lab_with_policy(tmp_path_factory.mktemp("shield"), POLICY) as running:
        yield running


def bans(lab: RunningLab) -> dict[str, dict]:
    client = lab.redis
    return {
        scope: client.hgetall(f"sipshield:ban:{scope}")
        for scope in client.zrangebyscore("sipshield:bans", time.time(), "+inf")
    }


def pbx_requests_from(lab: RunningLab, ip: str) -> int:
    """Requests the PBX received whose Call-ID SIPp made at ``ip`` (N-PID@IP)."""
    return sum(1 for line in lab.log("pbx").splitlines() if f"@{ip}" in line and "received" in line)


class Legit:
    """Calls alice -> bob from 127.0.0.1 while an attack runs."""

    def __init__(self, lab: RunningLab, calls: int = 10):
        self.lab, self.calls = lab, calls
        port = free_port()
        self.callee = lab.answer_calls("bob", port, calls=calls)

    def run(self) -> float:
        caller = self.lab.call("alice", "bob", calls=self.calls, rate=5, talk_ms=100)
        answered = self.callee.finish()
        assert answered.successful >= caller.successful
        return caller.successful / self.calls


def attack(lab: RunningLab, scenario: str, source: str, calls: int, rate: float, **options):
    return run_sipp(
        scenario,
        lab.sip_target(),
        local_ip=source,
        calls=calls,
        rate=rate,
        keys={"domain": lab.domain, **options.pop("keys", {})},
        **{"timeout_s": int(calls / rate) + 10, **options},
    )


def test_scanner_user_agent_is_banned_at_once(shield: RunningLab):
    legit = Legit(shield)
    attack(shield, "options_sweep", "127.0.0.21", 30, 30, keys={"user_agent": "friendly-scanner"})
    assert legit.run() >= 0.99
    assert "ip:127.0.0.21" in bans(shield)
    assert bans(shield)["ip:127.0.0.21"]["module"] == "scanner"
    assert pbx_requests_from(shield, "127.0.0.21") == 0


def test_options_sweep_across_extensions_is_banned(shield: RunningLab):
    legit = Legit(shield)
    attack(shield, "options_sweep", "127.0.0.22", 60, 20, keys={"user_agent": "Zoiper 5"})
    assert legit.run() >= 0.99
    assert "ip:127.0.0.22" in bans(shield)
    # 10 distinct failed users are tolerated, the 11th bans; replies in flight add a few.
    assert pbx_requests_from(shield, "127.0.0.22") <= 15


def test_invite_flood_is_banned(shield: RunningLab):
    legit = Legit(shield)
    attack(shield, "invite_flood", "127.0.0.23", 400, 200, service="bob")
    assert legit.run() >= 0.99
    assert "ip:127.0.0.23" in bans(shield)
    assert bans(shield)["ip:127.0.0.23"]["module"] == "flood"
    # Only the allowance (20 INVITEs per window) ever reaches the PBX.
    assert pbx_requests_from(shield, "127.0.0.23") <= 20


def test_register_flood_is_banned(shield: RunningLab):
    legit = Legit(shield)
    attack(shield, "register_flood", "127.0.0.24", 400, 200, service="carol")
    assert legit.run() >= 0.99
    assert "ip:127.0.0.24" in bans(shield)
    assert pbx_requests_from(shield, "127.0.0.24") <= 40


def test_password_guessing_bans_the_user_from_that_source_only(shield: RunningLab, tmp_path):
    guesses = credentials_file(
        tmp_path / "guesses.csv", [("carol", f"guess{n}") for n in range(20)]
    )
    legit = Legit(shield)
    attack(shield, "register_many", "127.0.0.25", 20, 10, injection_file=guesses, timeout_s=8)
    assert legit.run() >= 0.99
    assert "user:127.0.0.25:carol" in bans(shield)
    assert "ip:127.0.0.25" not in bans(shield)
    # 5 failures are tolerated; the 6th bans; every guess costs the PBX 2 requests.
    assert pbx_requests_from(shield, "127.0.0.25") <= 2 * 7
    # carol herself, from elsewhere, still registers; so does dave from the guesser's address.
    assert shield.register("carol").ok
    assert run_sipp(
        "register", shield.sip_target(), local_ip="127.0.0.25", service="dave",
        auth=("dave", shield.password("dave")), keys={"domain": shield.domain},
    ).ok  # fmt: skip


def test_fifty_users_behind_one_nat_address_are_never_banned(shield: RunningLab, tmp_path):
    office = "127.0.0.30"
    users = [u for u in shield.info["users"] if u["username"].startswith("u")][:50]
    crowd = credentials_file(
        tmp_path / "crowd.csv", [(u["username"], u["password"]) for u in users]
    )
    registered = attack(shield, "register_many", office, 50, 25, injection_file=crowd)
    assert registered.successful == 50, registered.explain()
    bob = shield.answer_calls("bob", free_port(), calls=50)
    calls = attack(shield, "call_uac_many", office, 50, 10, service="bob", injection_file=crowd,
                   talk_ms=100)  # fmt: skip
    answered = bob.finish()
    assert calls.successful == 50, calls.explain()
    assert answered.successful == 50
    assert not any(office in scope for scope in bans(shield))


def test_allowlisted_source_is_served_and_never_banned(shield: RunningLab):
    attack(shield, "options_sweep", "127.0.0.50", 5, 10, keys={"user_agent": "friendly-scanner"})
    assert not any("127.0.0.50" in scope for scope in bans(shield))
    # Served, not only unbanned: past the flood limit (20) with a scanner's
    # User-Agent, every request is answered.
    answers = []
    for _ in range(25):
        raw, _call_id = options(shield.sip_target(), "User-Agent: friendly-scanner\r\n")
        answers.append(shield.send(raw, source_ip="127.0.0.50", timeout=1.0))
    assert answers == [200] * 25


def test_deny_list_drops_silently(shield: RunningLab):
    assert shield.options(source_ip="127.0.0.66", timeout=0.5) is None
    assert shield.options(source_ip="127.0.0.67") == 200


def test_manual_ban_and_unban_apply_at_once(shield: RunningLab):
    cli = [sys.executable, "-m", "sipshield.ops.cli", "bans", "--lab", str(shield.directory)]
    assert shield.options(source_ip="127.0.0.70") == 200
    out = subprocess.run([*cli, "add", "127.0.0.70", "--ttl", "600", "--reason", "test"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "banned ip:127.0.0.70 for 600s" in out
    # Every worker drops it on its next request (the change came through pub/sub).
    assert [shield.options(source_ip="127.0.0.70", timeout=0.5) for _ in range(6)] == [None] * 6
    listing = subprocess.run([*cli, "list"], capture_output=True, text=True, check=True).stdout
    assert "ip:127.0.0.70" in listing and "test" in listing
    subprocess.run([*cli, "remove", "127.0.0.70"], check=True, capture_output=True)
    assert [shield.options(source_ip="127.0.0.70") for _ in range(6)] == [200] * 6
    assert Path(shield.info["events"]).exists()
