"""Security events: one JSON object per line, to a log file and to a Redis stream.

An event is written to the file first, so nothing is lost when Redis is down;
the copies meant for the stream wait in a bounded buffer and are flushed with
the next event once Redis answers again.  With ``events.syslog`` each event
also goes to a syslog collector (:mod:`sipshield.core.syslog`, docs/events.md).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sipshield.core.event_formats import syslog_message
from sipshield.core.metrics import NO_METRICS, Metrics
from sipshield.core.policy import EventSettings
from sipshield.core.state import SharedState, StateUnavailable
from sipshield.core.syslog import SyslogSender
from sipshield.sip.reply import ReplyFacts

if TYPE_CHECKING:
    from sipshield.sip.message import SipRequest

log = logging.getLogger("sipshield.core.events")


@dataclass(frozen=True)
class Event:
    module: str
    action: str
    src: str
    reason: str
    call_id: str = ""
    method: str = ""
    user: str = ""
    # "enforce" when the action was applied, "monitor" when it was only logged.
    mode: str = "enforce"
    node: str = ""
    ts: float = field(default_factory=time.time)

    @classmethod
    def of_request(
        cls,
        msg: SipRequest | ReplyFacts,
        module: str,
        action: str,
        reason: str,
        mode: str = "enforce",
    ) -> Event:
        """An event about ``msg`` (a request, or the reply facts that stand for one)."""
        return cls(
            module=module,
            action=action,
            src=f"{msg.src_ip}:{msg.src_port}",
            reason=reason,
            call_id=msg.call_id,
            method=msg.method,
            user=msg.user if isinstance(msg, ReplyFacts) else msg.from_user,
            mode=mode,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)


class EventSink:
    def __init__(
        self,
        settings: EventSettings,
        state: SharedState,
        node: str,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state = state
        self.node = node
        self.stream_key = state.key(settings.stream)
        self._pending: deque[str] = deque(maxlen=settings.buffer_while_down or None)
        self._lost = 0
        self._fd: int | None = None
        self.syslog = None if settings.syslog is None else SyslogSender(settings.syslog)

    def _file(self) -> int | None:
        if self.settings.file is None:
            return None
        if self._fd is None:
            self.settings.file.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND and one write() per line keep lines whole when every
            # Kamailio worker appends to the same file.
            self._fd = os.open(self.settings.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return self._fd

    def reopen(self) -> None:
        """Drop the inherited file descriptor and connection (after a fork)."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        if self.syslog is not None:
            self.syslog.reopen()

    def emit(self, event: Event) -> None:
        if not event.node:
            event = Event(**{**asdict(event), "node": self.node})
        line = event.to_json()
        log.warning("event %s", line)
        self.metrics.verdict(event.module, event.action, event.mode)
        fd = self._file()
        if fd is not None:
            os.write(fd, (line + "\n").encode("utf-8", errors="replace"))
        if self.syslog is not None:
            self.syslog.send(syslog_message(event, self.syslog.settings, os.getpid()))
        if self._pending.maxlen is not None and len(self._pending) == self._pending.maxlen:
            self._lost += 1
            self.metrics.events_lost(1)
        self._pending.append(line)
        if not self._flush():
            self.metrics.event_buffered()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush_pending(self) -> None:
        """Push events buffered during an outage; cheap when there are none."""
        if self._pending and self.state.available_for_retry():
            self._flush()

    def _flush(self) -> bool:
        """Push what is pending to the stream; False when Redis did not take it."""
        pending = list(self._pending)

        def operation(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for line in pending:
                pipe.xadd(
                    self.stream_key,
                    {"event": line},
                    maxlen=self.settings.stream_maxlen,
                    approximate=True,
                )
            pipe.execute()

        try:
            self.state.run(operation)
        except StateUnavailable:
            return False
        for _ in pending:
            self._pending.popleft()
        if self._lost:
            log.error("%d events did not reach the Redis stream (buffer full)", self._lost)
            self._lost = 0
        return True
