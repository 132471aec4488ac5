"""How sipshield reaches Redis: one server, or the master a Sentinel group names.

Every client (the workers' shared state, the CLI, nft-sync) connects here, so
all follow the same policy: with ``sentinels`` set, the URL keeps naming the
database, the user and password (Redis ACL) and TLS (``rediss://``), and the
master's address comes from the sentinels.  redis-py's Sentinel pool asks the
sentinels again whenever a connection fails, and turns a READONLY reply (a
demoted master still answering) into a connection error that does the same;
sipshield's circuit breaker (``SharedState``) then retries on the new master.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel

if TYPE_CHECKING:
    from sipshield.core.state import RedisSettings


def connect(settings: RedisSettings, timeout_s: float, **options: Any) -> redis.Redis:
    """A client for ``settings`` (decoding replies as text), with ``timeout_s`` on every call."""
    options = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "decode_responses": True,
        **options,
    }
    if settings.tls_ca is not None:
        options["ssl_ca_certs"] = settings.tls_ca
    if not settings.sentinels:
        return redis.Redis.from_url(settings.url, **options)
    target = parse_url(settings.url)
    tls = target.pop("connection_class", None) is redis.SSLConnection
    for ignored in ("host", "port", "path"):  # the sentinels name the master
        target.pop(ignored, None)
    # What sipshield sets (its timeouts) wins over the same option in the URL.
    target = {name: value for name, value in target.items() if name not in options}
    sentinel = Sentinel(
        [split_address(address) for address in settings.sentinels],
        sentinel_kwargs={
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "password": settings.sentinel_password,
        },
    )
    return sentinel.master_for(settings.service, ssl=tls, **target, **options)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}"
