"""Run attacks, compare each outcome with the policy's expectation, report as a table or JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Literal

from sipshield.core.policy import Policy
from sipshield.ops.selftest.attack import Attack, NotRunnable
from sipshield.ops.selftest.guard import OutOfScope, Scope
from sipshield.ops.selftest.target import Context, Target

Status = Literal["pass", "FAIL", "skipped"]


@dataclass(frozen=True)
class Result:
    attack: str
    summary: str
    source: str | None
    expected: str  # "stopped" | "not stopped"
    because: str
    observed: str  # "stopped" | "not stopped" | "skipped" | "error"
    evidence: str
    status: Status
    seconds: float
    leaves: str


def _word(stopped: bool) -> str:
    return "stopped" if stopped else "not stopped"


class SourcePlan:
    """Who sends from where: the accounts' address, a shared attacker, one per banning attack."""

    def __init__(self, sources: list[str]) -> None:
        if len(sources) < 2:
            raise ValueError(
                "give at least two --source addresses: the test accounts' and an attacker's"
            )
        self.user_source, self.shared = sources[0], sources[1]
        self._fresh = list(sources[2:])

    def source_for(self, attack: Attack) -> str | None:
        if not attack.fresh_source:
            return self.shared
        return self._fresh.pop(0) if self._fresh else None


def run_attacks(
    attacks: Iterable[Attack],
    target: Target,
    scope: Scope,
    policy: Policy,
    sources: list[str],
    progress: Callable[[Result], None] = lambda result: None,
) -> list[Result]:
    plan = SourcePlan(sources)
    results = []
    for attack in attacks:
        expectation = attack.expect(policy)
        source = plan.source_for(attack)
        started = time.monotonic()
        missing = _missing(attack, target)
        if missing:
            observed, evidence = "skipped", missing
        elif source is None:
            observed, evidence = (
                "skipped",
                "no unused --source left: it would run from a banned one",
            )
        else:
            ctx = Context(target, scope, policy, plan.user_source, source)
            try:
                outcome = attack.run(ctx)
                observed, evidence = _word(outcome.stopped), outcome.evidence
            except (NotRunnable, OutOfScope) as exc:
                observed, evidence = "skipped", str(exc)
            except Exception as exc:  # an attack's crash is a failed check, not a crashed run
                observed, evidence = "error", f"{type(exc).__name__}: {exc}"
        status: Status = (
            "skipped"
            if observed == "skipped"
            else "pass"
            if observed == _word(expectation.stopped)
            else "FAIL"
        )
        result = Result(
            attack.name,
            attack.summary,
            source,
            _word(expectation.stopped),
            expectation.because,
            observed,
            evidence,
            status,
            round(time.monotonic() - started, 2),
            attack.leaves,
        )
        progress(result)
        results.append(result)
    return results


def _missing(attack: Attack, target: Target) -> str:
    if "accounts" in attack.needs and len(target.accounts) < 2:
        return "needs two test accounts (--account USER:PASSWORD twice)"
    if "tls" in attack.needs and target.tls_address is None:
        return "needs the TLS listener (--tls HOST:PORT)"
    return ""


def table(results: list[Result]) -> str:
    """The pass/fail table: one attack per line, then its evidence indented."""
    header = f"{'attack':<20} {'expected':<12} {'observed':<12} {'result':<8} source"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.attack:<20} {r.expected:<12} {r.observed:<12} {r.status:<8} {r.source or '-'}"
        )
        lines.append(f"    why expected: {r.because}")
        lines.append(f"    evidence: {r.evidence}")
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "FAIL", "skipped")}
    lines.append(
        f"{counts['pass']} pass, {counts['FAIL']} FAIL, {counts['skipped']} skipped "
        f"of {len(results)} attacks"
    )
    return "\n".join(lines)


def to_json(results: list[Result], target: Target, when: float) -> str:
    return json.dumps(
        {
            "target": f"{target.sip_address[0]}:{target.sip_address[1]}",
            "started": when,
            "passed": all(r.status != "FAIL" for r in results),
            "results": [asdict(r) for r in results],
        },
        indent=2,
    )
