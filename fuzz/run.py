"""Fuzz the lab: mutated SIP messages through the SBC, and whether it survived them.

Seeds (fuzz.seeds): the validation samples, RFC 4475-style torture cases,
message bodies SIP carries (presence, watcherinfo, dialog-info, IMDN, CPIM,
UTF-8 text, HTML, multipart) and tests/samples/content when it exists.
Each message is one seed with whole-message mutations (fuzz.mutations) or
body mutations (fuzz.body_mutations, XML-aware ones among them), over UDP or
TCP, from many loopback addresses, to a lab running every module of the
example policy with limits the fuzz cannot reach (fuzz.policy).

After every batch (fuzz.watch): no SBC process died, the SBC answers OPTIONS,
no Python traceback or sipshield error in its log, no module `error` event.
The message behind a finding is saved to fuzz/findings/ (fuzz.findings) and
sent again with --replay.  Writes fuzz/REPORT.md and fuzz/report.json
(fuzz.report).  From the repository:

  python -m fuzz.run [--quick] [--count N] [--seed S] [--bodies-only]
  python -m fuzz.run --replay FILE_OR_DIR [--transport udp|tcp]

The exit status is 1 when there was a finding.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fuzz import findings, report
from fuzz.corpus import Corpus, Fuzzed
from fuzz.lab import fuzz_lab, target
from fuzz.plan import FULL, QUICK, Plan, with_count
from fuzz.policy import EXAMPLE, fuzz_policy, module_names
from fuzz.seeds import Seeds
from fuzz.sender import Sender
from fuzz.watch import Problem, Watch
from tests.integration.lab_fixture import RunningLab

FUZZ = Path(__file__).resolve().parent
WORK = FUZZ / "work"
FINDINGS = FUZZ / "findings"
DEFAULT_SEED = 4475
# What ends a run: the lab is no longer the lab the run started with.
FATAL = ("sbc-process-died", "sbc-unanswered-probe", "exited")
# Seconds for the last events and log lines to be written after the last batch.
SETTLE_S = 2.0
# UDP senders are cut by this when the SBC's socket overflowed during a batch,
# and grown by the other when it did not, between these bounds.
UDP_BACKOFF, UDP_GROWTH, UDP_MIN = 0.6, 1.15, 16


def sources(plan: Plan) -> list[str]:
    return [f"127.0.1.{n}" for n in range(1, plan.sources + 1)]


@dataclass
class Run:
    """One fuzz run against one lab: its batches, what they found, what the report needs."""

    plan: Plan
    corpus: Corpus
    lab: RunningLab
    watch: Watch
    found: findings.Findings
    results: report.Results
    udp_workers: int = 0
    last: list[Fuzzed] = field(default_factory=list)  # the batch sent last

    def batch(self, first: int) -> list[Problem]:
        """Send messages ``first`` onwards (one batch), then check the lab."""
        plan, watch = self.plan, self.watch
        batch = [self.corpus.make(i) for i in range(first, min(first + plan.batch, plan.total))]
        drops, started = watch.kernel_drops, time.monotonic()
        sender = Sender(
            self.corpus.seed,
            {"udp": self.lab.sip("udp"), "tcp": self.lab.sip("tcp")},
            sources(plan),
            self.udp_workers,
            plan.tcp_workers,
            plan.udp_wait_s,
            plan.tcp_wait_s,
        )
        self.last = batch
        self.results.outcomes |= sender.send(batch)
        self.results.sent |= {m.index: report.Sent.of(m) for m in batch}
        self.results.stray_replies += sender.stray_replies
        self.results.send_errors.update(sender.send_errors)
        self.results.udp_workers.append(self.udp_workers)
        problems = watch.check()
        probe = watch.probe()
        problems += [probe] if probe else []
        dropped = watch.kernel_drops - drops
        print(
            f"{first + len(batch):>8,}/{plan.total:,}: {time.monotonic() - started:5.1f} s, "
            f"{self.udp_workers} UDP senders, {dropped} kernel drops, {len(problems)} problems",
            flush=True,
        )
        for problem in problems:
            self.record(problem)
        self.udp_workers = (
            max(UDP_MIN, int(self.udp_workers * UDP_BACKOFF))
            if dropped
            else min(plan.udp_workers_max, int(self.udp_workers * UDP_GROWTH) + 1)
        )
        return problems

    def record(self, problem: Problem) -> None:
        # A message is rebuilt from its index: its problem may show after its batch.
        traced = problem.index is not None and problem.index < self.plan.total
        message = self.corpus.make(problem.index) if traced else None
        path = self.found.add(problem, message, self.last)
        if path is not None:
            print(f"  FINDING {problem.what} (message {problem.index}): {path}", flush=True)


def fuzz(plan: Plan, seed: int, command: str, example: Path, directory: Path) -> int:
    policy, changes = fuzz_policy(example)
    with fuzz_lab(WORK, policy, example) as lab:
        where = target(lab)
        run = Run(
            plan,
            Corpus(Seeds.load(), where, seed, plan.total, plan.bodies, plan.udp_share),
            lab,
            Watch(lab, seed),
            findings.Findings(directory, seed, where),
            report.Results(seed, command, plan, str(example), changes, module_names(policy)),
            plan.udp_workers,
        )
        started = time.monotonic()
        for first in range(0, plan.total, plan.batch):
            fatal = [p for p in run.batch(first) if any(f in p.what for f in FATAL)]
            if fatal:
                run.results.aborted = f"{fatal[0].what}: {fatal[0].detail}"
                break
        run.results.seconds = time.monotonic() - started
        time.sleep(SETTLE_S)
        for problem in run.watch.check():
            run.record(problem)
        run.results.findings = run.found.as_json()
        data = report.tables(run.results, run.watch)
    print(report.write(FUZZ, data))
    print(f"lab logs and events kept in {WORK / 'lab'}", flush=True)
    return 1 if run.results.findings else 0


def replay(path: Path, transport: str | None, example: Path) -> int:
    """Send each finding in ``path`` to a fresh lab, checking the lab after each one."""
    files = findings.replay_files(path)
    if not files:
        print(f"nothing to replay in {path}", file=sys.stderr)
        return 2
    found = 0
    with fuzz_lab(WORK / "replay", fuzz_policy(example)[0], example) as lab:
        where = target(lab)
        _, first = findings.load(files[0], where)
        watch = Watch(lab, int(first.get("seed", DEFAULT_SEED)))
        for file in files:
            data, meta = findings.load(file, where)
            how = transport or meta.get("transport", "udp")
            status = lab.send(data, transport=how, timeout=2.0)
            time.sleep(0.5)
            problems = watch.check()
            probe = watch.probe()
            problems += [probe] if probe else []
            print(f"{file.name}: {how}, reply {status}, {len(problems)} problems", flush=True)
            for problem in problems:
                found += 1
                print(f"  {problem.what}:\n    " + problem.detail.replace("\n", "\n    "))
            if any(any(f in p.what for f in FATAL) for p in problems):
                break
    return 1 if found else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.total:,} messages")
    parser.add_argument("--count", type=int, help=f"messages to send (default {FULL.total:,})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the run's seed")
    parser.add_argument(
        "--bodies-only",
        action="store_true",
        help="only body-focused messages (MESSAGE/NOTIFY/PUBLISH)",
    )
    parser.add_argument("--policy", type=Path, default=EXAMPLE, help="the policy to start from")
    parser.add_argument("--findings", type=Path, default=FINDINGS, help="where findings go")
    parser.add_argument("--replay", type=Path, help="send a finding (.sip) or a directory of them")
    parser.add_argument("--transport", choices=("udp", "tcp"), help="replay over this transport")
    args = parser.parse_args()
    if args.replay:
        return replay(args.replay, args.transport, args.policy)
    plan = QUICK if args.quick else FULL
    if args.count is not None or args.bodies_only:
        plan = with_count(plan, args.count or plan.total, args.bodies_only)
    command = " ".join(["python -m fuzz.run", *sys.argv[1:]])
    return fuzz(plan, args.seed, command, args.policy, args.findings)


if __name__ == "__main__":
    sys.exit(main())
