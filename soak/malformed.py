"""Malformed requests: the validation samples that must be refused, sent as an attacker would.

The samples in tests/samples/validation/ are the validation module's own
(tests/validation_samples.py), each with what the lab must do with it: answer
with a code, or say nothing.  One round sends every refused sample once over
UDP and once over a new TCP connection, and counts the answers that are not
what the sample says: a validation that weakens as state builds up, or a
connection that is not cleaned up, shows here and in the descriptor counts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from sipshield.lab.sip_probe import send_request
from tests.validation_samples import Sample, load_samples

TRANSPORTS = ("udp", "tcp")
# A refused sample is usually answered at once; a dropped one is waited for this long.
WAIT_S = 0.3


def refused_samples() -> list[Sample]:
    return [s for s in load_samples() if s.expect.action in ("reject", "drop")]


@dataclass
class MalformedRound:
    sent: int = 0
    # "sample/transport: got X, expected Y" for each answer that differed.
    unexpected: list[str] = field(default_factory=list)


def send_round(
    samples: list[Sample], sbc: str, pbx: str, domain: str, source_ip: str
) -> MalformedRound:
    host, _, port = sbc.rpartition(":")
    result = MalformedRound()
    for sample in samples:
        for transport in TRANSPORTS:
            raw = sample.render(
                call_id=f"{secrets.token_hex(8)}@{source_ip}",
                branch="z9hG4bK" + secrets.token_hex(8),
                tag=secrets.token_hex(4),
                domain=domain,
                sbc=sbc,
                pbx=pbx,
                transport=transport,
            )
            status = send_request(
                (host, int(port)), raw, transport=transport, timeout=WAIT_S, source_ip=source_ip
            )
            result.sent += 1
            expected = sample.lab[transport]
            if expected.action == "forwarded":
                # What the PBX makes of the part it receives is not the SBC's answer.
                continue
            wanted = expected.code if expected.action == "reply" else None
            if status != wanted:
                result.unexpected.append(
                    f"{sample.name}/{transport}: got {status}, expected {wanted}"
                )
    return result
