"""The native drop-in: its routes name real handler methods, and the edit is exact."""

import re

import pytest

from sipshield.dropin import (
    MARK,
    ConfigShapeError,
    add_to_native_config,
    remove_from_native_config,
)
from sipshield.kemi import DROPIN_ENTRY_POINTS, ROUTE_BLOCKED, KemiHandler
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
