"""The media takeover watcher's decisions: when an rtpengine is dead, and what moves where.

The move itself (Redis, rtpengine's restore, its CLI) runs against the real
pair in tests/integration/test_rtpengine_failover.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from sipshield.ops import media_takeover
from sipshield.ops.media_takeover import (
    Engine,
    Handover,
    MediaTakeover,
    TakeoverError,
    hand_over,
    keyspace_events_ready,
    parse_engine,
)

A = Engine("a", ("127.0.0.1", 2223), ("127.0.0.1", 9900), db=1, inbox=2)
B = Engine("b", ("127.0.0.1", 2224), ("127.0.0.1", 9901), db=3, inbox=4)


def test_an_engine_is_read_from_its_command_line_form() -> None:
    assert parse_engine("name=a,ng=127.0.0.1:2223,cli=127.0.0.1:9900,db=1,inbox=2") == A
    with pytest.raises(TakeoverError, match="inbox"):
        parse_engine("ng=127.0.0.1:2223,cli=127.0.0.1:9900,db=1")


def test_only_a_pair_with_databases_of_its_own_is_watched() -> None:
    with pytest.raises(TakeoverError, match="pair"):
        MediaTakeover("redis://127.0.0.1:6379", [A])
    shared = Engine("c", ("127.0.0.1", 2225), ("127.0.0.1", 9902), db=2, inbox=5)
    with pytest.raises(TakeoverError, match="own"):
        MediaTakeover("redis://127.0.0.1:6379", [A, shared])


class FakeConfig:
    def __init__(self, flags: str) -> None:
        self.flags = flags

    def config_get(self, name: str) -> dict[str, str]:
        return {name: self.flags}


@pytest.mark.parametrize(
    ("flags", "ready"), [("", False), ("Kg", False), ("K$", True), ("KA", True), ("E$", False)]
)
def test_keyspace_events_for_set_are_required(flags: str, ready: bool) -> None:
    assert keyspace_events_ready(FakeConfig(flags)) is ready  # type: ignore[arg-type]


class Watched(MediaTakeover):
    """A watcher whose pings and handovers are scripted."""

    def __init__(self) -> None:
        super().__init__("redis://127.0.0.1:6379", [A, B], misses=3)
        self.alive = {A: True, B: True}
        self.handovers: list[tuple[str, str]] = []

    def _answers(self, engine: Engine) -> bool:
        return self.alive[engine]


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> Watched:
    watcher = Watched()

    def fake_hand_over(
        _db: Any, _client: Any, dead: Engine, partner: Engine, _t: float
    ) -> Handover:
        watcher.handovers.append((dead.name, partner.name))
        return Handover(["call"], ["call"], 0.01)

    monkeypatch.setattr(media_takeover, "hand_over", fake_hand_over)
    return watcher


def test_a_dead_engine_is_handed_over_once_after_its_misses(watched: Watched) -> None:
    watched.alive[A] = False
    watched.tick()
    watched.tick()
    assert watched.handovers == []  # two misses: not yet
    watched.tick()
    assert watched.handovers == [("a", "b")]
    watched.tick()
    assert watched.handovers == [("a", "b")]  # once per death


def test_an_engine_that_answers_again_is_watched_again(watched: Watched) -> None:
    watched.alive[A] = False
    for _ in range(3):
        watched.tick()
    watched.alive[A] = True
    watched.tick()
    watched.alive[A] = False
    for _ in range(3):
        watched.tick()
    assert watched.handovers == [("a", "b"), ("a", "b")]


def test_with_both_dead_the_calls_wait_for_the_first_to_come_back(watched: Watched) -> None:
    watched.alive[A] = False
    for _ in range(3):
        watched.tick()
    assert watched.handovers == [("a", "b")]
    watched.alive[B] = False
    for _ in range(3):
        watched.tick()
    assert watched.handovers == [("a", "b")]  # nobody left to take b's calls
    watched.alive[A] = True
    watched.tick()
    # a is back: b's calls (a's former ones among them) go to it.
    assert watched.handovers == [("a", "b"), ("b", "a")]


class FakeDatabase:
    """The few Redis string commands hand_over uses, on one database."""

    def __init__(self, keys: dict[bytes, bytes] | None = None) -> None:
        self.keys = dict(keys or {})
        self.expiry: dict[bytes, int] = {}

    def scan_iter(self, count: int) -> list[bytes]:
        return list(self.keys)

    def get(self, key: bytes) -> bytes | None:
        return self.keys.get(key)

    def pttl(self, key: bytes) -> int:
        return 86_400_000 if key in self.keys else -2

    def set(self, key: bytes, value: bytes, px: int | None = None) -> None:
        self.keys[key] = value
        if px:
            self.expiry[key] = px

    def delete(self, *keys: bytes) -> None:
        for key in keys:
            self.keys.pop(key, None)


class FakeClient:
    def __init__(self, listed: list[str]) -> None:
        self.listed = listed

    def list_calls(self, limit: int, instance: Any) -> list[str]:
        return self.listed


def test_hand_over_moves_the_calls_makes_them_the_partners_and_empties_the_inbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    databases = {1: FakeDatabase({b"c1": b"{json 1}", b"c2": b"{json 2}"}), 4: FakeDatabase()}
    inbox_seen: dict[bytes, bytes] = {}
    cli: list[tuple[Any, str]] = []

    def fake_cli(address: Any, command: str) -> str:
        inbox_seen.update(databases[4].keys)  # what B restored from
        cli.append((address, command))
        return "Ok, all calls set to 'owned (active)'\n"

    monkeypatch.setattr(media_takeover, "cli_command", fake_cli)
    done = hand_over(databases.__getitem__, FakeClient(["c1", "c2"]), A, B, 1.0)  # type: ignore[arg-type]
    assert (done.moved, done.restored, done.lost) == (["c1", "c2"], ["c1", "c2"], [])
    assert inbox_seen == {b"c1": b"{json 1}", b"c2": b"{json 2}"}
    assert databases[4].expiry == {b"c1": 86_400_000, b"c2": 86_400_000}
    assert cli == [(B.cli, "active")]
    # A restarted on its database finds nothing to restore; the inbox is empty again.
    assert databases[1].keys == {} and databases[4].keys == {}


def test_calls_the_partner_did_not_restore_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_takeover, "cli_command", lambda _a, _c: "Ok ... owned (active)")
    databases = {1: FakeDatabase({b"c1": b"{}", b"c2": b"{}"}), 4: FakeDatabase()}
    done = hand_over(databases.__getitem__, FakeClient(["c1"]), A, B, 0.1)  # type: ignore[arg-type]
    assert done.lost == ["c2"]
