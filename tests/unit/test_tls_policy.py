"""TLS peer rules and identity checks, on parsed requests and certificates made by openssl."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

import pytest

from sipshield.checks.tls_policy import (
    TlsPolicy,
    host_of,
    next_hop_is_tls,
    sips_next_hop_problem,
    trunk_server_problem,
)
from sipshield.core.pipeline import Pipeline
from sipshield.core.policy import PolicyError, parse_policy
from sipshield.core.site import Site
from sipshield.core.verdict import CONTINUE, Reject
from sipshield.lab.tls_material import issue_certificate, make_ca
from sipshield.sip.cert_names import name_matches, pem_certificates, read_certificate
from sipshield.sip.message import RawSipMessage


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "ca", "Carrier CA")
    rogue = make_ca(directory, "rogue", "Rogue CA")
    out = {"ca": ca[0]}
    for name, cn, sans, issuer in (
        ("right", "carrier", ["sip.carrier.test", "alt.carrier.test", "192.0.2.50"], ca),
        ("wrong", "carrier", ["sip.other.test"], ca),
        ("cn_only", "sip.carrier.test", [], ca),
        ("foreign", "carrier", ["sip.carrier.test"], rogue),
    ):
        if sans:
            out[name] = issue_certificate(directory, name, cn, sans, issuer)[0]
        else:
            out[name] = _cn_only(directory, name, cn, issuer)
    return out


def _cn_only(directory: Path, name: str, cn: str, ca: tuple[Path, Path]) -> Path:
    import subprocess

    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1])]
        + ["-CAcreateserial", "-days", "2", "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert


def der(path: Path) -> bytes:
    return pem_certificates(path.read_bytes())[0]


def policy_with(pki: dict[str, Path], modules: str = "  - name: tls_policy\n"):
    return parse_policy(
        textwrap.dedent(
            f"""\
            domain: example.net
            tls: {{ca_list: {pki["ca"]}, client_certificates: optional_no_ca}}
            peers:
              pbx: {{address: 10.0.0.2:5060}}
              trunks:
                - name: carrier
                  target: 192.0.2.50:5061
                  transport: tls
                  server_name: sip.carrier.test
                  sources: [192.0.2.0/28]
                  mtls: {{expected_names: [sip.carrier.test]}}
                - name: plain
                  target: 198.51.100.7:5060
                  sources: [198.51.100.7/32]
                  require_tls: true
            """
        )
        + "modules:\n"
        + modules,
        "p.yaml",
    )


def module(pki, **settings) -> TlsPolicy:
    extra = "".join(f"    {key}: {value}\n" for key, value in settings.items())
    policy = policy_with(pki, "  - name: tls_policy\n" + extra)
    built = TlsPolicy(policy.modules[0])
    built.bind(Site.from_policy(policy))
    return built


# Who is who, as the view knows it: policy_with's PBX and trunks (the CA file is not read).
SITE = Site.from_policy(
    parse_policy(
        textwrap.dedent(
            """\
            domain: example.net
            tls: {ca_list: /nonexistent/ca.pem, client_certificates: optional_no_ca}
            peers:
              pbx: {address: 10.0.0.2:5060}
              trunks:
                - {name: carrier, target: 192.0.2.50:5061, transport: tls,
                   server_name: sip.carrier.test, sources: [192.0.2.0/28],
                   mtls: {expected_names: [sip.carrier.test]}}
                - {name: plain, target: 198.51.100.7:5060, sources: [198.51.100.7/32],
                   require_tls: true}
            """
        )
    )
)


def request(ruri="sip:bob@example.net", frm="sip:alice@example.net", **kwargs) -> RawSipMessage:
    raw = (
        f"OPTIONS {ruri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        f"From: <{frm}>;tag=1\r\nTo: <{ruri}>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return RawSipMessage(raw, site=SITE, **kwargs)


def from_trunk(pki, cert: str | None, verified: bool = True, **kwargs) -> RawSipMessage:
    return request(
        src_ip="192.0.2.5",
        transport="tls",
        tls_version="TLSv1.3",
        tls_peer_verified=verified,
        tls_peer_certificate=der(pki[cert]) if cert else b"",
        **kwargs,
    )


def test_certificate_names_are_read_from_der(pki):
    names = read_certificate(der(pki["right"]))
    assert names.dns_names == ("sip.carrier.test", "alt.carrier.test")
    assert names.ip_addresses == ("192.0.2.50",)
    assert names.common_name == "carrier"
    assert names.issuer == read_certificate(der(pki["ca"])).subject
    assert read_certificate(der(pki["cn_only"])).identities() == ("sip.carrier.test",)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("sip.carrier.test", "SIP.Carrier.Test", True),
        ("*.carrier.test", "sip.carrier.test", True),
        ("sip.carrier.test", "*.carrier.test", True),
        ("*.carrier.test", "a.b.carrier.test", False),
        ("*.carrier.test", "carrier.test", False),
        ("sip.carrier.test", "sip.carrier.test.evil", False),
    ],
)
def test_name_matching(pattern, name, expected):
    assert name_matches(pattern, name) is expected


def test_trunk_with_the_right_certificate_continues(pki):
    assert module(pki).check(from_trunk(pki, "right"), None) is CONTINUE
    # Without a DNS subjectAltName the CN is the identity.
    assert module(pki).check(from_trunk(pki, "cn_only"), None) is CONTINUE


@pytest.mark.parametrize(
    ("cert", "verified", "why"),
    [
        ("wrong", True, "match none of ['sip.carrier.test']"),
        ("foreign", False, "did not verify"),
        # A chain that verified (rogue CA in the trust store) but not from the trunk's CA.
        ("foreign", True, "not by the configured CA"),
        (None, False, "no client certificate"),
    ],
)
def test_trunk_without_its_identity_is_rejected(pki, cert, verified, why):
    verdict = module(pki).check(from_trunk(pki, cert, verified), None)
    assert isinstance(verdict, Reject) and verdict.code == 403
    assert verdict.reason.startswith("trunk carrier: ")
    assert why in verdict.reason


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_tls_trunks_are_refused_over_udp_and_tcp(pki, transport):
    for src_ip, name in (("192.0.2.5", "carrier"), ("198.51.100.7", "plain")):
        verdict = module(pki).check(request(src_ip=src_ip, transport=transport), None)
        assert isinstance(verdict, Reject) and verdict.phrase == "TLS Required"
        assert verdict.reason == f"trunk {name} requires TLS, request came over {transport}"


def test_realm_and_domain_rules(pki):
    guard = module(pki, require_tls_realms="[Secure.Example]", require_tls_domains="[vip.example]")
    realm = guard.check(request(frm="sip:alice@secure.example"), None)
    assert isinstance(realm, Reject)
    assert realm.reason == "realm secure.example requires TLS, request came over udp"
    domain = guard.check(request(ruri="sip:boss@vip.example:5060;transport=udp"), None)
    assert isinstance(domain, Reject) and "domain vip.example" in domain.reason
    # Over TLS, and for other realms, nothing to say.
    tls = request(frm="sip:alice@secure.example", transport="tls", tls_version="TLSv1.2")
    assert guard.check(tls, None) is CONTINUE
    assert guard.check(request(), None) is CONTINUE


def test_sips_over_udp_is_refused_and_the_pbx_is_not_judged(pki):
    guard = module(pki)
    verdict = guard.check(request(ruri="sips:bob@example.net"), None)
    assert isinstance(verdict, Reject)
    assert verdict.reason == "sips: Request-URI received over udp"
    from_pbx = request(ruri="sips:bob@example.net", src_ip="10.0.0.2", src_port=5060)
    assert guard.check(from_pbx, None) is CONTINUE


def test_min_version_13_refuses_tls_12(pki):
    text = policy_with(pki).model_dump(mode="json")
    text["tls"]["min_version"] = "1.3"
    from sipshield.core.policy import Policy

    policy = Policy.model_validate(text)
    guard = TlsPolicy(policy.modules[0])
    guard.bind(Site.from_policy(policy))
    old = request(transport="tls", tls_version="TLSv1.2")
    assert isinstance(guard.check(old, None), Reject)
    assert guard.check(request(transport="tls", tls_version="TLSv1.3"), None) is CONTINUE


def test_unreadable_trunk_ca_is_a_policy_error(pki, tmp_path):
    data = policy_with(pki).model_dump(mode="json")
    data["peers"]["trunks"][0]["mtls"]["ca"] = str(tmp_path / "missing.pem")
    from sipshield.core.policy import Policy

    policy = Policy.model_validate(data)
    with pytest.raises(PolicyError, match=r"peers.trunks\[0\].mtls.ca: cannot read CA"):
        TlsPolicy(policy.modules[0]).bind(Site.from_policy(policy))


def test_module_builds_in_the_pipeline(pki):
    from sipshield.core.events import EventSink

    policy = policy_with(pki)
    pipeline = Pipeline.build(policy, None, EventSink.__new__(EventSink))  # type: ignore[arg-type]
    assert [stage.name for stage in pipeline.stages] == ["tls_policy"]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:a@b.example", "b.example"),
        ("sip:b.example:5060;transport=tcp", "b.example"),
        ('"A" <sips:a@B.Example>;tag=1', "b.example"),
        ("sip:a@[2001:db8::1]:5061", "2001:db8::1"),
    ],
)
def test_host_of(uri, expected):
    assert host_of(uri) == expected


def test_sips_next_hop_rule():
    assert next_hop_is_tls("sip:10.0.0.2:5061;transport=tls")
    assert next_hop_is_tls("sips:bob@example.net")
    assert not next_hop_is_tls("sip:10.0.0.2:5060;transport=udp")
    assert sips_next_hop_problem("sips:bob@x", "sip:10.0.0.2:5060;transport=udp")
    assert sips_next_hop_problem("sips:bob@x", "sip:10.0.0.9:5061;transport=tls") is None
    assert sips_next_hop_problem("sip:bob@x", "sip:10.0.0.2:5060") is None


def test_the_server_reached_through_a_trunk_must_name_it(pki):
    trunk = policy_with(pki).peers.trunks[0]
    assert trunk_server_problem(trunk, True, der(pki["right"])) is None
    wrong = trunk_server_problem(trunk, True, der(pki["wrong"]))
    assert wrong and "do not include sip.carrier.test" in wrong
    assert "did not verify" in trunk_server_problem(trunk, False, der(pki["right"]))
    assert "no certificate" in trunk_server_problem(trunk, True, b"")


def test_hostile_certificates_are_bad_certificates_never_crashes(pki):
    """Peer-supplied bytes: every mutation is either readable or BadCertificate."""
    import random

    from sipshield.sip.cert_names import BadCertificate

    original = der(pki["right"])
    rng = random.Random(5)
    for _ in range(3000):
        mutated = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        for candidate in (bytes(mutated), original[: rng.randrange(len(original))]):
            with contextlib.suppress(BadCertificate):
                read_certificate(candidate)
