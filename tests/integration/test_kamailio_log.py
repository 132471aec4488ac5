"""Python's logging reaches Kamailio's log at the matching Kamailio level.

Operators read one log: a sipshield ERROR must be a Kamailio ERROR (so that
log shipping and alerting on Kamailio's levels see it), a WARNING a WARNING,
an INFO an INFO, and DEBUG stays out at sipshield's default level.
"""

from __future__ import annotations

import re
import secrets
import time

import pytest

from tests.integration.sip_messages import options

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - {name: plugin, target: 'log_on_request:LogOnRequest'}
"""
# Kamailio's own function for each level, as it names itself in each line.
KAMAILIO_WRITERS = {
    "ERROR": "sr_kemi_core_err",
    "WARNING": "sr_kemi_core_warn",
    "INFO": "sr_kemi_core_info",
}


def test_each_level_lands_on_kamailio_s_matching_level(make_lab):
    lab = make_lab(POLICY)
    token = secrets.token_hex(6)
    raw, _ = options(lab.sip_target(), f"X-Log: {token}\r\n")
    assert lab.send(raw) == 200
    deadline = time.monotonic() + 5
    # The ERROR line is written last.
    lines = lines_with(lab.log("sbc"), token)
    while not any(f"error {token}" in line for line in lines):
        assert time.monotonic() < deadline, "nothing of the module's logging reached the log"
        time.sleep(0.05)
        lines = lines_with(lab.log("sbc"), token)
    for level, writer in KAMAILIO_WRITERS.items():
        logged = [ln for ln in lines if f"{level.lower()} {token}" in ln]
        assert len(logged) == 1, lines
        # " 2(16486) ERROR: {OPTIONS <call-id>} <core> [core/kemi.c:96]: sr_kemi_core_err(): ..."
        assert re.match(rf"\s*\d+\(\d+\) {level}: .*<core> .*{writer}\(\): ", logged[0]), logged[0]
        assert f"sipshield[sipshield.plugins.log_on_request] {level}: " in logged[0], logged[0]
    assert not [ln for ln in lines if f"debug {token}" in ln], lines


def lines_with(log: str, token: str) -> list[str]:
    return [line for line in log.splitlines() if token in line]
