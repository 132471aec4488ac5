"""The tls section of the policy and the tls.cfg rendered from it."""

from __future__ import annotations

import textwrap

import pytest

from sipshield.core.policy import PolicyError, parse_policy
from sipshield.ops.tls_config import DEFAULT_CIPHERS, render_tls_cfg, weak_ciphers

BASE = """\
domain: example.net
peers:
  pbx: {address: 10.0.0.2:5060}
"""


def policy(extra: str = "", peers: str = ""):
    text = BASE + textwrap.indent(textwrap.dedent(peers), "  ") + textwrap.dedent(extra)
    return parse_policy(text, "p.yaml")


def errors(extra: str = "", peers: str = "") -> list[str]:
    with pytest.raises(PolicyError) as caught:
        policy(extra, peers)
    return caught.value.errors


def sections(text: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("["):
            current = out.setdefault(line.strip("[]"), {})
        elif " = " in line:
            key, value = line.split(" = ", 1)
            current[key] = value
    return out


WITH_CERT = "tls: {certificate: /etc/s/sbc.crt, private_key: /etc/s/sbc.key}\n"


def test_existing_policies_stay_valid_with_safe_defaults():
    tls = policy().tls
    assert tls.min_version == "1.2"
    assert tls.ciphers == DEFAULT_CIPHERS
    assert tls.client_certificates == "off"


def test_default_ciphers_are_strong_and_weak_ones_are_named():
    assert weak_ciphers(DEFAULT_CIPHERS) == []
    weak = weak_ciphers("ECDHE-RSA-AES128-SHA:AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
    # CBC, then static RSA key exchange (no forward secrecy); the AEAD ECDHE suite is fine.
    assert weak == ["ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256"]


@pytest.mark.parametrize(
    "ciphers", ["HIGH", "ALL", "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES128-GCM-SHA256", "NULL"]
)
def test_weak_cipher_lists_are_policy_errors_with_file_and_line(ciphers):
    (message,) = errors(f"tls:\n  ciphers: '{ciphers}'\n")
    assert message.startswith("p.yaml:5: tls.ciphers:")


def test_unknown_cipher_list_is_an_error():
    (message,) = errors("tls:\n  ciphers: NOT-A-CIPHER\n")
    assert "selects no cipher" in message


@pytest.mark.parametrize("version", ["1.0", "1.1", "TLSv1"])
def test_old_min_versions_are_refused(version):
    (message,) = errors(f"tls:\n  min_version: '{version}'\n")
    assert message.startswith("p.yaml:5: tls.min_version:")


def test_client_certificates_need_a_ca_list():
    (message,) = errors("tls:\n  client_certificates: 'on'\n")
    assert "needs ca_list" in message


def test_certificate_without_key_is_an_error():
    (message,) = errors("tls:\n  certificate: /x.crt\n")
    assert "certificate and private_key go together" in message


def test_mtls_trunk_needs_client_certificates_asked():
    peers = """\
      trunks:
        - name: carrier
          target: 192.0.2.1:5061
          mtls: {expected_names: [sip.carrier.test]}
    """
    (message,) = errors("tls: {ca_list: /ca.pem}\n", peers)
    assert "trunk carrier requires mtls but tls.client_certificates is off" in message


def test_render_default_server_and_client_profiles():
    text = render_tls_cfg(policy(WITH_CERT))
    cfg = sections(text)
    server = cfg["server:default"]
    assert server["method"] == "TLSv1.2+"
    assert server["cipher_list"] == DEFAULT_CIPHERS
    assert server["certificate"] == "/etc/s/sbc.crt"
    assert server["private_key"] == "/etc/s/sbc.key"
    assert server["verify_client"] == "off"
    client = cfg["client:default"]
    assert client["verify_certificate"] == "yes"
    # No CA in the policy: a trunk's server is verified against the public CAs.
    assert client["ca_list"] == "/etc/ssl/certs/ca-certificates.crt"


def test_render_profiles_and_tls_trunks():
    text = render_tls_cfg(
        policy(
            """\
            tls:
              certificate: /s.crt
              private_key: /s.key
              ca_list: /cas.pem
              client_certificates: optional
              profiles:
                - {listen: 192.0.2.10:5061, certificate: /l.crt, private_key: /l.key,
                   client_certificates: 'on'}
                - {server_name: sbc.example.net, certificate: /n.crt, private_key: /n.key}
            """,
            """\
              trunks:
                - {name: a, target: 192.0.2.50:5061, transport: tls, server_name: sip.a.test}
                - {name: b, target: 192.0.2.51:5061, transport: tls}
                - {name: c, target: 192.0.2.52:5060}
            """,
        )
    )
    cfg = sections(text)
    assert cfg["server:default"]["verify_client"] == "optional"
    assert cfg["server:192.0.2.10:5061"]["verify_client"] == "on"
    assert cfg["server:192.0.2.10:5061"]["ca_list"] == "/cas.pem"
    assert cfg["server:any"]["server_name"] == "sbc.example.net"
    assert cfg["server:any"]["certificate"] == "/n.crt"
    assert cfg["client:192.0.2.50:5061"]["server_name"] == "sip.a.test"
    assert cfg["client:192.0.2.50:5061"]["ca_list"] == "/cas.pem"
    # An IP address is no SNI name; a UDP trunk has no TLS profile.
    assert "server_name" not in cfg["client:192.0.2.51:5061"]
    assert "client:192.0.2.52:5060" not in cfg


def test_profile_needs_a_listener_or_a_name():
    (message,) = errors("tls:\n  profiles:\n    - {certificate: /a, private_key: /b}\n")
    assert message.startswith("p.yaml:6: tls.profiles[0]:")


def test_render_without_certificate_says_what_is_missing():
    with pytest.raises(ValueError, match=r"tls\.certificate and tls\.private_key"):
        render_tls_cfg(policy())
