"""Presence through the SBC: the lab PBX's presence server, from PUBLISH to NOTIFY.

Every request crosses the real SBC: users register through it (Path), a
watcher's SUBSCRIBE is record-routed by it (with a dialog token), and the
PBX's presence server (Kamailio's presence and presence_xml modules) sends its
NOTIFYs back along that route set, so they cross the SBC again on their way
to the watcher.  The PBX authenticates PUBLISH and SUBSCRIBE as it does calls;
the SBC never challenges, so a 407 is the PBX's.  The content-security
modules are all enforced: legitimate presence passes them unchanged.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from sipshield.lab.sip_ua import SipMessage, UserAgent
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - {name: validation}
  - {name: dialog_guard}
  - {name: content_policy}
  - {name: xml_bodies}
  - {name: device_control}
  - {name: text_safety}
  - {name: im_links}
  - {name: spit}
  - {name: presence_privacy}
"""
PIDF = "application/pidf+xml"
WATCH_PRESENCE = [("Event", "presence"), ("Accept", PIDF), ("Expires", "300")]
PUBLISH_PRESENCE = [("Event", "presence"), ("Expires", "300")]


@pytest.fixture(scope="module")
def presence_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    directory = tmp_path_factory.mktemp("presence-lab")
    (directory / "policy.yaml").write_text(POLICY)
    running = lab_up(directory / "policy.yaml", directory / "lab")
    yield running
    lab_down(running)


def pidf(entity: str, basic: str, note: str) -> str:
    """A PIDF document; ``note`` goes in as given (already XML-escaped)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">\n'
        f'  <tuple id="t1"><status><basic>{basic}</basic></status></tuple>\n'
        f"  <note>{note}</note>\n"
        "</presence>\n"
    )


def notify_until(
    watcher: UserAgent,
    subscribe: SipMessage,
    wanted: Callable[[SipMessage], bool] = lambda notify: True,
    timeout: float = 10.0,
) -> SipMessage:
    """The first NOTIFY of ``subscribe``'s dialog that is ``wanted``; each NOTIFY gets its 200."""
    call_id = subscribe.header("Call-ID")
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            request = watcher.next_request(timeout=remaining)
        except TimeoutError:
            break
        if request.method == "NOTIFY" and request.header("Call-ID") == call_id:
            watcher.reply(request, 200, "OK")
            if wanted(request):
                return request
    raise AssertionError(f"{watcher.user} got no such NOTIFY for {call_id} in {timeout}s")


def via_the_sbc(lab: RunningLab, request: SipMessage) -> bool:
    """True when ``request`` was relayed by the SBC: its topmost Via is the SBC's, over another."""
    host, port = lab.sip()
    vias = request.all("Via")
    return len(vias) >= 2 and vias[0].startswith(f"SIP/2.0/UDP {host}:{port};")


def in_dialog(
    ua: UserAgent, subscribe: SipMessage, accepted: SipMessage, *extra: tuple[str, str]
) -> SipMessage:
    """A SUBSCRIBE in the dialog ``accepted`` formed: to its target, along its route set."""
    target = re.search(r"<([^>]+)>", accepted.header("Contact")).group(1)  # type: ignore[union-attr]
    route = ", ".join(reversed(accepted.all("Record-Route")))
    headers = [("Route", route), *extra] if route else list(extra)
    ua.cseq += 1
    call_id = subscribe.header("Call-ID")
    return ua.request("SUBSCRIBE", target, accepted.header("To"), call_id, extra=headers)


def test_a_watcher_gets_through_the_sbc_what_a_user_publishes(presence_lab):
    lab = presence_lab
    alice = UserAgent(lab, "alice", ip="127.0.0.70")
    bob = UserAgent(lab, "bob", ip="127.0.0.71")
    try:
        assert alice.register() == 200
        assert bob.register() == 200
        presentity = f"sip:alice@{lab.domain}"

        subscribe, accepted = bob.authenticated("SUBSCRIBE", presentity, extra=WATCH_PRESENCE)
        assert subscribe.header("Proxy-Authorization"), "the PBX did not challenge the SUBSCRIBE"
        assert accepted.status in (200, 202), accepted
        # Nothing published yet: the first NOTIFY says the subscription is active.
        first = notify_until(bob, subscribe)
        assert first.header("Event") == "presence"
        assert first.header("Subscription-State").startswith("active"), first
        assert via_the_sbc(lab, first), first.all("Via")

        # Unique, and with characters XML escapes: the NOTIFY must carry it as published.
        note = f"in a meeting, room {secrets.token_hex(4)} &amp; &lt;back at 3&gt;"
        publish, published = alice.authenticated(
            "PUBLISH",
            presentity,
            pidf(presentity, "closed", note),
            content_type=PIDF,
            extra=PUBLISH_PRESENCE,
        )
        assert publish.header("Proxy-Authorization"), "the PBX did not challenge the PUBLISH"
        assert published.status == 200, published
        assert published.header("SIP-ETag")

        notify = notify_until(bob, subscribe, lambda notify: f"<note>{note}</note>" in notify.body)
        assert notify.header("Content-Type") == PIDF
        assert "<basic>closed</basic>" in notify.body
        assert f'entity="{presentity}"' in notify.body
        assert via_the_sbc(lab, notify), notify.all("Via")

        # Ending it is a SUBSCRIBE in the dialog: SBC (token checked), then the server.
        bob.send(in_dialog(bob, subscribe, accepted, ("Event", "presence"), ("Expires", "0")))
        assert bob.response().status in (200, 202)
        notify_until(
            bob,
            subscribe,
            lambda notify: notify.header("Subscription-State").startswith("terminated"),
        )
    finally:
        alice.close()
        bob.close()


def test_a_user_learns_who_watches_its_presence(presence_lab):
    lab = presence_lab
    carol = UserAgent(lab, "carol", ip="127.0.0.72")
    dave = UserAgent(lab, "dave", ip="127.0.0.73")
    try:
        assert carol.register() == 200
        assert dave.register() == 200
        presentity = f"sip:carol@{lab.domain}"
        winfo = [("Event", "presence.winfo"), ("Accept", "application/watcherinfo+xml")]
        own, accepted = carol.authenticated("SUBSCRIBE", presentity, extra=winfo)
        assert accepted.status in (200, 202), accepted
        notify_until(carol, own)

        watch, accepted = dave.authenticated("SUBSCRIBE", presentity, extra=WATCH_PRESENCE)
        assert accepted.status in (200, 202), accepted
        notify_until(dave, watch)
        watcher = f">sip:dave@{lab.domain}</watcher>"
        notify = notify_until(carol, own, lambda notify: watcher in notify.body)
        assert notify.header("Content-Type") == "application/watcherinfo+xml"
        assert via_the_sbc(lab, notify), notify.all("Via")
    finally:
        carol.close()
        dave.close()


def test_a_publish_without_credentials_is_challenged_by_the_pbx(presence_lab):
    lab = presence_lab
    user = UserAgent(lab, "u1000", ip="127.0.0.74")
    try:
        presentity = f"sip:u1000@{lab.domain}"
        call_id = secrets.token_hex(8)
        body = pidf(presentity, "open", "no credentials")
        to = f"<{presentity}>"
        user.send(
            user.request(
                "PUBLISH", presentity, to, call_id, body, PUBLISH_PRESENCE, content_type=PIDF
            )
        )
        reply = user.response()
        assert reply.status == 407, reply
        assert f'realm="{lab.domain}"' in reply.header("Proxy-Authenticate")
        # The SBC never challenges: the 407 is the PBX's, relayed.
        assert lab.pbx_saw(call_id)
    finally:
        user.close()


def test_a_user_publishes_only_its_own_presence(presence_lab):
    lab = presence_lab
    user = UserAgent(lab, "u1001", ip="127.0.0.75")
    try:
        someone_else = f"sip:u1002@{lab.domain}"
        _, reply = user.authenticated(
            "PUBLISH",
            someone_else,
            pidf(someone_else, "open", "not mine"),
            content_type=PIDF,
            extra=PUBLISH_PRESENCE,
        )
        # The PBX's own rule, after the credentials were accepted.
        assert reply.start == "SIP/2.0 403 Not Your Presence", reply
    finally:
        user.close()


def answer_one(ua: UserAgent) -> SipMessage:
    """The next request ``ua`` receives, answered 200."""
    request = ua.next_request(timeout=10)
    ua.reply(request, 200, "OK")
    return request


def test_other_event_packages_are_still_relayed_to_the_registered_user(presence_lab):
    lab = presence_lab
    watcher = UserAgent(lab, "u1003", ip="127.0.0.76")
    target = UserAgent(lab, "u1004", ip="127.0.0.77")
    try:
        # A watcher is a registered user (presence_privacy: require_registered_watcher).
        assert watcher.register() == 200
        assert target.register() == 200
        dialog = [("Event", "dialog"), ("Accept", "application/dialog-info+xml")]
        with ThreadPoolExecutor(max_workers=1) as pool:
            answered = pool.submit(answer_one, target)
            subscribe, reply = watcher.authenticated(
                "SUBSCRIBE", f"sip:u1004@{lab.domain}", extra=dialog
            )
            relayed = answered.result(timeout=15)
        assert subscribe.header("Proxy-Authorization"), "the PBX did not challenge the SUBSCRIBE"
        assert reply.status == 200, reply
        # The phone's own answer, relayed; the PBX record-routed the dialog.
        assert relayed.method == "SUBSCRIBE"
        assert relayed.header("Call-ID") == subscribe.header("Call-ID")
        routes = relayed.all("Record-Route")
        assert any(lab.info["pbx"]["udp"] in route for route in routes), routes
    finally:
        watcher.close()
        target.close()
