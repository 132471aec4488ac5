"""sipshield's state layer against a Redis that requires TLS and an ACL user.

A real redis-server started here listens on TLS only (its certificate from
the lab's CA), has the default user switched off and one ``sipshield`` user
allowed only the ``sipshield:*`` keys.  The client is sipshield's own
(``SharedState`` with ``rediss://`` and ``redis.tls_ca``): it stores a ban
with the right user and CA, and fails as an outage (``StateUnavailable``,
logged without the password) with a wrong password or an untrusted CA.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sipshield.core.bans import BanSettings, BanStore
from sipshield.core.state import RedisSettings, SharedState, StateUnavailable
from sipshield.lab.net import free_port
from sipshield.lab.tls_material import make_lab_certificates

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-acl-pass"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    directory = tmp_path_factory.mktemp("redis-tls")
    certificates = make_lab_certificates(directory / "tls", ["127.0.0.1"])
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(certificates.server_cert),
            "--tls-key-file", str(certificates.server_key),
            "--tls-ca-cert-file", str(certificates.ca_cert),
            "--tls-auth-clients", "no", "--save", "", "--dir", str(directory),
            "--user", "default", "off",
            "--user", "sipshield", "on", f">{PASSWORD}", "~sipshield:*", "&*", "+@all",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    admin = redis.Redis(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certificates.ca_cert),
        username="sipshield", password=PASSWORD, socket_timeout=1,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            admin.ping()
            break
        except redis.RedisError:
            assert time.monotonic() < deadline, "the TLS Redis did not come up"
            time.sleep(0.1)
    yield port, certificates.ca_cert
    server.terminate()
    server.wait(5)


def state(port: int, ca: Path, password: str = PASSWORD) -> SharedState:
    return SharedState(
        RedisSettings(
            url=f"rediss://sipshield:{password}@127.0.0.1:{port}/0",
            tls_ca=str(ca),
            timeout_ms=1000,
        )
    )


def test_a_ban_is_stored_over_tls_as_the_acl_user(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    store = BanStore(state(port, ca), BanSettings())
    record = store.add("192.0.2.77", "test", "manual", ttl_s=60)
    assert record is not None and record.stored
    assert store.state.run(lambda c: c.exists("sipshield:ban:ip:192.0.2.77")) == 1
    # The ACL allows sipshield's keys only: the user really is restricted.
    with pytest.raises(redis.exceptions.NoPermissionError):
        store.state.run(lambda c: c.set("other:key", 1))


def test_a_wrong_password_is_an_outage_logged_without_it(
    tls_redis: tuple[int, Path], caplog: pytest.LogCaptureFixture
) -> None:
    port, ca = tls_redis
    shared = state(port, ca, password="wrong-password")
    with (
        caplog.at_level(logging.ERROR, logger="sipshield.core.state"),
        pytest.raises(StateUnavailable),
    ):
        shared.run(lambda c: c.ping())
    assert "redis unreachable" in caplog.text
    assert "wrong-password" not in caplog.text


def test_a_server_certificate_from_another_ca_is_refused(
    tls_redis: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ = tls_redis
    other = make_lab_certificates(tmp_path / "other", ["127.0.0.1"])
    with pytest.raises(StateUnavailable, match="certificate verify failed"):
        state(port, other.ca_cert).run(lambda c: c.ping())
