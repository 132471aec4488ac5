"""Fuzzing: thousands of mutated requests thrown at the real SBC.

The lab runs the validation module alone (no flood control to discard the
flood), so every message that Kamailio's core parses reaches sipshield.  The
messages are the valid samples mutated by a seeded RNG, so a failure can be
replayed.  The SBC passes when no Kamailio process died, no Python exception
escaped into its log, and a legitimate OPTIONS is still answered afterwards.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.mutations import mutate
from tests.integration.lab_fixture import RunningLab
from tests.integration.validation_lab import render_for_lab, validation_only_lab
from tests.validation_samples import load_samples

pytestmark = pytest.mark.integration

SEED = 20240611
UDP_MESSAGES = 6000
TCP_CONNECTIONS = 300
TCP_PIPELINED = 20  # connections that each carry several messages back to back
# Kamailio reads UDP as fast as its workers run Python; bursts with a pause
# keep its socket buffer from overflowing, so the messages are processed
# rather than dropped by the kernel.
BURST = 50
PAUSE_S = 0.02
RECOVERY_S = 15.0
PYTHON_FAILURES = ("Traceback", "Unhandled exception in the Python code")


@pytest.fixture(scope="module")
def fuzz_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with validation_only_lab(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


def sbc_processes(lab: RunningLab) -> set[int]:
    """The SBC's main process and its children (they share its process group)."""
    group = lab.info["pids"]["sbc"]
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.add(int(entry.name))
    return members


def fuzzed(lab: RunningLab, transport: str, count: int, rng: random.Random) -> Iterator[bytes]:
    valid = [sample for sample in load_samples() if sample.expect.action == "pass"]
    for _ in range(count):
        _, message = render_for_lab(rng.choice(valid), lab, transport)
        yield mutate(message, rng)


def send_udp(lab: RunningLab, messages: Iterator[bytes]) -> int:
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for index, message in enumerate(messages, 1):
            try:
                sock.sendto(message, lab.sip("udp"))
                sent += 1
            except OSError:
                pass  # empty or above the datagram limit: not a SIP problem
            if index % BURST == 0:
                time.sleep(PAUSE_S)
    return sent


def send_tcp(lab: RunningLab, messages: list[bytes]) -> None:
    with socket.create_connection(lab.sip("tcp"), timeout=2) as sock:
        try:
            for message in messages:
                sock.sendall(message)
        except OSError:
            pass  # Kamailio closes a connection that sent garbage; that is the point


def answered(lab: RunningLab) -> bool:
    return lab.options("udp", timeout=1.0) == 200 and lab.options("tcp", timeout=1.0) == 200


def test_fuzzed_messages_do_not_hurt_the_sbc(fuzz_lab: RunningLab) -> None:
    rng = random.Random(SEED)
    processes = sbc_processes(fuzz_lab)
    log_start = len(fuzz_lab.log("sbc"))
    assert answered(fuzz_lab)

    sent = send_udp(fuzz_lab, fuzzed(fuzz_lab, "udp", UDP_MESSAGES, rng))
    for _ in range(TCP_CONNECTIONS):
        send_tcp(fuzz_lab, list(fuzzed(fuzz_lab, "tcp", 1, rng)))
    for _ in range(TCP_PIPELINED):
        send_tcp(fuzz_lab, list(fuzzed(fuzz_lab, "tcp", rng.randint(2, 10), rng)))

    deadline = time.monotonic() + RECOVERY_S
    while not answered(fuzz_lab) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert answered(fuzz_lab), f"the SBC stopped answering OPTIONS (seed {SEED})"
    assert sbc_processes(fuzz_lab) == processes, f"a Kamailio process died (seed {SEED})"
    log = fuzz_lab.log("sbc")[log_start:]
    failures = [line for line in log.splitlines() if any(f in line for f in PYTHON_FAILURES)]
    assert not failures, f"Python errors in the SBC log (seed {SEED}):\n" + "\n".join(failures[:5])
    # The fuzz reached sipshield, not only Kamailio's core parser.
    rejected = [e for e in fuzz_lab.events() if e["module"] == "validation"]
    assert len(rejected) > sent // 10, f"only {len(rejected)} of {sent} fuzzed messages judged"
