"""Which events `sipshield events` shows for each filter option."""

import argparse
import json

import pytest

from sipshield.ops.event_filter import EventFilter, add_filter_options

FLOOD = {"module": "flood", "action": "reject", "src": "192.0.2.7:5060", "user": "alice"}
BAN = {"module": "scanner", "action": "ban", "src": "198.51.100.9:40000", "user": ""}
V6 = {"module": "bans", "action": "drop", "src": "2001:db8::5:5061", "user": "bob"}


def shown(*argv: str) -> list[str]:
    parser = argparse.ArgumentParser()
    add_filter_options(parser)
    keep = EventFilter.from_args(parser.parse_args(argv))
    return [e["module"] for e in (FLOOD, BAN, V6) if keep.keeps(json.dumps(e))]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((), ["flood", "scanner", "bans"]),
        (("--module", "flood"), ["flood"]),
        (("--module", "flood", "--module", "bans"), ["flood", "bans"]),
        (("--action", "ban"), ["scanner"]),
        (("--source", "192.0.2.7"), ["flood"]),
        (("--source", "198.51.100.0/24"), ["scanner"]),
        (("--source", "2001:db8::/32"), ["bans"]),
        (("--user", "bob"), ["bans"]),
        (("--module", "flood", "--user", "bob"), []),
        (("--action", "reject", "--source", "192.0.2.0/24", "--user", "alice"), ["flood"]),
    ],
)
def test_each_option_narrows_and_repeats_widen(argv, expected):
    assert shown(*argv) == expected


def test_a_line_that_is_not_an_event_is_shown_only_without_a_filter():
    assert EventFilter().keeps("not json")
    assert not EventFilter(modules=frozenset({"flood"})).keeps("not json")
    assert not EventFilter(modules=frozenset({"flood"})).keeps("[1, 2]")


def test_a_bad_source_is_refused_by_the_parser(capsys):
    parser = argparse.ArgumentParser()
    add_filter_options(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--source", "example.net"])
    assert "not an address or network" in capsys.readouterr().err
