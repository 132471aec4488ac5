"""Signed dialog tokens: codec, key ring, rotation, and the in-dialog check on parsed messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sipshield.checks.dialog_guard import DialogGuard, DialogGuardConfig, route_uris, uri_params
from sipshield.core.pipeline import drops_refusals
from sipshield.core.policy import PolicyError, parse_policy
from sipshield.core.site import Site
from sipshield.core.verdict import CONTINUE, Drop, Reject, decided_response
from sipshield.sip import dialog_tokens
from sipshield.sip.dialog_tokens import (
    CALLEE,
    CALLER,
    Binding,
    KeyFileError,
    KeyRing,
    parse_key_file,
    rotate_key_file,
)
from sipshield.sip.message import RawSipMessage

SECRET = bytes(range(32))
CALL = Binding("abc@host", "ftag1", CALLER, "udp", "192.0.2.10", 5062)


def test_a_token_verifies_for_its_binding_only():
    token = dialog_tokens.decode(dialog_tokens.encode(SECRET, "k1", CALL))
    assert token is not None
    assert (token.key_id, token.role, token.transport, token.port) == ("k1", "c", "udp", 5062)
    assert dialog_tokens.token_matches(SECRET, token, CALL)
    for change in (
        {"ip": "192.0.2.11"},
        {"port": 5063},
        {"call_id": "abd@host"},
        {"from_tag": "ftag2"},
        {"role": CALLEE},
        {"transport": "tcp"},
    ):
        other = Binding(**{**CALL.__dict__, **change})
        assert not dialog_tokens.token_matches(SECRET, token, other), change
    assert not dialog_tokens.token_matches(bytes(32), token, CALL)


def test_the_token_is_a_plain_uri_parameter_value():
    value = dialog_tokens.encode(SECRET, "k1", CALL)
    assert all(c.isalnum() or c in "._-" for c in value)
    assert len(value) < 40


@pytest.mark.parametrize(
    "value",
    ["", "k1", "k1.cu5062", "k1.cu5062.short", "k1.zu5062." + "A" * 22, "k1.cq1." + "A" * 22],
)
def test_malformed_tokens_do_not_decode(value):
    assert dialog_tokens.decode(value) is None


def test_key_file_errors_name_the_line():
    with pytest.raises(KeyFileError, match=r"keys:2: the secret is not hex"):
        parse_key_file("k1 " + "00" * 16 + "\nk2 zz\n", "keys")
    with pytest.raises(KeyFileError, match=r"keys:1: secret of 4 bytes"):
        parse_key_file("k1 00000000\n", "keys")
    with pytest.raises(KeyFileError, match=r"keys:2: key ID k1 given twice"):
        parse_key_file(f"k1 {'00' * 16}\nk1 {'11' * 16}\n", "keys")
    with pytest.raises(KeyFileError, match="no key"):
        parse_key_file("# nothing\n", "keys")


def test_rotation_signs_with_the_new_key_and_still_verifies_the_old(tmp_path: Path):
    path = tmp_path / "keys"
    first = rotate_key_file(path)
    assert os.stat(path).st_mode & 0o077 == 0
    now = [0.0]
    ring = KeyRing(path, clock=lambda: now[0])
    old = dialog_tokens.decode(ring.sign(CALL))
    assert old is not None and old.key_id == first
    second = rotate_key_file(path)
    os.utime(path, ns=(1, 10**18))  # a changed mtime, however coarse the file system
    now[0] += 2
    assert ring.key_ids == [second, first]
    assert dialog_tokens.decode(ring.sign(CALL)).key_id == second  # type: ignore[union-attr]
    assert dialog_tokens.token_matches(ring.secret(first), old, CALL)  # type: ignore[arg-type]
    rotate_key_file(path)  # keeps two: the first key is gone now
    os.utime(path, ns=(1, 2 * 10**18))
    now[0] += 2
    assert ring.secret(first) is None


def test_a_broken_key_file_keeps_the_keys_loaded_before(tmp_path: Path):
    path = tmp_path / "keys"
    kid = rotate_key_file(path)
    errors: list[str] = []
    now = [0.0]
    ring = KeyRing(path, clock=lambda: now[0], on_reload_error=errors.append)
    path.write_text("garbage\n")
    now[0] += 2
    assert ring.key_ids == [kid]
    assert errors and "keeping the keys loaded before" in errors[0]


def test_route_headers_are_split_into_uris():
    values = ["<sip:a;lr>, <sip:b;lr;ftag=x>", "<sip:c;lr>"]
    assert route_uris(values) == ["sip:a;lr", "sip:b;lr;ftag=x", "sip:c;lr"]
    assert uri_params("sip:1.2.3.4:5060;lr=on;ftag=T;shd=k.cu1.M?h=v") == {
        "lr": "on",
        "ftag": "T",
        "shd": "k.cu1.M",
    }


# -- the in-dialog check on parsed messages -------------------------------------


@pytest.fixture
def guard(tmp_path: Path):
    def make(**settings):
        path = tmp_path / "keys"
        if not path.exists():
            rotate_key_file(path)
        module = DialogGuard(DialogGuardConfig(key_file=path, **settings))
        module.bind(SITE)
        return module

    return make


SITE = Site.from_policy(
    parse_policy(
        "domain: example.net\npeers:\n  pbx: {address: 10.0.0.2:5060}\n  trunks:\n"
        "    - {name: carrier, target: 198.51.100.1:5060, sources: [198.51.100.0/24]}\n"
    )
)


def in_dialog(guard_module, method="BYE", src=("192.0.2.10", 5062), token=None, **extra):
    """A request of the dialog abc@host (caller tag ftag1), as its caller would send it."""
    token = token if token is not None else guard_module.keys.sign(CALL)
    route = f"<sip:203.0.113.1;lr=on;ftag=ftag1;shd={token}>" if token else "<sip:203.0.113.1;lr>"
    body = extra.get("body", "")
    raw = (
        f"{method} sip:bob@192.0.2.20 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK1\r\n"
        f"Route: {route}, <sip:10.0.0.2;lr>\r\n"
        f"From: <sip:{extra.get('from_user', 'alice')}@example.net>;tag={extra.get('from_tag', 'ftag1')}\r\n"  # noqa: E501
        f"To: <sip:bob@example.net>;tag={extra.get('to_tag', 'ttag')}\r\n"
        f"Call-ID: abc@host\r\nCSeq: 5 {method}\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    return RawSipMessage(raw, src_ip=src[0], src_port=src[1], site=SITE)


def test_the_bound_caller_passes_and_others_are_refused(guard):
    module = guard()
    assert module.check(in_dialog(module), None) is CONTINUE
    forged = module.check(in_dialog(module, src=("198.51.100.66", 5062)), None)
    assert isinstance(forged, Reject) and forged.code == 403
    assert "does not verify" in forged.reason
    rebound = module.check(in_dialog(module, src=("192.0.2.10", 40000)), None)
    assert isinstance(rebound, Reject) and "nat_rebinding: none" in rebound.reason


def test_nat_rebinding_port_tolerates_another_port_of_the_same_ip(guard):
    module = guard(nat_rebinding="port")
    assert module.check(in_dialog(module, src=("192.0.2.10", 40000)), None) is CONTINUE
    assert isinstance(module.check(in_dialog(module, src=("192.0.2.11", 5062)), None), Reject)


def test_the_callee_sends_with_swapped_tags(guard):
    module = guard()
    callee = Binding("abc@host", "ftag1", CALLEE, "udp", "192.0.2.20", 5070)
    msg = in_dialog(
        module, src=("192.0.2.20", 5070), token=module.keys.sign(callee), from_tag="ttag",
        to_tag="ftag1",
    )  # fmt: skip
    assert module.check(msg, None) is CONTINUE


def test_a_trunk_answers_from_any_of_its_sources(guard):
    module = guard()
    trunk_leg = Binding("abc@host", "ftag1", CALLEE, "udp", "198.51.100.1", 5060)
    token = module.keys.sign(trunk_leg)
    assert module.check(in_dialog(module, src=("198.51.100.7", 5060), token=token), None) is (
        CONTINUE
    )
    assert isinstance(
        module.check(in_dialog(module, src=("192.0.2.7", 5060), token=token), None), Reject
    )


def test_missing_unknown_and_foreign_tokens_are_refused(guard):
    module = guard()
    missing = module.check(in_dialog(module, token=""), None)
    assert isinstance(missing, Reject) and "no dialog token" in missing.reason
    unknown = module.check(in_dialog(module, token="nokey.cu5062." + "A" * 22), None)
    assert isinstance(unknown, Reject) and "unknown key 'nokey'" in unknown.reason
    other = module.check(in_dialog(module, from_tag="other", to_tag="other2"), None)
    assert isinstance(other, Reject) and "another dialog" in other.reason


def test_out_of_dialog_and_unlisted_methods_are_not_checked(guard):
    module = guard(methods=["BYE"])
    assert module.check(in_dialog(module, method="INFO", token=""), None) is CONTINUE
    assert module.check(in_dialog(module, method="BYE", to_tag="", token=""), None) is CONTINUE


def test_drop_response(guard):
    # The decide step carries out the module's response setting.
    module = guard(response="drop")
    refusal = module.check(in_dialog(module, token=""), None)
    assert isinstance(decided_response(refusal, "BYE", drops_refusals(module)), Drop)
    assert not drops_refusals(guard())


def test_media_may_not_move_outside_the_media_networks(guard):
    module = guard(media_networks=["192.0.2.0/24"])
    sdp = "v=0\r\nc=IN IP4 {}\r\nm=audio 4000 RTP/AVP 0\r\n"
    inside = in_dialog(module, method="INVITE", body=sdp.format("192.0.2.10"))
    hold = in_dialog(module, method="INVITE", body=sdp.format("0.0.0.0"))
    outside = in_dialog(module, method="INVITE", body=sdp.format("203.0.113.5"))
    assert module.check(inside, None) is CONTINUE
    assert module.check(hold, None) is CONTINUE
    moved = module.check(outside, None)
    assert isinstance(moved, Reject) and moved.code == 488


def test_an_unreadable_key_file_is_a_policy_error(tmp_path: Path):
    with pytest.raises(PolicyError, match="cannot read the dialog-token keys"):
        DialogGuard(DialogGuardConfig(key_file=tmp_path / "absent"))


def test_the_ack_of_a_failed_invite_carries_the_outbound_route_and_passes(guard):
    # RFC 3261 17.1.1.3: the ACK of a 407 or 488 copies the INVITE's Route (a
    # phone's outbound proxy, with no token) and is absorbed by the transaction.
    module = guard()
    ack = in_dialog(module, method="ACK", token="")
    ack.acks_failed_invite = True
    assert module.check(ack, None) is CONTINUE
    # The same ACK that no failed INVITE transaction matches is end to end: refused.
    forged = module.check(in_dialog(module, method="ACK", token=""), None)
    assert isinstance(forged, Reject) and "no dialog token" in forged.reason
    # One that carries SDP is no transaction's ACK, whatever it matches.
    with_sdp = in_dialog(module, method="ACK", token="", body="v=0\r\n")
    with_sdp.acks_failed_invite = True
    assert isinstance(module.check(with_sdp, None), Reject)
