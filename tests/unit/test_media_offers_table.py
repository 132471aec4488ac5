"""Every cell of docs/media-offers.md, checked against the media planner.

The document is the oracle: it says, for each outside party's srtp mode, its
hop and each kind of offer, what the receiver gets.  The words of a cell are
mapped here, independently of the planner, onto the SDP that rtpengine is
asked for (profile, and whether SDES keys may be generated).
"""

from __future__ import annotations

import re

import pytest

from sipshield.edge.media_policy import PeerMedia, Side, offer_problem, plan_offer
from sipshield.sip.sdp import SdpFacts
from tests.conftest import REPO

DOC = REPO / "docs" / "media-offers.md"
CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
FINGERPRINT = "a=fingerprint:sha-256 " + ":".join(["5A"] * 32)
OFFERS = {
    "plain": ("RTP/AVP",),
    "SDES": ("RTP/SAVP", CRYPTO),
    "SDES best effort": ("RTP/AVP", CRYPTO),
    "DTLS": ("UDP/TLS/RTP/SAVP", FINGERPRINT, "a=setup:actpass"),
    "ZRTP": ("RTP/AVP", "a=zrtp-hash:1.10 " + "ab" * 32),
}
HOPS = {"UDP/TCP": False, "TLS": True}
INSIDE = Side(PeerMedia(), outside=False, tls=False)
SECTIONS = {
    "Offers from outside, towards the PBX": "to_pbx",
    "Offers from the PBX, towards outside": "from_pbx",
}


def _facts(offer: str) -> SdpFacts:
    proto, *extra = OFFERS[offer]
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0"]
    lines += [f"m=audio 4000 {proto} 0", "a=rtpmap:0 PCMU/8000", *extra]
    return SdpFacts.parse("\r\n".join(lines) + "\r\n")


def _rows() -> list[tuple[str, str, str, str, str]]:
    """(direction, srtp, hop, offer, expected cell) for every cell of both tables."""
    rows, direction, columns = [], None, []
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            direction = SECTIONS.get(line[3:].strip())
            columns = []
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if direction is None or not line.startswith("|") or set(cells[0]) <= {"-"}:
            continue
        if cells[0] == "outside party's srtp":
            columns = cells[2:]
            continue
        srtp, hop, *outcomes = cells
        rows += [
            (direction, srtp, hop, offer, outcome)
            for offer, outcome in zip(columns, outcomes, strict=True)
        ]
    return rows


ROWS = _rows()


def test_the_document_has_every_cell():
    # 2 directions x 4 modes x 2 hops x 5 offers.
    assert len(ROWS) == 80
    assert {(r[0], r[1], r[2], r[3]) for r in ROWS} == {
        (d, s, h, o)
        for d in SECTIONS.values()
        for s in ("optional", "mandatory", "bridge", "passthrough")
        for h in HOPS
        for o in OFFERS
    }


@pytest.mark.parametrize(("direction", "srtp", "hop", "offer", "expected"), ROWS)
def test_each_cell_is_what_the_planner_asks_rtpengine_for(direction, srtp, hop, offer, expected):
    facts = _facts(offer)
    outside = Side(PeerMedia(srtp=srtp), outside=True, tls=HOPS[hop])
    offerer, receiver = (outside, INSIDE) if direction == "to_pbx" else (INSIDE, outside)
    refusal = offer_problem(facts, offerer)
    if expected == "488":
        assert refusal is not None and refusal.code == 488
        return
    assert refusal is None
    options = plan_offer(facts, offerer, receiver).options
    if expected == "untouched":
        assert options is None
        return
    assert options is not None
    # The profile the receiver sees: rtpengine's, or the offer's when it is kept.
    sent_profile = options.transport_protocol or facts.protocols[0]
    if expected == "ZRTP":
        # Relayed as it is: its own profile, no keys of rtpengine's.
        assert (options.transport_protocol, options.sdes) == (None, ())
    elif expected == "RTP":
        # No keys: the offer had none, or rtpengine is told to generate none.
        assert sent_profile == "RTP/AVP" and (not facts.crypto_suites or options.sdes == ("off",))
    elif expected == "DTLS-SRTP":
        assert sent_profile == "UDP/TLS/RTP/SAVP" and options.sdes == ("off",)
    elif expected == "SDES-SRTP":
        assert sent_profile == "RTP/SAVP" and options.sdes != ("off",)
    elif expected == "SDES best effort":
        assert sent_profile == "RTP/AVP" and facts.crypto_suites and options.sdes != ("off",)
    else:
        pytest.fail(f"unknown cell {expected!r} in {DOC.name}")


def test_sdes_never_goes_to_a_plain_hop():
    for direction, _srtp, hop, _offer, expected in ROWS:
        receiver_hop = "UDP/TCP" if direction == "to_pbx" else hop
        if receiver_hop == "UDP/TCP":
            assert not re.match("SDES", expected), (direction, hop, expected)
