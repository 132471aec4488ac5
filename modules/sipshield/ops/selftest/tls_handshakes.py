"""TLS: handshakes in TLS 1.0 and 1.1, and in TLS 1.2 with weak cipher suites.

The client offers only what is being tested (OpenSSL's security level 0, so
that it really offers it); the attack is stopped when the handshake fails.
A strong TLS 1.2 handshake must succeed first: otherwise nothing is learnt.
Certificates are not verified: this is about what the SBC agrees to.
"""

from __future__ import annotations

import socket
import ssl

from sipshield.core.policy import Policy
from sipshield.ops.selftest.attack import Attack, Expectation, NotRunnable, Outcome
from sipshield.ops.selftest.target import Context

# CBC with SHA-1 or SHA-2 MACs, no forward secrecy, 3DES, RC4, NULL: the
# suites tls_config calls weak, for RSA and ECDSA certificates alike.
WEAK_SUITES = (
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:"
    "ECDHE-RSA-AES256-SHA384:AES128-SHA:AES256-SHA:AES128-GCM-SHA256:DES-CBC3-SHA:"
    "RC4-SHA:NULL-SHA"
)


def handshake(
    ctx: Context, version: ssl.TLSVersion, ciphers: str | None = None
) -> tuple[bool, str]:
    """(True, "TLSv1.2 CIPHER") when the SBC completes the handshake, else (False, why)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    context.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
    sock = ctx.scope.open_socket(socket.SOCK_STREAM)
    sock.settimeout(3)
    try:
        sock.bind((ctx.attacker, 0))
        sock.connect(ctx.target.sip("tls"))
        with context.wrap_socket(sock) as tls:
            cipher = tls.cipher()
            return True, f"{tls.version()} {cipher[0] if cipher else '?'}"
    except (ssl.SSLError, OSError) as exc:
        return False, type(exc).__name__ + (
            f" ({exc.reason})" if isinstance(exc, ssl.SSLError) else ""
        )
    finally:
        sock.close()


def _strong_first(ctx: Context) -> None:
    ok, detail = handshake(ctx, ssl.TLSVersion.TLSv1_2, "ECDHE+AESGCM:ECDHE+CHACHA20")
    if not ok:
        raise NotRunnable(f"not even a strong TLS 1.2 handshake succeeds: {detail}")


class OldTlsVersions(Attack):
    name = "tls-old-versions"
    summary = "TLS 1.0 and TLS 1.1 handshakes"
    needs = ("tls",)

    def expect(self, policy: Policy) -> Expectation:
        return Expectation(True, f"tls.min_version is {policy.tls.min_version}")

    def run(self, ctx: Context) -> Outcome:
        _strong_first(ctx)
        accepted = []
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            ok, detail = handshake(ctx, version)
            if ok:
                accepted.append(detail)
        if accepted:
            return Outcome(False, "accepted: " + ", ".join(accepted))
        return Outcome(True, "TLS 1.0 and 1.1 refused; TLS 1.2 with a strong suite accepted")


class WeakCiphers(Attack):
    name = "tls-weak-ciphers"
    summary = "TLS 1.2 offering only weak suites (CBC, no forward secrecy, 3DES, RC4, NULL)"
    needs = ("tls",)

    def expect(self, policy: Policy) -> Expectation:
        return Expectation(True, "the policy's cipher list holds only strong suites")

    def run(self, ctx: Context) -> Outcome:
        _strong_first(ctx)
        ok, detail = handshake(ctx, ssl.TLSVersion.TLSv1_2, WEAK_SUITES)
        return Outcome(not ok, f"accepted {detail}" if ok else f"refused: {detail}")
