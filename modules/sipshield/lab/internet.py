"""The lab's internet: a DNS server and another company's SIP domain, on loopback.

``sipshield lab up --internet`` adds:

- a DNS server (dnsmasq, from Debian's dnsmasq-base) on port 53 of a loopback
  address of its own (127.53.X.Y), with a zone for the foreign domain
  ``foreign.test``: a NAPTR record pointing at the SRV ``_sips._tcp``, whose
  target ``sip.foreign.test`` has an A record on loopback; and for
  ``impostor.test``, a domain whose SRV points at the same server, whose
  certificate does not name it (RFC 5922 refusals);
- that domain's proxy, a second Kamailio (kamailio-cfg/foreign.cfg), with a
  certificate of the lab CA naming ``sip:foreign.test`` (URI) and
  ``sip.foreign.test`` (DNS) as RFC 5922 describes, and a registrar where the
  foreign domain's test users register.

Kamailio reads its name servers from /etc/resolv.conf, and the host's must
stay as it is: the SBC of such a lab runs in a mount namespace of its own
(``unshare -m``) where the lab's resolv.conf, naming the lab's DNS server, is
bind-mounted over /etc/resolv.conf.  Nothing else sees it.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from sipshield.lab.tls_material import LabCertificates, issue_certificate

FOREIGN_DOMAIN = "foreign.test"
FOREIGN_HOST = "sip.foreign.test"
# A domain whose DNS points at the foreign proxy, which cannot prove it.
IMPOSTOR_DOMAIN = "impostor.test"
DNS_PORT = 53
# Runs a command with the lab's resolv.conf in place of the host's ($0 is the file).
MOUNT_RESOLV_CONF = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'


@dataclass(frozen=True)
class InternetPlan:
    dns_address: str  # where the lab's DNS server listens (port 53)
    proxy_ip: str
    proxy_udp: int  # where the foreign domain's users register
    proxy_tls: int  # where other domains reach it
    certificate: Path
    private_key: Path


def free_dns_address() -> str:
    """A loopback address whose port 53 is free (UDP and TCP), for the lab's DNS server."""
    for _ in range(100):
        address = f"127.53.{secrets.randbelow(254) + 1}.{secrets.randbelow(254) + 1}"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind((address, DNS_PORT))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                tcp.bind((address, DNS_PORT))
        except OSError:
            continue
        return address
    raise OSError("no loopback address with a free port 53 for the lab's DNS server")


def plan_internet(
    tls: LabCertificates, tls_dir: Path, proxy_ip: str, udp: int, tcp: int
) -> InternetPlan:
    ca = (tls.ca_cert, tls.ca_cert.with_suffix(".key"))
    certificate, key = issue_certificate(
        tls_dir, "foreign", FOREIGN_HOST, [f"URI:sip:{FOREIGN_DOMAIN}", f"DNS:{FOREIGN_HOST}"], ca
    )
    return InternetPlan(free_dns_address(), proxy_ip, udp, tcp, certificate, key)


def dnsmasq_conf(plan: InternetPlan, directory: Path) -> str:
    """The lab DNS server's configuration: its zone, nothing forwarded, every query logged."""
    srv = f"{FOREIGN_HOST},{plan.proxy_tls},0,10"
    return "\n".join(
        (
            f"listen-address={plan.dns_address}",
            "bind-interfaces",
            f"port={DNS_PORT}",
            "no-resolv",
            "no-hosts",
            "keep-in-foreground",
            "log-queries",
            "log-facility=-",
            f"pid-file={directory / 'dnsmasq.pid'}",
            # Authoritative for the lab's domains: a missing record is NXDOMAIN
            # or no data, never REFUSED for want of an upstream server.
            "local=/test/",
            # dnsmasq's own records default to a TTL of 0, which Kamailio's
            # DNS cache takes as already expired (and falls back to A).
            "local-ttl=60",
            f"naptr-record={FOREIGN_DOMAIN},10,10,S,SIPS+D2T,,_sips._tcp.{FOREIGN_DOMAIN}",
            f"srv-host=_sips._tcp.{FOREIGN_DOMAIN},{srv}",
            f"srv-host=_sips._tcp.{IMPOSTOR_DOMAIN},{srv}",
            f"host-record={FOREIGN_HOST},{plan.proxy_ip}",
            "",
        )
    )


def foreign_tls_cfg(plan: InternetPlan, ca: Path) -> str:
    return (
        "[server:default]\n"
        "method = TLSv1.2+\n"
        f"certificate = {plan.certificate}\n"
        f"private_key = {plan.private_key}\n"
        f"ca_list = {ca}\n"
        "verify_certificate = no\n"
        "require_certificate = no\n\n"
        "[client:default]\n"
        "method = TLSv1.2+\n"
        f"certificate = {plan.certificate}\n"
        f"private_key = {plan.private_key}\n"
        f"ca_list = {ca}\n"
        "verify_certificate = yes\n"
        "require_certificate = yes\n"
    )


def foreign_defines(plan: InternetPlan, directory: Path, sbc_tls: str) -> list[str]:
    return [
        f"FOREIGN_UDP=udp:{plan.proxy_ip}:{plan.proxy_udp}",
        f"FOREIGN_TLS=tls:{plan.proxy_ip}:{plan.proxy_tls}",
        f'FOREIGN_TLS_CFG="{directory / "foreign-tls.cfg"}"',
        f'SBC_TLS_URI="sip:{sbc_tls};transport=tls"',
    ]


def in_lab_resolver(argv: list[str], resolv_conf: Path) -> list[str]:
    """``argv`` run with ``resolv_conf`` as its /etc/resolv.conf (a mount namespace).

    ``unshare`` and ``sh`` exec in turn, so the process keeps the pid (and the
    process group) the lab records.
    """
    return ["unshare", "--mount", "sh", "-c", MOUNT_RESOLV_CONF, str(resolv_conf), *argv]
