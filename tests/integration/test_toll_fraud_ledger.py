"""The toll-fraud ledger's Lua scripts against a real redis-server, with the test's clock.

What the lab tests show through calls, here exactly: admissions racing from
many connections never pass a limit, an end counted twice never goes below
zero, a call whose end was never seen stops counting after max_call_s, the
spend counts calls in progress by their elapsed time, and a probed range is
blocked for the account or, when the policy says so, for everyone.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from sipshield.checks.toll_fraud.ledger import Call, CallLedger, Limits, VelocityRule
from sipshield.core.state import RedisSettings, SharedState
from tests.integration.test_held_bans import port, start_redis  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0
NO_LIMITS = Limits(None, None, None, None)
VELOCITY = VelocityRule(True, 15, 3, 3600, 600, False)
BAN_KEY = "sipshield:ban:account:nobody"


@pytest.fixture
def client(port: int, tmp_path) -> Iterator[redis.Redis]:  # noqa: F811
    yield start_redis(port, tmp_path)


def ledger(port: int, velocity: VelocityRule = VELOCITY, max_call_s: int = 3600) -> CallLedger:  # noqa: F811
    state = SharedState(RedisSettings(url=f"redis://127.0.0.1:{port}/0", timeout_ms=2000))
    return CallLedger(state, max_call_s, velocity)


def call(n: int, account: str = "alice", price: float = 0.0, number: str = "") -> Call:
    number = number or f"+4490987901{n:02d}"
    return Call(f"call-{account}-{n}", account, "premium", number, number[:8], price)


def admit(book: CallLedger, c: Call, limits: Limits = NO_LIMITS, now: float = NOW) -> str:
    return book.admit(c, limits, now, BAN_KEY, count_anyway=False).outcome


def test_racing_admissions_never_pass_the_concurrent_limit(client, port):  # noqa: F811
    limits = Limits(concurrent=3, per_minute=None, destinations_per_hour=None, spend_ceiling=None)
    books = [ledger(port) for _ in range(10)]  # ten connections, as ten workers of two nodes
    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(lambda n: admit(books[n % 10], call(n), limits), range(40)))
    assert outcomes.count("ok") == 3
    assert outcomes.count("concurrent") == 37
    assert client.hlen("sipshield:tf:active:alice") == 3


def test_an_end_counted_twice_counts_once(client, port):  # noqa: F811
    book = ledger(port)
    assert admit(book, call(1)) == "ok"
    assert admit(book, call(1)) == "again"  # a second transaction of the same call
    assert book.end("call-alice-1", NOW + 1) is not None
    assert book.end("call-alice-1", NOW + 1) is None  # the other node's end, or the dialog's
    assert client.hlen("sipshield:tf:active:alice") == 0
    limits = Limits(concurrent=1, per_minute=None, destinations_per_hour=None, spend_ceiling=None)
    assert admit(book, call(2), limits) == "ok"
    assert admit(book, call(3), limits) == "concurrent"


def test_a_call_whose_end_was_never_seen_stops_counting_after_max_call_s(client, port):  # noqa: F811
    book = ledger(port, max_call_s=600)
    limits = Limits(concurrent=1, per_minute=None, destinations_per_hour=None, spend_ceiling=None)
    assert admit(book, call(1), limits) == "ok"
    assert admit(book, call(2), limits, now=NOW + 599) == "concurrent"
    assert admit(book, call(3), limits, now=NOW + 601) == "ok"
    assert set(client.hkeys("sipshield:tf:active:alice")) == {"call-alice-3"}


def test_per_minute_and_distinct_numbers_per_hour(client, port):  # noqa: F811
    book = ledger(port)
    per_minute = Limits(
        concurrent=None, per_minute=2, destinations_per_hour=None, spend_ceiling=None
    )
    assert [admit(book, call(n), per_minute) for n in range(3)] == ["ok", "ok", "per_minute"]
    assert admit(book, call(3), per_minute, now=NOW + 60) == "ok"  # the next clock minute
    distinct = Limits(concurrent=None, per_minute=None, destinations_per_hour=2, spend_ceiling=None)
    bob = [call(n, "bob", number=f"+4490987902{n % 2}") for n in range(3)]
    assert [admit(book, c, distinct) for c in bob] == ["ok", "ok", "ok"]  # two numbers only
    assert admit(book, call(9, "bob"), distinct) == "destinations"


def test_spend_counts_calls_in_progress_by_their_elapsed_time(client, port):  # noqa: F811
    book = ledger(port)
    ceiling = Limits(
        concurrent=None, per_minute=None, destinations_per_hour=None, spend_ceiling=5.0
    )
    assert admit(book, call(1, price=60.0), ceiling) == "ok"  # 1 a second once answered
    book.answered("call-alice-1", NOW + 10, "node-a", ("ftag", "ttag"))
    assert admit(book, call(2), ceiling, now=NOW + 14) == "ok"  # 4 spent
    assert admit(book, call(3), ceiling, now=NOW + 16) == "spend"  # 6 spent
    (spending,) = book.spending("node-a", NOW + 16)
    assert (spending.call_id, spending.account, spending.from_tag, spending.to_tag) == (
        "call-alice-1",
        "alice",
        "ftag",
        "ttag",
    )
    assert spending.spend == pytest.approx(6.0)
    ended = book.end("call-alice-1", NOW + 20)
    assert ended is not None and ended.cost == pytest.approx(10.0)
    assert book.spending("node-a", NOW + 20) == []
    assert admit(book, call(4), ceiling, now=NOW + 21) == "spend"  # 10 spent this hour


@pytest.mark.parametrize("everyone", [False, True])
def test_short_calls_to_one_range_block_it(client, port, everyone):  # noqa: F811
    book = ledger(port, VelocityRule(True, 15, 3, 3600, 600, everyone))
    for n in range(3):
        assert admit(book, call(n)) == "ok"
        ended = book.end(f"call-alice-{n}", NOW + 5)
        assert ended is not None and ended.probed == n + 1
    assert ended.blocked_range == "+4490987"
    assert admit(book, call(7)) == "blocked"
    other_range = call(8, number="+449098800100")
    assert admit(book, other_range) == "ok"
    assert admit(book, call(9, "bob")) == ("blocked" if everyone else "ok")
