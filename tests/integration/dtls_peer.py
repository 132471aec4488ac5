"""A DTLS-SRTP endpoint (RFC 5763/5764) for media tests, on a plain UDP socket.

rtpengine sends and expects DTLS on the media address of the SDP, so the
handshake runs on the same socket as the RTP (RFC 5764 demultiplexing): this
peer drives pyOpenSSL through memory BIOs and moves the datagrams itself.
It never judges the other side's certificate during the handshake (as
RFC 5763 endpoints do, a self-signed certificate is expected); the test
compares the certificate it got with the fingerprint the SDP announced.
"""

from __future__ import annotations

import datetime
import socket
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

SRTP_PROFILE = b"SRTP_AES128_CM_SHA1_80"
MASTER_KEY, MASTER_SALT = 16, 14  # bytes, for SRTP_AES128_CM_SHA1_80
# SDP a=fingerprint hash names (RFC 4572) and their hashes.
HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha-1": hashes.SHA1(),
    "sha-224": hashes.SHA224(),
    "sha-256": hashes.SHA256(),
    "sha-384": hashes.SHA384(),
    "sha-512": hashes.SHA512(),
}


@dataclass(frozen=True)
class Identity:
    """A throwaway self-signed certificate, as browsers and phones use for DTLS-SRTP."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sipshield-dtls-test")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        return fingerprint(self.certificate, algorithm)


def fingerprint(certificate: x509.Certificate, algorithm: str = "sha-256") -> str:
    """The certificate's fingerprint as an SDP a=fingerprint writes it: "AB:CD:..."."""
    return certificate.fingerprint(HASHES[algorithm.lower()]).hex(":").upper()


@dataclass(frozen=True)
class SrtpKeys:
    """The SRTP master keys (key + salt, as pylibsrtp takes them) of both DTLS roles."""

    profile: bytes
    client: bytes
    server: bytes


class DtlsPeer:
    """One DTLS association with ``remote`` over ``sock``, as client or server (a=setup)."""

    def __init__(
        self, sock: socket.socket, remote: tuple[str, int], identity: Identity, client: bool
    ) -> None:
        self.sock, self.remote = sock, remote
        context = SSL.Context(SSL.DTLS_METHOD)
        context.use_certificate(identity.certificate)
        context.use_privatekey(identity.key)
        context.set_tlsext_use_srtp(SRTP_PROFILE)
        # VERIFY_PEER makes a server ask for the client's certificate; any is
        # accepted here because the fingerprint in the SDP is what authenticates it.
        context.set_verify(SSL.VERIFY_PEER, lambda *_: True)
        self.conn = SSL.Connection(context, None)
        if client:
            self.conn.set_connect_state()
        else:
            self.conn.set_accept_state()

    def handshake(self, timeout: float = 10.0) -> None:
        """Run the handshake to its end.

        SSL.Error when the peer refuses it with an alert; TimeoutError when it
        stops answering (rtpengine drops a refused handshake silently).

        Datagrams from other addresses than ``remote`` (and non-DTLS ones, such
        as early RTP) are ignored.  Lost flights are resent on OpenSSL's timer.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.conn.do_handshake()
                self._flush()
                return
            except SSL.WantReadError:
                self._flush()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"DTLS handshake with {self.remote} did not finish")
            wait = self.conn.DTLSv1_get_timeout()
            data = self._receive(min(left, wait if wait is not None else left))
            if data is None:
                self.conn.DTLSv1_handle_timeout()
                self._flush()
            else:
                self.conn.bio_write(data)

    def _receive(self, timeout: float) -> bytes | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            while True:
                data, source = self.sock.recvfrom(65535)
                # RFC 5764 section 5.1.2: first byte 20..63 is DTLS.
                if source == self.remote and data and 20 <= data[0] <= 63:
                    return data
        except TimeoutError:
            return None

    def _flush(self) -> None:
        """Send what OpenSSL wrote: whole records, several to a datagram (RFC 6347 4.1.1)."""
        while True:
            try:
                data = self.conn.bio_read(65535)
            except SSL.WantReadError:
                return
            self.sock.sendto(data, self.remote)

    def peer_certificate(self) -> x509.Certificate:
        certificate = self.conn.get_peer_certificate(as_cryptography=True)
        assert certificate is not None, "the peer sent no certificate"
        return certificate

    def srtp_keys(self) -> SrtpKeys:
        """RFC 5764 section 4.2: client key, server key, client salt, server salt."""
        size = MASTER_KEY + MASTER_SALT
        material = self.conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * size)
        keys, salts = material[: 2 * MASTER_KEY], material[2 * MASTER_KEY :]
        return SrtpKeys(
            self.conn.get_selected_srtp_profile(),
            client=keys[:MASTER_KEY] + salts[:MASTER_SALT],
            server=keys[MASTER_KEY:] + salts[MASTER_SALT:],
        )
