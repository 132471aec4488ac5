"""Call hijack, call disruption and registration hijack, against the real lab.

Legitimate users call and register from 127.0.0.1 with SIPp; the attacker is
127.0.0.66 and knows everything an on-path observer sees: the callee logs the
dialog it receives (SIPp's message trace), and the attacker copies the
Call-ID, the tags, the Via and the whole Route set, tokens included, into its
forged requests.  Each test checks that the forgery is refused, that the
callee never saw it (SIPp fails a call on any unexpected message) and that the
real call or registration still succeeds.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from pathlib import Path

import pytest
import yaml

from sipshield.lab.net import free_port
from sipshield.lab.sip_ua import RtpPeer, UserAgent, sdp
from sipshield.lab.sipp import SippResult, SippServer, run_sipp
from sipshield.sip.dialog_tokens import rotate_key_file
from tests.integration.lab_fixture import RunningLab, lab_with_policy

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.66"
POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - {name: validation}
  - {name: dialog_guard}
  - {name: cancel_guard}
  - {name: registration_guard, on_move: deny}
  - {name: refer_policy}
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    with lab_with_policy(tmp_path_factory.mktemp("hijack"), POLICY) as running:
        yield running


def key_file(lab: RunningLab) -> Path:
    policy = yaml.safe_load(Path(lab.info["policy"]).read_text())
    entry = next(m for m in policy["modules"] if m["name"] == "dialog_guard")
    return Path(entry["key_file"])


class TracedCallee(SippServer):
    """A SIPp UAS registered as ``user`` that logs every message it sees.

    Each test takes a callee user of its own: the lab is shared by the module,
    and a contact an earlier test registered for the same user would have this
    test's INVITEs forked to it.
    """

    def __init__(self, lab: RunningLab, user: str, scenario: str, pause_ms: int = 500) -> None:
        self.user = user
        self.port = free_port()
        registered = lab.register(user, local_port=self.port)
        assert registered.ok, registered.explain()
        super().__init__(
            scenario,
            local_port=self.port,
            keys={"domain": lab.domain},
            talk_ms=pause_ms,
            # Relative to SIPp's working directory, the server's workdir.
            extra_argv=("-trace_msg", "-message_file", "messages.log"),
        )
        self.trace = self.workdir / "messages.log"

    def received(self, method: str, timeout: float = 10.0) -> str:
        """The first ``method`` request the callee received (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.trace.read_text(errors="replace") if self.trace.exists() else ""
            for block in text.split("UDP message received")[1:]:
                message = block.split("\n\n", 1)[1] if "\n\n" in block else ""
                message = message.split("\n-----", 1)[0]
                if message.startswith(f"{method} "):
                    return message
            time.sleep(0.1)
        raise AssertionError(f"the callee received no {method}")

    def sent_tag(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.trace.read_text(errors="replace") if self.trace.exists() else ""
            match = re.search(r"^To: .*;tag=(\S+)", text.split("message sent", 1)[-1], re.M)
            if "message sent" in text and match:
                return match.group(1)
            time.sleep(0.1)
        raise AssertionError("the callee sent no reply with a To tag")

    def finish(self, timeout: float = 40.0) -> SippResult:
        return super().finish(timeout_s=timeout)


def header(message: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(.*)$", message, re.M | re.I)
    assert match, f"no {name} in\n{message}"
    return match.group(1).strip()


def record_routes(message: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^Record-Route:\s*(<[^>]*>)", message, re.M)]


def forged(
    method: str,
    ruri: str,
    routes: list[str],
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    body: str = "",
    via: str = "",
) -> bytes:
    via = via or f"SIP/2.0/UDP {ATTACKER}:5060;branch=z9hG4bK{secrets.token_hex(8)};rport"
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: {via}",
        *(f"Route: {route}" for route in routes),
        "Max-Forwards: 70",
        f"From: {from_}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{ATTACKER}:5060>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


class Call:
    """alice calls ``callee`` in the background; the dialog as an observer saw it."""

    def __init__(
        self, lab: RunningLab, callee: TracedCallee, scenario: str = "call_uac", talk_ms: int = 4000
    ) -> None:
        self.lab, self.callee = lab, callee
        self.result: SippResult | None = None

        def run() -> None:
            self.result = run_sipp(
                scenario,
                lab.sip_target(),
                service=self.callee.user,
                auth=("alice", lab.password("alice")),
                keys={"domain": lab.domain, "caller": "alice"},
                talk_ms=talk_ms,
            )

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def dialog(self) -> dict[str, str | list[str]]:
        invite = self.callee.received("INVITE")
        self.callee.received("ACK")
        caller_from = header(invite, "From")
        return {
            "invite": invite,
            "routes": record_routes(invite),
            "call_id": header(invite, "Call-ID"),
            "caller_from": caller_from,
            "caller_contact": re.sub(r"^<|>$", "", header(invite, "Contact")),
            "callee_to": f"{header(invite, 'To')};tag={self.callee.sent_tag()}",
            "callee_uri": f"sip:127.0.0.1:{self.callee.port};transport=UDP",
        }

    def forge_as_caller(self, method: str, cseq: int = 90, body: str = "", **change: str) -> bytes:
        d = self.dialog()
        routes = list(reversed(d["routes"]))
        return forged(
            method,
            str(d["callee_uri"]),
            change.get("routes", routes),  # type: ignore[arg-type]
            str(d["caller_from"]),
            str(d["callee_to"]),
            str(d["call_id"]),
            cseq,
            body,
        )

    def forge_as_callee(self, method: str, cseq: int = 90) -> bytes:
        d = self.dialog()
        swap_to = str(d["caller_from"]).replace("From", "To")
        return forged(
            method,
            str(d["caller_contact"]),
            list(d["routes"]),
            str(d["callee_to"]),
            swap_to,
            str(d["call_id"]),
            cseq,
        )

    def finish(self) -> tuple[SippResult, SippResult]:
        self.thread.join(timeout=60)
        assert self.result is not None
        return self.result, self.callee.finish()


def dialog_events(lab: RunningLab, call_id: str) -> list[dict]:
    return [e for e in lab.events() if e.get("call_id") == call_id]


def test_forged_bye_is_rejected_and_the_call_goes_on(guarded: RunningLab):
    callee = TracedCallee(guarded, "u1041", "call_uas")
    call = Call(guarded, callee)
    d = call.dialog()
    as_caller = call.forge_as_caller("BYE")
    as_callee = call.forge_as_callee("BYE")
    assert guarded.send(as_caller, source_ip=ATTACKER) == 403
    assert guarded.send(as_callee, source_ip=ATTACKER) == 403
    # Right IP, wrong port: a spoofer that cannot pick its source port.
    assert guarded.send(as_caller, source_ip="127.0.0.1") == 403
    caller, answered = call.finish()
    assert caller.ok, caller.explain()
    assert answered.ok, answered.explain()
    events = dialog_events(guarded, str(d["call_id"]))
    assert [e["module"] for e in events] == ["dialog_guard"] * 3
    assert all(e["action"] == "reject" and e["method"] == "BYE" for e in events)
    assert events[0]["src"].startswith(ATTACKER)


def test_tampered_token_and_unknown_key_are_rejected(guarded: RunningLab):
    callee = TracedCallee(guarded, "u1042", "call_uas")
    call = Call(guarded, callee)
    d = call.dialog()
    routes = list(reversed(d["routes"]))
    tampered = [re.sub(r"(shd=[^.]+\.[^.]+\.)(.)", lambda m: m.group(1) + "A", routes[0])]
    unknown = [re.sub(r"shd=[^.]+", "shd=nokey", routes[0])]
    stripped = [re.sub(r";shd=[^;>]+", "", routes[0])]
    for routes_sent in (tampered, unknown, stripped):
        raw = call.forge_as_caller("BYE", routes=routes_sent + routes[1:])  # type: ignore[arg-type]
        assert guarded.send(raw, source_ip=ATTACKER) == 403
    caller, answered = call.finish()
    assert caller.ok, caller.explain()
    assert answered.ok, answered.explain()
    reasons = [e["reason"] for e in dialog_events(guarded, str(d["call_id"]))]
    assert any("does not verify" in r for r in reasons), reasons
    assert any("unknown key 'nokey'" in r for r in reasons), reasons
    assert any("no dialog token" in r for r in reasons), reasons


def test_third_party_reinvite_is_rejected_and_a_real_hold_succeeds(guarded: RunningLab):
    callee = TracedCallee(guarded, "u1043", "call_uas_hold")
    call = Call(guarded, callee, scenario="call_uac_hold", talk_ms=3000)
    d = call.dialog()
    sdp = (
        "v=0\r\no=x 1 2 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\n"
        "t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
    assert guarded.send(call.forge_as_caller("INVITE", body=sdp), source_ip=ATTACKER) == 403
    caller, answered = call.finish()
    assert caller.ok, caller.explain()
    assert answered.ok, answered.explain()
    events = dialog_events(guarded, str(d["call_id"]))
    assert [(e["module"], e["method"]) for e in events] == [("dialog_guard", "INVITE")]


def test_forged_cancel_is_rejected_and_the_call_completes(guarded: RunningLab):
    callee = TracedCallee(guarded, "u1044", "call_uas_ringing", pause_ms=3000)
    call = Call(guarded, callee, talk_ms=500)
    invite = callee.received("INVITE")
    # The caller's Via, as the INVITE carried it (the bottom one): branch and sent-by.
    caller_via = re.findall(r"^Via:\s*(.*)$", invite, re.M)[-1]
    caller_via = re.sub(r";received=[^;]+|;rport=\d+", "", caller_via) + ";rport"
    cancel = forged(
        "CANCEL",
        f"sip:bob@{guarded.domain}",
        [],
        header(invite, "From"),
        header(invite, "To"),
        header(invite, "Call-ID"),
        int(header(invite, "CSeq").split()[0]),
        via=caller_via,
    )
    assert guarded.send(cancel, source_ip=ATTACKER) == 403
    # A CANCEL that matches no INVITE at all.
    stray = cancel.replace(b"branch=z9hG4bK", b"branch=z9hG4bKstray")
    assert guarded.send(stray, source_ip=ATTACKER) == 481
    caller, answered = call.finish()
    assert caller.ok, caller.explain()
    assert answered.ok, answered.explain()
    event = guarded.wait_for_event(module="cancel_guard", call_id=header(invite, "Call-ID"))
    assert event["action"] == "reject" and event["src"].startswith(ATTACKER)


def test_the_callers_own_cancel_passes_cancel_guard(guarded: RunningLab):
    # The legitimate counterpart of the forged CANCEL: the caller hangs up
    # while the callee rings; the CANCEL comes from the INVITE's own source.
    caller = UserAgent(guarded, "u1031", ip="127.0.0.45")
    callee = UserAgent(guarded, "u1032", ip="127.0.0.46")
    try:
        assert callee.register() == 200
        ringing = callee.answer_in_background(sdp(40010, ip=callee.ip), status=180)
        call = caller.call("u1032", sdp(40012, ip=caller.ip), cancel_on_ringing=True)
        assert call.reply is not None and call.reply.status == 487, call.reply
        ringing.done.wait(10)
        assert ringing.cancelled, "the callee never got the CANCEL"
        refused = [
            e
            for e in guarded.events()
            if e["module"] == "cancel_guard" and e["call_id"] == call.call_id
        ]
        assert refused == [], refused
    finally:
        caller.close()
        callee.close()


def register_request(
    lab: RunningLab, aor: str, from_user: str, expires: int, extra: str = ""
) -> bytes:
    domain = lab.domain
    return (
        f"REGISTER sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {ATTACKER}:5060;branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{from_user}@{domain}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{aor}@{domain}>\r\n"
        f"Call-ID: {secrets.token_hex(10)}@{ATTACKER}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{aor}@{ATTACKER}:5060>\r\n"
        f"Expires: {expires}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_registration_hijack_attempts_fail(guarded: RunningLab):
    port = free_port()
    registered = guarded.register("carol", local_port=port)
    assert registered.ok, registered.explain()
    fingerprint = guarded.redis.hgetall("sipshield:regfp:carol")
    assert fingerprint["ip"] == "127.0.0.1" and fingerprint["port"] == str(port)
    creds = 'Authorization: Digest username="dave", realm="sipshield.lab", nonce="x", uri="sip:sipshield.lab", response="0"\r\n'  # noqa: E501
    attempts = {
        "third party (From)": register_request(guarded, "carol", "dave", 300),
        "third party (credentials)": register_request(guarded, "carol", "carol", 300, creds),
        "de-registration from elsewhere": register_request(guarded, "carol", "carol", 0),
        "binding move": register_request(guarded, "carol", "carol", 300),
    }
    for what, raw in attempts.items():
        assert guarded.send(raw, source_ip=ATTACKER) == 403, what
    reasons = [e["reason"] for e in guarded.events() if e["module"] == "registration_guard"]
    assert any("third-party registration of 'carol' by 'dave'" in r for r in reasons)
    assert any("unauthenticated de-registration" in r for r in reasons)
    assert any("moves" in r for r in reasons)
    assert f"@{ATTACKER}" not in guarded.log("pbx")
    # carol herself re-registers, then de-registers, from where she registered.
    again = guarded.register("carol", local_port=port)
    assert again.ok, again.explain()
    gone = run_sipp(
        "register",
        guarded.sip_target(),
        service="carol",
        auth=("carol", guarded.password("carol")),
        keys={"domain": guarded.domain, "expires": "0"},
        local_port=port,
    )
    assert gone.ok, gone.explain()


def test_rotated_key_keeps_existing_dialogs_and_signs_new_ones(guarded: RunningLab):
    keys = key_file(guarded)
    callee = TracedCallee(guarded, "u1045", "call_uas")
    old_call = Call(guarded, callee, talk_ms=5000)
    old_kid = re.search(r"shd=([^.]+)", old_call.dialog()["routes"][0]).group(1)  # type: ignore[arg-type, union-attr]
    new_kid = rotate_key_file(keys)
    time.sleep(1.5)  # workers look at the key file at most once a second
    new_callee = TracedCallee(guarded, "dave", "call_uas")
    new_call = run_sipp(
        "call_uac",
        guarded.sip_target(),
        service="dave",
        auth=("carol", guarded.password("carol")),
        keys={"domain": guarded.domain, "caller": "carol"},
    )
    invite = new_callee.received("INVITE")
    assert new_call.ok, new_call.explain()
    assert new_callee.finish().ok
    assert f"shd={new_kid}." in invite and f"shd={old_kid}." not in invite
    # The dialog signed with the previous key ends cleanly (its BYE verifies).
    caller, answered = old_call.finish()
    assert caller.ok, caller.explain()
    assert answered.ok, answered.explain()


@pytest.mark.parametrize(
    ("transport", "caller", "callee"), [("udp", "u1045", "u1046"), ("tls", "u1047", "u1048")]
)
def test_the_ack_of_a_challenged_invite_through_an_outbound_proxy_passes(
    guarded: RunningLab, transport: str, caller: str, callee: str
):
    # A phone with an outbound proxy preloads the SBC as a Route, and the ACK
    # of the PBX's 407 copies it (RFC 3261 17.1.1.3).  That ACK belongs to the
    # INVITE's transaction, not to a dialog: it must not need a dialog token.
    answerer = UserAgent(guarded, callee, ip="127.0.0.71")
    assert answerer.register() == 200
    phone = UserAgent(guarded, caller, transport, ip="127.0.0.72", outbound_proxy=True)
    answering = answerer.answer_in_background(sdp(RtpPeer().port))
    call = phone.call(callee, sdp(RtpPeer().port))
    assert call.invite is not None and call.invite.header("Route"), "no outbound Route"
    # Refused, the ACK would leave the 407 unacknowledged: retransmitted (UDP)
    # in place of the 200.
    assert call.reply is not None and call.reply.status == 200, call.reply
    answering.wait()
    assert call.bye() == 200
    # The ACK crossed before the second INVITE, the 200 and the BYE.
    assert dialog_events(guarded, call.call_id) == []
    for ua in (answerer, phone):
        ua.close()
