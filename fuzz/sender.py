"""Put fuzzed messages on the wire, many at a time, and read what comes back.

Workers send one message at a time each and wait for its final reply (or a
timeout), so the number of workers bounds what is in flight.  Each worker has
its own socket (UDP) or opens one connection per message (TCP), bound to one
of many loopback source addresses: the lab's per-source state (flood counts,
bans, sweep counters) is spread over them as real traffic from many peers
would be.

A reply is traced to its message by the ``fz<seed>-<index>`` token its
Call-ID or Via carries (fuzz.corpus); when the mutations destroyed both, a
reply on a worker's socket is its current message's.  A reply that comes
after its message timed out still counts, marked late.  Who answered is read
from the Server header: the SBC's own replies say ``sipshield``, the PBX's,
relayed, say something else.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from fuzz.corpus import Fuzzed, find_index

# How long a UDP socket stays open after its worker's last message.
LINGER_S = 1.0
_STATUS = re.compile(rb"SIP/2\.0 (\d{3}) ")
_SERVER = re.compile(rb"\r\n(?:Server|User-Agent):[ \t]*([^\r\n]*)", re.IGNORECASE)


@dataclass
class Outcome:
    index: int
    transport: str
    source: str
    status: int | None = None  # the final reply's code; None: no final reply
    replier: str = ""  # "sbc", "pbx" or "" (no reply)
    provisional: bool = False  # a 1xx came
    late: bool = False  # the final reply came after the timeout
    error: str = ""  # the send failed (too big, connection refused or reset, ...)


@dataclass(frozen=True)
class Reply:
    index: int | None
    status: int
    replier: str


def parse_replies(data: bytes, seed: int) -> list[Reply]:
    """Every SIP reply in ``data`` (a datagram, or what a connection returned)."""
    replies = []
    starts = [m.start() for m in _STATUS.finditer(data)]
    ends = [*starts[1:], len(data)] if starts else []
    for start, end in zip(starts, ends, strict=True):
        chunk = data[start:end]
        status = int(chunk[8:11])
        server = _SERVER.search(chunk)
        replier = "sbc" if server and b"sipshield" in server.group(1) else "pbx"
        replies.append(Reply(find_index(chunk, seed), status, replier))
    return replies


class _Pending:
    """What one worker waits for: its current message's final reply."""

    def __init__(self) -> None:
        self.index: int | None = None
        self.done: asyncio.Future[None] | None = None


class Sender:
    def __init__(
        self,
        seed: int,
        targets: dict[str, tuple[str, int]],
        sources: list[str],
        udp_workers: int,
        tcp_workers: int,
        udp_wait: float,
        tcp_wait: float,
    ) -> None:
        self.seed = seed
        self.targets = targets
        self.sources = sources
        self.udp_workers = udp_workers
        self.tcp_workers = tcp_workers
        self.udp_wait = udp_wait
        self.tcp_wait = tcp_wait
        self.outcomes: dict[int, Outcome] = {}
        self.stray_replies = 0  # replies to nothing we know
        # Errors the UDP sockets reported (a send refused, an ICMP error), by kind.
        self.send_errors: Counter[str] = Counter()

    def send(self, batch: Iterable[Fuzzed]) -> dict[int, Outcome]:
        """Send every message of ``batch``; return their outcomes by index."""
        messages = list(batch)
        self.outcomes = {}
        asyncio.run(self._send(messages))
        return self.outcomes

    async def _send(self, messages: list[Fuzzed]) -> None:
        udp = asyncio.Queue[Fuzzed]()
        tcp = asyncio.Queue[Fuzzed]()
        for message in messages:
            (udp if message.transport == "udp" else tcp).put_nowait(message)
        workers = [self._udp_worker(n, udp) for n in range(min(self.udp_workers, udp.qsize()))]
        workers += [self._tcp_worker(n, tcp) for n in range(min(self.tcp_workers, tcp.qsize()))]
        await asyncio.gather(*workers)

    def _source(self, worker: int) -> str:
        return self.sources[worker % len(self.sources)]

    def _record(self, reply: Reply, pending: _Pending) -> None:
        index = reply.index if reply.index is not None else pending.index
        outcome = self.outcomes.get(index) if index is not None else None
        if outcome is None:
            self.stray_replies += 1
            return
        if reply.status < 200:
            outcome.provisional = True
            return
        if outcome.status is None:
            outcome.status, outcome.replier = reply.status, reply.replier
            outcome.late = index != pending.index
        if index == pending.index and pending.done is not None and not pending.done.done():
            pending.done.set_result(None)

    async def _udp_worker(self, worker: int, queue: asyncio.Queue[Fuzzed]) -> None:
        loop = asyncio.get_running_loop()
        pending = _Pending()
        sender = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                for reply in parse_replies(data, sender.seed):
                    sender._record(reply, pending)

            def error_received(self, exc: Exception) -> None:
                # A send the kernel refused, or an ICMP error for an earlier one:
                # either way a message that may never have reached the SBC.
                sender.send_errors[type(exc).__name__] += 1

        transport, _ = await loop.create_datagram_endpoint(
            Protocol, local_addr=(self._source(worker), 0), family=socket.AF_INET
        )
        source = "{}:{}".format(*transport.get_extra_info("sockname")[:2])
        try:
            while not queue.empty():
                message = queue.get_nowait()
                outcome = Outcome(message.index, "udp", source)
                self.outcomes[message.index] = outcome
                pending.index, pending.done = message.index, loop.create_future()
                try:
                    transport.sendto(message.data, self.targets["udp"])
                except OSError as exc:
                    outcome.error = type(exc).__name__
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pending.done, self.udp_wait)
            # Late replies, to this worker's last messages among others, have a moment to arrive.
            await asyncio.sleep(LINGER_S)
        finally:
            transport.close()

    async def _tcp_worker(self, worker: int, queue: asyncio.Queue[Fuzzed]) -> None:
        while not queue.empty():
            message = queue.get_nowait()
            outcome = Outcome(message.index, "tcp", "")
            self.outcomes[message.index] = outcome
            try:
                await asyncio.wait_for(self._tcp_exchange(worker, message, outcome), self.tcp_wait)
            except TimeoutError:
                pass
            except OSError as exc:
                outcome.error = type(exc).__name__

    async def _tcp_exchange(self, worker: int, message: Fuzzed, outcome: Outcome) -> None:
        reader, writer = await asyncio.open_connection(
            *self.targets["tcp"], local_addr=(self._source(worker), 0)
        )
        outcome.source = "{}:{}".format(*writer.get_extra_info("sockname")[:2])
        pending = _Pending()
        pending.index = message.index
        pending.done = asyncio.get_running_loop().create_future()
        try:
            writer.write(message.data)
            await writer.drain()
            received = b""
            while not pending.done.done():
                data = await reader.read(65536)
                if not data:
                    return  # the SBC closed the connection: no (further) reply
                received += data
                for reply in parse_replies(received, self.seed):
                    self._record(reply, pending)
                if pending.done.done():
                    return
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
