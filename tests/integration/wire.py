"""What crosses the loopback wire, captured as it is sent, to judge media by its bytes.

A raw packet socket on ``lo`` (root, as the suite runs) records every UDP
datagram between the given ports; nothing is written to the host's tables.

Whether RTP is encrypted is judged without any key.  The phones send a
440 Hz tone in G.711 µ-law: decoded, each sample is close to the one before
(their correlation is cos(2π·440/8000) ≈ 0.94), and silence is one value
repeated.  An SRTP payload is ciphertext: its decoded samples do not correlate
(|r| < 0.3 but for 1 packet in 10^4) and 160 bytes hold about 120 distinct
values.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
ETH_HEADER = 14
PACKET_OUTGOING = 4
PAYLOAD = 160  # PCMU, 20 ms
CIPHERTEXT_MIN_DISTINCT = 80
CIPHERTEXT_MAX_CORRELATION = 0.3
AUDIO_MIN_CORRELATION = 0.6


@dataclass(frozen=True)
class Datagram:
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


@dataclass
class Capture:
    datagrams: list[Datagram] = field(default_factory=list)

    def between(self, port_a: int, port_b: int) -> list[Datagram]:
        """The datagrams from either port to the other (an RTP flow, both directions)."""
        ends = {port_a, port_b}
        return [d for d in self.datagrams if {d.src[1], d.dst[1]} == ends]


def rtp_payloads(datagrams: list[Datagram]) -> list[bytes]:
    """The payloads of the RTP packets (version 2, audio payload types, not RTCP)."""
    payloads = []
    for datagram in datagrams:
        data = datagram.payload
        # RTCP shares the version bits; its packet types 200-204 read as
        # marker + payload type 72-76 here.
        if len(data) > 12 and data[0] >> 6 == 2 and not 72 <= data[1] & 0x7F <= 76:
            csrc = data[0] & 0x0F
            payloads.append(data[12 + 4 * csrc :])
    return payloads


def _ulaw(byte: int) -> int:
    """One G.711 µ-law byte as a linear sample."""
    u = ~byte & 0xFF
    sample = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return -(sample - 0x84) if u & 0x80 else sample - 0x84


def correlation(payload: bytes) -> float | None:
    """Lag-1 autocorrelation of the decoded samples; None when they are all equal."""
    samples = [_ulaw(b) for b in payload[:PAYLOAD]]
    mean = sum(samples) / len(samples)
    centred = [x - mean for x in samples]
    energy = sum(x * x for x in centred)
    if energy == 0:
        return None
    return sum(a * b for a, b in itertools.pairwise(centred)) / energy


def is_ciphertext(payload: bytes) -> bool:
    r = correlation(payload)
    return (
        len(set(payload[:PAYLOAD])) >= CIPHERTEXT_MIN_DISTINCT
        and r is not None
        and abs(r) < CIPHERTEXT_MAX_CORRELATION
    )


def is_audio(payload: bytes) -> bool:
    r = correlation(payload)
    return r is None or r > AUDIO_MIN_CORRELATION


def share(payloads: list[bytes], test) -> float:
    """The share of full-size payloads that pass ``test`` (0.0 when there are none)."""
    full = [p for p in payloads if len(p) >= PAYLOAD]
    return sum(map(test, full)) / len(full) if full else 0.0


@contextmanager
def capture_udp(ports: tuple[int, int]) -> Iterator[Capture]:
    """Record UDP on ``lo`` to or from any port in the range ``ports`` until the block ends."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind(("lo", 0))
    sock.settimeout(0.2)
    captured = Capture()
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                frame, address = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            # Loopback shows each datagram twice: sent and received.  Keep one.
            if address[2] != PACKET_OUTGOING:
                continue
            datagram = _udp(frame[ETH_HEADER:])
            if datagram and any(
                ports[0] <= p <= ports[1] for p in (datagram.src[1], datagram.dst[1])
            ):
                captured.datagrams.append(datagram)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield captured
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def _udp(packet: bytes) -> Datagram | None:
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    header = (packet[0] & 0x0F) * 4
    src_port, dst_port, length = struct.unpack("!HHH", packet[header : header + 6])
    return Datagram(
        (socket.inet_ntoa(packet[12:16]), src_port),
        (socket.inet_ntoa(packet[16:20]), dst_port),
        packet[header + 8 : header + length],
    )


def wait_until(condition, timeout: float = 10.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
