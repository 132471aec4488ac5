"""A lab whose policy runs only the validation module, and samples made unique for it.

Without flood control beside it, a test can send every sample, or thousands
of fuzzed messages, from one address and see only what validation does.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.lab_fixture import RunningLab, lab_with_policy
from tests.validation_samples import Sample

VALIDATION_ONLY_POLICY = """\
version: 1
domain: sipshield.lab
peers:
  pbx:
    address: 127.0.0.1:5090
modules:
  - name: validation
    mode: enforce
"""


@contextmanager
def validation_only_lab(directory: Path) -> Iterator[RunningLab]:
    # With sipdump: a test can show the SBC received what it answered with silence.
    with lab_with_policy(directory, VALIDATION_ONLY_POLICY, None, "--sipdump") as running:
        yield running


def render_for_lab(sample: Sample, lab: RunningLab, transport: str) -> tuple[str, bytes]:
    """The sample with a fresh Call-ID, branch and tag and the lab's addresses."""
    call_id = f"{sample.name}-{transport}-{secrets.token_hex(6)}"
    raw = sample.render(
        call_id=call_id,
        branch="z9hG4bK" + secrets.token_hex(8),
        tag=secrets.token_hex(4),
        domain=lab.domain,
        sbc=lab.sip_target(transport),
        pbx=lab.info["pbx"]["udp"],
        transport=transport,
    )
    return call_id, raw
