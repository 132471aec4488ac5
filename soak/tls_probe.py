"""A legitimate OPTIONS over a new TLS connection every few seconds.

The SIPp streams keep one UDP socket each, so the SBC never opens or closes
anything for them; a leak of file descriptors, TLS sessions or connection
state shows only where connections come and go.  This client connects,
verifies the lab's certificate, asks, reads the 200 and closes, again and
again, from 127.0.0.1 like the rest of the legitimate traffic.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sipshield.lab.sip_probe import send_request


class TlsProbe:
    def __init__(self, target: str, ca: Path, every_s: float) -> None:
        host, _, port = target.rpartition(":")
        self.address = (host, int(port))
        self.ca, self.every_s = ca, every_s
        self.ok = 0
        self.failed = 0
        # The status of each failure (None: no answer), for the report.
        self.failures: list[int | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tls-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            status = send_request(self.address, transport="tls", timeout=5.0, tls_ca=self.ca)
            if status == 200:
                self.ok += 1
            else:
                self.failed += 1
                self.failures.append(status)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
