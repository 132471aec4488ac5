"""Soak sipshield: mixed legitimate traffic with attacks mixed in, watching for leaks.

One lab (bench.labs) runs the example policy with short bounds
(soak.policy).  For the whole run, an office of users behind 127.0.0.1 calls
with media, registers, sends keepalives and messages (soak.legit), and a new
TLS connection asks OPTIONS every few seconds (soak.tls_probe); every so often
an attack comes from another loopback address (soak.attacks).  Every sampling
interval, soak.sampler reads the RSS and descriptors of every SBC process,
rtpengine's sessions and descriptors, Redis's keys, memory, event stream and
ban index, and SIPp's counts.  soak.levelling judges each series: growth over
the last third beyond its tolerance is a leak.

Writes soak/REPORT.md and soak/report.json; exits 1 on a leak, a legitimate
failure, or an attack not handled.  From the repository:
  python -m soak.run [--quick] [--minutes N] [--interval S]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import labs
from bench.sbc_log import most_frequent_problem
from bench.targets import Target
from soak.attacks import AttackSchedule
from soak.legit import LegitLoad, Rates
from soak.policy import write_soak_policy
from soak.report import SoakRun, as_json, markdown
from soak.sampler import Sampler, kamailio_ranks
from soak.series import build
from soak.tls_probe import TlsProbe

SOAK = Path(__file__).resolve().parent
# The lab, SIPp's logs and the generated policy of the last run, kept for a look after it.
WORK = SOAK / "work"
# Once the load stops, how long rtpengine has to hold no session any more,
# and how long the last transactions are given to end in any case.
DRAIN_LIMIT_S = 30.0
DRAIN_AT_LEAST_S = 5.0
# The callers' last calls end within their talk time and a few retransmissions.
FINISH_GRACE_S = 60.0


@dataclass(frozen=True)
class Plan:
    minutes: float
    interval_s: int
    attack_every_s: float
    tls_every_s: float


FULL = Plan(minutes=30, interval_s=10, attack_every_s=30, tls_every_s=2)
# Long enough for bans (60 s) to expire and every attack to come twice.
QUICK = Plan(minutes=3, interval_s=5, attack_every_s=15, tls_every_s=2)


def _progress(sample_minute: float, run: SoakRun) -> None:
    s = run.samples[-1]
    ok = sum(c.get("successful", 0) for c in s.legit.values())
    failed = sum(c.get("failed", 0) for c in s.legit.values())
    rss = max((p["rss_kb"] for p in s.sbc.values()), default=0) / 1024
    shared = (s.sbc_shared_kb or 0) / 1024
    print(
        f"  {sample_minute:5.1f} min: legit {ok:,} ok {failed:,} failed, SBC CPU {s.sbc_cpu:.0%},"
        f" largest SBC RSS {rss:.1f} MB, shared {shared:.1f} MB,"
        f" rtpengine {s.rtpengine.get('sessions')} sessions,"
        f" Redis {s.redis['keys']} keys, {s.redis['live_bans']} bans, {s.events:,} events",
        flush=True,
    )


def _drain(sampler: Sampler) -> None:
    """Wait DRAIN_AT_LEAST_S, then until rtpengine holds no session, or DRAIN_LIMIT_S."""
    deadline = time.monotonic() + DRAIN_LIMIT_S
    time.sleep(DRAIN_AT_LEAST_S)
    while time.monotonic() < deadline and sampler.rtpengine_sessions() > 0:
        time.sleep(1)


def _events(path: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    try:
        for line in path.read_text(errors="replace").splitlines():
            event = json.loads(line)
            found[f"{event.get('module')} {event.get('action')}"] += 1
    except (OSError, ValueError):
        pass
    return found


def soak(lab: labs.BenchLab, run: SoakRun, plan: Plan) -> None:
    seconds = plan.minutes * 60
    legit = LegitLoad(lab, run.rates, seconds, WORK / "sipp", plan.interval_s)
    print("registering the users", flush=True)
    legit.warm_up()
    started = time.monotonic()
    legit.start()
    tls = TlsProbe(lab.info["sip"]["tls"], Path(lab.info["tls"]["ca"]), plan.tls_every_s)
    tls.start()
    attacks = AttackSchedule(lab, plan.attack_every_s, started, WORK)
    attacks.start()
    sampler = Sampler(lab, started, lambda: {name: asdict(c) for name, c in legit.counts().items()})
    print(f"soaking for {plan.minutes:g} minutes", flush=True)
    try:
        next_at, minute = started + plan.interval_s, 0
        while next_at <= started + seconds:
            time.sleep(max(0.0, next_at - time.monotonic()))
            run.samples.append(sampler.sample())
            if run.samples[-1].t >= minute * 60:
                _progress(run.samples[-1].t / 60, run)
                minute = int(run.samples[-1].t // 60) + 1
            next_at += plan.interval_s
    finally:
        attacks.stop()
        tls.stop()
        run.streams = legit.finish(FINISH_GRACE_S)
        run.attacks = attacks.attacks
        run.tls_ok, run.tls_failed, run.tls_failures = tls.ok, tls.failed, tls.failures
    stopped = time.monotonic()
    _drain(sampler)
    run.after = sampler.sample()
    run.drain_s = time.monotonic() - stopped
    run.rtpengine_totals = sampler.rtpengine_totals()
    sampler.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 minutes, a sample every 5 s")
    parser.add_argument("--minutes", type=float, help="how long the load runs (default 30)")
    parser.add_argument("--interval", type=int, help="seconds between samples (default 10)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    plan = Plan(
        minutes=args.minutes or plan.minutes,
        interval_s=args.interval or plan.interval_s,
        attack_every_s=plan.attack_every_s,
        tls_every_s=plan.tls_every_s,
    )
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    policy = write_soak_policy(WORK / "policy.yaml")
    target = Target("soak", policy, None, "the example policy with short bounds (soak.policy)")
    run = SoakRun(
        minutes=plan.minutes,
        interval_s=plan.interval_s,
        attack_every_s=plan.attack_every_s,
        quick=args.quick,
        rates=Rates(),
        tls_every_s=plan.tls_every_s,
    )
    print("lab up", flush=True)
    lab = labs.up("soak", target, WORK / "lab")
    try:
        soak(lab, run, plan)
    finally:
        labs.down(lab)
    run.ranks = kamailio_ranks(lab.sbc_log)
    run.series = build(run.samples, run.ranks)
    run.events = _events(Path(lab.info["events"]))
    run.sbc_problem = most_frequent_problem(lab.sbc_log, 0)
    text = markdown(run)
    (SOAK / "REPORT.md").write_text(text)
    (SOAK / "report.json").write_text(json.dumps(as_json(run), indent=1, default=str) + "\n")
    print(text)
    return 1 if run.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
