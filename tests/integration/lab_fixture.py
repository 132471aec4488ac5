"""A running lab as a test sees it: addresses, users, logs and helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from sipshield.lab.sip_probe import send_request
from sipshield.lab.sipp import SippResult, SippServer, run_sipp
from sipshield.lab.stack import group_members

SIPSHIELD = [sys.executable, "-m", "sipshield.ops.cli"]
PLUGINS = Path(__file__).resolve().parent / "plugins"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


@dataclass
class RunningLab:
    directory: Path
    info: dict[str, Any]

    @property
    def domain(self) -> str:
        return self.info["domain"]

    @property
    def tls_ca(self) -> str:
        return self.info["tls"]["ca"]

    def sip(self, transport: str = "udp") -> tuple[str, int]:
        return _split(self.info["sip"][transport])

    def sip_target(self, transport: str = "udp") -> str:
        return self.info["sip"][transport]

    def password(self, user: str) -> str:
        return next(u["password"] for u in self.info["users"] if u["username"] == user)

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.info["redis"], decode_responses=True, socket_timeout=2)

    def log(self, name: str) -> str:
        return Path(self.info["logs"][name]).read_text(errors="replace")

    def sbc_received_from(self, source_ip: str) -> bool:
        """True when the SBC's sipdump (lab up --sipdump) holds a message from ``source_ip``.

        sipdump records each message as received, before Kamailio parses it, so
        this also shows what the parser went on to discard without a word.
        """
        folder = self.directory / "sipdump"
        line = f"srcip: {source_ip}\n"
        return any(line in path.read_text(errors="replace") for path in folder.glob("*.data"))

    def pbx_saw(self, call_id: str) -> bool:
        """True when the lab PBX logged receiving a request with this Call-ID."""
        return f"call-id={call_id}" in self.log("pbx")

    def carrier_received(self, method: str, call_id: str) -> list[str]:
        """The lab carrier's log lines for ``method`` requests with this Call-ID
        ("carrier: received METHOD R-URI call-id=... pai=... src=ADDR:PORT")."""
        return [
            line
            for line in self.log("carrier").splitlines()
            if f"carrier: received {method} " in line and f" call-id={call_id} " in line
        ]

    def events(self) -> list[dict[str, Any]]:
        path = Path(self.info["events"])
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_for_event(self, timeout: float = 5.0, **match: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if all(event.get(k) == v for k, v in match.items()):
                    return event
            time.sleep(0.1)
        raise AssertionError(f"no event matching {match}; events: {self.events()[-5:]}")

    def options(
        self, transport: str = "udp", timeout: float = 2.0, source_ip: str = "127.0.0.1"
    ) -> int | None:
        return send_request(
            self.sip(transport),
            transport=transport,
            timeout=timeout,
            source_ip=source_ip,
            tls_ca=Path(self.info["tls"]["ca"]),
        )

    def send(
        self,
        raw: bytes,
        transport: str = "udp",
        timeout: float = 2.0,
        source_ip: str = "127.0.0.1",
    ) -> int | None:
        return send_request(
            self.sip(transport), raw, transport=transport, timeout=timeout, source_ip=source_ip
        )

    def processes(self, name: str) -> set[int]:
        """Live pids in the process group of one lab service (Kamailio: main + workers)."""
        return set(group_members(self.info["pids"][name]))

    def register(self, user: str, transport: str = "udp", **options: Any) -> SippResult:
        return run_sipp(
            "register",
            self.sip_target("udp"),
            service=user,
            transport=transport,
            auth=(user, self.password(user)),
            keys={"domain": self.domain},
            **options,
        )

    def answer_calls(self, user: str, local_port: int, calls: int = 1) -> SippServer:
        """Register ``user`` from ``local_port`` and answer there (UDP)."""
        result = self.register(user, local_port=local_port)
        assert result.ok, result.explain()
        return SippServer(
            "call_uas", local_port=local_port, calls=calls, keys={"domain": self.domain}
        )

    def call(self, caller: str, callee: str, transport: str = "udp", **options: Any) -> SippResult:
        return run_sipp(
            "call_uac",
            self.sip_target("udp"),
            service=callee,
            transport=transport,
            auth=(caller, self.password(caller)),
            keys={"domain": self.domain, "caller": caller},
            **options,
        )


def lab_up(
    policy: Path, directory: Path, extra_pythonpath: Path | None = None, *lab_options: str
) -> RunningLab:
    """Start a lab with ``sipshield lab up`` (``lab_options`` are its further options)."""
    env = dict(os.environ)
    if extra_pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(extra_pythonpath), env.get("PYTHONPATH", "")) if p
        )
    proc = subprocess.run(
        [
            *SIPSHIELD,
            *("lab", "up", "--policy", str(policy), "--dir", str(directory), "--detach"),
            *lab_options,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"lab up failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return RunningLab(directory, json.loads((directory / "lab.json").read_text()))


@contextmanager
def lab_with_policy(
    directory: Path, policy_text: str, extra_pythonpath: Path | None = None, *lab_options: str
) -> Iterator[RunningLab]:
    """A lab running ``policy_text``, stopped on the way out whatever happened."""
    directory.mkdir(parents=True, exist_ok=True)
    policy = directory / "policy.yaml"
    policy.write_text(policy_text)
    running = lab_up(policy, directory / "lab", extra_pythonpath, *lab_options)
    try:
        yield running
    finally:
        lab_down(running)


def lab_down(lab: RunningLab) -> None:
    subprocess.run(
        [*SIPSHIELD, "lab", "down", "--dir", str(lab.directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
