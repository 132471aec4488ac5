"""The ``sipshield`` command.

sipshield policy check FILE
sipshield dropin check CFG [-A NAME=VALUE ...] [--policy FILE] [--pythonpath DIR]
sipshield install-dropin [--root DIR] [--policy FILE]
sipshield lab up --policy FILE --dir DIR [--detach] [--rtpengine-redundancy] [--internet]
sipshield lab down --dir DIR
sipshield events [--follow] (--lab DIR | --redis URL) [--prefix P]
                 [--module M] [--action A] [--source NET] [--user U]
sipshield nft-sync (--lab DIR | --redis URL) [--prefix P] [--table NAME]
sipshield media-takeover (--lab DIR | --redis URL --engine SPEC --engine SPEC)
sipshield selftest --target IP:PORT --policy FILE --source IP --source IP [...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sipshield.ops.selftest.command import add_parser as add_selftest_parser

if TYPE_CHECKING:
    from sipshield.core.bans import BanStore
    from sipshield.core.policy import Policy, PolicyError
    from sipshield.core.state import RedisSettings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2


def _report(exc: PolicyError) -> int:
    for line in exc.errors:
        print(line, file=sys.stderr)
    return EXIT_INVALID


def _load_policy(path: str) -> Policy | None:
    """The validated policy, or None after printing every error (file:line: field)."""
    from sipshield.core.policy import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        _report(exc)
        return None


def _policy_check(args: argparse.Namespace) -> int:
    policy = _load_policy(args.file)
    if policy is None:
        return EXIT_INVALID
    names = ", ".join(f"{m.name}({m.mode})" for m in policy.modules) or "no modules"
    print(f"{args.file}: valid; modules: {names}")
    return EXIT_OK


def _dropin_check(args: argparse.Namespace) -> int:
    from sipshield.ops.dropin_check import check

    report = check(Path(args.config), args.define, args.policy, args.pythonpath)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    if report.problems:
        return EXIT_INVALID
    print(f"{args.config}: {report.summary()}")
    return EXIT_OK


def _install_dropin(args: argparse.Namespace) -> int:
    from sipshield.core.policy import PolicyError
    from sipshield.lab.stack import LabError, config_dir
    from sipshield.ops.install_dropin import InstallError, install

    try:
        policy = Path(args.policy) if args.policy else None
        installation = install(Path(args.root), config_dir(), policy)
    except PolicyError as exc:
        return _report(exc)
    except (InstallError, LabError, OSError) as exc:
        print(f"sipshield install-dropin: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print("\n".join(installation.instructions()))
    return EXIT_OK


def _tls_config(args: argparse.Namespace) -> int:
    from sipshield.ops.tls_config import render_tls_cfg

    policy = _load_policy(args.file)
    if policy is None:
        return EXIT_INVALID
    try:
        sys.stdout.write(render_tls_cfg(policy))
    except ValueError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def _print_lab(info: dict) -> None:
    print("sipshield lab is up:")
    for transport, address in info["sip"].items():
        print(f"  SBC SIP {transport:<4}     {address}")
    print(f"  PBX (inside)     udp {info['pbx']['udp']}  (reachable only through the SBC)")
    print(f"  carrier (trunk)  udp {info['carrier']['udp']}  (answers calls to numbers)")
    print(f"  Redis            {info['redis']}")
    print(f"  rtpengine ng     {', '.join(e['ng'] for e in info['rtpengines'])}")
    if "rtpengine_redis" in info:
        print(f"  rtpengine calls  {info['rtpengine_redis']} (a dead one's go to the other)")
    print(f"  domain           {info['domain']}")
    named = [u for u in info["users"] if not u["username"][1:].isdigit()]
    crowd = len(info["users"]) - len(named)
    users = ", ".join(f"{u['username']}/{u['password']}" for u in named)
    print(f"  users            {users}")
    if crowd:
        print(f"                   and {crowd} numbered users for crowds (passwords in lab.json)")
    print(f"  events           {info['events']}")
    if info.get("metrics"):
        print(f"  metrics          {info['metrics']}  (Prometheus)")
    print("  logs             " + "\n                   ".join(info["logs"].values()))
    from sipshield.core.policy import load_policy
    from sipshield.lab.calling import softphone_settings

    print("\n".join(softphone_settings(info, load_policy(info["policy"]))))


def _follow_file(path: Path, stop: list[bool]) -> None:
    path.touch()
    with path.open() as fh:
        fh.seek(0, 2)
        while not stop:
            line = fh.readline()
            if line:
                print(line.rstrip(), flush=True)
            else:
                time.sleep(0.2)


def _lab(args: argparse.Namespace) -> int:
    from sipshield.core.policy import PolicyError
    from sipshield.lab import stack as lab

    directory = Path(args.dir)
    if args.lab_command == "down":
        try:
            stopped = lab.down(directory)
        except lab.LabError as exc:
            print(f"sipshield lab down: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"stopped: {', '.join(stopped) or 'nothing'}")
        return EXIT_OK
    try:
        sbc_config = Path(args.sbc_config) if args.sbc_config else None
        running = lab.up(
            Path(args.policy),
            directory,
            sbc_config,
            args.sip_address,
            args.nat_keepalive_interval,
            redis_sentinel=args.redis_sentinel,
            sipdump=args.sipdump,
            rtpengine_redundancy=args.rtpengine_redundancy,
            metrics=not args.no_metrics,
            internet=args.internet,
        )
    except PolicyError as exc:
        return _report(exc)
    except lab.LabError as exc:
        print(f"sipshield lab up: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    _print_lab(running.info)
    if args.detach:
        print(f"stop it with: sipshield lab down --dir {directory}")
        return EXIT_OK
    stop: list[bool] = []

    def _stop(signum: int, frame: object) -> None:
        stop.append(True)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print("security events follow (Ctrl-C stops the lab):", flush=True)
    try:
        _follow_file(Path(running.info["events"]), stop)
    finally:
        print("stopping the lab ...", flush=True)
        lab.down(directory)
        print("lab stopped; no process left behind.", flush=True)
    return EXIT_OK


def _redis_settings(args: argparse.Namespace, timeout_ms: int = 2000) -> RedisSettings:
    """Where Redis is: the ``redis:`` section of --policy (Sentinel, ACL user, TLS and key
    prefix included), of the lab's policy (--lab), or --redis URL with --prefix."""
    from sipshield.core.policy import PolicyError, load_policy
    from sipshield.core.state import RedisSettings

    policy_file = args.policy
    if args.lab:
        policy_file = json.loads((Path(args.lab) / "lab.json").read_text())["policy"]
    if policy_file:
        try:
            settings = load_policy(policy_file).redis
        except PolicyError as exc:
            raise SystemExit(f"sipshield {args.command}: {exc}") from None
        return settings.model_copy(update={"timeout_ms": timeout_ms})
    if not args.redis:
        raise SystemExit(f"sipshield {args.command}: give --policy FILE, --lab DIR or --redis URL")
    return RedisSettings(url=args.redis, key_prefix=args.prefix, timeout_ms=timeout_ms)


def _events(args: argparse.Namespace) -> int:
    import redis

    from sipshield.core.redis_connection import connect, safe_url
    from sipshield.ops.event_filter import EventFilter

    settings = _redis_settings(args)
    shown = EventFilter.from_args(args)
    # xread blocks for a second at a time: the socket waits longer than that.
    client = connect(settings, 5)
    url = safe_url(settings.url)
    stream = f"{settings.key_prefix}:events"
    try:
        last = "0"
        for entry_id, fields in client.xrange(stream, count=args.count):
            if shown.keeps(fields["event"]):
                print(fields["event"])
            last = entry_id
        while args.follow:
            for _, entries in client.xread({stream: last}, block=1000) or []:
                for entry_id, fields in entries:
                    if shown.keeps(fields["event"]):
                        print(fields["event"], flush=True)
                    last = entry_id
    except redis.RedisError as exc:
        print(f"sipshield events: redis at {url}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _ban_store(args: argparse.Namespace) -> BanStore:
    from sipshield.core.bans import BanSettings, BanStore
    from sipshield.core.state import SharedState

    return BanStore(SharedState(_redis_settings(args)), BanSettings())


def _bans(args: argparse.Namespace) -> int:
    import time

    from sipshield.core.state import StateUnavailable

    store = _ban_store(args)
    if args.bans_command != "list" and bool(args.ip) == bool(args.account):
        print(f"sipshield bans {args.bans_command}: give an address or --account", file=sys.stderr)
        return EXIT_INVALID
    try:
        if args.bans_command == "list":
            now = time.time()
            records = sorted(store.list(), key=lambda r: r.expires)
            if not records:
                print("no active bans")
            for r in records:
                print(
                    f"{r.scope:<32} age {now - r.created:>7.0f}s  expires in "
                    f"{r.expires - now:>7.0f}s  hits {r.hits:<6} offence {r.offense}  "
                    f"[{r.module}] {r.reason}"
                )
        elif args.bans_command == "add":
            record = store.add(
                args.ip or "", args.reason, "manual", args.user or "", args.ttl, args.account or ""
            )
            if record is not None and not record.stored:
                # Held in this process only, which ends now: nobody would enforce it.
                raise StateUnavailable("the ban was not stored")
            print(f"banned {record.scope} for {record.ttl_s}s" if record else "not banned")
        else:
            removed = store.remove(args.ip or "", args.user or "", args.account or "")
            what = args.account or args.ip
            print(f"unbanned {what}" if removed else f"{what} was not banned")
    except StateUnavailable as exc:
        print(f"sipshield bans: redis unavailable: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _nft_sync(args: argparse.Namespace) -> int:
    import logging
    import shutil
    import threading

    from sipshield.ops.nft_sync import BanMirror, NftError, NftTable

    store = _ban_store(args)
    if not shutil.which("nft"):
        print("sipshield nft-sync: nft is not installed (Debian package nftables)", file=sys.stderr)
        return EXIT_FAILURE
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s nft-sync %(levelname)s %(message)s", force=True
    )
    mirror = BanMirror(store.state.settings, store.index_key, store.channel, NftTable(args.table))
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    mirror.run(stop)
    try:
        mirror.delete_table()
    except NftError as exc:
        print(f"sipshield nft-sync: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _media_takeover(args: argparse.Namespace) -> int:
    import logging
    import threading

    from sipshield.ops.media_takeover import MediaTakeover, TakeoverError, engine_of, parse_engine

    try:
        if args.lab:
            info = json.loads((Path(args.lab) / "lab.json").read_text())
            url, engines = info["rtpengine_redis"], [engine_of(e) for e in info["rtpengines"]]
        elif args.redis:
            url, engines = args.redis, [parse_engine(spec) for spec in args.engine]
        else:
            raise TakeoverError("give --lab DIR, or --redis URL and --engine twice")
        watcher = MediaTakeover(url, engines, args.interval, args.misses, args.restore_timeout)
    except (TakeoverError, OSError, KeyError, ValueError) as exc:
        print(f"sipshield media-takeover: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s media-takeover %(levelname)s %(message)s",
        force=True,
    )
    # The watcher reports a death once; the ng transport would warn at every missed ping.
    logging.getLogger("sipshield.rtpengine").setLevel(logging.ERROR)
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        watcher.run(stop)
    except TakeoverError as exc:
        print(f"sipshield media-takeover: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipshield", description="SIP security controller")
    commands = parser.add_subparsers(dest="command", required=True)

    policy = commands.add_parser("policy", help="work with policy files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser("check", help="validate a policy (exit 0 valid, 2 not)")
    check.add_argument("file")
    check.set_defaults(run=_policy_check)

    dropin = commands.add_parser("dropin", help="sipshield in an existing kamailio.cfg")
    dropin_commands = dropin.add_subparsers(dest="dropin_command", required=True)
    dropin_check = dropin_commands.add_parser(
        "check", help="what kamailio -c misses: include, route calls, entry, policy (exit 0/2)"
    )
    dropin_check.add_argument("config", help="your kamailio.cfg")
    dropin_check.add_argument(
        "-A", dest="define", action="append", default=[], metavar="NAME=VALUE",
        help="a define Kamailio is started with (kamailio -A), as given to it",
    )  # fmt: skip
    dropin_check.add_argument(
        "--policy",
        default=os.environ.get("SIPSHIELD_POLICY", "/etc/sipshield/policy.yaml"),
        help="Kamailio's SIPSHIELD_POLICY (default: $SIPSHIELD_POLICY, /etc/sipshield/policy.yaml)",
    )
    dropin_check.add_argument(
        "--pythonpath",
        help="Kamailio's PYTHONPATH (default: this sipshield's site-packages)",
    )
    dropin_check.set_defaults(run=_dropin_check)

    install_dropin = commands.add_parser(
        "install-dropin",
        help="install the drop-in, its entry, a policy, the events directory and "
        "Kamailio's environment for a by-hand drop-in (docs/dropin.md)",
    )
    install_dropin.add_argument("--root", default="/", help="install under this directory")
    install_dropin.add_argument(
        "--policy", help="install this policy (default: keep yours, or the monitor starter)"
    )
    install_dropin.set_defaults(run=_install_dropin)

    tls = commands.add_parser("tls-config", help="print Kamailio's tls.cfg for a policy")
    tls.add_argument("file", help="the policy")
    tls.set_defaults(run=_tls_config)

    lab = commands.add_parser("lab", help="run the loopback lab")
    lab_commands = lab.add_subparsers(dest="lab_command", required=True)
    lab_up = lab_commands.add_parser("up", help="start Redis, rtpengine, the SBC and a PBX")
    lab_up.add_argument("--policy", required=True)
    lab_up.add_argument("--dir", required=True)
    lab_up.add_argument("--detach", action="store_true", help="return once everything answers")
    lab_up.add_argument(
        "--sbc-config",
        help="run this kamailio.cfg as the SBC instead of sipshield's (benchmark references)",
    )
    lab_up.add_argument(
        "--sip-address",
        default="127.0.0.1",
        help="where the SBC's SIP listeners bind (other services stay on 127.0.0.1)",
    )
    lab_up.add_argument(
        "--redis-sentinel",
        action="store_true",
        help="a Redis replica and three sentinels on loopback; the SBC follows the master",
    )
    lab_up.add_argument(
        "--sipdump",
        action="store_true",
        help="the SBC writes every SIP message it receives or sends to LAB/sipdump",
    )
    lab_up.add_argument(
        "--rtpengine-redundancy",
        action="store_true",
        help="the policy's two rtpengines keep their calls in Redis; when one dies, the other "
        "takes its calls over, media ports included",
    )
    lab_up.add_argument(
        "--no-metrics",
        action="store_true",
        help="no Prometheus metrics listener on the SBC (benchmarks of the default configuration)",
    )
    lab_up.add_argument(
        "--internet",
        action="store_true",
        help="add a DNS server and a foreign SIP domain (foreign.test) with its own proxy, "
        "for internet calls (docs/internet-calling.md)",
    )
    lab_up.add_argument(
        "--nat-keepalive-interval",
        type=int,
        default=30,
        metavar="SECONDS",
        help="between keepalive OPTIONS to users registered from behind NAT (0: none)",
    )
    lab_up.set_defaults(run=_lab)
    lab_down = lab_commands.add_parser("down", help="stop every process of a lab")
    lab_down.add_argument("--dir", required=True)
    lab_down.set_defaults(run=_lab)

    events = commands.add_parser("events", help="print security events from Redis")
    source = events.add_mutually_exclusive_group()
    source.add_argument("--lab", help="lab directory (reads its lab.json)")
    source.add_argument("--redis", help="Redis URL")
    source.add_argument("--policy", help="policy file (its redis section: Sentinel, ACL, TLS)")
    events.add_argument("--prefix", default="sipshield", help="the policy's redis.key_prefix")
    events.add_argument("--count", type=int, default=100, help="how many past events to show")
    events.add_argument("--follow", action="store_true", help="keep printing new events")
    from sipshield.ops.event_filter import add_filter_options

    add_filter_options(events)
    events.set_defaults(run=_events)

    bans = commands.add_parser("bans", help="list, add or remove bans (on every node)")
    bans_source = bans.add_mutually_exclusive_group()
    bans_source.add_argument("--lab", help="lab directory (reads its lab.json)")
    bans_source.add_argument("--redis", help="Redis URL")
    bans_source.add_argument("--policy", help="policy file (its redis section: Sentinel, ACL, TLS)")
    bans.add_argument("--prefix", default="sipshield", help="the policy's redis.key_prefix")
    bans_commands = bans.add_subparsers(dest="bans_command", required=True)
    bans_commands.add_parser("list", help="active bans with reason, age and expiry")
    for verb in ("add", "remove"):
        command = bans_commands.add_parser(verb, help=f"{verb} a ban")
        command.add_argument("ip", nargs="?", help="the source address (not with --account)")
        command.add_argument("--user", help="only this user from this address")
        command.add_argument("--account", help="an account, from anywhere (toll_fraud's bans)")
        if verb == "add":
            command.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
            command.add_argument("--reason", default="manual ban", help="shown in bans list")
    bans.set_defaults(run=_bans)

    nft = commands.add_parser(
        "nft-sync", help="mirror the IP bans into an nftables set (kernel enforcement)"
    )
    nft_source = nft.add_mutually_exclusive_group()
    nft_source.add_argument("--lab", help="lab directory (reads its lab.json)")
    nft_source.add_argument("--redis", help="Redis URL")
    nft_source.add_argument("--policy", help="policy file (its redis section: Sentinel, ACL, TLS)")
    nft.add_argument("--prefix", default="sipshield", help="the policy's redis.key_prefix")
    nft.add_argument("--table", default="sipshield", help="nftables table (family inet)")
    nft.set_defaults(run=_nft_sync)

    takeover = commands.add_parser(
        "media-takeover",
        help="hand a dead rtpengine's calls to its partner (docs/media-redundancy.md)",
    )
    takeover_source = takeover.add_mutually_exclusive_group()
    takeover_source.add_argument("--lab", help="lab directory (lab up --rtpengine-redundancy)")
    takeover_source.add_argument("--redis", help="the Redis URL the rtpengines' --redis name")
    takeover.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="SPEC",
        help="name=N,ng=IP:PORT,cli=IP:PORT,db=DB,inbox=DB (its --listen-ng, --listen-cli, "
        "--redis database and --subscribe-keyspace); give the pair",
    )
    takeover.add_argument(
        "--interval", type=float, default=0.2, help="seconds between pings (default 0.2)"
    )
    takeover.add_argument(
        "--misses", type=int, default=3, help="pings unanswered in a row that make it dead"
    )
    takeover.add_argument(
        "--restore-timeout",
        type=float,
        default=5.0,
        help="seconds the partner gets to restore the calls (default 5)",
    )
    takeover.set_defaults(run=_media_takeover)
    add_selftest_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
