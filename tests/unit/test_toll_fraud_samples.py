"""toll_fraud on real-looking calls from the PBX: tests/samples/toll_fraud/.

Each file is an INVITE as the lab PBX sends it to the SBC, with its
expectation in its header comment: the destination class (``none`` for a
call that stays inside), the account that pays, and the next hop the router
chose (``trunk`` for the lab carrier).  One test per file; the suite fails
when the folder lacks a class or an inside call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sipshield.checks.toll_fraud.destinations import CLASSES
from sipshield.checks.toll_fraud.settings import TollFraudConfig
from sipshield.checks.toll_fraud.toll_fraud import TollFraud
from sipshield.core.hop import Hop
from sipshield.core.policy import parse_policy
from sipshield.core.site import Site
from sipshield.sip.message import RawSipMessage
from tests.conftest import REPO

SAMPLES = REPO / "tests" / "samples" / "toll_fraud"
SAMPLE_FILES = sorted(SAMPLES.glob("*.sip"))
CARRIER = "sip:127.0.0.1:5095;transport=udp"
SITE = Site.from_policy(
    parse_policy(
        "domain: sipshield.lab\n"
        "peers:\n"
        "  pbx: {address: 127.0.0.1:5090}\n"
        "  trunks: [{name: lab-carrier, target: 127.0.0.1:5095, numbers: ['']}]\n"
    )
)


@dataclass(frozen=True)
class Sample:
    expect: str
    account: str
    why: str
    next_hop: str
    raw: bytes


def load(path: Path) -> Sample:
    comments, lines = {}, []
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            key, _, value = line[2:].partition(": ")
            comments[key] = value
        else:
            lines.append(line)
    next_hop = comments["next-hop"]
    return Sample(
        comments["expect"],
        comments["account"],
        comments["why"],
        CARRIER if next_hop == "trunk" else next_hop,
        ("\r\n".join(lines).rstrip() + "\r\n\r\n").encode(),  # headers only
    )


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> TollFraud:
    high_risk = tmp_path_factory.mktemp("toll-fraud") / "high-risk.txt"
    high_risk.write_text("# satellite\n+8816\n+882\n")
    config = TollFraudConfig(home_region="GB", high_risk_file=high_risk)
    module = TollFraud(config)
    module.bind(SITE)
    return module


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[path.stem for path in SAMPLE_FILES])
def test_sample(path: Path, module: TollFraud) -> None:
    sample = load(path)
    msg = RawSipMessage(sample.raw, src_ip="127.0.0.1", src_port=5090, site=SITE)
    assert msg.from_pbx and msg.method == "INVITE"
    destination = module.destination(msg, Hop(sample.next_hop, msg.ruri, tls=False))
    klass = destination.klass if destination is not None else "none"
    assert klass == sample.expect, sample.why
    assert module.account(msg) == sample.account, sample.why


def test_the_samples_cover_every_class_and_a_call_that_stays_inside() -> None:
    expected = {load(path).expect for path in SAMPLE_FILES}
    assert expected == set(CLASSES) | {"none"}


def test_the_account_may_be_the_digest_user_or_the_from_uri(module: TollFraud) -> None:
    raw = load(SAMPLES / "premium-uk-international-form.sip").raw.replace(
        b"Content-Type:",
        b'Proxy-Authorization: Digest username="Mallory", realm="sipshield.lab", '
        b'nonce="n", uri="sip:+449098790100@sipshield.lab", response="r"\r\nContent-Type:',
    )
    msg = RawSipMessage(raw, src_ip="127.0.0.1", src_port=5090, site=SITE)
    by = {
        how: TollFraud(TollFraudConfig(account=how)).account(msg)
        for how in ("asserted_identity", "auth_user", "from")
    }
    assert by == {
        "asserted_identity": "alice@sipshield.lab",
        "auth_user": "mallory",
        "from": "alice@sipshield.lab",
    }
