"""Dialog records in Redis (dialog_guard ``records: true``): CSeq monotonicity per side.

Tokens prove where a request comes from; they cannot tell an old request from
a new one.  With records on, each dialog keeps the highest CSeq each side has
sent (seeded by the INVITE), with a TTL, and a request below it is refused
even from the bound address: a replayed BYE, or one with a lower CSeq.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sipshield.lab.sip_ua import UserAgent, sdp
from tests.integration.lab_fixture import RunningLab, lab_with_policy

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - {name: validation}
  - {name: dialog_guard, records: true, record_ttl_s: 600}
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with lab_with_policy(tmp_path_factory.mktemp("dialog-records"), POLICY) as running:
        yield running


def test_a_lower_cseq_from_the_caller_itself_is_refused_and_the_call_ends(recorded):
    lab = recorded
    bob, alice = UserAgent(lab, "bob"), UserAgent(lab, "alice")
    try:
        assert bob.register() == 200
        answering = bob.answer_in_background(sdp(40010))
        call = alice.call("bob", sdp(40012))
        assert call.reply is not None and call.reply.status == 200, call.reply
        invite_cseq = int(call.invite.header("CSeq").split()[0])  # type: ignore[union-attr]
        record = lab.redis.hgetall(f"sipshield:dlg:{call.call_id}:{alice.tag}")
        assert record == {"c": str(invite_cseq)}
        assert 0 < lab.redis.ttl(f"sipshield:dlg:{call.call_id}:{alice.tag}") <= 600
        # From alice's own socket (the token verifies), below the INVITE's CSeq.
        alice.send(call._in_dialog("BYE", invite_cseq - 1))
        assert alice.response().status == 403
        assert not answering.done.wait(0.5), "the BYE with a lower CSeq reached the callee"
        assert call.bye() == 200
        assert answering.done.wait(5) and answering.error is None, answering.error
        # The same BYE replayed with an older CSeq: refused too.
        alice.send(call._in_dialog("BYE", alice.cseq + 5))
        assert alice.response().status == 403
    finally:
        alice.close()
        bob.close()
    reasons = [e["reason"] for e in lab.events() if e.get("call_id") == call.call_id]
    assert len(reasons) == 2 and all("(a replay)" in r for r in reasons), reasons
