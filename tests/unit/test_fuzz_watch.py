"""How the fuzz reads the lab's records (fuzz.watch, fuzz.policy, fuzz.sender): pure logic.

A fuzz run that misreads the SBC's log either reports findings that are not
there or, worse, misses a traceback; these pin down the log shapes seen in
real runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from fuzz.policy import fuzz_policy, module_names
from fuzz.sender import parse_replies
from fuzz.watch import Problem, Watch, classify, records
from sipshield.core.policy import Policy

TRACEBACK = [
    " 8(6338) ERROR: {INVITE fz1-546@fuzz} app_python3 [python_support.c:156]: "
    "python_handle_exception(): apy_exec: ksr_request_route((null)): "
    "Unhandled exception in the Python code:",
    "Traceback (most recent call last):",
    '  File "/x/modules/sipshield/sip/sdp.py", line 45, in _sections',
    "ValueError: zip() argument 2 is longer than argument 1",
]


def test_a_traceback_is_one_record_traced_to_its_message() -> None:
    found = records([*TRACEBACK, " 2(7) INFO: <script>: next"])
    assert [level for level, _ in found] == ["ERROR", "INFO"]
    level, text = found[0]
    assert classify(level, text) == "python-traceback"
    problem = Problem("python-traceback", text, 546)
    assert "sdp.py" in problem.key and "ValueError" in problem.key
    assert problem.key == Problem("python-traceback", text.replace("546", "547")).key


def test_a_record_that_does_not_end_its_line_is_not_merged_into_the_next() -> None:
    # Kamailio prints "parsing failed" with no newline; the next record follows on the line.
    line = (
        " 2(7544) ERROR: {MESSAGE fz2-741@fuzz} <core> [core/msg_translator.c:3256]: "
        "build_sip_msg_from_buf(): parsing failed 2(7544) WARNING: {OPTIONS fz2-744@fuzz} "
        "<core> [core/kemi.c:116]: sr_kemi_core_warn(): sipshield[sipshield.core.events] "
        "WARNING: event {}"
    )
    found = records([line])
    assert [level for level, _ in found] == ["ERROR", "WARNING"]
    assert [classify(level, text) for level, text in found] == ["", ""]


def test_only_sipshield_errors_and_kamailio_alarms_are_findings() -> None:
    sipshield_error = (
        " 1(2) ERROR: <core> [core/kemi.c:1]: sr_kemi_core_err(): "
        "sipshield[sipshield.core.pipeline] ERROR: module flood failed"
    )
    parser_error = " 1(2) ERROR: <core> [core/parser/msg_parser.c:1]: get_hdr_field(): bad via"
    alert = " 0(1) ALERT: <core> [main.c:1]: handle_sigs(): child process 12 exited by a signal 11"
    assert [classify(*records([line])[0]) for line in (sipshield_error, parser_error, alert)] == [
        "sipshield-error",
        "",
        "kamailio-alert",
    ]


def test_replies_are_traced_by_token_and_told_apart_by_server() -> None:
    data = (
        b"SIP/2.0 100 Trying\r\nVia: SIP/2.0/TCP x;branch=z9hG4bK-fz9-3\r\n\r\n"
        b"SIP/2.0 400 Bad\r\nCall-ID: fz9-3@fuzz\r\nServer: sipshield\r\n\r\n"
        b"SIP/2.0 407 Proxy Auth\r\nCall-ID: garbled\r\nServer: kamailio (5.6.3)\r\n\r\n"
    )
    assert [(r.index, r.status, r.replier) for r in parse_replies(data, 9)] == [
        (3, 100, "pbx"),
        (3, 400, "sbc"),
        (None, 407, "pbx"),
    ]


def test_the_fuzz_policy_keeps_every_module_and_is_valid() -> None:
    policy, changes = fuzz_policy()
    Policy.model_validate(policy)
    flood = next(m for m in policy["modules"] if m["name"] == "flood")
    assert min(flood["limits"].values()) >= 10**9
    assert policy["bans"]["max_ttl_s"] == 1
    assert all(m.get("mode") != "off" for m in policy["modules"])
    assert "validation" in module_names(policy) and changes


class _LabOnDisk:
    """What Watch reads of a lab: its log and event files, and an SBC that stays alive."""

    def __init__(self, directory: Path) -> None:
        self.info = {
            "logs": {"sbc": str(directory / "sbc.log"), "pbx": str(directory / "pbx.log")},
            "events": str(directory / "events.jsonl"),
            "pids": {"sbc": os.getpid()},
        }
        for name in ("sbc.log", "pbx.log", "events.jsonl"):
            (directory / name).write_text("")

    def processes(self, name: str) -> set[int]:
        return {os.getpid()}

    def sip(self, transport: str) -> tuple[str, int]:
        return "127.0.0.1", 1  # no socket there: no kernel drops to read

    def log_line(self, line: str) -> None:
        with open(self.info["logs"]["sbc"], "a") as log:
            log.write(line + "\n")


def test_kamailio_overload_is_counted_not_found(tmp_path: Path) -> None:
    lab = _LabOnDisk(tmp_path)
    watch = Watch(lab, seed=1)  # type: ignore[arg-type]
    # Seen when the machine was busy: Kamailio's TCP dispatcher could not keep up.
    lab.log_line(
        "10(24389) CRITICAL: <core> [core/tcp_main.c:4246]: send2child(): tcp child 0, "
        "socket 17: queue full, 280 requests queued (total handled 25284)"
    )
    assert watch.check() == []
    assert sum(watch.overload.values()) == 1
    lab.log_line(" 0(1) CRITICAL: <core> [core/mem/q_malloc.c:1]: qm_malloc(): out of memory")
    assert [problem.what for problem in watch.check()] == ["kamailio-critical"]
