"""How much the benchmark runs: the full run of `make bench`, and the quick one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    rounds: int
    # workload -> (calls, rate per second) of one cost run: a moderate rate,
    # far below every configuration's capacity.
    loads: dict[str, tuple[int, float]]
    # workload -> first offered rate of the capacity steps
    capacity_start: dict[str, float]
    step_seconds: float
    max_steps: int


FULL = Plan(
    rounds=5,
    loads={"options": (1000, 500), "register": (400, 200), "call": (100, 50)},
    capacity_start={"options": 250, "call": 25},
    step_seconds=2,
    # Far enough for the load side to be the limit before the last step.
    max_steps=30,
)
QUICK = Plan(
    rounds=5,
    loads={"options": (150, 500), "register": (60, 200), "call": (15, 50)},
    capacity_start={"options": 1000, "call": 50},
    step_seconds=1,
    max_steps=3,
)
