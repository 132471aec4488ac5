"""Fixed-window request counts: exact on the node, merged across nodes in batches.

A request is counted in the node's shared memory (:class:`NodeCounters`), so
the hot path makes no round trip: its estimate of the cluster-wide count is
this node's exact count plus the other nodes' count as of the last merge.

The merge (:meth:`WindowCounts.merge`, every ``merge_interval_s`` from one
timer process per node, never from a request) pushes, in one Redis pipeline,
what the node counted since the last merge (``INCRBY``) and reads back each
total; the other nodes' share is the total minus this node's count.

The error is bounded and one-sided: a node learns of the other nodes'
requests at most one merge interval (plus one round trip) late, so a limit
holds cluster-wide within one interval; past it, at most what the other nodes
let through in that interval.  Requests on one node are counted exactly.
While Redis is down each node keeps counting its own requests (a limit then
holds per node), and what it counted meanwhile is merged once Redis is back,
if the window is still open.

Windows are aligned on the wall clock (``time() // window_s``), so every node
agrees on them without talking.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sipshield.core.node_counters import NodeCounters
    from sipshield.core.state import SharedState

# The timer process's interval in kamailio.cfg and the drop-in (rtimer
# "sipshield_merge", 200000u): the longest a node misses the others' requests.
MERGE_INTERVAL_S = 0.2
# Node keys: "c|<window>|<name>" this node's count, "o|<window>|<name>" the
# other nodes' count at the last merge.  Other users of the table pick other
# kinds; another set of window counts on the same table prefixes both (``kinds``).
COUNTED = "c"
OTHERS = "o"


class WindowCounts:
    def __init__(
        self,
        node: NodeCounters,
        namespace: str,
        window_s: int,
        clock: Callable[[], float] = time.time,
        kinds: str = "",
    ) -> None:
        """``kinds`` keeps these counts apart from others in the same node table:
        each merges only its own."""
        self.node = node
        self._counted = kinds + COUNTED
        self._others = kinds + OTHERS
        self.namespace = namespace
        self.window_s = window_s
        self._clock = clock
        # What the node's count was at the last merge that reached Redis, per
        # (window, name); lives in the merging process only.
        self._merged: dict[tuple[int, str], int] = {}

    def window(self) -> int:
        return int(self._clock() // self.window_s)

    def count(self, name: str) -> int:
        """Count one request for ``name``; the cluster-wide estimate, this one included."""
        window = self.window()
        mine = self.node.incr(f"{self._counted}|{window}|{name}")
        return mine + self.node.value(f"{self._others}|{window}|{name}")

    def merge(self, state: SharedState) -> dict[str, int]:
        """Push what this node counted since the last merge; learn the other nodes' counts.

        Returns the cluster-wide total of each name counted in the current
        window.  Raises StateUnavailable when Redis is down: nothing is lost,
        the next merge pushes it.
        """
        current = self.window()
        counted: list[tuple[int, str, int]] = []
        stale: list[str] = []
        for key, value in self.node.items():
            kind, _, rest = key.partition("|")
            window_text, _, name = rest.partition("|")
            if kind not in (self._counted, self._others) or not window_text.isdigit():
                continue
            window = int(window_text)
            if kind == self._counted and window <= current:
                counted.append((window, name, value))
            elif window < current:
                stale.append(key)
        # A closed window with nothing new is only forgotten; the current one
        # is always asked for, to learn the other nodes' counts.
        pushes = [
            (window, name, value, value - self._merged.get((window, name), 0))
            for window, name, value in counted
            if window == current or value != self._merged.get((window, name), 0)
        ]
        ttl = 2 * self.window_s

        def operation(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for window, name, _, delta in pushes:
                key = state.key(self.namespace, name, window)
                pipe.incrby(key, delta)
                pipe.expire(key, ttl)
            return pipe.execute()

        results = state.run(operation) if pushes else []
        totals: dict[str, int] = {}
        for (window, name, value, _), total in zip(pushes, results[::2], strict=True):
            self._merged[(window, name)] = value
            if window == current:
                self.node.put(f"{self._others}|{window}|{name}", int(total) - value)
                totals[name] = int(total)
        for window, name, _ in counted:
            if window < current:
                self.node.remove(f"{self._counted}|{window}|{name}")
                self._merged.pop((window, name), None)
        for key in stale:
            self.node.remove(key)
        return totals
