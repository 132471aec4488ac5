"""Framing, cookie matching, reply interpretation and command translation (no I/O)."""

from __future__ import annotations

import logging

import pytest

from sipshield.rtpengine import (
    Answer,
    Delete,
    ListCalls,
    MediaOptions,
    NgBadReply,
    NgErrorReply,
    Offer,
    Ping,
    Query,
    Statistics,
    decode_reply,
    encode_request,
    interpret_reply,
    make_cookie,
    match_reply,
)

ADDR = ("127.0.0.1", 2223)


def test_cookies_are_unique_and_frameable() -> None:
    cookies = {make_cookie() for _ in range(1000)}
    assert len(cookies) == 1000
    assert all(c.isascii() and " " not in c for c in cookies)


def test_encode_request_frames_cookie_and_dict() -> None:
    assert encode_request("c1", {"command": "ping"}) == b"c1 d7:command4:pinge"


@pytest.mark.parametrize("cookie", ["", "a b", "é"])
def test_encode_request_rejects_unframeable_cookie(cookie: str) -> None:
    with pytest.raises(ValueError):
        encode_request(cookie, {"command": "ping"})


def test_request_reply_round_trip() -> None:
    cookie, data = decode_reply(b"c1 d6:result2:ok3:sdp3:v=0e")
    assert cookie == "c1"
    assert data == {"result": "ok", "sdp": "v=0"}


@pytest.mark.parametrize(
    "datagram",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"c1", id="no-separator"),
        pytest.param(b" d6:result2:oke", id="empty-cookie"),
        pytest.param(b"c1 ", id="no-body"),
        pytest.param(b"c1 d6:result2:ok", id="truncated"),
        pytest.param(b"c1 le", id="list-top-level"),
        pytest.param(b"c1 i1e", id="int-top-level"),
        pytest.param(b"c1 4:spam", id="string-top-level"),
        pytest.param(b"c1 d6:result2:okejunk", id="trailing-data"),
        pytest.param(b"c1 d6:resulti" + b"9" * 400 + b"ee", id="huge-int"),
        pytest.param(b"c1 " + b"d1:a" * 200 + b"i1e" + b"e" * 200, id="nested-garbage"),
        pytest.param(b"c1 d6:result2:\xff\xfee", id="invalid-utf8"),
        pytest.param(b"\xff\xfe d6:result2:oke", id="non-ascii-cookie"),
    ],
)
def test_decode_reply_rejects_hostile_input(datagram: bytes) -> None:
    with pytest.raises(NgBadReply):
        decode_reply(datagram)


def test_match_reply_ignores_other_cookies() -> None:
    assert match_reply("c1", b"c2 d6:result2:oke") is None
    # A cookie that merely starts with ours is someone else's.
    assert match_reply("c1", b"c10 d6:result2:oke") is None
    assert match_reply("c1", b"garbage") is None
    assert match_reply("c1", b"c1 d6:result2:oke") == {"result": "ok"}


def test_match_reply_raises_on_malformed_reply_with_our_cookie() -> None:
    with pytest.raises(NgBadReply):
        match_reply("c1", b"c1 d6:result")


def test_interpret_ok_and_pong() -> None:
    reply = interpret_reply("ping", {"result": "pong"}, ADDR)
    assert (reply.result, reply.warning, reply.instance) == ("pong", None, ADDR)
    assert interpret_reply("offer", {"result": "ok", "sdp": "v=0"}, ADDR).get_str("sdp") == "v=0"


def test_interpret_missing_result_is_bad_reply() -> None:
    with pytest.raises(NgBadReply, match="result"):
        interpret_reply("ping", {"sdp": "x"}, ADDR)
    with pytest.raises(NgBadReply):
        interpret_reply("ping", {"result": 1}, ADDR)


def test_interpret_error_reply_carries_reason_and_command() -> None:
    with pytest.raises(NgErrorReply) as info:
        interpret_reply("answer", {"result": "error", "error-reason": "Unknown call-id"}, ADDR)
    assert info.value.reason == "Unknown call-id"
    assert info.value.command == "answer"
    assert info.value.instance == ADDR
    assert "127.0.0.1:2223" in str(info.value)


def test_interpret_unknown_result_is_an_error_without_reason() -> None:
    with pytest.raises(NgErrorReply) as info:
        interpret_reply("offer", {"result": "load limit"}, ADDR)
    assert (info.value.result, info.value.reason) == ("load limit", "load limit")


def test_interpret_warning_is_kept_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    data = {"result": "ok", "warning": "Call-ID not found or tags didn't match"}
    with caplog.at_level(logging.WARNING, logger="sipshield.rtpengine"):
        reply = interpret_reply("delete", data, ADDR)
    assert reply.warning == "Call-ID not found or tags didn't match"
    assert "delete" in caplog.text
    assert "127.0.0.1:2223" in caplog.text
    assert "Call-ID not found" in caplog.text


def test_interpret_non_string_warning_is_bad_reply() -> None:
    with pytest.raises(NgBadReply):
        interpret_reply("delete", {"result": "ok", "warning": ["x"]}, ADDR)


def test_get_str_reports_missing_field() -> None:
    reply = interpret_reply("offer", {"result": "ok"}, ADDR)
    with pytest.raises(NgBadReply, match="sdp"):
        reply.get_str("sdp")


def test_media_options_translate_to_ng_keys() -> None:
    options = MediaOptions(
        flags=("trust-address",),
        replace=("origin", "session-connection"),
        transport_protocol="RTP/SAVP",
        ice="remove",
        sdes=("no-NULL_HMAC_SHA1_32",),
        dtls="off",
        direction=("external", "internal"),
        media_address="127.0.0.1",
        record_call=False,
    )
    assert options.to_ng() == {
        "flags": ["trust-address"],
        "replace": ["origin", "session-connection"],
        "transport-protocol": "RTP/SAVP",
        "ICE": "remove",
        "SDES": ["no-NULL_HMAC_SHA1_32"],
        "DTLS": "off",
        "direction": ["external", "internal"],
        "media-address": "127.0.0.1",
        "record call": "no",
    }
    assert MediaOptions().to_ng() == {}


def test_commands_build_ng_dicts_and_routing_keys() -> None:
    offer = Offer("v=0", "cid", "ft", MediaOptions(ice="remove"))
    assert offer.to_ng() == {
        "command": "offer",
        "sdp": "v=0",
        "call-id": "cid",
        "from-tag": "ft",
        "ICE": "remove",
    }
    assert offer.call_id == "cid"
    assert Answer("v=0", "cid", "ft", "tt").to_ng()["to-tag"] == "tt"
    assert Delete("cid").to_ng() == {"command": "delete", "call-id": "cid"}
    assert Delete("cid", "ft", "tt").to_ng()["to-tag"] == "tt"
    assert Query("cid", "ft").to_ng() == {"command": "query", "call-id": "cid", "from-tag": "ft"}
    assert ListCalls(5).to_ng() == {"command": "list", "limit": 5}
    assert Ping().to_ng() == {"command": "ping"}
    assert Statistics().to_ng() == {"command": "statistics"}
    assert Ping().call_id is None and ListCalls().call_id is None
