"""The leak test: nothing of the inside reaches an outside party (docs/topology-hiding.md).

The lab PBX has its own address (127.0.0.50) and names itself the way PBXs
do (Server and User-Agent with its software and version, Warning with its
address).  A corpus of flows runs through the SBC between outside user
agents, each flow checking its own outcome, and every byte each outside
party received is searched for the PBX's address, its port and its software
string.  With topology hiding on, none is found; the same corpus with hiding
off finds them, so the search and the corpus can see a leak.

Beside the leak, the records topos keeps in Redis are checked for what its
issue tracker reports: every record expires, a failed or cancelled call's
within minutes (sipshield cuts them short), a re-INVITE does not extend a
dialog's record, and a call that outlives its record cannot be ended (so
the dialog lifetime must outlast the longest call; 12 h by default).
"""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sipshield.edge.topology_hiding import ENDED_DIALOG_LIFETIME_S
from sipshield.lab.net import free_port
from sipshield.lab.sip_ua import RtpPeer, SipMessage, UserAgent, sdp
from sipshield.lab.stack import LAB_NUMBERED_USERS
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up
from tests.integration.test_lab_presence import WATCH_PRESENCE, in_dialog, notify_until
from tests.integration.two_nodes import restart_pbx_with
from tests.integration.wire import wait_until

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {{address: 127.0.0.1:5090}}
  trunks:
    - {{name: far-carrier, target: "{trunk}", numbers: ["{prefix}"]}}
topology_hiding: {{{hiding}}}
media:
  rtpengine: {{ng: ["127.0.0.1:2223"]}}
  users: {{srtp: optional}}
modules:
  - {{name: validation}}
  - {{name: dialog_guard}}
  - {{name: cancel_guard}}
"""
# Each party of each flow is a user of its own (the lab PBX forks to every binding).
_USERS = iter(LAB_NUMBERED_USERS)
# What topos keeps in Redis (topos_redis): dialog and branch records.
TOPOS_KEYS = ("d:z:*", "b:x:*")


# A trunk of another provider, played by a user agent of the test: calls to
# its numbers leave the PBX through the SBC with the PBX's P-Asserted-Identity.
TRUNK_IP, TRUNK_PREFIX = "127.0.0.60", "+4420"


def start_lab(directory: Path, enabled: bool) -> RunningLab:
    trunk = f"{TRUNK_IP}:{free_port(TRUNK_IP)}"
    # Off is all of it: no topos, and the PBX's headers neither stripped nor rewritten.
    hiding = (
        "enabled: true" if enabled else "enabled: false, strip_headers: [], rewrite_headers: []"
    )
    policy = POLICY.format(hiding=hiding, trunk=trunk, prefix=TRUNK_PREFIX)
    (directory / "policy.yaml").write_text(policy)
    lab = lab_up(directory / "policy.yaml", directory / "lab")
    try:
        # The PBX asserts callers at its own address, as PBXs without a domain do.
        restart_pbx_with(lab, "PBX_NAMES_ITSELF")
    except BaseException:
        lab_down(lab)
        raise
    return lab


def trunk_address(lab: RunningLab) -> tuple[str, int]:
    policy = yaml.safe_load(Path(lab.info["policy"]).read_text())
    target = next(t["target"] for t in policy["peers"]["trunks"] if t["name"] == "far-carrier")
    host, _, port = target.rpartition(":")
    return host, int(port)


def socket_at(address: tuple[str, int]) -> Callable[[int], socket.socket]:
    """A socket opener for a user agent that must listen where the policy says."""

    class AtAddress(socket.socket):
        def bind(self, _: object) -> None:
            super().bind(address)

    return lambda kind: AtAddress(socket.AF_INET, kind)


@pytest.fixture(scope="module")
def hidden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    lab = start_lab(tmp_path_factory.mktemp("hiding-on"), enabled=True)
    yield lab
    lab_down(lab)


@pytest.fixture(scope="module")
def visible(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    lab = start_lab(tmp_path_factory.mktemp("hiding-off"), enabled=False)
    yield lab
    lab_down(lab)


@dataclass
class Corpus:
    """The outside parties of each flow, and the Call-IDs of its calls."""

    lab: RunningLab
    parties: dict[str, list[UserAgent]] = field(default_factory=dict)
    call_ids: dict[str, list[str]] = field(default_factory=dict)
    # The P-Asserted-Identity of each call between users, as the callee got it.
    asserted: list[str] = field(default_factory=list)
    _next_ip: int = 10

    def party(self, flow: str, register: bool = False, transport: str = "udp") -> UserAgent:
        """A new outside party: a user no other flow uses (no stale registration
        to fork to), on its own address (a flow's bytes are its own)."""
        user = next(_USERS)
        self._next_ip += 1
        ua = UserAgent(self.lab, user, transport, ip=f"127.0.0.{self._next_ip}")
        self.parties.setdefault(flow, []).append(ua)
        if register:
            assert ua.register() == 200, f"{flow}: {user} could not register"
        return ua

    def received(self, flow: str) -> bytes:
        return b"".join(data for ua in self.parties[flow] for data in ua.received)

    def close(self) -> None:
        for uas in self.parties.values():
            for ua in uas:
                ua.close()


def offer(ip: str = "127.0.0.1") -> str:
    return sdp(RtpPeer().port, "RTP/AVP", ip)


def answered_call(corpus: Corpus, flow: str, transport: str = "udp"):
    callee_ua = corpus.party(flow, register=True, transport=transport)
    caller_ua = corpus.party(flow, transport=transport)
    answering = callee_ua.answer_in_background(offer())
    call = caller_ua.call(callee_ua.user, offer())
    assert call.reply is not None and call.reply.status == 200, (flow, call.reply)
    assert answering.acked.wait(5), f"{flow}: the callee got no ACK"
    corpus.call_ids.setdefault(flow, []).append(call.call_id)
    assert answering.invite is not None
    corpus.asserted.append(answering.invite.header("P-Asserted-Identity"))
    return caller_ua, callee_ua, call, answering


def in_dialog_request(call, method: str, *extra: tuple[str, str], body: str = "") -> SipMessage:
    call.ua.cseq += 10
    request = call._in_dialog(method, call.ua.cseq, body)
    request.headers += list(extra)
    return request


# --- the flows: each asserts its own outcome ---------------------------------------


def register(corpus: Corpus) -> None:
    corpus.party("register", register=True)


def call_hold_and_caller_hangs_up(corpus: Corpus) -> None:
    flow = "call, hold, caller hangs up"
    _, _, call, answering = answered_call(corpus, flow)
    held = call.reinvite(offer() + "a=sendonly\r\n")
    assert held.status == 200, held.start
    assert call.bye() == 200
    assert answering.done.wait(5) and answering.error is None, answering.error


def call_the_other_way_and_callee_hangs_up(corpus: Corpus) -> None:
    flow = "call the other way, callee hangs up"
    caller, callee, call, answering = answered_call(corpus, flow)
    callee.send(answering.bye())
    bye = caller.next_request()
    assert bye.method == "BYE" and bye.header("Call-ID") == call.call_id, bye.start
    caller.reply(bye, 200, "OK")
    # The callee's answering thread takes the BYE's 200 (and ignores it).
    assert wait_until(lambda: any(b"CSeq: 1 BYE" in data for data in callee.received[-3:]))


def call_over_tls(corpus: Corpus) -> None:
    flow = "call over TLS, both ends"
    _, _, call, answering = answered_call(corpus, flow, "tls")
    assert call.bye() == 200
    assert answering.done.wait(5) and answering.error is None, answering.error


def call_through_a_trunk(corpus: Corpus) -> None:
    flow = "a call to a number, out through a trunk"
    caller = corpus.party(flow, register=True)
    host, port = trunk_address(corpus.lab)
    trunk = UserAgent(corpus.lab, "trunk", ip=host, open_socket=socket_at((host, port)))
    corpus.parties[flow].append(trunk)
    answering = trunk.answer_in_background(offer())
    call = caller.call(f"{TRUNK_PREFIX}79460000", offer())
    assert call.reply is not None and call.reply.status == 200, call.reply
    invite = answering.wait()
    # The PBX asserts the calling account, in the domain: nothing of the inside.
    assert invite.header("P-Asserted-Identity") == f"<sip:{caller.user}@{corpus.lab.domain}>"
    assert call.bye() == 200
    assert answering.done.wait(5) and answering.error is None, answering.error
    corpus.call_ids.setdefault(flow, []).append(call.call_id)


def blind_and_attended_transfer(corpus: Corpus) -> None:
    flow = "blind and attended transfer (REFER, Replaces)"
    caller, _, call, answering = answered_call(corpus, flow)
    domain = corpus.lab.domain
    target = next(_USERS)
    caller.send(in_dialog_request(call, "REFER", ("Refer-To", f"<sip:{target}@{domain}>")))
    assert caller.response().status == 200
    replaces = f"{call.call_id}%3Bto-tag%3D{answering.ua.tag}%3Bfrom-tag%3D{caller.tag}"
    attended = ("Refer-To", f"<sip:{target}@{domain}?Replaces={replaces}>")
    caller.send(in_dialog_request(call, "REFER", attended))
    assert caller.response().status == 200
    # The transfer target does what the REFER asks: an INVITE that replaces
    # the dialog.  The Call-IDs went out unchanged, so the callee knows it.
    callee = answering.ua
    target_ua = corpus.party(flow)
    dialog = f"{call.call_id};to-tag={callee.tag};from-tag={caller.tag}"
    replacing = target_ua.call(callee.user, offer(), extra=[("Replaces", dialog)])
    assert replacing.reply is not None and replacing.reply.status == 200, replacing.reply
    assert answering.invite is not None
    assert answering.invite.header("Replaces") == dialog
    # The replaced dialog is the callee's to end (RFC 3891); this callee
    # answers one BYE, the new call's.
    assert replacing.bye() == 200
    assert answering.done.wait(5) and answering.error is None, answering.error


def redirect(corpus: Corpus) -> None:
    flow = "3xx redirect"
    callee = corpus.party(flow, register=True)
    caller = corpus.party(flow)
    answering = callee.answer_in_background(offer(), status=302)
    call = caller.call(callee.user, offer())
    assert call.reply is not None and call.reply.status == 302, call.reply
    # topos leaves a redirect's Contact alone: the caller learns where to go.
    assert call.reply.header("Contact") == callee.dialog_contact
    answering.done.wait(5)
    corpus.call_ids.setdefault(flow, []).append(call.call_id)


def busy(corpus: Corpus) -> None:
    flow = "a call that fails (486)"
    callee = corpus.party(flow, register=True)
    caller = corpus.party(flow)
    answering = callee.answer_in_background(offer(), status=486)
    call = caller.call(callee.user, offer())
    assert call.reply is not None and call.reply.status == 486, call.reply
    answering.done.wait(5)
    corpus.call_ids.setdefault(flow, []).append(call.call_id)


def cancelled(corpus: Corpus) -> None:
    flow = "CANCEL"
    callee = corpus.party(flow, register=True)
    caller = corpus.party(flow)
    answering = callee.answer_in_background(offer(), status=180)
    call = caller.call(callee.user, offer(), cancel_on_ringing=True)
    assert call.reply is not None and call.reply.status == 487, call.reply
    assert answering.done.wait(5) and answering.cancelled
    corpus.call_ids.setdefault(flow, []).append(call.call_id)


def error_with_warning(corpus: Corpus) -> None:
    # Nobody is registered as the callee: the PBX answers 404 itself, with its Warning.
    flow = "an error from the PBX (404, Warning)"
    caller = corpus.party(flow)
    call = caller.call(next(_USERS), offer())
    assert call.reply is not None and call.reply.status == 404, call.reply


def messages(corpus: Corpus) -> None:
    flow = "MESSAGE, plain and multipart"
    recipient = corpus.party(flow, register=True)
    sender = corpus.party(flow)
    answering = recipient.answer_in_background(offer())  # answers each MESSAGE with 200
    ruri = f"sip:{recipient.user}@{corpus.lab.domain}"
    _, reply = sender.authenticated("MESSAGE", ruri, "hello", "text/plain")
    assert reply.status == 200, reply.start
    boundary = secrets.token_hex(8)
    multipart = (
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nhello again\r\n"
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nsecond part\r\n--{boundary}--\r\n"
    )
    content_type = f"multipart/mixed;boundary={boundary}"
    _, reply = sender.authenticated("MESSAGE", ruri, multipart, content_type)
    assert reply.status == 200, reply.start
    answering.done.wait(0)


def subscribe_and_notify(corpus: Corpus) -> None:
    flow = "SUBSCRIBE/NOTIFY (presence)"
    watcher = corpus.party(flow)
    presentity = f"sip:{next(_USERS)}@{corpus.lab.domain}"
    subscribe, accepted = watcher.authenticated("SUBSCRIBE", presentity, extra=WATCH_PRESENCE)
    assert accepted.status in (200, 202), accepted.start
    notify_until(watcher, subscribe)
    watcher.send(in_dialog(watcher, subscribe, accepted, ("Event", "presence"), ("Expires", "0")))
    assert watcher.response().status in (200, 202)
    notify_until(
        watcher,
        subscribe,
        lambda notify: notify.header("Subscription-State").startswith("terminated"),
    )


FLOWS: tuple[Callable[[Corpus], None], ...] = (
    register,
    call_hold_and_caller_hangs_up,
    call_the_other_way_and_callee_hangs_up,
    call_over_tls,
    call_through_a_trunk,
    blind_and_attended_transfer,
    redirect,
    busy,
    cancelled,
    error_with_warning,
    messages,
    subscribe_and_notify,
)


def run_corpus(lab: RunningLab) -> Corpus:
    corpus = Corpus(lab)
    try:
        for flow in FLOWS:
            flow(corpus)
    finally:
        corpus.close()
    return corpus


def inside_markers(lab: RunningLab) -> list[bytes]:
    """What names the inside: the PBX's address, its port, its software."""
    host, _, port = lab.info["pbx"]["udp"].rpartition(":")
    return [host.encode(), f":{port}".encode(), b"kamailio"]


def leaks(lab: RunningLab, corpus: Corpus) -> dict[str, list[str]]:
    """For each flow, the lines an outside party received that name the inside."""
    markers = inside_markers(lab)
    found: dict[str, list[str]] = {}
    for flow in corpus.parties:
        lines = corpus.received(flow).splitlines()
        hits = [line for line in lines if any(m in line.lower() for m in markers)]
        if hits:
            found[flow] = sorted({line.decode(errors="replace") for line in hits})
    return found


def test_nothing_of_the_inside_reaches_an_outside_party_with_hiding_on(hidden):
    corpus = run_corpus(hidden)
    assert len(corpus.parties) == len(FLOWS)
    assert leaks(hidden, corpus) == {}
    # The PBX's assertions reach the callees, in the domain instead of its address.
    assert corpus.asserted and all(
        re.fullmatch(r"<sip:u\d+@sipshield\.lab>", pai) for pai in corpus.asserted
    ), corpus.asserted
    # The flows did go through the PBX: it saw every call.
    for call_ids in corpus.call_ids.values():
        assert all(hidden.pbx_saw(call_id) for call_id in call_ids)


def test_the_same_corpus_leaks_the_inside_with_hiding_off(visible):
    corpus = run_corpus(visible)
    found = leaks(visible, corpus)
    host, _, port = visible.info["pbx"]["udp"].rpartition(":")
    seen = "\n".join(line for lines in found.values() for line in lines)
    # The PBX's Via and Record-Route reach the callee, its software the caller.
    assert re.search(rf"^Via: SIP/2.0/UDP {re.escape(host)}:{port};", seen, re.M), seen
    assert re.search(rf"^Record-Route: <sip:{re.escape(host)}:{port};", seen, re.M), seen
    assert "Server: kamailio (5.6" in seen
    assert re.search(rf"^Warning: 392 {re.escape(host)}:{port} ", seen, re.M), seen
    assert re.search(rf"^P-Asserted-Identity: <sip:u\d+@{re.escape(host)}:{port}>", seen, re.M)
    assert "register" in found and "call, hold, caller hangs up" in found


def topos_keys(lab: RunningLab) -> list[str]:
    return sorted(key for pattern in TOPOS_KEYS for key in lab.redis.scan_iter(pattern))


def test_every_record_topos_keeps_expires_and_failed_calls_go_within_minutes(hidden):
    corpus = Corpus(hidden)
    try:
        busy(corpus)
        cancelled(corpus)
        redirect(corpus)
    finally:
        corpus.close()
    keys = topos_keys(hidden)
    assert keys, "topos stored nothing in the policy's Redis"
    assert [key for key in keys if hidden.redis.ttl(key) < 0] == []
    for flow, call_ids in corpus.call_ids.items():
        for call_id in call_ids:
            dialogs = [
                key
                for key in keys
                if key.startswith("d:z:") and hidden.redis.hget(key, "a_callid") == call_id
            ]
            # Each crossing's, and the one of the INVITE the PBX challenged.
            assert len(dialogs) == 3, (flow, dialogs)
            # topos alone keeps them the whole dialog lifetime (12 h).
            lifetimes = [hidden.redis.ttl(key) for key in dialogs]
            assert all(0 < ttl <= ENDED_DIALOG_LIFETIME_S for ttl in lifetimes), (flow, lifetimes)


def test_a_reinvite_does_not_extend_a_dialog_record_and_the_call_still_ends(hidden):
    corpus = Corpus(hidden)
    try:
        _, _, call, answering = answered_call(corpus, "long call")
        records = [k for k in topos_keys(hidden) if k.startswith("d:z:")]
        mine = [k for k in records if hidden.redis.hget(k, "a_callid") == call.call_id]
        assert mine, f"no dialog record of {call.call_id}"
        hidden.redis.expire(mine[0], 3600)  # as if the call had lasted 11 hours
        assert call.reinvite(offer() + "a=sendonly\r\n").status == 200
        # topos 5.6 does not refresh the record on a re-INVITE: the dialog
        # lifetime (TOPOS_DIALOG_EXPIRE) must be longer than the longest call.
        assert 0 < hidden.redis.ttl(mine[0]) <= 3600
        assert call.bye() == 200
        assert answering.done.wait(5) and answering.error is None, answering.error
    finally:
        corpus.close()


def test_a_call_that_outlives_its_dialog_records_cannot_be_ended_through_the_sbc(hidden):
    corpus = Corpus(hidden)
    try:
        _, _, call, answering = answered_call(corpus, "too long a call")
        mine = [k for k in topos_keys(hidden) if hidden.redis.hget(k, "a_callid") == call.call_id]
        dialogs = [k for k in mine if k.startswith("d:z:")]
        # One per crossing (outside -> PBX -> outside), and the challenged INVITE's.
        assert len(dialogs) == 3, mine
        for key in dialogs:
            hidden.redis.pexpire(key, 1)  # as if TOPOS_DIALOG_EXPIRE had passed
        assert wait_until(lambda: not any(hidden.redis.exists(k) for k in dialogs))
        # Without its route set the BYE carries no dialog token: dialog_guard refuses it.
        assert call.bye() == 403
        assert not answering.done.wait(1), "the callee got the BYE"
        assert leaks(hidden, corpus) == {}
    finally:
        corpus.close()
