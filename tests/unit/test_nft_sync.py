"""The pure part of nft-sync: which bans become kernel elements, and the nft scripts.

The scripts themselves are applied by a real nft in tests/integration/test_kernel_bans.py.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from sipshield.core.state import RedisSettings
from sipshield.ops.nft_sync import BanMirror, KernelBan, NftTable, kernel_ban

NOW = 1_000_000.0


def ban(address: str, timeout_s: int) -> KernelBan:
    return KernelBan(ipaddress.ip_address(address), timeout_s)


@pytest.mark.parametrize(
    ("scope", "expires", "expected"),
    [
        ("ip:192.0.2.1", NOW + 600, ban("192.0.2.1", 600)),
        ("ip:192.0.2.1", NOW + 0.2, ban("192.0.2.1", 1)),  # rounded up, never 0
        ("ip:2001:db8::1", NOW + 30, ban("2001:db8::1", 30)),
        ("ip:192.0.2.1", NOW - 1, None),  # expired
        ("user:192.0.2.1:alice", NOW + 600, None),  # only SIP can tell users apart
        ("ip:not-an-address; flush ruleset", NOW + 600, None),  # never reaches nft
    ],
)
def test_kernel_ban(scope, expires, expected):
    assert kernel_ban(scope, expires, NOW) == expected


def test_create_replaces_the_table_with_both_families_in_one_script():
    script = NftTable().create([ban("192.0.2.1", 60), ban("2001:db8::1", 90)])
    lines = script.splitlines()
    assert lines[:2] == ["add table inet sipshield", "delete table inet sipshield"]
    assert "elements = { 192.0.2.1 timeout 60s }" in script
    assert "elements = { 2001:db8::1 timeout 90s }" in script
    assert "type filter hook prerouting priority raw; policy accept;" in script
    assert 'iif "lo" accept' in script  # before the drops
    assert script.index('iif "lo"') < script.index("ip saddr @banned4 counter drop")


def test_an_empty_set_has_no_elements_clause():
    assert "elements" not in NftTable().create([])


def test_reload_flushes_both_sets_then_adds():
    assert NftTable("t").reload([ban("192.0.2.1", 5)]).splitlines() == [
        "flush set inet t banned4",
        "flush set inet t banned6",
        "add element inet t banned4 { 192.0.2.1 timeout 5s }",
    ]


def test_add_replaces_an_existing_element_and_remove_never_fails_on_an_absent_one():
    assert NftTable().add(ban("2001:db8::1", 5)).splitlines() == [
        "add element inet sipshield banned6 { 2001:db8::1 }",
        "delete element inet sipshield banned6 { 2001:db8::1 }",
        "add element inet sipshield banned6 { 2001:db8::1 timeout 5s }",
    ]


def test_changes_from_the_ban_channel_become_scripts():
    applied: list[str] = []
    settings = RedisSettings(url="redis://x")
    mirror = BanMirror(settings, "p:bans", "p:bans:changes", NftTable(), applied.append,
                       clock=lambda: NOW)  # fmt: skip
    mirror.apply_change(json.dumps({"add": "ip:192.0.2.9", "expires": NOW + 10}))
    mirror.apply_change(json.dumps({"add": "user:192.0.2.9:bob", "expires": NOW + 10}))
    mirror.apply_change(json.dumps({"remove": "ip:192.0.2.9"}))
    mirror.apply_change(json.dumps({"remove": "user:192.0.2.9:bob"}))
    mirror.apply_change("not json")
    mirror.apply_change(json.dumps({"add": "ip:192.0.2.9"}))  # no expiry: skipped
    assert applied == [
        NftTable().add(ban("192.0.2.9", 10)),
        NftTable().remove(ban("192.0.2.9", 1).address),
    ]
