"""soak/REPORT.md and soak/report.json, from one run.

The verdict fails on any of: a series that grows (soak.levelling), a
legitimate request that failed, rtpengine sessions still held once the load
is over, an attack that was not banned, a malformed request not answered as
its sample says.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.report import _machine
from soak.attacks import ORDER, Attack
from soak.legit import Rates, StreamOutcome
from soak.levelling import Verdict
from soak.sampler import Sample
from soak.series import Series, build, process_label


@dataclass
class SoakRun:
    minutes: float
    interval_s: int
    attack_every_s: float
    quick: bool
    rates: Rates
    tls_every_s: float
    started: float = field(default_factory=time.time)
    samples: list[Sample] = field(default_factory=list)
    # One sample once the load has stopped and the last calls have ended.
    after: Sample | None = None
    drain_s: float = 0.0
    streams: list[StreamOutcome] = field(default_factory=list)
    tls_ok: int = 0
    tls_failed: int = 0
    tls_failures: list[int | None] = field(default_factory=list)
    attacks: list[Attack] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    rtpengine_totals: dict[str, Any] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    ranks: dict[int, int] = field(default_factory=dict)
    # The SBC log's most frequent error or warning over the whole run.
    sbc_problem: str = ""

    def verdicts(self) -> list[tuple[Series, Verdict]]:
        return [(s, s.judge()) for s in self.series]

    def failures(self) -> list[str]:
        found = [
            f"{s.name} {v.verdict}: {_growth(v.growth_last, s.unit)} over the last third"
            f" (limit {_value(v.limit, s.unit)}; middle third {_growth(v.growth_middle, s.unit)})"
            + self._where(s)
            for s, v in self.verdicts()
            if v.failed
        ]
        for stream in self.streams:
            if stream.counts.failed:
                found.append(f"legitimate {stream.name}: {stream.counts.failed} failed")
            elif stream.exit_status not in (0, None):
                found.append(f"legitimate {stream.name}: SIPp exited {stream.exit_status}")
        if self.tls_failed:
            found.append(
                f"legitimate TLS OPTIONS: {self.tls_failed} failed"
                f" (answers {sorted(set(map(str, self.tls_failures)))})"
            )
        if self.after is not None and self.after.rtpengine.get("sessions", 0) > 0:
            found.append(
                f"rtpengine still held {self.after.rtpengine['sessions']} sessions"
                f" {self.drain_s:.0f} s after the load stopped"
            )
        missed = [scope for a in self.attacks for scope in a.missed_bans]
        if missed:
            found.append(f"{len(missed)} attacks not banned: {', '.join(missed[:10])}")
        unexpected = [u for a in self.attacks for u in a.unexpected]
        if unexpected:
            found.append(
                f"{len(unexpected)} attack requests not answered as expected:"
                f" {'; '.join(unexpected[:5])}"
            )
        return found

    def _where(self, series: Series) -> str:
        """For a process's memory: how much of its change over the run was which kind."""
        if series.pid is None or not self.samples:
            return ""
        first = next((s.sbc[series.pid] for s in self.samples if series.pid in s.sbc), None)
        last = self.samples[-1].sbc.get(series.pid)
        if first is None or last is None:
            return ""
        change = {k: last[k] - first[k] for k in ("anon_kb", "shmem_kb")}
        return (
            f"; over the whole run RssAnon {_growth(change['anon_kb'], 'kB')},"
            f" RssShmem (Kamailio's shared memory) {_growth(change['shmem_kb'], 'kB')}"
        )


def _mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def _value(value: float, unit: str) -> str:
    if unit == "kB":
        return f"{value / 1024:.1f} MB"
    if unit == "bytes":
        return f"{value / 1024 / 1024:.2f} MB"
    return f"{value:,.0f}"


def _limit(value: float, unit: str) -> str:
    return "—" if math.isnan(value) else _value(value, unit)


def _growth(value: float, unit: str) -> str:
    sign = "+" if value >= 0 else "-"
    return sign + _value(abs(value), unit)


def _per_minute(samples: list[Sample]) -> list[Sample]:
    """The first sample of every minute of the run, and the last one."""
    chosen: list[Sample] = []
    minute = 0
    for sample in samples:
        if sample.t >= minute * 60:
            chosen.append(sample)
            minute = int(sample.t // 60) + 1
    if samples and chosen[-1] is not samples[-1]:
        chosen.append(samples[-1])
    return chosen


def _legit(sample: Sample, key: str) -> int:
    return sum(counts.get(key, 0) for counts in sample.legit.values())


def _summary(run: SoakRun) -> list[str]:
    failures = run.failures()
    lines = [
        "# Soak: sipshield under mixed traffic",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(run.started))} by `make soak`"
        f"{' (quick mode)' if run.quick else ''}: {run.minutes:g} minutes, a sample every"
        f" {run.interval_s} s, an attack every {run.attack_every_s:g} s, on {_machine()}.",
        "",
        f"**Verdict: {'FAIL' if failures else 'PASS'}.**",
        "",
    ]
    lines += [f"- {f}" for f in failures] or ["- every series levels off; no legitimate failure."]
    return lines + [""]


def _traffic(run: SoakRun) -> list[str]:
    lines = [
        "## Legitimate traffic (from 127.0.0.1)",
        "",
        "| stream | asked /s | achieved /s | successful | failed | wall s | SIPp exit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in run.streams:
        asked = f"{s.rate:g}" if s.rate else "answers"
        achieved = f"{s.achieved:.1f}" if s.rate else "—"
        lines.append(
            f"| {s.name} | {asked} | {achieved} | {s.counts.successful:,} | {s.counts.failed:,}"
            f" | {s.wall_s:.0f} | {s.exit_status} |"
        )
    lines.append(
        f"| TLS OPTIONS (new connection each) | {1 / run.tls_every_s:g} | — | {run.tls_ok:,}"
        f" | {run.tls_failed:,} | — | — |"
    )
    lines += ["", f"Calls talk {run.rates.talk_ms} ms.  Achieved: successful calls over SIPp's"]
    lines[-1] += " wall time, which includes the last calls' talk time."
    problems = [s for s in run.streams if s.errors]
    for s in problems:
        lines += ["", f"SIPp's errors for {s.name} (end of its log):", "", "```", s.errors, "```"]
    if run.sbc_problem:
        lines += ["", f"The SBC log's most frequent error or warning: `{run.sbc_problem}`."]
    return lines + [""]


def _attacks(run: SoakRun) -> list[str]:
    lines = [
        "## Attacks",
        "",
        "| kind | rounds | requests sent | bans expected | banned | sources |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for kind in ORDER:
        rounds = [a for a in run.attacks if a.kind == kind]
        sources = sorted({s for a in rounds for s in a.sources})
        shown = ", ".join(sources[:4]) + (
            f" and {len(sources) - 4} more" if len(sources) > 4 else ""
        )
        lines.append(
            f"| {kind} | {len(rounds)} | {sum(a.sent for a in rounds):,}"
            f" | {sum(len(a.expected_bans) for a in rounds)}"
            f" | {sum(len(a.bans) for a in rounds)} | {shown} |"
        )
    top = ", ".join(f"{kind} {n:,}" for kind, n in run.events.most_common())
    lines += ["", f"Security events written: {sum(run.events.values()):,} ({top})."]
    return lines + [""]


def _after_values(run: SoakRun) -> dict[str, float]:
    """Each series' value in the sample taken once the load was over."""
    if run.after is None:
        return {}
    return {s.name: s.points[0][1] for s in build([run.after], run.ranks) if s.points}


def _verdicts(run: SoakRun) -> list[str]:
    lines = [
        "## Series",
        "",
        "Start: the first sample under load; middle: the sample halfway; end: the last sample"
        f" under load; after: {run.drain_s:.0f} s after the load stopped.  Growth: the trend"
        " over the middle and over the last third; a series fails when its growth over the"
        " last third exceeds the limit (docs/soak.md).",
        "",
        "| series | start | middle | end | after | growth, middle third | growth, last third"
        " | limit | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    after = _after_values(run)
    for judged, v in run.verdicts():
        unit = judged.unit
        after_text = _value(after[judged.name], unit) if judged.name in after else "—"
        verdict = f"**{v.verdict}**" if v.failed else v.verdict
        lines.append(
            f"| {judged.name} | {_value(v.start, unit)} | {_value(v.middle, unit)}"
            f" | {_value(v.end, unit)} | {after_text} | {_growth(v.growth_middle, unit)}"
            f" | {_growth(v.growth_last, unit)} | {_limit(v.limit, unit)} | {verdict} |"
        )
    totals = run.rtpengine_totals
    if totals:
        lines += [
            "",
            f"rtpengine over the run: {totals.get('managedsessions', '?')} sessions,"
            f" {totals.get('regularterminatedsessions', '?')} ended by a delete,"
            f" {totals.get('timeoutsessions', '?')} by a timeout,"
            f" {totals.get('forcedterminatedsessions', '?')} forced.",
        ]
    return lines + [""]


def _minutes(run: SoakRun) -> list[str]:
    lines = [
        "## Every minute",
        "",
        "Legitimate: SIPp's successful and failed calls so far, every stream together."
        "  SBC RSS and RssAnon: the largest of its processes; shared: Kamailio's shared"
        " memory segment, resident pages.  CPU: the SBC's share of one"
        " core since the previous sample.",
        "",
        "| min | legit ok | legit failed | SBC CPU | SBC RSS MB | SBC RssAnon MB | SBC shared MB"
        " | SBC fds"
        " | rtpengine sessions | rtpengine fds | Redis keys | Redis MB | event stream"
        " | ban index | bans in force | events |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    chosen = _per_minute(run.samples)
    for s in chosen:
        rss = max((p["rss_kb"] for p in s.sbc.values()), default=0)
        anon = max((p["anon_kb"] for p in s.sbc.values()), default=0)
        fds = sum(p["fds"] for p in s.sbc.values())
        r = s.redis
        lines.append(
            f"| {s.t / 60:.1f} | {_legit(s, 'successful'):,} | {_legit(s, 'failed'):,}"
            f" | {s.sbc_cpu:.0%} | {_mb(rss)} | {_mb(anon)}"
            f" | {_mb(s.sbc_shared_kb) if s.sbc_shared_kb is not None else '—'} | {fds}"
            f" | {s.rtpengine.get('sessions', '—')} | {s.rtpengine.get('fds', '—')}"
            f" | {r['keys']:,} | {r['used_memory'] / 1024 / 1024:.2f} | {r['event_stream']:,}"
            f" | {r['ban_index']} | {r['live_bans']} | {s.events:,} |"
        )
    pids = sorted({pid for s in run.samples for pid in s.sbc})
    lines += [
        "",
        "RSS of every SBC process, MB:",
        "",
        "| min | "
        + " | ".join(process_label(pid, run.ranks).removeprefix("SBC ") for pid in pids)
        + " |",
        "|---:|" + "---:|" * len(pids),
    ]
    for s in chosen:
        cells = [_mb(s.sbc[pid]["rss_kb"]) if pid in s.sbc else "—" for pid in pids]
        lines.append(f"| {s.t / 60:.1f} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(run: SoakRun) -> str:
    lines = _summary(run) + _traffic(run) + _attacks(run) + _verdicts(run) + _minutes(run)
    return "\n".join(lines).rstrip() + "\n"


def as_json(run: SoakRun) -> dict[str, Any]:
    return {
        "started": run.started,
        "minutes": run.minutes,
        "quick": run.quick,
        "interval_s": run.interval_s,
        "attack_every_s": run.attack_every_s,
        "rates": run.rates.as_json(),
        "failures": run.failures(),
        "verdicts": {
            judged.name: {
                "unit": judged.unit,
                **{
                    k: None if isinstance(x, float) and math.isnan(x) else x
                    for k, x in v.as_json().items()
                },
            }
            for judged, v in run.verdicts()
        },
        "after": asdict(run.after) if run.after is not None else None,
        "drain_s": run.drain_s,
        "streams": [s.as_json() for s in run.streams],
        "tls": {"ok": run.tls_ok, "failed": run.tls_failed, "failures": run.tls_failures},
        "attacks": [a.as_json() for a in run.attacks],
        "rtpengine_totals": run.rtpengine_totals,
        "events": dict(run.events),
        "ranks": run.ranks,
        "sbc_problem": run.sbc_problem,
        "samples": [asdict(s) for s in run.samples],
    }
