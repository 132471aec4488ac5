"""Internet calling rules: the policy section, domain lists, and RFC 5922 identities."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from sipshield.core.internet import (
    InternetSettings,
    certificate_problem,
    domain_matches,
    inbound_problem,
    outbound_problem,
)
from sipshield.core.policy import PolicyError, parse_policy
from sipshield.edge.media_policy import MediaSettings
from sipshield.lab.tls_material import issue_certificate, make_ca
from sipshield.sip.cert_names import pem_certificates, read_certificate

BASE = """\
domain: sipshield.lab
peers:
  pbx: {address: "127.0.0.1:5090"}
"""


def _policy(section: str):
    return parse_policy(BASE + textwrap.dedent(section), "policy.yaml")


def _errors(section: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        _policy(section)
    return info.value.errors


def test_internet_is_off_by_default_with_tls_required():
    settings = _policy("").internet
    assert settings.mode == "off" and settings.require_tls is True
    assert not settings.inbound and not settings.outbound


def test_a_bare_yaml_off_means_off():
    assert _policy("internet: {mode: off}").internet.mode == "off"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("internet: {mode: on}", "policy.yaml:4: internet.mode: Value error, write one of off"),
        ("internet: {mode: sometimes}", "policy.yaml:4: internet.mode: Input should be 'off'"),
        (
            "internet: {allow_domains: [example]}",
            "policy.yaml:4: internet.allow_domains[0]: Value error, 'example' is not a domain name",
        ),
        (
            "internet: {deny_domains: ['bad_name.org']}",
            "policy.yaml:4: internet.deny_domains[0]: Value error, 'bad_name.org' is not a domain",
        ),
        (
            "internet: {allow_domains: [a.org], deny_domains: [A.org]}",
            "policy.yaml:4: internet: Value error, domains both allowed and denied: a.org",
        ),
        ("internet: {require_tls: maybe}", "policy.yaml:4: internet.require_tls: Input should be"),
        (
            "internet: {modes: both}",
            "policy.yaml:4: internet.modes: Extra inputs are not permitted",
        ),
    ],
)
def test_bad_internet_settings_are_refused_naming_the_field(section: str, expected: str):
    errors = _errors(section)
    assert any(line.startswith(expected) for line in errors), errors


def test_internet_media_is_srtp_mandatory_by_default():
    media = MediaSettings.model_validate({"rtpengine": {"ng": ["127.0.0.1:2223"]}})
    assert media.for_class("internet").srtp == "mandatory"
    assert media.for_class("users").srtp == "optional"


@pytest.mark.parametrize(
    ("pattern", "domain", "matches"),
    [
        ("example.org", "example.org", True),
        ("example.org", "EXAMPLE.org.", True),
        ("example.org", "sub.example.org", False),
        ("*.example.org", "sub.example.org", True),
        ("*.example.org", "a.b.example.org", True),
        ("*.example.org", "example.org", False),
        ("*.example.org", "badexample.org", False),
    ],
)
def test_domain_patterns(pattern: str, domain: str, matches: bool):
    assert domain_matches(pattern, domain) is matches


def test_outbound_rules():
    both = InternetSettings(mode="both", deny_domains=["denied.test"])
    assert outbound_problem(both, "example.org") is None
    assert outbound_problem(both, "denied.test") == "domain denied.test is denied"
    inbound_only = InternetSettings(mode="inbound")
    assert outbound_problem(inbound_only, "example.org") == (
        "internet calling out is off (internet.mode: inbound); example.org not called"
    )
    listed = InternetSettings(mode="outbound", allow_domains=["*.partner.test"])
    assert outbound_problem(listed, "sip.partner.test") is None
    assert outbound_problem(listed, "example.org") == (
        "domain example.org is not in internet.allow_domains"
    )


def test_inbound_rules():
    both = InternetSettings(mode="both")
    assert inbound_problem(both, "example.org", "tls") is None
    assert inbound_problem(both, "example.org", "udp") == (
        "internet call from example.org over udp: internet.require_tls"
    )
    assert inbound_problem(InternetSettings(mode="both", require_tls=False), "a.org", "udp") is None
    assert inbound_problem(InternetSettings(mode="outbound"), "a.org", "tls") == (
        "internet calls in are off (internet.mode: outbound); from a.org"
    )


def test_certificate_problem_compares_whole_names_without_wildcards():
    assert certificate_problem("foreign.test", True, ("foreign.test",)) is None
    assert certificate_problem("Foreign.Test.", True, ("foreign.test",)) is None
    assert certificate_problem("foreign.test", True, ("*.test",)) == (
        "the server for foreign.test presented a certificate for ['*.test']"
    )
    assert certificate_problem("foreign.test", True, ("sip.foreign.test",)) is not None
    assert certificate_problem("foreign.test", False, ("foreign.test",)) == (
        "the server for foreign.test sent a certificate that did not verify"
    )


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("rfc5922")
    ca = make_ca(directory)
    made = {
        "uri_and_dns": ["URI:sip:example.org", "DNS:sip.example.org"],
        "dns_only": ["DNS:example.org"],
        "user_uri": ["URI:sip:alice@example.org", "DNS:sip.example.org"],
        "ip_only": ["IP:192.0.2.7"],
    }
    out = {}
    for name, sans in made.items():
        cert, _ = issue_certificate(directory, name, "example.org", sans, ca)
        out[name] = pem_certificates(cert.read_bytes())[0]
    out["cn_only"] = _cn_only(directory, ca)
    return out


def _cn_only(directory: Path, ca: tuple[Path, Path]) -> bytes:
    key, csr, cert = (directory / f"cn.{ext}" for ext in ("key", "csr", "crt"))
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=example.org"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1])]
        + ["-CAcreateserial", "-days", "2", "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return pem_certificates(cert.read_bytes())[0]


@pytest.mark.parametrize(
    ("name", "domains"),
    [
        # RFC 5922 7.1: sip: URIs name domains, and so do DNS names.
        ("uri_and_dns", ("example.org", "sip.example.org")),
        ("dns_only", ("example.org",)),
        # A URI with a user part names a user, not a domain.
        ("user_uri", ("sip.example.org",)),
        # A subjectAltName without a SIP identity: the CN does not stand in.
        ("ip_only", ()),
        # No subjectAltName at all: the CN is the identity.
        ("cn_only", ("example.org",)),
    ],
)
def test_sip_domains_of_a_certificate(certificates: dict[str, bytes], name: str, domains: tuple):
    assert read_certificate(certificates[name]).sip_domains() == domains
