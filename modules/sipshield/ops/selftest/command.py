"""``sipshield selftest``: its options, the confirmation, the run, the report and the clean-up."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipshield.core.policy import Policy
    from sipshield.ops.selftest.attack import Attack
    from sipshield.ops.selftest.guard import Scope
    from sipshield.ops.selftest.runner import Result
    from sipshield.ops.selftest.target import Target

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(commands: argparse._SubParsersAction) -> None:
    selftest = commands.add_parser(
        "selftest",
        help="attack your own SBC and check it stops what its policy says (docs/selftest.md)",
        # @FILE: arguments one per line (the scheduled run keeps passwords out of its unit).
        fromfile_prefix_chars="@",
    )
    selftest.add_argument("--target", help="the SBC's SIP address, UDP and TCP (IP:PORT)")
    selftest.add_argument("--tls", help="the SBC's TLS listener (IP:PORT)")
    selftest.add_argument("--policy", help="the policy the SBC runs: the expected verdicts")
    selftest.add_argument("--domain", help="the SIP domain (default: the policy's)")
    selftest.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="IP",
        help="an address to send from (local, dedicated to the selftest): the first is the test "
        "accounts', the second the attacker's, one more per attack that bans its source",
    )
    selftest.add_argument(
        "--account", action="append", default=[], metavar="USER:PASSWORD",
        help="a test account on the PBX; give two (caller, callee) for the call attacks",
    )  # fmt: skip
    selftest.add_argument(
        "--media-address", action="append", default=[], metavar="IP",
        help="rtpengine's media address, when it is not the SBC's (RTP injection sends there)",
    )  # fmt: skip
    selftest.add_argument("--tls-ca", help="CA file for the SBC's TLS certificate")
    selftest.add_argument("--only", action="append", default=[], metavar="ATTACK")
    selftest.add_argument("--rate", type=float, default=200.0, help="packets per second at most")
    selftest.add_argument("--confirm", metavar="TARGET", help="repeat --target to run unattended")
    selftest.add_argument(
        "--lift-bans",
        action="store_true",
        help="afterwards, remove the bans on the --source addresses (the policy's redis section)",
    )
    selftest.add_argument("--json", action="store_true", help="print the report as JSON")
    selftest.add_argument("--report", help="also write the JSON report to this file")
    selftest.add_argument("--list", action="store_true", help="list the attacks and stop")
    selftest.set_defaults(run=run)


class UsageError(Exception):
    """A missing or malformed option; the message says which."""


def _address(value: str, option: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"{option} {value!r}: give IP:PORT")
    return host, int(port)


def _list() -> int:
    from sipshield.ops.selftest.catalogue import CATALOGUE

    for attack in CATALOGUE:
        print(f"{attack.name:<20} {attack.summary}")
        print(f"{'':<20} leaves: {attack.leaves}")
    return EXIT_OK


def _confirmed(args: argparse.Namespace) -> bool:
    if args.confirm is not None:
        return args.confirm == args.target
    if not sys.stdin.isatty():
        return False
    answer = input(
        f"sipshield selftest will attack {args.target} from {', '.join(args.source)}.\n"
        "Type the target again to go on: "
    )
    return answer.strip() == args.target


@dataclass(frozen=True)
class Plan:
    """What a run does: against which target, within which scope, with which expectations."""

    policy: Policy
    target: Target
    scope: Scope
    attacks: tuple[Attack, ...]


def _plan(args: argparse.Namespace) -> Plan:
    from sipshield.core.policy import PolicyError, load_policy
    from sipshield.ops.selftest.catalogue import CATALOGUE, by_name
    from sipshield.ops.selftest.guard import Scope
    from sipshield.ops.selftest.target import Account, Target

    if not args.target or not args.policy:
        raise UsageError("--target and --policy are required")
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        raise UsageError("\n".join(exc.errors)) from None
    sip, tls = _address(args.target, "--target"), _address(args.tls, "--tls") if args.tls else None
    accounts = []
    for value in args.account:
        user, sep, password = value.partition(":")
        if not sep:
            raise UsageError(f"--account {user!r}: give USER:PASSWORD")
        accounts.append(Account(user, password))
    if len(args.source) < 2:
        raise UsageError("give at least two --source addresses (accounts, attacker)")
    try:
        attacks = by_name(args.only) if args.only else CATALOGUE
        scope = Scope({sip[0], *([tls[0]] if tls else []), *args.media_address}, args.source,
                      args.rate)  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    target = Target(sip, args.domain or policy.domain, tls, tuple(accounts), args.tls_ca)
    return Plan(policy, target, scope, attacks)


def run(args: argparse.Namespace) -> int:
    from sipshield.ops.selftest.runner import run_attacks, table, to_json

    if args.list:
        return _list()
    try:
        plan = _plan(args)
    except UsageError as exc:
        print(f"sipshield selftest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not _confirmed(args):
        print(
            f"sipshield selftest: not confirmed: repeat the target with --confirm {args.target}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    started = time.time()

    def progress(result: Result) -> None:
        if not args.json:
            print(f"  {result.attack}: {result.status}", file=sys.stderr, flush=True)

    results = run_attacks(plan.attacks, plan.target, plan.scope, plan.policy, args.source, progress)
    report = to_json(results, plan.target, started)
    print(report if args.json else table(results))
    if args.report:
        Path(args.report).write_text(report + "\n")
    _after(args, plan.policy, results)
    return EXIT_FAILED if any(r.status == "FAIL" for r in results) else EXIT_OK


def _after(args: argparse.Namespace, policy: Policy, results: list[Result]) -> None:
    """Lift the bans the run caused (--lift-bans), or say which there may be."""
    banning = sorted({r.source for r in results if r.leaves != "nothing" and r.source})
    if not banning:
        return
    if not args.lift_bans:
        print(
            f"bans may remain on {', '.join(banning)} (see each attack's 'leaves'); lift them "
            "with: sipshield bans --policy POLICY remove IP [--user USER], or run with --lift-bans",
            file=sys.stderr,
        )
        return
    from sipshield.core.bans import BanSettings, BanStore
    from sipshield.core.state import SharedState, StateUnavailable

    store = BanStore(SharedState(policy.redis), BanSettings())
    lifted = []
    try:
        for record in store.list():
            kind, _, rest = record.scope.partition(":")
            ip, _, user = rest.partition(":") if kind == "user" else (rest, "", "")
            if ip in args.source:
                store.remove(ip, user)
                lifted.append(record.scope)
    except StateUnavailable as exc:
        print(f"sipshield selftest: could not lift the bans: {exc}", file=sys.stderr)
        return
    print(f"lifted bans: {', '.join(lifted) or 'none found'}", file=sys.stderr)
