"""The native drop-in: its routes name real handler methods, the edit is exact, and the
replies Kamailio sends itself are observed as the request they answer."""

import ast
import re

import pytest

from sipshield.edge.dropin import (
    MARK,
    ConfigShapeError,
    add_to_native_config,
    remove_from_native_config,
)
from sipshield.edge.kemi import DROPIN_ENTRY_POINTS, ROUTE_BLOCKED, KemiHandler
from sipshield.ops.dropin_check import DROPIN_START
from sipshield.sip.message import RawSipMessage
from sipshield.sip.reply import ReplyFacts, RoutedRequest
from tests.conftest import REPO

SNIPPET = (REPO / "kamailio-cfg" / "sipshield-dropin.cfg").read_text()
OPERATOR_CFG = """\
loadmodule "rr.so"
request_route {
\tif (is_method("INVITE")) {
\t\trecord_route();
\t}
\tt_relay();
}
"""


def test_every_python_exec_in_the_snippet_is_a_handler_method():
    named = re.findall(r'python_exec\("(\w+)"\)', SNIPPET)
    assert set(named) == set(DROPIN_ENTRY_POINTS)
    for name in DROPIN_ENTRY_POINTS:
        assert callable(getattr(KemiHandler, name, None)), name


def test_the_snippet_tests_the_code_the_handler_returns_for_blocked():
    assert f"#!define SIPSHIELD_BLOCKED {ROUTE_BLOCKED}\n" in SNIPPET
    assert ROUTE_BLOCKED not in (-1, 0, 1)  # Kamailio's failure, exit and success


def test_the_edit_adds_marked_lines_and_comes_out_exactly():
    edited = add_to_native_config(OPERATOR_CFG, "/etc/sipshield/sipshield-dropin.cfg")
    assert edited == (
        'loadmodule "rr.so"\n'
        f'include_file "/etc/sipshield/sipshield-dropin.cfg"  {MARK}\n'
        "request_route {\n"
        f"\troute(SIPSHIELD);  {MARK}\n"
        '\tif (is_method("INVITE")) {\n'
        "\t\trecord_route();\n"
        f"\t\troute(SIPSHIELD_RECORD_ROUTE);  {MARK}\n"
        "\t}\n"
        "\tt_relay();\n"
        "}\n"
        f"reply_route {{  {MARK}\n"
        f"\troute(SIPSHIELD_REPLY);  {MARK}\n"
        f"}}  {MARK}\n"
    )
    assert remove_from_native_config(edited) == OPERATOR_CFG


def test_an_existing_reply_route_gets_the_call_first():
    text = OPERATOR_CFG + "reply_route {\n\tdrop;\n}\n"
    edited = add_to_native_config(text, "/x.cfg")
    assert f"reply_route {{\n\troute(SIPSHIELD_REPLY);  {MARK}\n\tdrop;\n}}\n" in edited
    assert remove_from_native_config(edited) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("route {\n\tt_relay();\n}\n", "request_route"),
        ("request_route {\n\tt_relay();\n}\n", "record_route"),
        (add_to_native_config(OPERATOR_CFG, "/x.cfg"), "already"),
    ],
)
def test_a_configuration_without_the_places_is_refused_with_the_reason(text, problem):
    with pytest.raises(ConfigShapeError, match=problem):
        add_to_native_config(text, "/x.cfg")


def test_every_branch_route_gets_the_branch_hook_first():
    text = OPERATOR_CFG + "branch_route[ONE] {\n\txlog(1);\n}\nbranch_route[TWO]{\n\tdrop;\n}\n"
    edited = add_to_native_config(text, "/x.cfg")
    hook = f"\troute(SIPSHIELD_BRANCH);  {MARK}\n"
    assert f"branch_route[ONE] {{\n{hook}\txlog(1);\n" in edited
    assert f"branch_route[TWO]{{\n{hook}\tdrop;\n" in edited
    assert remove_from_native_config(edited) == text


# --- replies Kamailio sends itself --------------------------------------------

LOCAL_RESPONSE_BLOCK = "event_route [ sl:local-response ]\n{\n\txlog(1);\n}\n"


def test_an_existing_local_response_route_gets_the_call_first_and_its_define():
    text = OPERATOR_CFG + LOCAL_RESPONSE_BLOCK
    edited = add_to_native_config(text, "/x.cfg")
    call = f"\troute(SIPSHIELD_LOCAL_REPLY);  {MARK}\n"
    assert f"event_route [ sl:local-response ]\n{{\n{call}\txlog(1);\n" in edited
    # The define comes before the include: the drop-in then skips its own block.
    assert edited.startswith(
        'loadmodule "rr.so"\n'
        f"#!define SIPSHIELD_HAVE_SL_LOCAL_RESPONSE  {MARK}\n"
        f'include_file "/x.cfg"  {MARK}\n'
    )
    assert remove_from_native_config(edited) == text


def test_the_define_the_edit_writes_skips_the_snippets_own_block():
    assert re.search(
        r"^#!ifndef SIPSHIELD_HAVE_SL_LOCAL_RESPONSE\nevent_route\[sl:local-response\] \{\n"
        r"\troute\(SIPSHIELD_LOCAL_REPLY\);\n\}\n#!endif$",
        SNIPPET,
        re.MULTILINE,
    )
    assert "event_route" not in add_to_native_config(OPERATOR_CFG, "/x.cfg")


def test_every_route_the_snippet_or_the_edit_calls_is_defined_in_the_snippet():
    edited = add_to_native_config(OPERATOR_CFG + LOCAL_RESPONSE_BLOCK, "/x.cfg")
    called = set(re.findall(r"route\((SIPSHIELD\w*)\)", SNIPPET + edited))
    defined = set(re.findall(r"^route\[(SIPSHIELD\w*)\]", SNIPPET, re.MULTILINE))
    assert "SIPSHIELD_LOCAL_REPLY" in called
    assert called <= defined


class Pv:
    """What ``KSR.pv`` gives in a local-response event route (values measured on 5.6)."""

    def __init__(self, values: dict[str, object]) -> None:
        self.values = values

    def get(self, spec: str) -> object:
        return self.values.get(spec)


class Ksr:
    def __init__(self, **values: object) -> None:
        self.pv = Pv(values)


REGISTER_WITH_CREDENTIALS = (
    "REGISTER sip:example.net SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bK1;rport\r\n"
    "From: <sip:alice@example.net>;tag=1\r\nTo: <sip:alice@example.net>\r\n"
    "Call-ID: c1\r\nCSeq: 2 REGISTER\r\nMax-Forwards: 70\r\nUser-Agent: Zoiper\r\n"
    'Authorization: Digest username="alice", realm="example.net", nonce="n", uri="sip:x",'
    ' response="r"\r\nContent-Length: 0\r\n\r\n'
)


def routed(raw: str = REGISTER_WITH_CREDENTIALS) -> RoutedRequest:
    return RoutedRequest.from_view(RawSipMessage(raw.encode(), src_ip="192.0.2.9", src_port=5062))


def local_reply(status: int, call_id: str = "c1", cseq: str = "2 REGISTER") -> Ksr:
    # The current message is the reply: no source, no request headers.
    return Ksr(**{"$rs": status, "$ci": call_id, "$hdr(CSeq)": cseq, "$si": "", "$sp": 0})


def test_a_local_challenge_to_credentials_is_a_failed_authentication_of_that_user():
    facts = ReplyFacts.from_local_reply(local_reply(401), routed())
    assert facts == ReplyFacts(
        status=401, method="REGISTER", src_ip="192.0.2.9", src_port=5062, call_id="c1",
        to_user="alice", from_user="alice", auth_user="alice", user_agent="Zoiper",
    )  # fmt: skip
    assert facts.had_credentials
    assert facts.user == "alice"


def test_proxy_credentials_count_as_credentials():
    raw = REGISTER_WITH_CREDENTIALS.replace("Authorization:", "Proxy-Authorization:")
    facts = ReplyFacts.from_local_reply(local_reply(407), routed(raw))
    assert facts is not None
    assert facts.auth_user == "alice"


def test_a_request_without_credentials_is_observed_without_them():
    raw = REGISTER_WITH_CREDENTIALS.replace("Authorization:", "X-Nothing:")
    facts = ReplyFacts.from_local_reply(local_reply(401), routed(raw))
    assert facts is not None
    assert not facts.had_credentials


@pytest.mark.parametrize(
    "reply",
    [
        local_reply(100),
        local_reply(401, call_id="other"),  # another request's reply
        local_reply(401, cseq="1 REGISTER"),  # an earlier request of the same call
        local_reply(401, cseq="2 INVITE"),
    ],
)
def test_only_a_final_reply_to_the_routed_request_is_observed(reply):
    assert ReplyFacts.from_local_reply(reply, routed()) is None


def test_a_keepalive_answered_to_no_user_is_no_success_but_its_failures_count():
    keepalive = (
        "OPTIONS sip:example.net SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK2\r\n"
        "From: <sip:scan@example.net>;tag=1\r\nTo: <sip:example.net>\r\nCall-ID: c1\r\n"
        "CSeq: 2 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    request = routed(keepalive)
    assert ReplyFacts.from_local_reply(local_reply(200, cseq="2 OPTIONS"), request) is None
    assert ReplyFacts.from_local_reply(local_reply(484, cseq="2 OPTIONS"), request).status == 484
    assert ReplyFacts.from_local_reply(local_reply(200), routed()).status == 200


def test_the_snippet_starts_sipshield_with_a_function_the_entry_has():
    # app_python3 calls the function by name; a typo would stop Kamailio at start.
    (named,) = re.findall(r'modparam\("app_python3", "mod_init_function", "(\w+)"\)', SNIPPET)
    entry = ast.parse((REPO / "kamailio-cfg" / "sipshield_kemi.py").read_text())
    functions = {node.name for node in entry.body if isinstance(node, ast.FunctionDef)}
    assert named == DROPIN_START
    assert {"mod_init", named} <= functions
