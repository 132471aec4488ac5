"""The protected edge works: OPTIONS, registration with digest auth, calls, PBX isolation."""

from __future__ import annotations

import pytest

from sipshield.net import free_port
from sipshield.sip_probe import send_request
from tests.integration.lab_fixture import RunningLab

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_sbc_answers_options(lab: RunningLab, transport: str):
    assert lab.options(transport) == 200


def test_options_scenario_with_sipp(lab: RunningLab):
    from sipshield.sipp import run_sipp

    result = run_sipp("options", lab.sip_target(), keys={"domain": lab.domain}, calls=3, rate=10)
    assert result.ok, result.explain()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_register_with_digest_auth_through_the_sbc(lab: RunningLab, transport: str):
    result = lab.register("alice", transport=transport)
    assert result.ok, result.explain()


def test_wrong_password_is_refused_by_the_pbx(lab: RunningLab):
    from sipshield.sipp import run_sipp

    result = run_sipp(
        "register",
        lab.sip_target(),
        service="carol",
        auth=("carol", "not-the-password"),
        keys={"domain": lab.domain},
        timeout_s=5,
    )
    assert not result.ok


@pytest.mark.parametrize("caller_transport", ["udp", "tcp"])
def test_call_between_two_registered_users(lab: RunningLab, caller_transport: str):
    callee_port = free_port()
    callee = lab.answer_calls("bob", callee_port)
    caller = lab.call("alice", "bob", transport=caller_transport)
    answered = callee.finish()
    assert caller.ok, caller.explain()
    assert answered.ok, answered.explain()


def test_pbx_is_reachable_only_through_the_sbc(lab: RunningLab):
    host, _, port = lab.info["pbx"]["udp"].rpartition(":")
    assert send_request((host, int(port)), timeout=1.0) is None
    assert "not the SBC" in lab.log("pbx")
