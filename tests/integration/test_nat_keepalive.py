"""Users registered from behind NAT get keepalive OPTIONS, and stay reachable.

A user "behind NAT" names a private address in its Contact (10.0.0.x) while
its packets come from its loopback socket, the way a NAT box rewrites the
source but not the SIP inside.  The SBC's Kamailio (nat_traversal, driven
from sipshield's routing) sends OPTIONS to that socket once per keepalive
interval for as long as the registrar granted, from the SBC's own listener.
The lab runs the shortest interval nat_traversal accepts (10 s); tests watch
several users at once so that the suite waits for it as little as possible.
"""

from __future__ import annotations

import selectors
import signal
import time
from collections.abc import Iterator

import pytest

from sipshield.lab.sip_ua import RtpPeer, SipMessage, UserAgent, parse, sdp
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up
from tests.integration.two_nodes import restart_sbc

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - {name: validation}
"""
# nat_traversal's shortest interval: each endpoint gets one OPTIONS per interval.
INTERVAL_S = 10
WATCH_S = INTERVAL_S + 2
# A registration that ends within the first watch.
BRIEF_S = 6


@pytest.fixture(scope="module")
def keepalive_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    directory = tmp_path_factory.mktemp("nat-keepalive")
    (directory / "policy.yaml").write_text(POLICY)
    running = lab_up(
        directory / "policy.yaml",
        directory / "lab",
        None,
        "--nat-keepalive-interval",
        str(INTERVAL_S),
    )
    yield running
    lab_down(running)


def _keepalives(uas: list[UserAgent], seconds: float) -> dict[str, list[tuple[str, int]]]:
    """Where the OPTIONS that reached each UDP user in ``seconds`` came from, by user.

    Each is answered, as a user agent would.
    """
    seen: dict[str, list[tuple[str, int]]] = {ua.user: [] for ua in uas}
    with selectors.DefaultSelector() as selector:
        for ua in uas:
            selector.register(ua.sock, selectors.EVENT_READ, ua)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                ua = key.data
                data, source = ua.sock.recvfrom(65535)
                message = parse(data)
                if message.start.startswith("OPTIONS "):
                    seen[ua.user].append(source)
                    _answer(ua, message, source)
    return seen


def _answer(ua: UserAgent, request: SipMessage, to: tuple[str, int]) -> None:
    copied = [(k, v) for k, v in request.headers if k.lower() in ("via", "from", "call-id", "cseq")]
    to_header = request.header("To") + ";tag=" + ua.tag
    reply = SipMessage("SIP/2.0 200 OK", [*copied, ("To", to_header)])
    ua.sock.sendto(reply.to_bytes(), to)


def test_keepalives_reach_udp_users_behind_nat_while_registered_and_no_one_else(keepalive_lab):
    lab = keepalive_lab
    nated = UserAgent(lab, "carol", ip="127.0.0.41", contact_ip="10.0.0.41")
    assert nated.register() == 200
    # Behind NAT too, but registered for a few seconds only.
    brief = UserAgent(lab, "u1003", ip="127.0.0.47", contact_ip="10.0.0.47")
    assert brief.register(expires=BRIEF_S) == 200
    # The Contact is where the packets come from: nothing to keep open.
    direct = UserAgent(lab, "alice", ip="127.0.0.43")
    assert direct.register() == 200
    # Behind NAT over TLS: the user's own connection keeps its binding open.
    over_tls = UserAgent(lab, "bob", "tls", ip="127.0.0.44", contact_ip="10.0.0.44")
    assert over_tls.register() == 200
    # A wrong password: the registrar refuses, so there is nothing to keep alive.
    impostor = UserAgent(lab, "u1001", ip="127.0.0.45", contact_ip="10.0.0.45")
    users = lab.info["users"]
    lab.info["users"] = [{**u, "password": "0"} if u["username"] == "u1001" else u for u in users]
    try:
        assert impostor.register() in (401, 403)
    finally:
        lab.info["users"] = users

    watched = [nated, brief, direct, impostor]
    first = _keepalives(watched, WATCH_S)
    # From the SBC's own listener, where the NAT binding points.
    assert first["carol"] and set(first["carol"]) == {lab.sip()}, first
    assert first["alice"] == first["u1001"] == [], first
    # The brief registration has expired by now: its keepalives end with it.
    then = _keepalives(watched, WATCH_S)
    assert then["carol"] and set(then["carol"]) == {lab.sip()}, then
    assert then["u1003"] == then["alice"] == then["u1001"] == [], then
    with pytest.raises(TimeoutError):
        over_tls.receive(timeout=0.2)

    # Reachable through its NAT binding: a call finds it at its source address.
    answering = nated.answer_in_background(sdp(RtpPeer().port, ip="10.0.0.41"))
    caller = UserAgent(lab, "dave", ip="127.0.0.42")
    call = caller.call("carol", sdp(RtpPeer().port, ip="127.0.0.42"))
    assert call.reply is not None and call.reply.status == 200, call.reply
    assert answering.wait().method == "INVITE"
    assert call.bye() == 200
    answering.done.wait(5)
    for ua in (nated, direct, over_tls):
        assert ua.register(expires=0) == 200
    for ua in (nated, brief, direct, over_tls, impostor, caller):
        ua.close()


def test_keepalives_survive_a_restart_of_the_sbc(keepalive_lab):
    lab = keepalive_lab
    nated = UserAgent(lab, "u1002", ip="127.0.0.46", contact_ip="10.0.0.46")
    assert nated.register() == 200
    # Kamailio saves whom it keeps alive when it stops, and reads it back on start.
    restart_sbc(lab, signal.SIGTERM)
    pings = _keepalives([nated], WATCH_S)["u1002"]
    assert pings and set(pings) == {lab.sip()}, pings
    assert nated.register(expires=0) == 200
    nated.close()
