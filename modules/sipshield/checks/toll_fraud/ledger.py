"""The calls each account has in progress and what it did lately, in Redis, cluster-wide.

Every node admits calls and sees them end through the same keys, so a limit
holds for the cluster and survives the restart of any node:

- ``tf:active:<account>`` (hash): the account's calls in progress, Call-ID ->
  "class|started|answered|price|number|range".  A call counts until its end
  is seen (a BYE on any node, a failure, the dialog module's timeout), and
  stops counting after ``max_call_s`` whatever happens, so a lost BYE cannot
  hold a place for ever.  Ending a call removes its entry: a second end of
  the same call (the BYE on one node, the dialog's end on another) finds
  nothing, so a count never goes below zero.
- ``tf:call:<Call-ID>``: the account of a call, for ends that do not name it.
- ``tf:rate:<account>:<class>:<minute>``, ``tf:dest:<account>:<class>:<hour>``:
  calls per clock minute, distinct numbers per clock hour.
- ``tf:spent:<account>:<hour>``: what ended calls cost in that clock hour.
- ``tf:live:<node>``, ``tf:node``: answered priced calls by the node that
  follows them (its dialog module can end them), and each call's node;
- ``tf:probe:<account>:<range>``: numbers of a range called briefly;
  ``tf:blocked:<account>:<range>`` (``*`` for everyone): a range blocked.

Admission is one Lua script (atomic, one round trip): two nodes admitting
the same account's calls at once cannot both take the last place.  The
scripts build the account's keys from the call's, so they need one Redis
(or Sentinel), not a Redis Cluster, like the rest of sipshield.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipshield.core.state import SharedState

NO_LIMIT = -1

# KEYS: active, rate, dest, spent, blocked (account), blocked (everyone), call,
# the account's ban.  ARGV: call_id, class, now, number, concurrent,
# per_minute, destinations, max_call_s, price, ceiling, account, range,
# count anyway (1: a refusal is only reported, so the call is counted).
# Returns {outcome, figure}: "ok", "again" (admitted before: a new
# transaction of the same call), "banned", "blocked", "spend", "concurrent",
# "per_minute", "destinations"; the figure is the count (or spend) that decided.
ADMIT_SCRIPT = """
local now = tonumber(ARGV[3])
local max_age = tonumber(ARGV[8])
local entries = redis.call('HGETALL', KEYS[1])
local concurrent, running_cost = 0, 0
for i = 1, #entries, 2 do
  local class, started, answered, price = string.match(entries[i + 1],
    '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
  if now - tonumber(started) > max_age then
    redis.call('HDEL', KEYS[1], entries[i])
  else
    if entries[i] == ARGV[1] then return {'again', '0'} end
    if class == ARGV[2] then concurrent = concurrent + 1 end
    if tonumber(answered) > 0 then
      running_cost = running_cost + tonumber(price) * (now - tonumber(answered)) / 60
    end
  end
end
local rate = tonumber(redis.call('GET', KEYS[2]) or '0')
local outcome, figure = 'ok', tostring(concurrent + 1)
local ceiling = tonumber(ARGV[10])
local limit
if redis.call('EXISTS', KEYS[8]) == 1 then
  outcome, figure = 'banned', '0'
elseif redis.call('EXISTS', KEYS[5]) == 1 or redis.call('EXISTS', KEYS[6]) == 1 then
  outcome, figure = 'blocked', ARGV[12]
elseif ceiling >= 0 and tonumber(redis.call('GET', KEYS[4]) or '0') + running_cost >= ceiling then
  outcome = 'spend'
  figure = tostring(tonumber(redis.call('GET', KEYS[4]) or '0') + running_cost)
elseif tonumber(ARGV[5]) >= 0 and concurrent >= tonumber(ARGV[5]) then
  outcome, figure = 'concurrent', tostring(concurrent)
elseif tonumber(ARGV[6]) >= 0 and rate >= tonumber(ARGV[6]) then
  outcome, figure = 'per_minute', tostring(rate)
elseif tonumber(ARGV[7]) >= 0 and redis.call('SISMEMBER', KEYS[3], ARGV[4]) == 0
    and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[7]) then
  outcome, figure = 'destinations', tostring(redis.call('SCARD', KEYS[3]))
end
if outcome ~= 'ok' and ARGV[13] ~= '1' then return {outcome, figure} end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 120)
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], 7200)
redis.call('HSET', KEYS[1], ARGV[1],
  ARGV[2] .. '|' .. ARGV[3] .. '|0|' .. ARGV[9] .. '|' .. ARGV[4] .. '|' .. ARGV[12])
redis.call('EXPIRE', KEYS[1], max_age)
redis.call('SET', KEYS[7], ARGV[11], 'EX', max_age)
return {outcome, figure}
"""

# KEYS: call.  ARGV: call_id, now, key prefix ("<prefix>:tf"), node, from
# tag, to tag.  The answer time starts the call's cost; the first 2xx counts,
# a re-INVITE's does not.  A priced call is also listed under the node that
# follows it (``live:<node>``), with what finds its dialog again, so that the
# node can end it when its account passes its spend ceiling.
ANSWER_SCRIPT = """
local account = redis.call('GET', KEYS[1])
if not account then return 0 end
local active = ARGV[3] .. ':active:' .. account
local entry = redis.call('HGET', active, ARGV[1])
if not entry then return 0 end
local class, started, answered, price, rest = string.match(entry,
  '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
if tonumber(answered) > 0 then return 0 end
redis.call('HSET', active, ARGV[1],
  class .. '|' .. started .. '|' .. ARGV[2] .. '|' .. price .. '|' .. rest)
if tonumber(price) > 0 then
  local live = ARGV[3] .. ':live:' .. ARGV[4]
  redis.call('HSET', live, ARGV[1], account .. '|' .. ARGV[5] .. '|' .. ARGV[6])
  redis.call('EXPIRE', live, redis.call('TTL', active))
  redis.call('HSET', ARGV[3] .. ':node', ARGV[1], ARGV[4])
  redis.call('EXPIRE', ARGV[3] .. ':node', redis.call('TTL', active))
end
return 1
"""

# KEYS: call.  ARGV: call_id, now, key prefix, velocity on (1/0), short_call_s,
# distinct_numbers, window_s, block_ttl_s, everyone (1/0).  Returns nil when
# the call is not (or no longer) counted, else {account, class, duration,
# cost, blocked range or "", distinct numbers of its range called briefly}.
END_SCRIPT = """
local account = redis.call('GET', KEYS[1])
if not account then return nil end
redis.call('DEL', KEYS[1])
local active = ARGV[3] .. ':active:' .. account
local entry = redis.call('HGET', active, ARGV[1])
if not entry then return nil end
redis.call('HDEL', active, ARGV[1])
local class, started, answered, price, number, range = string.match(entry,
  '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
local node = redis.call('HGET', ARGV[3] .. ':node', ARGV[1])
if node then
  redis.call('HDEL', ARGV[3] .. ':live:' .. node, ARGV[1])
  redis.call('HDEL', ARGV[3] .. ':node', ARGV[1])
end
local now = tonumber(ARGV[2])
local duration = 0
if tonumber(answered) > 0 then duration = now - tonumber(answered) end
local cost = tonumber(price) * duration / 60
if cost > 0 then
  local spent = ARGV[3] .. ':spent:' .. account .. ':' .. math.floor(now / 3600)
  redis.call('INCRBYFLOAT', spent, cost)
  redis.call('EXPIRE', spent, 7200)
end
local blocked, probed = '', 0
if ARGV[4] == '1' and duration < tonumber(ARGV[5]) and range ~= '' then
  local probe = ARGV[3] .. ':probe:' .. account .. ':' .. range
  redis.call('SADD', probe, number)
  redis.call('EXPIRE', probe, ARGV[7])
  probed = redis.call('SCARD', probe)
  local block = ARGV[3] .. ':blocked:' .. account .. ':' .. range
  if probed >= tonumber(ARGV[6]) and redis.call('EXISTS', block) == 0 then
    redis.call('SET', block, number, 'EX', ARGV[8])
    if ARGV[9] == '1' then
      redis.call('SET', ARGV[3] .. ':blocked:*:' .. range, number, 'EX', ARGV[8])
    end
    blocked = range
  end
end
return {account, class, tostring(duration), tostring(cost), blocked, probed}
"""

# KEYS: live (this node's priced calls answered).  ARGV: now, key prefix.
# Returns, per call: call_id, account, from tag, to tag, the account's spend
# this hour so far (ended calls, and every answered call of it in progress
# with its elapsed time, wherever it runs).
SPENDING_SCRIPT = """
local now = tonumber(ARGV[1])
local hour = math.floor(now / 3600)
local live = redis.call('HGETALL', KEYS[1])
local spend_of, out = {}, {}
for i = 1, #live, 2 do
  local account, ftag, ttag = string.match(live[i + 1], '^([^|]*)|([^|]*)|(.*)$')
  if spend_of[account] == nil then
    local spent = tonumber(redis.call('GET', ARGV[2] .. ':spent:' .. account .. ':' .. hour) or '0')
    local entries = redis.call('HGETALL', ARGV[2] .. ':active:' .. account)
    for j = 1, #entries, 2 do
      local answered, price = string.match(entries[j + 1], '^[^|]*|[^|]*|([^|]*)|([^|]*)|')
      if tonumber(answered) > 0 then
        spent = spent + tonumber(price) * (now - tonumber(answered)) / 60
      end
    end
    spend_of[account] = spent
  end
  table.insert(out, live[i])
  table.insert(out, account)
  table.insert(out, ftag)
  table.insert(out, ttag)
  table.insert(out, tostring(spend_of[account]))
end
return out
"""


@dataclass(frozen=True)
class Call:
    call_id: str
    account: str
    klass: str
    number: str
    range: str  # the number's range for the velocity check; "" for none
    price_per_minute: float


@dataclass(frozen=True)
class Limits:
    concurrent: int | None
    per_minute: int | None
    destinations_per_hour: int | None
    spend_ceiling: float | None


@dataclass(frozen=True)
class Admission:
    outcome: str  # "ok", "again", or the limit that refused it
    figure: str  # the count (or spend) that decided

    @property
    def admitted(self) -> bool:
        return self.outcome in ("ok", "again")


@dataclass(frozen=True)
class Ended:
    account: str
    klass: str
    duration_s: float
    cost: float
    blocked_range: str  # a range this call's end blocked, or ""
    probed: int  # distinct numbers of its range called briefly in the window


@dataclass(frozen=True)
class Spending:
    call_id: str
    account: str
    from_tag: str
    to_tag: str
    spend: float  # the account's spend this hour, calls in progress included


@dataclass(frozen=True)
class VelocityRule:
    enabled: bool
    short_call_s: int
    distinct_numbers: int
    window_s: int
    block_ttl_s: int
    everyone: bool


def _limit(value: int | float | None) -> int | float:
    return NO_LIMIT if value is None else value


class CallLedger:
    def __init__(self, state: SharedState, max_call_s: int, velocity: VelocityRule) -> None:
        self.state = state
        self.max_call_s = max_call_s
        self.velocity = velocity

    def _key(self, *parts: str | int) -> str:
        return self.state.key("tf", *parts)

    def admit(
        self, call: Call, limits: Limits, now: float, ban_key: str, count_anyway: bool
    ) -> Admission:
        """Count the call unless a limit refuses it (``count_anyway``: count it even then,
        as a refusal that is only reported lets the call go on)."""
        account, klass = call.account, call.klass
        keys = [
            self._key("active", account),
            self._key("rate", account, klass, int(now // 60)),
            self._key("dest", account, klass, int(now // 3600)),
            self._key("spent", account, int(now // 3600)),
            self._key("blocked", account, call.range),
            self._key("blocked", "*", call.range),
            self._key("call", call.call_id),
            ban_key,
        ]
        args: list[str | int] = [
            call.call_id,
            klass,
            repr(now),
            call.number,
            _limit(limits.concurrent),
            _limit(limits.per_minute),
            _limit(limits.destinations_per_hour),
            self.max_call_s,
            repr(call.price_per_minute),
            repr(float(_limit(limits.spend_ceiling))),
            account,
            call.range,
            int(count_anyway),
        ]
        outcome, figure = self.state.script(ADMIT_SCRIPT, keys, args)
        return Admission(_text(outcome), _text(figure))

    def answered(self, call_id: str, now: float, node: str, tags: tuple[str, str]) -> bool:
        keys = [self._key("call", call_id)]
        args: list[str | int] = [call_id, repr(now), self._key(), node, *tags]
        return bool(self.state.script(ANSWER_SCRIPT, keys, args))

    def spending(self, node: str, now: float) -> list[Spending]:
        """This node's answered priced calls, each with its account's spend this hour."""
        found = self.state.script(
            SPENDING_SCRIPT, [self._key("live", node)], [repr(now), self._key()]
        )
        fields = [_text(value) for value in found]
        return [
            Spending(call_id, account, from_tag, to_tag, float(spend))
            for call_id, account, from_tag, to_tag, spend in zip(*[iter(fields)] * 5, strict=True)
        ]

    def end(self, call_id: str, now: float) -> Ended | None:
        """The call ended (any way, on any node); None when it was not counted (any more)."""
        v = self.velocity
        args: list[str | int] = [
            call_id,
            repr(now),
            self._key(),
            int(v.enabled),
            v.short_call_s,
            v.distinct_numbers,
            v.window_s,
            v.block_ttl_s,
            int(v.everyone),
        ]
        found = self.state.script(END_SCRIPT, [self._key("call", call_id)], args)
        if not found:
            return None
        account, klass, duration, cost, blocked, probed = found
        return Ended(
            _text(account),
            _text(klass),
            float(_text(duration)),
            float(_text(cost)),
            _text(blocked),
            int(probed),
        )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
