"""The names an X.509 certificate carries, read from its DER encoding.

Kamailio's ``$tls_peer_san_hostname`` gives only the first DNS name of a
certificate, so sipshield reads ``$tls_peer_raw_cert`` and decodes the few
fields identity checks need: the subjectAltName DNS names and IP addresses,
the subject CN, and the issuer and subject names (to tell which CA issued a
certificate).  Only the outer structure of RFC 5280 is walked; signatures are
OpenSSL's business (Kamailio verifies the chain, ``$tls_peer_verified``).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)
_OID_CN = bytes.fromhex("550403")
_OID_SAN = bytes.fromhex("551d11")
_SEQUENCE, _SET, _OID, _OCTETS = 0x30, 0x31, 0x06, 0x04
_EXTENSIONS = 0xA3
_DNS_NAME, _URI, _IP_ADDRESS = 0x82, 0x86, 0x87
_STRING_TAGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}

NormalizedName = tuple[tuple[bytes, str], ...]


class BadCertificate(ValueError):
    """The bytes are not a certificate this reader can decode."""


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the element at ``pos``."""
    if pos + 2 > len(data):
        raise BadCertificate("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        if not 0 < size <= 4 or pos + size > len(data):
            raise BadCertificate("bad DER length")
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    if pos + length > len(data):
        raise BadCertificate("DER element runs past its container")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(tag, value start, value end, element start) of each element in a range."""
    pos = start
    while pos < end:
        tag, vstart, vend = _tlv(data, pos)
        yield tag, vstart, vend, pos
        pos = vend


def _text(tag: int, raw: bytes) -> str:
    return raw.decode(_STRING_TAGS.get(tag, "latin-1"), errors="replace")


def _name(data: bytes, start: int, end: int) -> NormalizedName:
    """A Name as (OID, case-folded value) pairs, so equal names compare equal."""
    parts = []
    for _, set_start, set_end, _ in _children(data, start, end):
        for _, atv_start, atv_end, _ in _children(data, set_start, set_end):
            (_, oid_s, oid_e, _), (val_tag, val_s, val_e, _) = list(
                _children(data, atv_start, atv_end)
            )[:2]
            value = " ".join(_text(val_tag, data[val_s:val_e]).split()).casefold()
            parts.append((data[oid_s:oid_e], value))
    return tuple(parts)


@dataclass(frozen=True)
class CertificateNames:
    subject: NormalizedName
    issuer: NormalizedName
    common_name: str = ""
    dns_names: tuple[str, ...] = field(default=())
    ip_addresses: tuple[str, ...] = field(default=())
    # uniformResourceIdentifier subjectAltNames (RFC 5922 puts "sip:domain" there).
    uris: tuple[str, ...] = field(default=())
    # Whether the certificate has a subjectAltName extension at all.
    has_san: bool = False

    def sip_domains(self) -> tuple[str, ...]:
        """The SIP domains the certificate proves, per RFC 5922 section 7.1.

        Each ``sip:`` (or ``sips:``) URI subjectAltName names a domain (a URI
        with a user part names a user, not a domain, and does not count), and
        so does each DNS subjectAltName.  The CN is read only when the
        certificate has no subjectAltName at all.
        """
        if not self.has_san:
            return (self.common_name,) if self.common_name else ()
        domains = [
            rest.split(";", 1)[0].lower()
            for scheme, _, rest in (uri.partition(":") for uri in self.uris)
            if scheme.lower() in ("sip", "sips") and rest and "@" not in rest
        ]
        return tuple(domains) + self.dns_names

    def identities(self) -> tuple[str, ...]:
        """The names an identity check matches: DNS SANs, else the CN (RFC 6125)."""
        if self.dns_names:
            return self.dns_names
        return (self.common_name,) if self.common_name else ()


def read_certificate(der: bytes) -> CertificateNames:
    """Decode the names of one DER certificate; anything unreadable is BadCertificate.

    The bytes come from the peer, so every decoding failure, whatever Python
    raises for it, must come out as BadCertificate (an identity check failing),
    never as a crash of the module that asked.
    """
    try:
        return _read_certificate(der)
    except BadCertificate:
        raise
    except (ValueError, IndexError, StopIteration, UnicodeError) as exc:
        raise BadCertificate(f"undecodable certificate: {type(exc).__name__}: {exc}") from None


def _read_certificate(der: bytes) -> CertificateNames:
    try:
        _, cert_s, cert_e = _tlv(der, 0)
        _, tbs_s, tbs_e, _ = next(_children(der, cert_s, cert_e))
        fields = list(_children(der, tbs_s, tbs_e))
    except (StopIteration, IndexError) as exc:
        raise BadCertificate(f"not a certificate: {exc}") from None
    if fields and fields[0][0] == 0xA0:  # explicit version
        fields = fields[1:]
    if len(fields) < 6:
        raise BadCertificate("certificate has too few fields")
    issuer = _name(der, fields[2][1], fields[2][2])
    subject = _name(der, fields[4][1], fields[4][2])
    common_name = next((value for oid, value in subject if oid == _OID_CN), "")
    dns: list[str] = []
    ips: list[str] = []
    uris: list[str] = []
    has_san = False
    for tag, vstart, _, _ in fields[6:]:
        if tag != _EXTENSIONS:
            continue
        _, seq_s, seq_e = _tlv(der, vstart)
        for _, ext_s, ext_e, _ in _children(der, seq_s, seq_e):
            parts = list(_children(der, ext_s, ext_e))
            if parts[0][0] != _OID or der[parts[0][1] : parts[0][2]] != _OID_SAN:
                continue
            has_san = True
            octets = parts[-1]
            _, gn_s, gn_e = _tlv(der, octets[1])
            for gn_tag, g_s, g_e, _ in _children(der, gn_s, gn_e):
                if gn_tag == _DNS_NAME:
                    dns.append(der[g_s:g_e].decode("ascii", errors="replace").lower())
                elif gn_tag == _URI:
                    uris.append(der[g_s:g_e].decode("ascii", errors="replace"))
                elif gn_tag == _IP_ADDRESS and g_e - g_s in (4, 16):
                    ips.append(str(ipaddress.ip_address(der[g_s:g_e])))
    return CertificateNames(
        subject, issuer, common_name, tuple(dns), tuple(ips), tuple(uris), has_san
    )


def pem_certificates(pem: bytes | str) -> list[bytes]:
    """The DER bytes of every certificate in a PEM text (a bundle or one)."""
    data = pem.encode() if isinstance(pem, str) else pem
    return [base64.b64decode(b"".join(block.split())) for block in _PEM.findall(data)]


def name_matches(pattern: str, name: str) -> bool:
    """Case-insensitive DNS name match; a leading ``*.`` stands for one label.

    The star may be in the expected pattern or in the certificate's name
    (RFC 6125 6.4.3, left-most label only).
    """
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    for wild, plain in ((pattern, name), (name, pattern)):
        if wild.startswith("*.") and "." in plain:
            label, rest = plain.split(".", 1)
            if label and rest == wild[2:]:
                return True
    return False
