"""The selftest's guard: nothing leaves for an address the operator did not name.

Real sockets on loopback, no SBC: what is checked is what the guard lets
through, what it refuses before a byte is sent, and that it paces sends.
"""

from __future__ import annotations

import ast
import socket
import time

import pytest

from sipshield.lab.sip_probe import exchange
from sipshield.ops.cli import main
from sipshield.ops.selftest.guard import OutOfScope, Scope
from tests.conftest import REPO

SELFTEST = REPO / "modules" / "sipshield" / "ops" / "selftest"
EXAMPLE_POLICY = REPO / "kamailio-cfg" / "policy.example.yaml"


@pytest.fixture
def listener():
    """A UDP socket on 127.0.0.5: the named target, which records what reaches it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.5", 0))
    sock.settimeout(0.5)
    yield sock
    sock.close()


def test_a_datagram_to_the_named_target_from_a_given_source_goes_out(listener):
    scope = Scope(["127.0.0.5"], ["127.0.0.6"])
    with scope.open_socket(socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.6", 0))
        sock.sendto(b"probe", listener.getsockname())
    data, sender = listener.recvfrom(100)
    assert (data, sender[0]) == (b"probe", "127.0.0.6")


def test_a_datagram_to_any_other_address_is_refused_before_it_is_sent(listener):
    scope = Scope(["127.0.0.7"], ["127.0.0.6"])
    with scope.open_socket(socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.6", 0))
        with pytest.raises(OutOfScope, match=r"refusing to send to 127\.0\.0\.5"):
            sock.sendto(b"probe", listener.getsockname())
    with pytest.raises(TimeoutError):
        listener.recvfrom(100)


def test_binding_outside_the_given_sources_is_refused():
    scope = Scope(["127.0.0.5"], ["127.0.0.6"])
    with scope.open_socket(socket.SOCK_DGRAM) as sock, pytest.raises(OutOfScope, match="from"):
        sock.bind(("127.0.0.1", 0))


def test_an_unbound_socket_may_not_send(listener):
    # The kernel would pick the source address: not one the operator gave.
    scope = Scope(["127.0.0.5"], ["127.0.0.6"])
    with scope.open_socket(socket.SOCK_DGRAM) as sock, pytest.raises(OutOfScope, match="unbound"):
        sock.sendto(b"probe", listener.getsockname())


def test_a_connection_to_another_address_is_refused():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.5", 0))
    server.listen()
    scope = Scope(["127.0.0.7"], ["127.0.0.6"])
    try:
        with scope.open_socket(socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.6", 0))
            with pytest.raises(OutOfScope):
                sock.connect(server.getsockname())
            server.settimeout(0.2)
            with pytest.raises(TimeoutError):
                server.accept()
    finally:
        server.close()


def test_a_refusal_is_not_mistaken_for_silence(listener):
    # sip_probe reads a network error as "no answer", which a selftest reads
    # as "stopped": the guard's refusal must come through instead.
    scope = Scope(["127.0.0.7"], ["127.0.0.6"])
    with pytest.raises(OutOfScope):
        exchange(listener.getsockname(), b"OPTIONS", source_ip="127.0.0.6",
                 open_socket=scope.open_socket)  # fmt: skip


def test_sends_are_paced_to_the_rate(listener):
    scope = Scope(["127.0.0.5"], ["127.0.0.6"], max_packets_per_s=50)
    with scope.open_socket(socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.6", 0))
        started = time.monotonic()
        for _ in range(11):
            sock.sendto(b"x", listener.getsockname())
        # Ten intervals of 20 ms at least; the test waits on nothing else.
        assert time.monotonic() - started >= 0.2


def test_names_must_be_addresses():
    with pytest.raises(ValueError, match="not an IP address"):
        Scope(["sbc.example.net"], ["127.0.0.6"])


def test_no_selftest_module_opens_a_socket_but_the_guard():
    for path in SELFTEST.glob("*.py"):
        if path.name == "guard.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value
            called = f"{owner.id if isinstance(owner, ast.Name) else '?'}.{node.func.attr}"
            assert called not in ("socket.socket", "socket.create_connection"), path.name


def test_selftest_refuses_to_run_unconfirmed(capsys):
    code = main(["selftest", "--target", "127.0.0.5:5060", "--policy", str(EXAMPLE_POLICY),
                 "--source", "127.0.0.6", "--source", "127.0.0.7",
                 "--confirm", "127.0.0.9:5060"])  # fmt: skip
    assert code == 2
    assert "not confirmed" in capsys.readouterr().err
