"""TLS policy per peer: who must use TLS, and whether the peer is who it says.

Kamailio's TLS module encrypts the link and can verify a certificate chain,
but it never compares the certificate's names with the peer that was meant.
This module does, from Kamailio's TLS variables:

- a trunk with ``require_tls`` (or ``mtls``) is refused over UDP and TCP;
- a trunk with ``mtls`` must present a certificate that verified
  (``$tls_peer_verified``), was issued by the trunk's CA, and names the trunk
  (DNS subjectAltName, or CN without one);
- remote users of ``require_tls_realms`` (From domain) and requests for
  ``require_tls_domains`` (Request-URI domain) are refused outside TLS;
- a ``sips:`` Request-URI that arrived over UDP or TCP is refused (RFC 3261
  26.2.2: SIPS means TLS on every hop);
- ``tls.min_version: "1.3"``: Kamailio 5.6 cannot refuse a TLS 1.2 handshake
  while allowing 1.3, so requests that came over TLS 1.2 are refused here.

Requests from the PBX are not judged: the PBX link is the inside hop.

:func:`trunk_server_problem` is the other direction: the server a call
reached through a TLS trunk must present a certificate naming the trunk
(``server_name``), or its replies are dropped and its connection closed
(:mod:`sipshield.edge.server_identity`).
:func:`sips_next_hop_problem` is the rule for the next hop of a ``sips:``
request, used by the router before it relays.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from sipshield.core.module import FailureMode, ModuleConfig, SecurityModule
from sipshield.core.policy_types import PolicyError
from sipshield.core.verdict import CONTINUE, Outcome, Reject
from sipshield.sip.cert_names import (
    BadCertificate,
    CertificateNames,
    NormalizedName,
    name_matches,
    pem_certificates,
    read_certificate,
)
from sipshield.sip.message import uri_of

if TYPE_CHECKING:
    from sipshield.core.hop import Hop
    from sipshield.core.policy import Trunk
    from sipshield.core.site import Site
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

log = logging.getLogger("sipshield.checks.tls_policy")

TLS_REQUIRED = "TLS Required"
SIPS_NEEDS_TLS = "SIPS Needs TLS Hop"


class TlsPolicyConfig(ModuleConfig):
    name: Literal["tls_policy"] = "tls_policy"
    # An identity check that cannot run must not let the peer through.
    on_error: FailureMode | None = "closed"
    # Remote users whose From domain (their realm) is one of these must use TLS.
    require_tls_realms: list[str] = Field(default_factory=list)
    # Requests whose Request-URI domain is one of these must come over TLS.
    require_tls_domains: list[str] = Field(default_factory=list)


def host_of(uri: str) -> str:
    """Lower-cased host of a SIP URI or name-addr, without port or brackets."""
    uri = uri_of(uri) if "<" in uri else uri
    rest = uri.split(":", 1)[1] if ":" in uri.split("@", 1)[0] else uri
    rest = rest.rsplit("@", 1)[-1]
    for stop in ";?>":
        rest = rest.split(stop, 1)[0]
    if rest.startswith("["):
        return rest[1 : rest.find("]")].lower()
    return rest.rsplit(":", 1)[0].lower() if rest.count(":") == 1 else rest.lower()


def scheme_of(uri: str) -> str:
    return uri.split(":", 1)[0].strip().lower()


def read_ca_subjects(path: Path) -> frozenset[NormalizedName]:
    """Subjects of the CA certificates in a PEM bundle (raises OSError, ValueError)."""
    certificates = pem_certificates(path.read_bytes())
    if not certificates:
        raise ValueError(f"{path} holds no PEM certificate")
    return frozenset(read_certificate(der).subject for der in certificates)


def identity_problem(
    names: CertificateNames | None,
    verified: bool,
    issuers: frozenset[NormalizedName],
    expected: list[str],
) -> str | None:
    """Why a peer certificate does not prove the expected identity, or None."""
    if names is None:
        return "no client certificate"
    if not verified:
        return "certificate did not verify against the trusted CAs"
    if issuers and names.issuer not in issuers:
        issuer = ",".join(value for _, value in names.issuer)
        return f"certificate issued by '{issuer}', not by the configured CA"
    presented = names.identities()
    if not any(name_matches(want, have) for want in expected for have in presented):
        return f"certificate names {list(presented)} match none of {expected}"
    return None


def _certificate_names(der: bytes) -> CertificateNames | None:
    if not der:
        return None
    try:
        return read_certificate(der)
    except BadCertificate:
        return None


def _load_issuers(trunk: Trunk, site: Site, index: int) -> frozenset[NormalizedName]:
    assert trunk.mtls is not None
    path = trunk.mtls.ca or site.ca_list
    field = f"peers.trunks[{index}].mtls.ca" if trunk.mtls.ca else "tls.ca_list"
    try:
        return read_ca_subjects(Path(path))  # type: ignore[arg-type]
    except (OSError, ValueError, BadCertificate) as exc:
        raise PolicyError(
            "<policy>", [f"{field}: cannot read CA for trunk {trunk.name}: {exc}"]
        ) from None


class TlsPolicy(SecurityModule):
    name = "tls_policy"
    Config = TlsPolicyConfig
    checks_relay = True

    def __init__(self, config: TlsPolicyConfig) -> None:
        super().__init__(config)
        self.realms = {realm.lower() for realm in config.require_tls_realms}
        self.domains = {domain.lower() for domain in config.require_tls_domains}
        self.tls13_only = False
        # The CAs that may issue each mTLS trunk's certificate, by trunk name.
        self.issuers: dict[str, frozenset[NormalizedName]] = {}

    def bind(self, site: Site) -> None:
        self.tls13_only = site.tls_min_version == "1.3"
        for index, trunk in enumerate(site.trunks):
            if trunk.config.mtls:
                self.issuers[trunk.name] = _load_issuers(trunk.config, site, index)

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.from_pbx:
            return CONTINUE
        transport = msg.transport
        over_tls = transport == "tls"
        if over_tls and self.tls13_only and msg.tls_version not in ("", "TLSv1.3"):
            return Reject(f"{msg.tls_version} is below the policy's TLS 1.3", code=403)
        if not over_tls and scheme_of(msg.ruri) == "sips":
            return _needs_tls(f"sips: Request-URI received over {transport}")
        site_trunk = msg.trunk
        if site_trunk is not None:
            trunk, issuers = site_trunk.config, self.issuers.get(site_trunk.name, frozenset())
            if trunk.needs_tls and not over_tls:
                return _needs_tls(f"trunk {trunk.name} requires TLS, request came over {transport}")
            if trunk.mtls is not None:
                problem = identity_problem(
                    _certificate_names(msg.tls_peer_certificate),
                    msg.tls_peer_verified,
                    issuers,
                    trunk.mtls.expected_names,
                )
                if problem:
                    return Reject(f"trunk {trunk.name}: {problem}", code=403)
            return CONTINUE
        if over_tls:
            return CONTINUE
        realm = host_of(msg.header("from") or "")
        if realm in self.realms:
            return _needs_tls(f"realm {realm} requires TLS, request came over {transport}")
        domain = host_of(msg.ruri)
        if domain in self.domains:
            return _needs_tls(f"domain {domain} requires TLS, request came over {transport}")
        return CONTINUE

    def check_relay(self, msg: SipRequest, hop: Hop, state: SharedState) -> Outcome:
        """A sips: Request-URI leaves only over TLS; 403, as the next hop is the policy's
        (a retry would meet the same hop; 480 would invite one)."""
        if msg.method in ("ACK", "CANCEL"):
            return CONTINUE  # ACK cannot be answered; CANCEL follows its INVITE
        problem = sips_next_hop_problem(hop.ruri, hop.next_hop)
        if problem is None:
            return CONTINUE
        return Reject(problem, code=403, phrase=SIPS_NEEDS_TLS)


def _needs_tls(reason: str) -> Reject:
    return Reject(reason, code=403, phrase=TLS_REQUIRED)


def next_hop_is_tls(uri: str) -> bool:
    """Whether a request sent to ``uri`` leaves over TLS (sips: scheme or transport=tls)."""
    if scheme_of(uri) == "sips":
        return True
    params = uri.split(";")[1:]
    return any(param.strip().lower() == "transport=tls" for param in params)


def sips_next_hop_problem(ruri: str, next_hop: str) -> str | None:
    """Why relaying a request with this R-URI to ``next_hop`` would break SIPS, or None."""
    if scheme_of(ruri) != "sips" or next_hop_is_tls(next_hop):
        return None
    return f"sips: Request-URI would leave over a non-TLS hop ({next_hop})"


def trunk_server_problem(trunk: Trunk, verified: bool, certificate: bytes) -> str | None:
    """Why the server a call went to through ``trunk`` is not that trunk, or None.

    Its certificate must have verified and name the trunk's
    ``expected_server_name``: as an IP or DNS subjectAltName (a leading
    ``*.`` matches one label), or as the CN when it has no DNS name.  The
    check runs on the server's replies (:mod:`sipshield.edge.server_identity`).
    """
    names = _certificate_names(certificate)
    expected = trunk.expected_server_name
    if names is None:
        return f"trunk {trunk.name}: server sent no certificate"
    if not verified:
        return f"trunk {trunk.name}: server certificate did not verify"
    if expected in names.ip_addresses:
        return None
    if any(name_matches(expected, have) for have in names.identities()):
        return None
    return (
        f"trunk {trunk.name}: server certificate names "
        f"{list(names.identities()) + list(names.ip_addresses)} do not include {expected}"
    )
