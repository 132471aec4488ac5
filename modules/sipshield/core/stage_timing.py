"""Per-module time, for the benchmark's cost table (off unless asked for).

With ``SIPSHIELD_STAGE_TIMES=<directory>`` in Kamailio's environment, the
pipeline times each module's check and each worker keeps the totals in
``<directory>/stage-times-<pid>.json``::

    {"requests": 1200, "stages": {"flood": {"calls": 1200, "ns": 3400000}}}

cumulative since the worker started, in CPU time of the worker (a wall clock
would count the time the worker waited for a core as the module's).  A
worker has no timer of its own, so the file is rewritten on a request, at
most every ``WRITE_INTERVAL_S``: a reader sends a few requests more after the
load it measures.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ENVIRONMENT = "SIPSHIELD_STAGE_TIMES"
WRITE_INTERVAL_S = 0.5


class StageTimes:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.requests = 0
        self.stages: dict[str, list[int]] = {}  # name -> [calls, ns]
        self._written_at = 0.0

    @classmethod
    def from_environment(cls) -> StageTimes | None:
        directory = os.environ.get(ENVIRONMENT)
        return cls(Path(directory)) if directory else None

    def add(self, stage: str, nanoseconds: int) -> None:
        totals = self.stages.setdefault(stage, [0, 0])
        totals[0] += 1
        totals[1] += nanoseconds

    def request_done(self) -> None:
        self.requests += 1
        now = time.monotonic()
        if now - self._written_at >= WRITE_INTERVAL_S:
            self._written_at = now
            self.write()

    def write(self) -> None:
        stages = {name: {"calls": c, "ns": ns} for name, (c, ns) in self.stages.items()}
        path = self.directory / f"stage-times-{os.getpid()}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"requests": self.requests, "stages": stages}))
        temporary.replace(path)  # a reader never sees half a file
