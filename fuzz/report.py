"""fuzz/REPORT.md and fuzz/report.json: what was sent, what became of it, who refused it.

Each message ends in exactly one of these (its *fate*), judged in this order:
  refused, answered   a module's event stopped it (reject, drop, ban) and a reply came
  refused, silent     a module stopped it and no reply came (drop, ban)
  forwarded           the PBX logged it (its reply, if any, relayed back)
  answered by the SBC a reply from the SBC with no module refusing: Kamailio's
                      core or sipshield's router (no route, too many hops, ...)
  answered, untraced  a reply whose message no event or PBX line names (its
                      Call-ID mutated beyond recognition)
  send failed         the socket refused it (connection refused or reset)
  no reply            nothing: Kamailio's parser discarded it before sipshield
                      ran, or its reply went to a Via address that is not ours
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fuzz.corpus import Fuzzed
from fuzz.plan import Plan
from fuzz.policy import REPO
from fuzz.sender import Outcome
from fuzz.watch import STOPPING, Watch

FATES = (
    "refused, answered",
    "refused, silent",
    "forwarded",
    "answered by the SBC",
    "answered, untraced",
    "send failed",
    "no reply",
)


@dataclass(frozen=True)
class Sent:
    """One message as the report needs it (its bytes are not kept)."""

    kind: str
    transport: str
    template: str
    method: str
    mutations: tuple[str, ...]
    framed: bool | None
    size: int

    @classmethod
    def of(cls, message: Fuzzed) -> Sent:
        return cls(
            message.kind,
            message.transport,
            message.template,
            message.method,
            message.mutations,
            message.framed,
            len(message.data),
        )


@dataclass
class Results:
    seed: int
    command: str
    plan: Plan
    policy: str
    policy_changes: list[str]
    modules: list[str]
    sent: dict[int, Sent] = field(default_factory=dict)
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    stray_replies: int = 0
    send_errors: Counter[str] = field(default_factory=Counter)
    udp_workers: list[int] = field(default_factory=list)  # per batch
    aborted: str = ""


def shown(path: str) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    return path.removeprefix(f"{REPO}/")


def fate(index: int, outcome: Outcome | None, watch: Watch) -> str:
    answered = outcome is not None and outcome.status is not None
    if index in watch.stopped_by:
        return FATES[0] if answered else FATES[1]
    if index in watch.forwarded:
        return FATES[2]
    if answered and outcome is not None and outcome.replier == "sbc":
        return FATES[3]
    if answered:
        return FATES[4]
    if outcome is not None and outcome.error:
        return FATES[5]
    return FATES[6]


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _code(status: int | None) -> str:
    return "none" if status is None else str(status)


def _codes(codes: dict[str, int], top: int = 4) -> str:
    """``{"400": 12, "none": 3}`` as "400: 12, none: 3", the rarest summed as "other"."""
    ranked = Counter(codes).most_common()
    shown = ", ".join(f"{code}: {n:,}" for code, n in ranked[:top])
    rest = sum(n for _, n in ranked[top:])
    return shown + (f", other: {rest:,}" if rest else "")


def tables(results: Results, watch: Watch) -> dict[str, Any]:
    """Every figure of the report, as data (report.json holds exactly this)."""
    sent, outcomes = results.sent, results.outcomes
    total = len(sent)
    by_kind = Counter((s.transport, s.kind) for s in sent.values())
    fates: Counter[tuple[str, str]] = Counter()
    codes: dict[str, Counter[str]] = {"udp": Counter(), "tcp": Counter()}
    stopped_codes: dict[tuple[str, str], Counter[str]] = {}
    late = 0
    for index, message in sent.items():
        outcome = outcomes.get(index)
        fates[message.kind, fate(index, outcome, watch)] += 1
        status = _code(outcome.status if outcome else None)
        codes[message.transport][status] += 1
        late += bool(outcome and outcome.late)
        if index in watch.stopped_by:
            stopped_codes.setdefault(watch.stopped_by[index], Counter())[status] += 1
    modules = []
    for (module, action, mode), count in sorted(watch.events.items(), key=lambda kv: -kv[1]):
        reasons = Counter(
            {r: n for (*event, r), n in watch.reasons.items() if event == [module, action, mode]}
        )
        stops = action in STOPPING and mode == "enforce"
        modules.append(
            {
                "module": module,
                "action": action,
                "mode": mode,
                "events": count,
                "stops": stops,
                "reply_codes": dict(stopped_codes.get((module, action), Counter()).most_common())
                if stops
                else {},
                "top_reasons": reasons.most_common(3),
            }
        )
    body_mutations = Counter(m for s in sent.values() if s.kind == "body" for m in s.mutations)
    message_mutations = Counter(
        m for s in sent.values() if s.kind == "message" for m in s.mutations
    )
    return {
        "seed": results.seed,
        "command": results.command,
        "plan": asdict(results.plan),
        "policy": shown(results.policy),
        "policy_changes": results.policy_changes,
        "modules_on": results.modules,
        "seconds": round(results.seconds, 1),
        "messages": total,
        "rate_per_s": round(total / results.seconds, 1) if results.seconds else 0,
        "sent": {f"{t}/{k}": n for (t, k), n in sorted(by_kind.items())},
        "bytes": sum(s.size for s in sent.values()),
        "methods": dict(Counter(s.method for s in sent.values()).most_common()),
        "templates": dict(Counter(s.template.split("/")[0] for s in sent.values()).most_common()),
        "framed_bodies": sum(1 for s in sent.values() if s.framed),
        "fates": {f"{k}/{f}": n for (k, f), n in sorted(fates.items())},
        "reply_codes": {t: dict(c.most_common()) for t, c in codes.items()},
        "late_replies": late,
        "stray_replies": results.stray_replies,
        "udp_send_errors": dict(results.send_errors),
        "kernel_udp_drops_pbx": watch.pbx_drops,
        "kernel_udp_drops": watch.kernel_drops,
        "udp_workers": results.udp_workers,
        "modules": modules,
        "untraced_events": watch.untraced_events,
        "kamailio_errors": watch.kamailio_errors.most_common(12),
        "sipshield_warnings": watch.sipshield_warnings.most_common(12),
        "overload": watch.overload.most_common(5),
        "probes": watch.probes,
        "probe_failures": watch.probe_failures,
        "body_mutations": dict(body_mutations.most_common()),
        "message_mutations": dict(message_mutations.most_common()),
        "findings": [
            {
                **finding,
                "key": finding["key"].replace(f"{REPO}/", ""),
                "detail": finding["detail"].replace(f"{REPO}/", ""),
                "files": [shown(file) for file in finding["files"]],
            }
            for finding in results.findings
        ],
        "aborted": results.aborted,
    }


def markdown(data: dict[str, Any]) -> str:
    total = data["messages"]
    out = [
        "# Fuzz report",
        "",
        f"`{data['command']}`: {total:,} mutated messages ({data['bytes'] / 1e6:.1f} MB) "
        f"through the lab in {data['seconds']:.0f} s ({data['rate_per_s']:.0f} messages/s), "
        f"seed {data['seed']}. Message *i* of a seed is always the same bytes (fuzz.corpus); "
        "the outcomes below depend on timing only through timeouts and kernel drops.",
        "",
    ]
    findings = data["findings"]
    probes = f"{data['probes']} OPTIONS probes, {data['probe_failures']} unanswered"
    if findings:
        seen = sum(finding["count"] for finding in findings)
        out.append(
            f"**{len(findings)} distinct finding(s)**, seen {seen:,} times: see Findings below "
            f"({probes})."
        )
    else:
        out.append(
            f"**No finding**: no SBC process died, the SBC answered every probe ({probes}), "
            "no Python traceback and no sipshield error in its log, no module `error` event."
        )
    if data["aborted"]:
        out += ["", f"**The run stopped early**: {data['aborted']}"]
    out += ["", "## Sent", ""]
    out += _table(
        ["transport", "whole-message mutations", "body mutations", "total"],
        [
            [
                t,
                f"{data['sent'].get(f'{t}/message', 0):,}",
                f"{data['sent'].get(f'{t}/body', 0):,}",
                f"{data['sent'].get(f'{t}/message', 0) + data['sent'].get(f'{t}/body', 0):,}",
            ]
            for t in ("udp", "tcp")
        ],
    )
    out += [
        "Seeds by family: "
        + ", ".join(f"{family} {n:,}" for family, n in data["templates"].items())
        + ". Methods of the seeds (before mutation): "
        + ", ".join(f"{m} {n:,}" for m, n in list(data["methods"].items())[:16])
        + f". Body-focused messages with a Content-Length matching the body: "
        f"{data['framed_bodies']:,}.",
        "",
        "## Outcomes",
        "",
    ]
    fates = data["fates"]
    out += _table(
        ["fate", "whole-message", "body", "share of all"],
        [
            [
                name,
                f"{fates.get(f'message/{name}', 0):,}",
                f"{fates.get(f'body/{name}', 0):,}",
                _pct(fates.get(f"message/{name}", 0) + fates.get(f"body/{name}", 0), total),
            ]
            for name in FATES
        ],
    )
    out += [
        "*refused*: a module's event stopped it; *forwarded*: the PBX logged it; "
        "*answered by the SBC*: Kamailio's core or sipshield's router answered, no module "
        "refused; *no reply*: Kamailio's parser discarded it before sipshield ran, or the "
        "reply went to a Via address that is not the sender's.",
        "",
    ]
    for transport in ("udp", "tcp"):
        codes = _codes(data["reply_codes"][transport], top=12)
        out.append(f"Final replies over {transport.upper()}: {codes}.")
    out += [
        "",
        f"Late replies (after the {data['plan']['udp_wait_s']} s wait, UDP): "
        f"{data['late_replies']:,}; "
        f"replies to nothing sent: {data['stray_replies']:,}; "
        f"datagrams the kernel dropped at the SBC's UDP socket: {data['kernel_udp_drops']:,}, "
        f"at the PBX's: {data['kernel_udp_drops_pbx']:,}; UDP send errors: "
        + (", ".join(f"{n:,} {e}" for e, n in data["udp_send_errors"].items()) or "none")
        + " "
        f"(UDP senders per batch: {min(data['udp_workers'], default=0)}-"
        f"{max(data['udp_workers'], default=0)}). "
        "Kamailio's overload alarms (the fuzz's rate on a busy machine, not a finding): "
        + (", ".join(f"{n:,}x `{line}`" for line, n in data["overload"]) or "none")
        + ".",
        "",
        "## Who refused what",
        "",
        "From the events file: every event of the run (events whose Call-ID was mutated beyond "
        f"recognition included: {data['untraced_events']:,}); reply codes of the traced "
        "refusals.",
        "",
    ]
    out += _table(
        ["module", "action", "mode", "events", "reply codes", "top reasons"],
        [
            [
                m["module"],
                m["action"],
                m["mode"],
                f"{m['events']:,}",
                _codes(m["reply_codes"]) if m["stops"] else "",
                "; ".join(f"{r} ({n})" for r, n in m["top_reasons"]).replace("|", "/"),
            ]
            for m in data["modules"]
        ],
    )
    out += [
        "Modules on: " + ", ".join(data["modules_on"]) + f" (policy {data['policy']}, changed "
        "for the fuzz: " + "; ".join(data["policy_changes"]) + ").",
        "",
        "## What Kamailio refused before sipshield",
        "",
        "The most frequent ERROR lines of the SBC's log that are not sipshield's (its parser):",
        "",
    ]
    out += _table(
        ["count", "line"],
        [[f"{n:,}", f"`{line}`".replace("|", "/")] for line, n in data["kamailio_errors"]],
    )
    if data["sipshield_warnings"]:
        out += ["sipshield's warnings other than events:", ""]
        out += _table(
            ["count", "line"],
            [[f"{n:,}", f"`{line}`".replace("|", "/")] for line, n in data["sipshield_warnings"]],
        )
    out += ["## Mutations", ""]
    out += [
        "Whole-message: "
        + ", ".join(f"{m} {n:,}" for m, n in data["message_mutations"].items())
        + ".",
        "",
        "Body: " + ", ".join(f"{m} {n:,}" for m, n in data["body_mutations"].items()) + ".",
        "",
        "## Findings",
        "",
    ]
    if not findings:
        out.append("None.")
    for finding in findings:
        seen = ", ".join(str(index) for index in finding["indexes"])
        out += [
            f"- **{finding['what']}**, seen {finding['count']:,} times (messages {seen}, "
            f"kept: {', '.join(f'`{file}`' for file in finding['files'])})",
            "",
            "  ```",
            *("  " + line for line in finding["detail"].splitlines()[:30]),
            "  ```",
        ]
    return "\n".join(out) + "\n"


def write(directory: Path, data: dict[str, Any]) -> str:
    text = markdown(data)
    (directory / "REPORT.md").write_text(text)
    (directory / "report.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    return text
