"""Targeted tests of the validation module: grammar helpers, verdict shape, settings."""

from __future__ import annotations

import pytest

from sipshield.checks.validation import (
    DEFAULT_CONTENT_TYPES,
    SipValidation,
    ValidationConfig,
    find_problem,
)
from sipshield.core.pipeline import drops_refusals
from sipshield.core.policy import PolicyError, load_policy, parse_policy
from sipshield.core.registry import BUILTIN_MODULES
from sipshield.core.verdict import CONTINUE, Drop, Reject, decided_response
from sipshield.sip.sdp_body import MAX_DEPTH
from sipshield.sip.sip_syntax import (
    SipSyntaxError,
    check_name_addr,
    check_uri,
    check_via,
    split_address_list,
    split_outside_quotes,
)
from tests.conftest import REPO


def request(method: str = "OPTIONS", cseq: str = "", extra: str = "", body: str = "") -> bytes:
    lines = [
        f"{method} sip:bob@example.org SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc",
        "Max-Forwards: 70",
        "From: <sip:alice@example.org>;tag=1",
        "To: <sip:bob@example.org>",
        "Call-ID: abc@192.0.2.1",
        f"CSeq: {cseq or '1 ' + method}",
        *([extra] if extra else []),
        f"Content-Length: {len(body.encode())}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


@pytest.mark.parametrize(
    "uri",
    [
        "sip:bob@example.org",
        "sip:example.org",
        "sips:bob@example.org:5061;transport=tls",
        "sip:bob%20smith@[2001:db8::1]:5060",
        "sip:+4930123;npdi@example.org;user=phone",
        "sip:bob@example.org?Subject=hi%20there&Priority=urgent",
        "SIP:bob@EXAMPLE.org",
        "tel:+1-201-555-0123",
        "urn:service:sos",
    ],
)
def test_well_formed_uris(uri: str) -> None:
    check_uri(uri)


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("bob@example.org", "scheme"),
        ("1sip:bob@example.org", "scheme"),
        ("sip:", "empty"),
        ("sip:bob@", "no host"),
        ("sip:@example.org", "empty user"),
        ("sip:bob@exa mple.org", "invalid character"),
        ("sip:bob@example.org:99999", "port"),
        ("sip:bob@example.org:", "port"),
        ("sip:bob@[2001:db8::1", "IPv6"),
        ("sip:bob%2@example.org", "escape"),
        ("sip:bob%@example.org", "escape"),
        ("sip:bob<@example.org", "invalid character"),
        ("sip:bob@exam_ple.org", "host"),
    ],
)
def test_malformed_uris(uri: str, problem: str) -> None:
    with pytest.raises(SipSyntaxError, match=problem):
        check_uri(uri)


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
        "sip / 2.0 / tcp host.example.org ; branch = z9hG4bK1 ; rport",
        "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK1;received=[2001:db8::2];rport=1",
        "SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/WSS b.example;branch=z9hG4bK2",
        'SIP/2.0/UDP a.example;branch=z9hG4bK1;x="quoted, with comma"',
        "SIP/2.0/UDP a.example : 5060;branch=z9hG4bK1",
    ],
)
def test_well_formed_vias(via: str) -> None:
    check_via(via)


@pytest.mark.parametrize(
    ("via", "problem"),
    [
        ("SIP/2.0 192.0.2.1;branch=z9hG4bK1", "sent-protocol"),
        ("SIP/3.0/UDP 192.0.2.1;branch=z9hG4bK1", "SIP/2.0"),
        ("HTTP/2.0/UDP 192.0.2.1;branch=z9hG4bK1", "SIP/2.0"),
        ("SIP/2.0/UDP ;branch=z9hG4bK1", "sent-by"),
        ("SIP/2.0/UDP 192.0.2.1;rport", "branch"),
        ("SIP/2.0/UDP 192.0.2.1;branch=", "branch"),
        ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1,", "sent-protocol"),
        ('SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;x="open', "unterminated"),
        ("SIP/2.0/UDP 192.0.2.1;branch=a b", "branch"),
    ],
)
def test_malformed_vias(via: str, problem: str) -> None:
    with pytest.raises(SipSyntaxError, match=problem):
        check_via(via)


@pytest.mark.parametrize(
    "value",
    [
        "<sip:alice@example.org>;tag=1",
        "sip:alice@example.org;tag=1",
        "Alice <sip:alice@example.org>",
        '"Smith, \\"JJ\\" <x>" <sip:alice@example.org> ; tag = 1',
        "<tel:+15551234567>",
    ],
)
def test_well_formed_addresses(value: str) -> None:
    check_name_addr(value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "scheme"),
        ("<sip:alice@example.org", "without '>'"),
        ("sip:alice@example.org>", "without '<'"),
        ('"Alice <sip:alice@example.org>', "unterminated"),
        ('"Alice" sip:alice@example.org', "no <URI>"),
        ("<sip:alice@example.org> junk", "parameters"),
        ('Al"ice <sip:alice@example.org>', "display name"),
    ],
)
def test_malformed_addresses(value: str, problem: str) -> None:
    with pytest.raises(SipSyntaxError, match=problem):
        check_name_addr(value)


def test_split_outside_quotes_keeps_quoted_separators() -> None:
    assert split_outside_quotes('a;b="x;\\"y";c', ";") == ["a", 'b="x;\\"y"', "c"]


def test_a_well_formed_request_passes() -> None:
    assert SipValidation(ValidationConfig()).judge(request()) is CONTINUE


def test_the_reply_says_what_is_wrong_but_does_not_echo_the_request() -> None:
    verdict = SipValidation(ValidationConfig()).judge(request(cseq="1 <EVIL>"))
    assert isinstance(verdict, Reject)
    assert verdict.code == 400
    assert verdict.phrase == "Bad Request (CSeq method does not match)"
    assert "<EVIL>" in verdict.reason


def test_a_disallowed_method_is_answered_with_allow() -> None:
    rules = ValidationConfig(methods=("INVITE", "ACK", "BYE", "CANCEL"))
    verdict = SipValidation(rules).judge(request())
    assert isinstance(verdict, Reject)
    assert verdict.code == 405
    assert verdict.headers == (("Allow", "INVITE, ACK, BYE, CANCEL"),)


def test_a_disallowed_body_is_answered_with_accept() -> None:
    rules = ValidationConfig(content_types=("application/sdp",))
    raw = request("MESSAGE", extra="Content-Type: text/plain", body="hi")
    verdict = SipValidation(rules).judge(raw)
    assert isinstance(verdict, Reject)
    assert verdict.code == 415
    assert verdict.headers == (("Accept", "application/sdp"),)


def test_response_drop_says_nothing() -> None:
    module = SipValidation(ValidationConfig(response="drop"))
    refusal = module.judge(request(cseq="1 INVITE"))
    verdict = decided_response(refusal, "INVITE", drops_refusals(module))
    assert isinstance(verdict, Drop)
    assert "CSeq method" in verdict.reason


def test_a_malformed_ack_is_dropped_even_when_rejecting() -> None:
    module = SipValidation(ValidationConfig())
    refusal = module.judge(request("ACK", cseq="1 INVITE"))
    assert isinstance(decided_response(refusal, "ACK", drops_refusals(module)), Drop)


def test_limits_come_from_the_settings() -> None:
    raw = request(extra="\r\n".join(f"X-{n}: {n}" for n in range(5)))
    assert find_problem(raw, ValidationConfig(max_headers=11)) is not None
    assert find_problem(raw, ValidationConfig(max_headers=12)) is None
    long_value = request(extra="Subject: " + "x" * 200)
    assert find_problem(long_value, ValidationConfig(max_header_value_bytes=199)) is not None
    assert find_problem(long_value, ValidationConfig(max_header_value_bytes=200)) is None
    padded = request("MESSAGE", extra="Content-Type: text/plain", body="x" * 1000)
    assert find_problem(padded, ValidationConfig(max_message_bytes=len(padded))) is None
    problem = find_problem(padded, ValidationConfig(max_message_bytes=len(padded) - 1))
    assert problem is not None and problem.code == 413


def nested(depth: int) -> bytes:
    """A MESSAGE whose body is ``depth`` well-formed multiparts, one inside the other."""
    body = f"--b{depth - 1}\r\n\r\ninnermost\r\n--b{depth - 1}--\r\n"
    for n in reversed(range(depth - 1)):
        head = f"--b{n}\r\nContent-Type: multipart/mixed;boundary=b{n + 1}\r\n\r\n"
        body = f"{head}{body}--b{n}--\r\n"
    return request("MESSAGE", extra="Content-Type: multipart/mixed;boundary=b0", body=body)


def test_nested_multipart_depth_is_bounded_by_sdp_body() -> None:
    assert find_problem(nested(MAX_DEPTH), ValidationConfig()) is None
    problem = find_problem(nested(MAX_DEPTH + 1), ValidationConfig())
    assert problem is not None
    assert (problem.code, problem.detail) == (415, "multipart nested too deep")
    assert problem.headers == (("Accept", ", ".join(DEFAULT_CONTENT_TYPES)),)


def test_a_malformed_multipart_is_a_bad_request_that_says_why() -> None:
    body = "--b\r\nContent-Type: text/plain\r\n\r\nhi--b\r\n\r\nsmuggled\r\n--b--\r\n"
    raw = request("MESSAGE", extra="Content-Type: multipart/mixed;boundary=b", body=body)
    problem = find_problem(raw, ValidationConfig())
    assert problem is not None
    assert (problem.code, problem.summary) == (400, "malformed body")
    assert problem.detail == "multipart boundary inside a line"


def test_every_part_type_is_checked_nested_multiparts_included() -> None:
    body = (
        "--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
        "--inner\r\nContent-Type: text/plain\r\n\r\nhi\r\n--inner--\r\n"
        "--outer\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--outer--\r\n"
    )
    raw = request("MESSAGE", extra="Content-Type: multipart/mixed;boundary=outer", body=body)
    allowed = ("multipart/mixed", "multipart/alternative", "text/plain", "application/sdp")
    assert find_problem(raw, ValidationConfig(content_types=allowed)) is None
    for missing in allowed[1:]:
        rules = ValidationConfig(content_types=tuple(t for t in allowed if t != missing))
        problem = find_problem(raw, rules)
        assert problem is not None, missing
        assert (problem.code, problem.detail) == (415, f"Content-Type {missing}")


@pytest.mark.parametrize(
    "value",
    ['"' * 5000, "<" * 5000, ";" * 5000, "\\" * 5000, "%" * 5000, "," * 5000],
)
def test_pathological_values_are_refused(value: str) -> None:
    for header in ("From", "To", "Via"):
        raw = request().replace(
            f"\r\n{header}: ".encode(), f"\r\n{header}: {value}\r\nX: ".encode()
        )
        problem = find_problem(raw, ValidationConfig(max_header_value_bytes=8192))
        assert problem is not None and problem.code == 400, (header, value[:3])


def test_settings_are_normalised_and_checked() -> None:
    rules = ValidationConfig(uri_schemes=("SIP", "Tel"), content_types=("Application/SDP",))
    assert rules.uri_schemes == ("sip", "tel")
    assert rules.content_types == ("application/sdp",)
    with pytest.raises(ValueError, match="not SIP method names"):
        ValidationConfig(methods=("INVITE", "BAD METHOD"))


def test_policy_errors_name_the_line_of_a_bad_setting() -> None:
    text = (
        "domain: example.org\npeers: {pbx: {address: 127.0.0.1:5090}}\n"
        "modules:\n  - name: validation\n    max_headers: 0\n"
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml")
    assert caught.value.errors[0].startswith("p.yaml:5: modules[0].max_headers")


def test_the_example_policy_validates_before_any_module_reads_the_message() -> None:
    """Only the parse-free address checks (ip_controls, bans) may come before it."""
    policy = load_policy(REPO / "kamailio-cfg" / "policy.example.yaml")
    names = [entry.name for entry in policy.modules]
    position = names.index("validation")
    assert set(names[:position]) <= {"ip_controls", "bans"}
    assert isinstance(policy.modules[position], ValidationConfig)
    assert policy.modules[position].mode == "enforce"
    assert BUILTIN_MODULES["validation"] is SipValidation


def test_nested_multiparts_and_parts_without_headers_pass() -> None:
    body = (
        "--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
        "--inner\r\n\r\nplain text, no part headers\r\n--inner--\r\n"
        "--outer\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--outer--\r\n"
    )
    raw = request("MESSAGE", extra="Content-Type: multipart/mixed;boundary=outer", body=body)
    assert find_problem(raw, ValidationConfig()) is None


def test_header_limits_count_bytes_not_characters() -> None:
    raw = request(extra="Subject: " + "\u00e9" * 100)  # 200 bytes in UTF-8
    assert find_problem(raw, ValidationConfig(max_header_value_bytes=199)) is not None
    assert find_problem(raw, ValidationConfig(max_header_value_bytes=200)) is None


def test_address_lists_split_outside_quotes_and_brackets() -> None:
    value = '<sip:a@x;p=1,2>;q=1, "Smith, J" <sip:b@y>;m="A, B", sip:c@z'
    assert split_address_list(value) == [
        "<sip:a@x;p=1,2>;q=1",
        ' "Smith, J" <sip:b@y>;m="A, B"',
        " sip:c@z",
    ]


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_a_stream_request_without_content_length_is_refused(transport: str) -> None:
    # Kamailio's core accepts it once tcp_accept_no_cl is on (the metrics listener).
    raw = request().replace(b"Content-Length: 0\r\n", b"")
    assert find_problem(raw, ValidationConfig(), "udp") is None
    problem = find_problem(raw, ValidationConfig(), transport)
    assert problem is not None
    assert (problem.code, problem.summary) == (400, "missing Content-Length")
    assert find_problem(request(), ValidationConfig(), transport) is None
