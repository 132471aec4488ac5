"""Client/transport logic against in-process UDP servers on 127.0.0.1.

Retransmission, cookie reuse, stale-reply handling and failover are pure client logic, so a
scripted fake server is enough; the real rtpengine is exercised in tests/integration.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from sipshield.rtpengine import (
    NgBadReply,
    NgErrorReply,
    NgTimeout,
    NgUnavailable,
    RtpengineClient,
    UdpTransport,
    rendezvous_order,
)
from sipshield.rtpengine.bencode import encode

# (request number starting at 1, cookie, request body) -> datagrams to send back
Script = Callable[[int, bytes, bytes], list[bytes]]


class FakeRtpengine:
    """A UDP server that answers according to a script and records what it received."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[tuple[bytes, bytes]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.address: tuple[str, int] = self.sock.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                datagram, peer = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            cookie, _, body = datagram.partition(b" ")
            self.received.append((cookie, body))
            for reply in self.script(len(self.received), cookie, body):
                self.sock.sendto(reply, peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def reply(cookie: bytes, **fields: str) -> bytes:
    return cookie + b" " + encode(fields)


def answer_all(**fields: str) -> Script:
    return lambda _n, cookie, _body: [reply(cookie, **fields)]


@pytest.fixture
def fake_server() -> Iterator[Callable[[Script], FakeRtpengine]]:
    servers: list[FakeRtpengine] = []

    def start(script: Script) -> FakeRtpengine:
        servers.append(FakeRtpengine(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def closed_port() -> tuple[str, int]:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()


def silent_socket() -> socket.socket:
    """A bound socket that never answers: a hung instance, unlike a closed port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_no_socket_is_opened_before_the_first_request() -> None:
    client = RtpengineClient([("127.0.0.1", 9)])
    assert client.transport._sockets == {}


def test_ping(fake_server: Callable[[Script], FakeRtpengine]) -> None:
    server = fake_server(answer_all(result="pong"))
    client = RtpengineClient([server.address], timeout=0.5)
    assert client.ping().result == "pong"
    assert server.received[0][1] == b"d7:command4:pinge"
    client.close()


def test_ping_answered_ok_is_rejected(fake_server: Callable[[Script], FakeRtpengine]) -> None:
    server = fake_server(answer_all(result="ok"))
    client = RtpengineClient([server.address], timeout=0.5)
    with pytest.raises(NgBadReply, match="pong"):
        client.ping()


def test_retransmission_reuses_the_cookie(fake_server: Callable[[Script], FakeRtpengine]) -> None:
    # Lose the first two requests; the third (second retransmission) is answered.
    server = fake_server(lambda n, cookie, _b: [reply(cookie, result="pong")] if n == 3 else [])
    client = RtpengineClient([server.address], timeout=0.1, retries=2)
    client.ping()
    cookies = [cookie for cookie, _ in server.received]
    assert len(cookies) == 3
    assert len(set(cookies)) == 1


def test_stale_replies_are_ignored(fake_server: Callable[[Script], FakeRtpengine]) -> None:
    def script(_n: int, cookie: bytes, _body: bytes) -> list[bytes]:
        return [
            reply(b"stale-cookie", result="error", **{"error-reason": "old"}),
            b"not even ng",
            reply(cookie, result="ok", sdp="v=0\r\n"),
        ]

    server = fake_server(script)
    client = RtpengineClient([server.address], timeout=0.5, retries=0)
    assert client.offer("v=0\r\n", "cid", "ft").sdp == "v=0\r\n"


def test_malformed_reply_with_our_cookie_raises(
    fake_server: Callable[[Script], FakeRtpengine],
) -> None:
    server = fake_server(lambda _n, cookie, _b: [cookie + b" d6:result"])
    client = RtpengineClient([server.address], timeout=0.5)
    with pytest.raises(NgBadReply) as info:
        client.ping()
    assert info.value.instance == server.address


def test_error_reply(fake_server: Callable[[Script], FakeRtpengine]) -> None:
    server = fake_server(answer_all(result="error", **{"error-reason": "Unknown call-id"}))
    client = RtpengineClient([server.address], timeout=0.5)
    with pytest.raises(NgErrorReply) as info:
        client.answer("v=0", "cid", "ft", "tt")
    assert (info.value.command, info.value.reason) == ("answer", "Unknown call-id")


def test_offer_without_sdp_is_bad_reply(fake_server: Callable[[Script], FakeRtpengine]) -> None:
    server = fake_server(answer_all(result="ok"))
    client = RtpengineClient([server.address], timeout=0.5)
    with pytest.raises(NgBadReply, match="sdp"):
        client.offer("v=0", "cid", "ft")


def test_warning_is_surfaced(
    fake_server: Callable[[Script], FakeRtpengine], caplog: pytest.LogCaptureFixture
) -> None:
    server = fake_server(answer_all(result="ok", warning="Call-ID not found"))
    client = RtpengineClient([server.address], timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="sipshield.rtpengine"):
        result = client.delete("cid", "ft")
    assert result.warning == "Call-ID not found"
    assert "'delete'" in caplog.text and "Call-ID not found" in caplog.text


def test_timeout_names_the_instance() -> None:
    with silent_socket() as hung:
        address = hung.getsockname()
        client = RtpengineClient([address], timeout=0.05, retries=1)
        with pytest.raises(NgTimeout) as info:
            client.ping()
        assert info.value.instances == (address,)
        assert f"127.0.0.1:{address[1]}" in str(info.value)
        # Two datagrams: the original and one retransmission.
        hung.settimeout(0.1)
        assert hung.recv(100) == hung.recv(100)


def test_failover_from_closed_port_marks_it_dead(
    fake_server: Callable[[Script], FakeRtpengine],
) -> None:
    server = fake_server(answer_all(result="ok", sdp="v=0"))
    dead = closed_port()
    transport_clock = [0.0]
    client = RtpengineClient([dead, server.address], timeout=0.2, dead_retry_interval=30)
    client.transport._clock = lambda: transport_clock[0]
    # Pick a Call-ID whose preferred instance is the dead one, so failover must happen.
    call_id = next(
        f"call-{i}"
        for i in range(1000)
        if rendezvous_order(f"call-{i}", [dead, server.address])[0] == dead
    )
    assert client.offer("v=0", call_id, "ft").reply.instance == server.address
    assert client.transport.is_dead(dead)
    # While dead it is skipped entirely.
    assert client.transport.candidates(call_id) == [server.address]
    # After the interval it is tried again.
    transport_clock[0] = 31.0
    assert not client.transport.is_dead(dead)
    assert client.transport.candidates(call_id) == [dead, server.address]


def test_failover_from_hung_instance(fake_server: Callable[[Script], FakeRtpengine]) -> None:
    server = fake_server(answer_all(result="pong"))
    with silent_socket() as hung:
        client = RtpengineClient([hung.getsockname(), server.address], timeout=0.05, retries=0)
        # ping has no Call-ID: configured order, so the hung instance is tried first.
        assert client.ping().instance == server.address
        assert client.transport.is_dead(hung.getsockname())


def test_all_dead_fails_fast_until_retry_interval() -> None:
    clock = [0.0]
    transport = UdpTransport([closed_port()], timeout=0.2, clock=lambda: clock[0])
    with pytest.raises(NgTimeout):
        transport.exchange("ping", "c1", b"c1 d7:command4:pinge", None)
    with pytest.raises(NgUnavailable):
        transport.exchange("ping", "c2", b"c2 d7:command4:pinge", None)
    clock[0] = 31.0
    with pytest.raises(NgTimeout):
        transport.exchange("ping", "c3", b"c3 d7:command4:pinge", None)


def test_explicit_instance_is_tried_even_when_dead(
    fake_server: Callable[[Script], FakeRtpengine],
) -> None:
    server = fake_server(answer_all(result="pong"))
    client = RtpengineClient([server.address])
    client.transport._dead_until[server.address] = float("inf")
    with pytest.raises(NgUnavailable):
        client.ping()
    assert client.ping(server.address).instance == server.address
    assert not client.transport.is_dead(server.address)


def test_rendezvous_is_consistent_and_spreads_calls() -> None:
    instances = [("127.0.0.1", 2000 + i) for i in range(3)]
    firsts = [rendezvous_order(f"call-{i}", instances)[0] for i in range(300)]
    assert firsts == [rendezvous_order(f"call-{i}", instances)[0] for i in range(300)]
    assert all(firsts.count(a) > 50 for a in instances)
    # Removing an instance only moves the calls that were on it.
    survivors = instances[:2]
    for i, first in enumerate(firsts):
        if first in survivors:
            assert rendezvous_order(f"call-{i}", survivors)[0] == first


def test_instances_must_be_ip_literals() -> None:
    with pytest.raises(ValueError):
        RtpengineClient([("localhost", 2223)])
    with pytest.raises(ValueError):
        RtpengineClient([])


# --- a call that lives elsewhere than its first choice ---------------------------------
# Its first choice died and came back empty while its partner restored the call from
# Redis: commands about the call must reach the partner, not the empty first choice.

UNKNOWN = {"result": "error", "error-reason": "Unknown call-id"}
NOT_FOUND = {"result": "ok", "warning": "Call-ID not found or tags didn't match"}


def command_of(body: bytes) -> str:
    for name in ("offer", "answer", "delete", "query"):
        if f"7:command{len(name)}:{name}".encode() in body:
            return name
    return "other"


def without_the_call(_n: int, cookie: bytes, body: bytes) -> list[bytes]:
    """An instance that does not have the call; it creates one for any offer."""
    fields = {"delete": NOT_FOUND, "offer": {"result": "ok", "sdp": "empty"}}
    return [reply(cookie, **fields.get(command_of(body), UNKNOWN))]


def with_the_call(_n: int, cookie: bytes, _body: bytes) -> list[bytes]:
    return [reply(cookie, result="ok", sdp="holder")]


def first_choice_elsewhere(empty: FakeRtpengine, holder: FakeRtpengine) -> str:
    """A Call-ID whose first choice is ``empty``."""
    instances = [empty.address, holder.address]
    return next(
        f"call-{i}"
        for i in range(1000)
        if rendezvous_order(f"call-{i}", instances)[0] == empty.address
    )


def test_commands_about_a_call_follow_it_to_the_instance_that_has_it(
    fake_server: Callable[[Script], FakeRtpengine],
) -> None:
    empty, holder = fake_server(without_the_call), fake_server(with_the_call)
    client = RtpengineClient([empty.address, holder.address], timeout=0.5)
    call_id = first_choice_elsewhere(empty, holder)
    assert client.answer("v=0", call_id, "ft", "tt").reply.instance == holder.address
    assert client.query(call_id).instance == holder.address
    deleted = client.delete(call_id, delete_delay=0)
    assert (deleted.instance, deleted.warning) == (holder.address, None)
    # Each was asked first: it answered, so it is not dead, only without the call.
    assert [command_of(body) for _, body in empty.received] == ["answer", "query", "delete"]
    assert not client.transport.is_dead(empty.address)


def test_a_call_no_instance_has_gets_its_first_choices_answer(
    fake_server: Callable[[Script], FakeRtpengine],
) -> None:
    first, second = fake_server(without_the_call), fake_server(without_the_call)
    client = RtpengineClient([first.address, second.address], timeout=0.5)
    call_id = first_choice_elsewhere(first, second)
    with pytest.raises(NgErrorReply) as info:
        client.answer("v=0", call_id, "ft", "tt")
    assert (info.value.instance, info.value.reason) == (first.address, "Unknown call-id")
    deleted = client.delete(call_id)
    assert deleted.instance == first.address
    assert deleted.warning is not None and deleted.warning.startswith("Call-ID not found")


def test_a_re_offer_goes_to_the_instance_that_has_the_call(
    fake_server: Callable[[Script], FakeRtpengine],
) -> None:
    empty, holder = fake_server(without_the_call), fake_server(with_the_call)
    client = RtpengineClient([empty.address, holder.address], timeout=0.5)
    call_id = first_choice_elsewhere(empty, holder)
    assert client.offer("v=0", call_id, "ft", existing=True).sdp == "holder"
    # The empty instance was only asked whether it has the call: it created nothing.
    assert [command_of(body) for _, body in empty.received] == ["query"]
    # An initial offer goes to the first choice, as always.
    assert client.offer("v=0", call_id, "ft").sdp == "empty"


def test_a_re_offer_nobody_has_is_anchored_afresh_on_the_first_choice(
    fake_server: Callable[[Script], FakeRtpengine],
) -> None:
    first, second = fake_server(without_the_call), fake_server(without_the_call)
    client = RtpengineClient([first.address, second.address], timeout=0.5)
    call_id = first_choice_elsewhere(first, second)
    result = client.offer("v=0", call_id, "ft", existing=True)
    assert (result.sdp, result.reply.instance) == ("empty", first.address)


def test_a_re_offer_with_one_instance_costs_no_query(
    fake_server: Callable[[Script], FakeRtpengine],
) -> None:
    only = fake_server(with_the_call)
    client = RtpengineClient([only.address], timeout=0.5)
    assert client.offer("v=0", "cid", "ft", existing=True).sdp == "holder"
    assert [command_of(body) for _, body in only.received] == ["offer"]
