"""The drop-in check reads a configuration as Kamailio will run it: conditionals, includes, calls.

The whole command runs against Debian's stock kamailio.cfg in
tests/integration/test_dropin_check.py; these pin down the reading itself.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipshield.ops.dropin_check import (
    DROPIN_START,
    Report,
    check_config,
    check_entry,
    entry_path,
    read_config,
    unwritable_by,
)
from tests.conftest import REPO

DROPIN = REPO / "kamailio-cfg" / "sipshield-dropin.cfg"
CALLS = """\
request_route {
\troute(SIPSHIELD);
\trecord_route();
\troute(SIPSHIELD_RECORD_ROUTE);
\tt_on_branch("MANAGE_BRANCH");
\tt_relay();
}
branch_route[MANAGE_BRANCH] {
\troute(SIPSHIELD_BRANCH);
}
reply_route {
\troute(SIPSHIELD_REPLY);
}
"""
MODULES = 'loadmodule "tm.so"\nloadmodule "rr.so"\n'
INCLUDE = f'include_file "{DROPIN}"\n'


def problems(tmp_path: Path, text: str, defines: dict[str, str] | None = None) -> list[str]:
    config = tmp_path / "kamailio.cfg"
    config.write_text(text)
    report = Report()
    check_config(list(read_config(config)), defines or {}, report)
    return [str(problem) for problem in report.problems]


def test_the_include_before_request_route_with_every_call_is_clean(tmp_path):
    assert problems(tmp_path, MODULES + INCLUDE + CALLS) == []


def test_an_include_inside_a_conditional_block_is_named_with_both_lines(tmp_path):
    text = MODULES + "#!ifdef WITH_DEBUG\n" + INCLUDE + "#!endif\n" + CALLS
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'kamailio.cfg'}:4: the include is inside #!ifdef WITH_DEBUG "
        f"({tmp_path / 'kamailio.cfg'}:3): Kamailio skips it unless that condition holds, "
        'and the start fails with route "SIPSHIELD" not found; move it to the line just '
        "before `request_route {`, outside every #!ifdef block"
    ]


def test_the_else_branch_and_a_closed_block_are_told_apart(tmp_path):
    closed = MODULES + "#!ifndef X\n#!define X 1\n#!else\n#!define Y\n#!endif\n" + INCLUDE
    assert problems(tmp_path, closed + CALLS) == []
    in_else = MODULES + "#!ifdef X\n#!define Y\n#!else\n" + INCLUDE + "#!endif\n" + CALLS
    assert "the include is inside #!ifdef X" in problems(tmp_path, in_else)[0]


def test_an_include_in_a_file_imported_inside_a_conditional_is_conditional(tmp_path):
    (tmp_path / "local.cfg").write_text(INCLUDE)
    text = MODULES + '#!ifdef WITH_LOCAL\nimport_file "local.cfg"\n#!endif\n' + CALLS
    found = problems(tmp_path, text)
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'local.cfg'}:1: the include is inside #!ifdef")


def test_commented_out_lines_count_for_nothing(tmp_path):
    text = MODULES + "/* " + INCLUDE + "*/\n" + CALLS
    text = text.replace("\troute(SIPSHIELD_REPLY);", "#\troute(SIPSHIELD_REPLY);")
    found = [p.split(": ", 1)[1] for p in problems(tmp_path, text)]
    assert [p.split(";")[0].split(":")[0] for p in found] == [
        "no include of sipshield-dropin.cfg",
        "no route(SIPSHIELD_REPLY)",
    ]


@pytest.mark.parametrize(
    "route", ["SIPSHIELD", "SIPSHIELD_REPLY", "SIPSHIELD_RECORD_ROUTE", "SIPSHIELD_BRANCH"]
)
def test_each_missing_route_call_is_a_problem(tmp_path, route):
    text = MODULES + INCLUDE + CALLS.replace(f"\troute({route});\n", "")
    found = problems(tmp_path, text)
    assert len(found) == 1
    assert f": no route({route}); call it " in found[0]


def test_a_route_call_inside_a_conditional_is_a_problem(tmp_path):
    text = (
        MODULES
        + INCLUDE
        + CALLS.replace(
            "\troute(SIPSHIELD_REPLY);\n", "#!ifdef WITH_X\n\troute(SIPSHIELD_REPLY);\n#!endif\n"
        )
    )
    (found,) = problems(tmp_path, text)
    assert "route(SIPSHIELD_REPLY) is inside #!ifdef WITH_X" in found


def test_an_include_of_a_missing_file_is_a_problem(tmp_path):
    text = MODULES + 'include_file "/nonexistent/sipshield-dropin.cfg"\n' + CALLS
    (found,) = problems(tmp_path, text)
    assert found.endswith(
        ":3: /nonexistent/sipshield-dropin.cfg does not exist (sipshield install-dropin puts it)"
    )


def test_an_own_local_response_route_needs_the_define_and_the_call(tmp_path):
    own = 'event_route[sl:local-response] {\n\txlog("reply\\n");\n}\n'
    found = problems(tmp_path, MODULES + INCLUDE + CALLS + own)
    assert len(found) == 2
    assert "clashes with the drop-in's (duplicate route): put #!define " in found[0]
    assert "no route(SIPSHIELD_LOCAL_REPLY)" in found[1]
    defined = "#!define SIPSHIELD_HAVE_SL_LOCAL_RESPONSE\n" + INCLUDE
    called = own.replace("{\n", "{\n\troute(SIPSHIELD_LOCAL_REPLY);\n")
    assert problems(tmp_path, MODULES + defined + CALLS + called) == []
    by_argument = {"SIPSHIELD_HAVE_SL_LOCAL_RESPONSE": ""}
    assert problems(tmp_path, MODULES + INCLUDE + CALLS + called, by_argument) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MODULES + 'loadmodule "app_python3.so"\n' + INCLUDE, "app_python3 is loaded here"),
        (MODULES + INCLUDE + 'loadmodule "sl.so"\n', "sl is loaded after the include"),
        (MODULES + 'cfgengine "python"\n' + INCLUDE, 'cfgengine "python": this configuration'),
    ],
)
def test_modules_that_clash_are_named_at_their_line(tmp_path, text, expected):
    (found,) = problems(tmp_path, text + CALLS)
    assert expected in found
    assert found.startswith(f"{tmp_path / 'kamailio.cfg'}:")


def test_the_entry_comes_from_a_quoted_define_and_an_unquoted_one_is_caught(tmp_path):
    config = tmp_path / "kamailio.cfg"
    config.write_text('#!define SIPSHIELD_ENTRY "/opt/entry.py"\n' + INCLUDE + CALLS)
    lines = list(read_config(config))
    report = Report()
    check_config(lines, {}, report)
    assert entry_path(lines, {}, report) == "/opt/entry.py"
    assert entry_path(lines, {"SIPSHIELD_ENTRY": '"/srv/e.py"'}, report) == "/srv/e.py"
    assert report.problems == []
    assert entry_path(lines, {"SIPSHIELD_ENTRY": "/srv/e.py"}, report) is None
    assert [str(p) for p in report.problems] == [
        "-A SIPSHIELD_ENTRY=/srv/e.py: not a string, and Kamailio's error will point into "
        "the drop-in: quote it, -A 'SIPSHIELD_ENTRY=\"/srv/e.py\"'"
    ]


def test_an_entry_without_the_dropin_start_is_a_problem(tmp_path):
    old = tmp_path / "old_entry.py"
    old.write_text("def mod_init():\n    return None\n")
    report = Report()
    check_entry(str(old), None, "/etc/sipshield/policy.yaml", report)
    assert [str(p) for p in report.problems] == [
        f"{old}: no {DROPIN_START}(), which sipshield-dropin.cfg starts sipshield with: "
        "install the entry of this sipshield version (sipshield install-dropin)"
    ]


def test_the_entry_that_cannot_import_sipshield_is_a_problem(tmp_path):
    report = Report()
    check_entry(str(REPO / "kamailio-cfg" / "sipshield_kemi.py"), str(tmp_path), "p", report)
    (found,) = [str(p) for p in report.problems]
    assert found.startswith(f"PYTHONPATH={tmp_path}: the entry cannot import sipshield there")
    assert "No module named 'sipshield'" in found


@pytest.fixture
def reachable(tmp_path_factory) -> Iterator[Path]:
    """A directory any user can enter (pytest's own are root's alone)."""
    directory = Path(tempfile.mkdtemp(prefix="sipshield-dropin-check-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def test_the_events_file_must_be_writable_by_the_kamailio_user(reachable):
    events = reachable / "events" / "events.jsonl"
    assert unwritable_by(events, "kamailio") == (
        f"{reachable} is not writable by the kamailio user (to create {events}): every "
        "event would log a PermissionError (sipshield install-dropin creates "
        f"{events.parent} owned by kamailio)"
    )
    events.parent.mkdir()
    os.chown(events.parent, pwd.getpwnam("kamailio").pw_uid, 0)
    assert unwritable_by(events, "kamailio") is None
    reachable.chmod(0o700)
    assert unwritable_by(events, "kamailio").startswith(
        f"{reachable} cannot be entered by the kamailio user"
    )
