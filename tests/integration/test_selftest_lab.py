"""``sipshield selftest`` against the lab: every attack gets the verdict its policy implies.

The lab runs the example policy; the selftest attacks it from addresses of
its own (127.0.0.40-47) with two of the lab's users as test accounts, then
lifts the bans it caused.  The verdicts expected are written out here, not
taken from the selftest.  Beside the attacks, the lab's users still register
and call.  A second lab runs the same policy with the defences off: told to
expect the example policy, the selftest sees every attack a module should
stop get through, and fails.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from sipshield.lab.sip_ua import UserAgent, sdp
from tests.integration.conftest import EXAMPLE_POLICY
from tests.integration.lab_fixture import SIPSHIELD, RunningLab, lab_down, lab_up, lab_with_policy

pytestmark = pytest.mark.integration

SOURCES = [f"127.0.0.{n}" for n in range(40, 48)]
USERS_SOURCE = SOURCES[0]
# The example policy's verdicts: everything stopped but plain RTP, which
# media.users.srtp: optional allows.
EXPECTED = {
    "fingerprint-sbc": "stopped",
    "fingerprint-relayed": "stopped",
    "enumeration": "stopped",
    "malformed": "stopped",
    "tls-old-versions": "stopped",
    "tls-weak-ciphers": "stopped",
    "forged-bye": "stopped",
    "forged-cancel": "stopped",
    "premium-refer": "stopped",
    "srtp-downgrade": "not stopped",
    "sdes-plain": "stopped",
    "notify-check-sync": "stopped",
    "rtp-injection": "stopped",
    "password-guessing": "stopped",
    "slow-sweep": "stopped",
    "flood-options": "stopped",
    "flood-register": "stopped",
    "flood-invite": "stopped",
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    running = lab_up(EXAMPLE_POLICY, tmp_path_factory.mktemp("selftest"))
    yield running
    lab_down(running)


def selftest(lab: RunningLab, policy: str, *options: str) -> tuple[int, dict]:
    target = lab.sip_target("udp")
    users = [f"{u}:{lab.password(u)}" for u in ("alice", "bob")]
    proc = subprocess.run(
        [
            *SIPSHIELD, "selftest", "--target", target, "--tls", lab.sip_target("tls"),
            "--policy", policy, "--confirm", target, "--json",
            *(f"--account={u}" for u in users),
            *(f"--source={s}" for s in SOURCES),
            *options,
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.stdout.startswith("{"), proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_every_attack_gives_its_expected_verdict_and_users_still_call(lab: RunningLab):
    code, report = selftest(lab, lab.info["policy"], "--lift-bans")
    observed = {r["attack"]: r["observed"] for r in report["results"]}
    assert observed == EXPECTED, json.dumps(report["results"], indent=1)
    assert [r["status"] for r in report["results"]] == ["pass"] * len(EXPECTED)
    assert code == 0 and report["passed"] is True
    by_name = {r["attack"]: r for r in report["results"]}
    assert by_name["fingerprint-relayed"]["evidence"] == "no product or version in the replies"
    assert by_name["forged-bye"]["evidence"].startswith("forged BYE answered 403")
    assert "the caller's RTP still arrives" in by_name["rtp-injection"]["evidence"]

    # The bans it caused are lifted: nothing left on the lab.
    bans = subprocess.run(
        [*SIPSHIELD, "bans", "--lab", str(lab.directory), "list"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert bans.stdout.strip() == "no active bans"

    # Legitimate traffic from the test accounts' address, and from elsewhere.
    for ip in (USERS_SOURCE, "127.0.0.1"):
        callee, caller = UserAgent(lab, "bob", ip=ip), UserAgent(lab, "alice", ip=ip)
        try:
            assert callee.register() == 200
            callee.answer_in_background(sdp(40000, ip=ip))
            call = caller.call("bob", sdp(40002, ip=ip))
            assert call.reply is not None and call.reply.status == 200, call.reply
            assert call.bye() == 200
        finally:
            caller.close()
            callee.close()


# The modules each attack relies on, switched off in the unprotected lab.
SWITCHED_OFF = (
    "validation", "flood", "scanner", "brute_force", "sdes_guard", "dialog_guard",
    "cancel_guard", "refer_policy", "device_control",
)  # fmt: skip
# What the unprotected lab lets through: everything but what no module does
# (kamailio.cfg's own signature, the TLS settings, the PBX's uniform answers).
UNPROTECTED = {
    **{name: "not stopped" for name in EXPECTED},
    "fingerprint-sbc": "stopped",
    "enumeration": "stopped",
    "tls-old-versions": "stopped",
    "tls-weak-ciphers": "stopped",
}


def unprotected_policy() -> str:
    text = EXAMPLE_POLICY.read_text()
    for name in SWITCHED_OFF:
        enforcing = f"  - name: {name}\n    mode: enforce"
        assert enforcing in text, name
        text = text.replace(enforcing, f'  - name: {name}\n    mode: "off"', 1)
    strict = "    strict_source: true "
    assert strict in text
    text = text.replace(strict, "    strict_source: false ", 1)
    stripped = "  strip_headers: [Server, User-Agent, Warning, Organization]"
    assert stripped in text
    return text.replace(stripped, "  strip_headers: []", 1)


def test_with_the_defences_off_every_attack_gets_through_and_the_selftest_fails(tmp_path):
    with lab_with_policy(tmp_path, unprotected_policy()) as lab:
        # Expecting the example policy: each attack a module should stop gets through.
        code, report = selftest(lab, str(EXAMPLE_POLICY))
        observed = {r["attack"]: r["observed"] for r in report["results"]}
        assert observed == UNPROTECTED, json.dumps(report["results"], indent=1)
        failed = {r["attack"] for r in report["results"] if r["status"] == "FAIL"}
        assert failed == {a for a, seen in UNPROTECTED.items() if seen != EXPECTED[a]}
        assert code == 1 and report["passed"] is False
        by_name = {r["attack"]: r for r in report["results"]}
        assert by_name["flood-options"]["evidence"] == (
            "100 of 100 answered; 10 of the last 10 answered"
        )
        assert by_name["forged-bye"]["evidence"].startswith("forged BYE answered 200")

        # Told the policy the lab really runs, the selftest expects just that.
        code, report = selftest(lab, lab.info["policy"], "--only", "flood-options")
        [result] = report["results"]
        assert (result["expected"], result["observed"], result["status"]) == (
            "not stopped", "not stopped", "pass",
        )  # fmt: skip
        assert code == 0

        # Too slow a rate to cross a limit proves nothing: the flood is not sent.
        code, report = selftest(lab, lab.info["policy"], "--only", "flood-options", "--rate", "15")
        [result] = report["results"]
        assert result["status"] == "skipped" and "take longer than half" in result["evidence"]
        assert code == 0
