"""Transfer policy (refer_policy) on REFERs that cross the real SBC inside real calls.

Each test sets up a call between two lab users with :mod:`sipshield.lab.sip_ua`
(caller -> SBC -> PBX -> SBC -> callee, every hop record-routed), then sends
in-dialog REFERs from the caller along the dialog's route set.  The callee
accepts every REFER it receives (202) and keeps it, so a test sees both sides:
what the caller was told, and whether the REFER reached the far end.  The
module's settings are the policy defaults (no ``allow`` list: targets in the
policy's domain only; the default ``deny`` patterns; no REFER from trunks),
next to dialog_guard as in production, so the REFERs also carry real dialog
tokens.
"""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Iterator

import pytest

from sipshield.lab.sip_ua import Answering, Call, SipMessage, UserAgent, sdp
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up

pytestmark = pytest.mark.integration

TRUNK_IP = "127.0.0.30"
POLICY = f"""\
domain: sipshield.lab
peers:
  pbx: {{address: 127.0.0.1:5090}}
  trunks:
    - {{name: carrier, target: "{TRUNK_IP}:5060", sources: [{TRUNK_IP}/32]}}
modules:
  - {{name: validation}}
  - {{name: dialog_guard}}
  - {{name: refer_policy, mode: MODE}}
"""


@pytest.fixture(scope="module")
def refer_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    directory = tmp_path_factory.mktemp("refer-lab")
    policy = directory / "policy.yaml"
    policy.write_text(POLICY.replace("MODE", "enforce"))
    running = lab_up(policy, directory / "lab")
    yield running
    lab_down(running)


class KeepingRefers(Answering):
    """Answers the call like :class:`Answering`; accepts each REFER (202) and keeps it."""

    def __init__(self, ua: UserAgent, answer: str) -> None:
        # Set before the thread starts (in Answering.__init__).
        self.refers: queue.Queue[SipMessage] = queue.Queue()
        super().__init__(ua, answer, 200)

    def _reply(self, request: SipMessage, status: int, reason: str, body: str = "") -> None:
        if request.method == "REFER":
            self.refers.put(request)
            status, reason = 202, "Accepted"
        super()._reply(request, status, reason, body)

    def refer_targets(self) -> list[str]:
        """Refer-To of every REFER received so far."""
        return [r.header("Refer-To") for r in list(self.refers.queue)]


class Dialog:
    """A call from ``caller`` to ``callee`` (answered), and in-dialog requests in it."""

    def __init__(self, lab: RunningLab, caller: UserAgent, callee: UserAgent) -> None:
        self.lab, self.caller = lab, caller
        assert callee.register() == 200
        self.callee = KeepingRefers(callee, sdp(40000, ip=callee.ip))
        self.call: Call = caller.call(callee.user, sdp(40002, ip=caller.ip))
        assert self.call.reply is not None and self.call.reply.status == 200, self.call.reply
        assert self.call.invite is not None
        self.cseq = int(self.call.invite.header("CSeq").split()[0])

    @property
    def call_id(self) -> str:
        return self.call.call_id

    def request(self, method: str, *extra: tuple[str, str]) -> SipMessage:
        """Send an in-dialog request from the caller; return the final reply to it."""
        self.cseq += 1
        message = self.call._in_dialog(method, self.cseq)
        message.headers.extend(extra)
        self.caller.send(message)
        while True:
            reply = self.caller.receive()
            if reply.status >= 200 and reply.header("CSeq") == f"{self.cseq} {method}":
                return reply

    def refer(self, target: str) -> SipMessage:
        return self.refer_to(f"<{target}>")

    def refer_to(self, *values: str) -> SipMessage:
        """A REFER with these Refer-To header values, one header each."""
        referred_by = f"<sip:{self.caller.user}@{self.lab.domain}>"
        headers = [("Refer-To", value) for value in values]
        return self.request("REFER", *headers, ("Referred-By", referred_by))

    def hang_up(self) -> None:
        """BYE from the caller; returns once the callee has answered it (and stopped)."""
        assert self.request("BYE").status == 200
        assert self.callee.done.wait(10), "the callee never finished"
        assert self.callee.error is None, self.callee.error

    def pbx_refers(self) -> int:
        """REFERs of this call the lab PBX received (the hop between the two SBC crossings)."""
        pattern = rf"pbx: received REFER .* call-id={re.escape(self.call_id)}$"
        return len(re.findall(pattern, self.lab.log("pbx"), re.MULTILINE))


def refer_event(lab: RunningLab, call_id: str, naming: str, timeout: float = 5.0) -> dict:
    """The refer_policy event of ``call_id`` whose reason names ``naming``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in lab.events():
            if (
                event.get("module") == "refer_policy"
                and event.get("call_id") == call_id
                and naming in event.get("reason", "")
            ):
                return event
        time.sleep(0.1)
    raise AssertionError(f"no refer_policy event naming {naming!r} for {call_id}")


def refer_events(lab: RunningLab, call_id: str) -> list[dict]:
    return [e for e in lab.events() if e["module"] == "refer_policy" and e["call_id"] == call_id]


def test_transfer_to_a_user_of_the_domain_reaches_the_far_end(refer_lab):
    lab = refer_lab
    caller, callee = (
        UserAgent(lab, "alice", ip="127.0.0.40"),
        UserAgent(lab, "bob", ip="127.0.0.41"),
    )
    try:
        dialog = Dialog(lab, caller, callee)
        # Blind transfer, then attended (Replaces in the Refer-To's headers).
        blind = f"sip:carol@{lab.domain}"
        attended = f"sip:dave@{lab.domain}?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2"
        for target in (blind, attended):
            reply = dialog.refer(target)
            # The callee's own answer, relayed back: not a refusal from the SBC.
            assert reply.status == 202, reply
            received = dialog.callee.refers.get(timeout=5)
            assert received.header("Refer-To") == f"<{target}>"
            assert received.header("Call-ID") == dialog.call_id
        dialog.hang_up()
        assert dialog.pbx_refers() == 2
        assert refer_events(lab, dialog.call_id) == []
    finally:
        caller.close()
        callee.close()


DENIED = "denied by refer_policy.deny"
# Refer-To header values (one header each), what the event says, the reply code.
REFUSED_TARGETS = {
    "international-plus": (["<sip:+441632960123@sipshield.lab>"], DENIED, 403),
    "international-00": (["<sip:00441632960123@sipshield.lab>"], DENIED, 403),
    "premium-tel": (["<tel:0900123456>"], DENIED, 403),
    "premium-sip": (["<sip:1900555@sipshield.lab;user=phone>"], DENIED, 403),
    "foreign": (["<sip:bob@fraud.example>"], "outside the domain sipshield.lab", 403),
    # Spelled to slip past the patterns; the far end dials them all the same.
    "escaped-plus": (["<sip:%2B441632960123@sipshield.lab>"], DENIED, 403),
    "visual-separators": (["<sip:(0900)123456@sipshield.lab;user=phone>"], DENIED, 403),
    "display-name-decoy": (
        ['"x <sip:carol@sipshield.lab>" <sip:+441632960123@sipshield.lab>'],
        DENIED,
        403,
    ),
    "two-refer-to": (
        ["<sip:carol@sipshield.lab>", "<sip:+441632960123@sipshield.lab>"],
        "2 Refer-To targets",
        400,
    ),
}


@pytest.mark.parametrize(
    ("index", "refer_to", "naming", "code"),
    [(i, *case) for i, case in enumerate(REFUSED_TARGETS.values())],
    ids=list(REFUSED_TARGETS),
)
def test_transfer_to_premium_international_or_foreign_target_is_refused(
    refer_lab, index, refer_to, naming, code
):
    lab = refer_lab
    # Users and addresses of their own: the lab is shared by the module.
    caller = UserAgent(lab, f"u{1010 + 2 * index}", ip=f"127.0.0.{50 + 2 * index}")
    callee = UserAgent(lab, f"u{1011 + 2 * index}", ip=f"127.0.0.{51 + 2 * index}")
    try:
        dialog = Dialog(lab, caller, callee)
        refused = dialog.refer_to(*refer_to)
        assert refused.status == code, refused
        event = refer_event(lab, dialog.call_id, naming)
        assert (event["action"], event["mode"], event["method"]) == ("reject", "enforce", "REFER")
        assert event["src"].startswith(f"{caller.ip}:")

        # The call itself is untouched: a transfer inside the domain still goes through.
        allowed = f"sip:carol@{lab.domain}"
        assert dialog.refer(allowed).status == 202
        dialog.hang_up()
        # The far end saw only the allowed REFER, and so did the PBX in between.
        assert dialog.callee.refer_targets() == [f"<{allowed}>"]
        assert dialog.pbx_refers() == 1
        assert len(refer_events(lab, dialog.call_id)) == 1
    finally:
        caller.close()
        callee.close()


def test_refer_from_a_trunk_is_refused_whatever_the_target(refer_lab):
    # The blind-transfer target users may use (first test): only the source differs.
    lab = refer_lab
    trunk, callee = UserAgent(lab, "carol", ip=TRUNK_IP), UserAgent(lab, "dave", ip="127.0.0.42")
    try:
        dialog = Dialog(lab, trunk, callee)
        refused = dialog.refer(f"sip:carol@{lab.domain}")
        assert refused.status == 403, refused
        event = refer_event(lab, dialog.call_id, "REFER from trunk carrier")
        assert event["src"].startswith(f"{TRUNK_IP}:") and event["mode"] == "enforce"
        # The trunk's other in-dialog requests still pass: the BYE ends the call.
        dialog.hang_up()
        assert dialog.callee.refer_targets() == []
        assert dialog.pbx_refers() == 0
    finally:
        trunk.close()
        callee.close()


def test_monitor_mode_lets_a_premium_transfer_through_and_reports_it(make_lab):
    lab = make_lab(POLICY.replace("MODE", "monitor"))
    caller, callee = (
        UserAgent(lab, "u1030", ip="127.0.0.43"),
        UserAgent(lab, "u1031", ip="127.0.0.44"),
    )
    try:
        dialog = Dialog(lab, caller, callee)
        target = "tel:0900123456"
        assert dialog.refer(target).status == 202
        dialog.hang_up()
        assert dialog.callee.refer_targets() == [f"<{target}>"]
        event = refer_event(lab, dialog.call_id, target)
        assert (event["action"], event["mode"]) == ("reject", "monitor")
    finally:
        caller.close()
        callee.close()
