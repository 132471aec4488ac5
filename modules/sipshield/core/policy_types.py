"""Value types shared by the policy and the modules' settings, and the policy error.

They live apart from ``policy.py`` because the policy imports every module's
settings, and modules must be able to use these without importing the policy.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port must be 1-65535, got {port!r}")
    return value


HostPort = Annotated[str, AfterValidator(_check_host_port)]
Network = Annotated[str, AfterValidator(lambda v: str(ipaddress.ip_network(v, strict=False)))]
Transport = Literal["udp", "tcp", "tls"]


class PolicyError(Exception):
    """A policy that cannot be used; ``errors`` are ready-to-print lines."""

    def __init__(self, path: Path | str, errors: list[str]) -> None:
        self.path = str(path)
        self.errors = errors
        super().__init__("\n".join(errors))
