"""The lines `make run` prints for a person who wants to call with their own softphone."""

from __future__ import annotations

import yaml

from sipshield.core.policy import parse_policy
from sipshield.lab.calling import softphone_settings
from tests.conftest import REPO

INFO = {
    "domain": "sipshield.lab",
    "sip": {"udp": "127.0.0.1:5060", "tcp": "127.0.0.1:5060", "tls": "127.0.0.1:5061"},
    "tls": {"ca": "/lab/tls/ca.crt"},
}


def _policy(srtp: str | None):
    data = yaml.safe_load((REPO / "kamailio-cfg" / "policy.example.yaml").read_text())
    if srtp is None:
        del data["media"]
    else:
        data["media"]["users"]["srtp"] = srtp
    return parse_policy(yaml.safe_dump(data))


def test_the_example_policy_tells_which_encryption_goes_with_which_transport():
    assert softphone_settings(INFO, _policy("optional")) == [
        "call through it with a softphone:",
        "  account          USER@sipshield.lab, password as above (auth user = USER)",
        "  outbound proxy   sip:127.0.0.1:5060;transport=udp or sip:127.0.0.1:5060;transport=tcp",
        "                   media: none, DTLS-SRTP or ZRTP (SDES refused: keys in clear)",
        "                   sip:127.0.0.1:5061;transport=tls",
        "                   media: none, SDES-SRTP or ZRTP",
        "  TLS CA           /lab/tls/ca.crt",
        "  the domain does not resolve: the outbound proxy is required "
        "(docs/calling-through-the-lab.md)",
    ]


def test_mandatory_srtp_leaves_plain_media_out():
    lines = softphone_settings(INFO, _policy("mandatory"))
    assert lines[3].endswith(
        "media: DTLS-SRTP or ZRTP (SDES refused: keys in clear) (SRTP is mandatory)"
    )
    assert lines[5].endswith("media: SDES-SRTP or ZRTP (SRTP is mandatory)")


def test_without_media_anchoring_the_phones_choose():
    lines = softphone_settings(INFO, _policy(None))
    assert lines[3].endswith(
        "media: any: media is not anchored, the phones' own choice goes through"
    )
