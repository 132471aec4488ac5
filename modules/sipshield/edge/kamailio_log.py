"""Send Python's logging to Kamailio's log, so operators read one log."""

from __future__ import annotations

import logging
from typing import Any


class KamailioLogHandler(logging.Handler):
    def __init__(self, ksr: Any) -> None:
        super().__init__()
        self._by_level = (
            (logging.ERROR, ksr.err),
            (logging.WARNING, ksr.warn),
            (logging.INFO, ksr.info),
            (logging.NOTSET, ksr.dbg),
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            for level, write in self._by_level:
                if record.levelno >= level:
                    write(text + "\n")
                    return
        except Exception:
            self.handleError(record)


def send_logging_to_kamailio(ksr: Any, level: int = logging.INFO) -> None:
    handler = KamailioLogHandler(ksr)
    handler.setFormatter(logging.Formatter("sipshield[%(name)s] %(levelname)s: %(message)s"))
    root = logging.getLogger("sipshield")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
