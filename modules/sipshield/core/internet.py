"""The internet as a peer class: who may call in, where calls may go out.

A call is an *internet call* when its other end is a SIP domain that is
neither ours nor a trunk's:

- outbound: the PBX sends a request for ``sip:bob@example.org``; the SBC finds
  example.org's server by RFC 3263 (Kamailio's resolver: NAPTR, SRV, A/AAAA)
  and, over TLS, checks that the server's certificate names example.org
  (RFC 5922);
- inbound: a request from outside, not from a trunk, for a user of our
  domain, whose From names another domain.

The SBC is never an open relay: a request from outside for a domain that is
not ours is refused whatever this section says.  The rules here are pure
functions of the settings; :mod:`sipshield.edge.edge_routing` applies them.
The media policy of internet calls is ``media.internet``
(:mod:`sipshield.edge.media_policy`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

# off: no internet calls either way; inbound/outbound: one way only; both.
InternetMode = Literal["off", "inbound", "outbound", "both"]

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _check_domain(value: str) -> str:
    """A DNS domain, or ``*.domain`` for every name below it; stored in lower case."""
    domain = value.strip().lower().rstrip(".")
    bare = domain.removeprefix("*.")
    labels = bare.split(".")
    if len(bare) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{value!r} is not a domain name (example.org, or *.example.org)")
    return domain


DomainPattern = Annotated[str, AfterValidator(_check_domain)]


class InternetSettings(BaseModel):
    """Calls to and from other SIP domains over the internet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Which way internet calls may go: off (neither), inbound, outbound or both.
    mode: InternetMode = "off"
    # Domains that may be called and call in; empty allows every domain not denied.
    allow_domains: list[DomainPattern] = Field(default_factory=list)
    # Domains never called and never let in; a denial wins over an allowance.
    deny_domains: list[DomainPattern] = Field(default_factory=list)
    # Outbound requests go over TLS only (SRV of _sips._tcp, then A/AAAA), and
    # the server's certificate must name the domain called (RFC 5922); inbound
    # internet requests must arrive over TLS.  False lets NAPTR choose the
    # transport (TLS preferred) and checks the certificate when TLS was chosen.
    require_tls: bool = True

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML reads a bare ``off`` as false: that is what was meant."""
        if value is False:
            return "off"
        if value is True:
            raise ValueError("write one of off, inbound, outbound, both (not yes/on/true)")
        return value

    @model_validator(mode="after")
    def _no_domain_both_allowed_and_denied(self) -> InternetSettings:
        both = sorted(set(self.allow_domains) & set(self.deny_domains))
        if both:
            raise ValueError(f"domains both allowed and denied: {', '.join(both)}")
        return self

    @property
    def inbound(self) -> bool:
        return self.mode in ("inbound", "both")

    @property
    def outbound(self) -> bool:
        return self.mode in ("outbound", "both")


def domain_matches(pattern: str, domain: str) -> bool:
    """``example.org`` matches itself only; ``*.example.org`` every name below it."""
    domain = domain.lower().rstrip(".")
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:])
    return domain == pattern


def domain_problem(settings: InternetSettings, domain: str) -> str | None:
    """Why calls with ``domain`` are not allowed by the lists, or None."""
    if any(domain_matches(pattern, domain) for pattern in settings.deny_domains):
        return f"domain {domain} is denied"
    if settings.allow_domains and not any(
        domain_matches(pattern, domain) for pattern in settings.allow_domains
    ):
        return f"domain {domain} is not in internet.allow_domains"
    return None


def outbound_problem(settings: InternetSettings, domain: str) -> str | None:
    """Why a request from the PBX for ``domain`` must not go out, or None."""
    if not settings.outbound:
        return f"internet calling out is off (internet.mode: {settings.mode}); {domain} not called"
    return domain_problem(settings, domain)


def inbound_problem(settings: InternetSettings, domain: str, transport: str) -> str | None:
    """Why a request from ``domain`` (its From) received over ``transport`` is refused, or None."""
    if not settings.inbound:
        return f"internet calls in are off (internet.mode: {settings.mode}); from {domain}"
    if settings.require_tls and transport != "tls":
        return f"internet call from {domain} over {transport}: internet.require_tls"
    return domain_problem(settings, domain)


def certificate_problem(domain: str, verified: bool, proven: tuple[str, ...]) -> str | None:
    """Why a server certificate does not prove ``domain`` (RFC 5922), or None.

    ``proven`` are the certificate's SIP domain identities
    (:meth:`sipshield.sip.cert_names.CertificateNames.sip_domains`).  They must
    equal the domain called, compared whole and without wildcards (RFC 5922
    section 7.2).
    """
    if not verified:
        return f"the server for {domain} sent a certificate that did not verify"
    wanted = domain.lower().rstrip(".")
    if any(name.lower().rstrip(".") == wanted for name in proven):
        return None
    return f"the server for {domain} presented a certificate for {list(proven)}"
