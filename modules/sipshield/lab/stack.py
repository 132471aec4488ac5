"""The lab: Redis, rtpengine, the sipshield SBC, a PBX and a carrier, on loopback.

``up`` picks free ports, writes everything it generates into one directory
(policy, TLS certificates, configuration, logs, ``lab.json``), starts the four
services and returns once each one answers.  ``down`` stops every process
``lab.json`` lists and waits until they are gone.  Two labs in two directories
run side by side.  With ``rtpengine_redundancy`` the two rtpengines keep their
calls in a Redis of their own, and a watcher hands a dead one's calls to the
other (docs/media-redundancy.md).  The carrier is a trunk that answers calls
to numbers (kamailio-cfg/carrier.cfg), named "lab-carrier" in the lab policy's
trunks (docs/outbound-calls.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml

from sipshield.core.policy import Policy, load_policy
from sipshield.edge.kamailio_env import kamailio_environment
from sipshield.edge.topology_hiding import topos_redis_server
from sipshield.lab import internet as lab_internet
from sipshield.lab.net import free_port
from sipshield.lab.sip_probe import send_request
from sipshield.lab.tls_material import LabCertificates, make_lab_certificates
from sipshield.ops.tls_config import render_tls_cfg
from sipshield.rtpengine import NgError, RtpengineClient
from sipshield.sip.dialog_tokens import rotate_key_file

LAB_USERS = ("alice", "bob", "carol", "dave")
# Numbered users for crowds: an office behind one NAT address, load tests.
LAB_NUMBERED_USERS = tuple(f"u{n}" for n in range(1000, 1060))
DOMAIN = "sipshield.lab"
READY_TIMEOUT_S = 20.0


class LabError(RuntimeError):
    """The lab could not be brought up or down; the message says which service and why."""


def config_dir() -> Path:
    """Where kamailio.cfg and the KEMI entry live (source tree or installed copy)."""
    candidates = [
        Path(os.environ.get("SIPSHIELD_CFG_DIR", "/nonexistent")),
        Path(__file__).resolve().parents[3] / "kamailio-cfg",
        Path(sys.prefix) / "share" / "sipshield",
    ]
    for candidate in candidates:
        if (candidate / "kamailio.cfg").is_file():
            return candidate
    raise LabError("cannot find kamailio.cfg; set SIPSHIELD_CFG_DIR")


RTP_PORTS = (20000, 59999)
RTP_BLOCK = 1000


def _port_blocks(count: int) -> list[tuple[int, int]]:
    """``count`` ranges of media ports that no running rtpengine uses.

    rtpengine binds its media ports with SO_REUSEADDR as calls need them, so
    two engines given the same range would both bind a port and take each
    other's media: every rtpengine of every lab on the machine gets its own.
    """
    busy = _running_rtpengine_ranges()
    free = [
        (start, start + RTP_BLOCK - 1)
        for start in range(RTP_PORTS[0], RTP_PORTS[1], RTP_BLOCK)
        if not any(low <= start + RTP_BLOCK - 1 and start <= high for low, high in busy)
    ]
    if len(free) < count:
        raise LabError("no free media port range: too many rtpengines running; stop a lab")
    return sorted(secrets.SystemRandom().sample(free, count))


def _running_rtpengine_ranges() -> list[tuple[int, int]]:
    """The --port-min/--port-max of each rtpengine process running here."""
    ranges = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # not a process, or gone meanwhile
            continue
        if not argv or Path(argv[0]).name != "rtpengine":
            continue
        options = dict(a.removeprefix("--").split("=", 1) for a in argv if "=" in a)
        with contextlib.suppress(KeyError, ValueError):
            ranges.append((int(options["port-min"]), int(options["port-max"])))
    return ranges


def rtpengine_count(policy: Policy) -> int:
    """The lab starts as many rtpengines as the policy's media section names (failover)."""
    return len(policy.media.rtpengine.ng) if policy.media is not None else 1


@dataclass
class Lab:
    directory: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def json_path(self) -> Path:
        return self.directory / "lab.json"

    @classmethod
    def load(cls, directory: Path) -> Lab:
        lab = cls(directory)
        try:
            lab.info = json.loads(lab.json_path.read_text())
        except (OSError, ValueError) as exc:
            raise LabError(f"no running lab in {directory}: {exc}") from None
        return lab

    def save(self) -> None:
        tmp = self.json_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.info, indent=2) + "\n")
        tmp.replace(self.json_path)


def _lab_policy(
    policy: Policy,
    ports: dict[str, int],
    directory: Path,
    tls: LabCertificates,
    sip_address: str = "127.0.0.1",
) -> Policy:
    host = "127.0.0.1"
    data = policy.model_dump(mode="json")
    data["domain"] = DOMAIN
    # The lab's own certificates, where the policy names none of its own.
    if data["tls"]["certificate"] is None:
        data["tls"]["certificate"] = str(tls.server_cert)
        data["tls"]["private_key"] = str(tls.server_key)
    if data["tls"]["ca_list"] is None:
        data["tls"]["ca_list"] = str(tls.ca_cert)
    data["listeners"] = {
        "udp": f"{sip_address}:{ports['sip']}",
        "tcp": f"{sip_address}:{ports['sip']}",
        "tls": f"{sip_address}:{ports['tls']}",
    }
    data["peers"]["pbx"] = {"address": f"{PBX_HOST}:{ports['pbx']}", "transport": "udp"}
    # Numbers go out to the lab's carrier, after any trunk the policy routes them to.
    data["peers"]["trunks"] = [
        *(t for t in data["peers"]["trunks"] if t["name"] != CARRIER),
        {"name": CARRIER, "target": f"{host}:{ports[CARRIER]}", "numbers": [""]},
    ]
    data["redis"]["url"] = f"redis://{host}:{ports['redis']}/0"
    if SENTINELS[0] in ports:
        # The master is whichever the sentinels name; a ban waits for the replica.
        data["redis"]["sentinels"] = [f"{host}:{ports[name]}" for name in SENTINELS]
        data["redis"]["service"] = SENTINEL_SERVICE
        data["redis"]["replica_acks"] = 1
    data["events"]["file"] = str(directory / "events.jsonl")
    # Dialog-token keys (dialog_guard): the lab's own, where the policy's file is absent.
    for entry in data["modules"]:
        if entry["name"] == "dialog_guard" and not Path(entry["key_file"]).is_file():
            entry["key_file"] = str(directory / "dialog-keys")
            if not (directory / "dialog-keys").exists():
                rotate_key_file(directory / "dialog-keys")
    if data.get("media"):
        # Media is anchored in the lab's own rtpengines, one per address the policy names.
        data["media"]["rtpengine"]["ng"] = [
            f"{host}:{ports[_ng_name(i)]}" for i in range(len(data["media"]["rtpengine"]["ng"]))
        ]
    return Policy.model_validate(data)


def _ng_name(index: int) -> str:
    """The lab's name of the n-th rtpengine (its pid, log and port entries)."""
    return "rtpengine" if index == 0 else f"rtpengine{index + 1}"


def _wait(what: str, check: Callable[[], bool], log: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"{what} exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise LabError(f"{what} did not answer within {READY_TIMEOUT_S:.0f}s; see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _udp_bound(port: int) -> bool:
    """True when something listens on UDP ``port`` (read from /proc, no packet sent)."""
    hex_port = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as fh:
            if any(line.split()[1].endswith(hex_port) for line in fh.readlines()[1:]):
                return True
    return False


HOST = "127.0.0.1"  # where every service but the SBC's SIP listeners and the PBX binds
# The inside PBX has an address of its own, as behind a real SBC: whatever
# names it in a message that reaches an outside party is a topology leak
# (docs/topology-hiding.md), which a shared 127.0.0.1 would hide.
PBX_HOST = "127.0.0.50"
# The Redis high-availability group of `lab up --redis-sentinel`.
REPLICA = "redis-replica"
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
SENTINEL_SERVICE = "sipshield"
# `lab up --rtpengine-redundancy`: the rtpengines' Redis and the takeover watcher.
RTPENGINE_REDIS = "rtpengine-redis"
MEDIA_TAKEOVER = "media-takeover"
# The trunk that answers the lab's calls to numbers, and its name in the policy.
CARRIER = "lab-carrier"


@dataclass
class _Plan:
    """What a lab is made of, chosen before anything starts: ports, certificates, policy."""

    directory: Path
    source: Path  # the policy file it was made from
    policy: Policy  # the lab's own version of it (its addresses, files, keys)
    sip_address: str
    engines: list[str]
    ports: dict[str, int]
    port_blocks: dict[str, tuple[int, int]]
    tls: LabCertificates
    users: list[dict[str, str]]
    redundancy: bool = False
    metrics: bool = True
    # The DNS server and the foreign domain of `lab up --internet`.
    internet: lab_internet.InternetPlan | None = None

    @property
    def policy_file(self) -> Path:
        return self.directory / "policy.yaml"

    def log(self, service: str) -> Path:
        return self.directory / f"{service}.log"


def up(
    policy_path: Path,
    directory: Path,
    sbc_config: Path | None = None,
    sip_address: str = "127.0.0.1",
    nat_keepalive_interval: int = 30,
    redis_sentinel: bool = False,
    sipdump: bool = False,
    rtpengine_redundancy: bool = False,
    metrics: bool = True,
    internet: bool = False,
) -> Lab:
    """Start the lab; ``sbc_config`` replaces sipshield's kamailio.cfg (benchmark references).

    The SBC's SIP listeners take ``sip_address`` (e.g. a veth address inside a
    network namespace, for tests that attack from outside); every other
    service stays on loopback.  ``nat_keepalive_interval`` is the seconds
    between keepalive OPTIONS to users registered from behind NAT.
    ``redis_sentinel`` adds a replica and three sentinels watching the lab's
    Redis (service "sipshield"), and points the policy at the sentinels.
    ``sipdump`` has the SBC write every message it receives or sends, with its
    source, to text files in the lab's ``sipdump`` folder (before any parsing).
    ``rtpengine_redundancy`` (a policy with two ng addresses) gives the pair of
    rtpengines a Redis for their calls and starts the watcher that hands a
    dead one's calls to the other.  ``metrics`` turns the SBC's Prometheus
    listener on (docs/metrics.md).  ``internet`` adds a DNS server and a
    foreign SIP domain with its own proxy (:mod:`sipshield.lab.internet`).
    """
    directory = _claim(directory)
    _require_tools()
    plan = _plan(
        load_policy(policy_path),
        policy_path,
        directory,
        sip_address,
        redis_sentinel,
        rtpengine_redundancy,
        metrics,
        internet,
    )
    _write_configuration(plan)
    lab = _describe(plan)
    try:
        _start_redis(lab, plan)
        if redis_sentinel:
            _start_redis_sentinels(lab, plan)
        if plan.redundancy:
            _start_rtpengine_redis(lab, plan)
        _start_rtpengines(lab, plan)
        if plan.redundancy:
            _start_media_takeover(lab, plan)
        _start_pbx(lab, plan)
        _start_carrier(lab, plan)
        if plan.internet is not None:
            _start_internet(lab, plan, plan.internet)
        _start_sbc(lab, plan, sbc_config, nat_keepalive_interval, sipdump)
    except BaseException:
        down(directory)
        raise
    return lab


def _claim(directory: Path) -> Path:
    """The lab's directory, made if need be; refused while another lab runs there."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "lab.json").exists():
        stale = Lab.load(directory)
        if any(group_members(pid) for pid in stale.info.get("pids", {}).values()):
            raise LabError(
                f"{directory} holds a running lab; run `sipshield lab down --dir {directory}`"
            )
        # Left by a lab that died without `down` (a reboot, a kill -9): reuse the place.
        stale.json_path.rename(directory / "lab.json.stale")
    return directory


def _require_tools() -> None:
    for tool in ("kamailio", "redis-server", "rtpengine"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise LabError(f"{tool} is not installed; run `make setup`")


def _plan(
    policy: Policy,
    source: Path,
    directory: Path,
    sip_address: str,
    redis_sentinel: bool = False,
    redundancy: bool = False,
    metrics: bool = True,
    internet: bool = False,
) -> _Plan:
    engines = [_ng_name(i) for i in range(rtpengine_count(policy))]
    if redundancy and (policy.media is None or len(engines) != 2):
        raise LabError(
            "--rtpengine-redundancy needs a policy whose media.rtpengine.ng names two addresses"
        )
    redis_group = (REPLICA, *SENTINELS) if redis_sentinel else ()
    media_group = (RTPENGINE_REDIS, *(_cli_name(e) for e in engines)) if redundancy else ()
    services = (CARRIER, "redis", "metrics", *redis_group, *engines, *media_group)
    ports = {name: free_port() for name in services}
    ports["pbx"] = free_port(PBX_HOST)
    ports |= {name: free_port(sip_address) for name in ("sip", "tls")}
    names = ["localhost", DOMAIN, "127.0.0.1"]
    tls = make_lab_certificates(
        directory / "tls", server_names=names + ([sip_address] if sip_address not in names else [])
    )
    internet_plan = (
        lab_internet.plan_internet(tls, directory / "tls", HOST, free_port(), free_port())
        if internet
        else None
    )
    return _Plan(
        directory=directory,
        source=source,
        policy=_lab_policy(policy, ports, directory, tls, sip_address),
        sip_address=sip_address,
        engines=engines,
        ports=ports,
        port_blocks=dict(zip(engines, _port_blocks(len(engines)), strict=True)),
        tls=tls,
        users=[
            {"username": name, "password": secrets.token_hex(6)}
            for name in LAB_USERS + LAB_NUMBERED_USERS
        ],
        redundancy=redundancy,
        metrics=metrics,
        internet=internet_plan,
    )


def _write_configuration(plan: _Plan) -> None:
    """The lab policy, tls.cfg, the PBX's configuration, users and database, the run directories."""
    directory = plan.directory
    plan.policy_file.write_text(
        f"# Generated by `sipshield lab up` from {plan.source}\n"
        + yaml.safe_dump(plan.policy.model_dump(mode="json"), sort_keys=False)
    )
    (directory / "tls.cfg").write_text(render_tls_cfg(plan.policy))
    shutil.copy(config_dir() / "pbx.cfg", directory / "pbx.cfg")
    shutil.copy(config_dir() / "carrier.cfg", directory / "carrier.cfg")
    (directory / "pbx-users.cfg").write_text(
        "event_route[htable:mod-init] {\n"
        + "".join(f'\t$sht(users=>{u["username"]}) = "{u["password"]}";\n' for u in plan.users)
        + "}\n"
    )
    for name in ("run-sbc", "run-pbx", "run-carrier", "redis"):
        (directory / name).mkdir(exist_ok=True)
    for name in (REPLICA, *SENTINELS, RTPENGINE_REDIS):
        if name in plan.ports:
            (directory / name).mkdir(exist_ok=True)
    _write_pbx_database(directory / "pbx-db")
    if plan.internet is not None:
        _write_internet_configuration(plan, plan.internet)


def _write_internet_configuration(plan: _Plan, internet: lab_internet.InternetPlan) -> None:
    directory = plan.directory
    (directory / "dnsmasq.conf").write_text(lab_internet.dnsmasq_conf(internet, directory))
    # The SBC's /etc/resolv.conf (bind-mounted in its own mount namespace).
    (directory / "resolv.conf").write_text(f"nameserver {internet.dns_address}\n")
    (directory / "foreign-tls.cfg").write_text(
        lab_internet.foreign_tls_cfg(internet, plan.tls.ca_cert)
    )
    shutil.copy(config_dir() / "foreign.cfg", directory / "foreign.cfg")
    (directory / "run-foreign").mkdir(exist_ok=True)


# Kamailio's db_text schemas (the kamailio package), and the tables of them
# the lab PBX's presence server uses.
DBTEXT_SCHEMAS = Path("/usr/share/kamailio/dbtext/kamailio")
PBX_TABLES = ("version", "active_watchers", "watchers")


def _write_pbx_database(database: Path) -> None:
    """The lab PBX's db_text database: empty presence tables, made afresh for each lab."""
    database.mkdir(exist_ok=True)
    for table in PBX_TABLES:
        shutil.copy(DBTEXT_SCHEMAS / table, database / table)


def _describe(plan: _Plan) -> Lab:
    """lab.json: where everything listens, the users, the files; pids as they start."""
    ports, sip_address = plan.ports, plan.sip_address
    lab = Lab(plan.directory)
    lab.info = {
        "sip": {
            "udp": f"{sip_address}:{ports['sip']}",
            "tcp": f"{sip_address}:{ports['sip']}",
            "tls": f"{sip_address}:{ports['tls']}",
        },
        "redis": plan.policy.redis.url,
        "redis_sentinels": list(plan.policy.redis.sentinels),
        "rtpengine_ng": f"{HOST}:{ports['rtpengine']}",
        "rtp_ports": list(plan.port_blocks["rtpengine"]),
        # Every rtpengine, first one included (more when the policy names more).
        "rtpengines": [_engine_entry(plan, index) for index in range(len(plan.engines))],
        "pbx": {"udp": f"{PBX_HOST}:{ports['pbx']}"},
        "carrier": {"udp": f"{HOST}:{ports[CARRIER]}"},
        "domain": DOMAIN,
        "users": plan.users,
        "policy": str(plan.policy_file),
        "events": str(plan.directory / "events.jsonl"),
        # Prometheus metrics of the SBC (docs/metrics.md).
        "metrics": f"http://{HOST}:{ports['metrics']}/metrics" if plan.metrics else None,
        "tls": {
            "ca": str(plan.tls.ca_cert),
            "client_cert": str(plan.tls.client_cert),
            "client_key": str(plan.tls.client_key),
        },
        "logs": {
            name: str(plan.log(name))
            for name in ("redis", *_redis_group(plan), *_media_group(plan), "pbx", "carrier", "sbc")
        },
        "pids": {},
        # How each service was started, so a test or an operator can restart one.
        "commands": {},
    }
    if plan.redundancy:
        lab.info["rtpengine_redis"] = f"redis://{HOST}:{ports[RTPENGINE_REDIS]}"
    if plan.internet is not None:
        internet = plan.internet
        lab.info["internet"] = {
            "domain": lab_internet.FOREIGN_DOMAIN,
            "impostor_domain": lab_internet.IMPOSTOR_DOMAIN,
            "dns": f"{internet.dns_address}:{lab_internet.DNS_PORT}",
            "proxy_udp": f"{internet.proxy_ip}:{internet.proxy_udp}",
            "proxy_tls": f"{internet.proxy_ip}:{internet.proxy_tls}",
        }
        lab.info["logs"] |= {name: str(plan.log(name)) for name in ("dns", "foreign")}
    lab.save()
    return lab


def _engine_entry(plan: _Plan, index: int) -> dict[str, Any]:
    """lab.json's entry for the n-th rtpengine; with redundancy, what the watcher needs."""
    name = plan.engines[index]
    entry: dict[str, Any] = {
        "name": name,
        "ng": f"{HOST}:{plan.ports[name]}",
        "rtp_ports": list(plan.port_blocks[name]),
    }
    if plan.redundancy:
        db, inbox = _redis_databases(index)
        entry |= {"cli": f"{HOST}:{plan.ports[_cli_name(name)]}", "db": db, "inbox": inbox}
    return entry


def _media_group(plan: _Plan) -> list[str]:
    """The media services in start order: the rtpengines, with their Redis and watcher."""
    if not plan.redundancy:
        return list(plan.engines)
    return [RTPENGINE_REDIS, *plan.engines, MEDIA_TAKEOVER]


def _cli_name(engine: str) -> str:
    return f"{engine}-cli"


def _redis_databases(index: int) -> tuple[int, int]:
    """The n-th rtpengine's database (--redis) and inbox (--subscribe-keyspace)."""
    return 2 * index + 1, 2 * index + 2


def _start(
    lab: Lab, name: str, argv: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start one service in its own process group, logging to its file; record it in lab.json."""
    with open(lab.info["logs"][name], "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=lab.directory,
            env={**os.environ, **(env or {})},
            # Own process group: `down` stops Kamailio's children with it.
            start_new_session=True,
        )
    lab.info["pids"][name] = proc.pid
    lab.info["commands"][name] = argv
    lab.save()
    return proc


def _start_redis(lab: Lab, plan: _Plan) -> None:
    port = plan.ports["redis"]
    argv = ["redis-server", "--bind", HOST, "--port", str(port)]
    argv += ["--dir", str(plan.directory / "redis"), "--appendonly", "yes", "--save", ""]
    argv += ["--protected-mode", "yes", "--daemonize", "no"]
    proc = _start(lab, "redis", argv)
    ping = redis.Redis(host=HOST, port=port, socket_timeout=0.5).ping
    _wait("redis", ping, plan.log("redis"), proc)


def _redis_group(plan: _Plan) -> list[str]:
    return [name for name in (REPLICA, *SENTINELS) if name in plan.ports]


def _start_redis_sentinels(lab: Lab, plan: _Plan) -> None:
    """A replica of the lab's Redis and three sentinels watching it (quorum 2).

    The sentinels call the master down after a second without an answer and
    promote the replica; each rewrites its own configuration file as it learns.
    """
    master = plan.ports["redis"]
    port = plan.ports[REPLICA]
    argv = ["redis-server", "--bind", HOST, "--port", str(port), "--replicaof", HOST, str(master)]
    argv += ["--dir", str(plan.directory / REPLICA), "--appendonly", "yes", "--save", ""]
    argv += ["--protected-mode", "yes", "--daemonize", "no"]
    proc = _start(lab, REPLICA, argv)
    _wait(
        REPLICA, redis.Redis(host=HOST, port=port, socket_timeout=0.5).ping, plan.log(REPLICA), proc
    )
    for name in SENTINELS:
        config = plan.directory / name / "sentinel.conf"
        config.write_text(
            f"bind {HOST}\nport {plan.ports[name]}\ndir {plan.directory / name}\n"
            f"sentinel monitor {SENTINEL_SERVICE} {HOST} {master} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
            f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
        )
        proc = _start(lab, name, ["redis-server", str(config), "--sentinel"])
        ping = redis.Redis(host=HOST, port=plan.ports[name], socket_timeout=0.5).ping
        _wait(name, ping, plan.log(name), proc)

    def ready() -> bool:
        """Every sentinel knows the replica and the two other sentinels: a failover can run."""
        for name in SENTINELS:
            sentinel = redis.Redis(host=HOST, port=plan.ports[name], socket_timeout=0.5)
            master = sentinel.sentinel_master(SENTINEL_SERVICE)
            if master["num-slaves"] < 1 or master["num-other-sentinels"] < len(SENTINELS) - 1:
                return False
        return True

    _wait("the sentinels' view of the group", ready, plan.log(SENTINELS[0]), proc)


def _start_rtpengines(lab: Lab, plan: _Plan) -> None:
    for index, name in enumerate(plan.engines):
        rtp_min, rtp_max = plan.port_blocks[name]
        address = (HOST, plan.ports[name])
        argv = [
            "rtpengine",
            "--config-file=none",
            "--table=-1",
            f"--interface={HOST}",
            f"--listen-ng={HOST}:{plan.ports[name]}",
            f"--port-min={rtp_min}",
            f"--port-max={rtp_max}",
            "--foreground",
            "--log-stderr",
            "--log-level=6",
            f"--pidfile={plan.directory / (name + '.pid')}",
        ]
        if plan.redundancy:
            argv += _redundancy_options(plan, index)
        proc = _start(lab, name, argv)
        _wait(name, lambda a=address: _pong(a), plan.log(name), proc)


def _redundancy_options(plan: _Plan, index: int) -> list[str]:
    """What makes the n-th rtpengine one of a pair (docs/media-redundancy.md).

    Its calls go to its own database and calls handed to it arrive in its inbox
    (the watcher moves them there); the partner's database is never subscribed
    to, since a live copy on the same address would take the media.  Redis
    commands get a deadline: rtpengine writes a call on every offer and answer,
    and a Redis that hangs must not hang the signalling.
    """
    name = plan.engines[index]
    db, inbox = _redis_databases(index)
    redis_address = f"{HOST}:{plan.ports[RTPENGINE_REDIS]}"
    return [
        f"--redis={redis_address}/{db}",
        f"--subscribe-keyspace={inbox}",
        f"--listen-cli={HOST}:{plan.ports[_cli_name(name)]}",
        "--redis-cmd-timeout=500",
    ]


def _start_rtpengine_redis(lab: Lab, plan: _Plan) -> None:
    """The Redis where the pair keeps its calls, apart from sipshield's own.

    rtpengine restores a handed-over call from the keyspace event of its SET,
    which Redis publishes only when told to (``notify-keyspace-events``).
    """
    port = plan.ports[RTPENGINE_REDIS]
    argv = ["redis-server", "--bind", HOST, "--port", str(port)]
    argv += ["--dir", str(plan.directory / RTPENGINE_REDIS), "--appendonly", "yes", "--save", ""]
    argv += ["--notify-keyspace-events", "K$", "--protected-mode", "yes", "--daemonize", "no"]
    proc = _start(lab, RTPENGINE_REDIS, argv)
    ping = redis.Redis(host=HOST, port=port, socket_timeout=0.5).ping
    _wait(RTPENGINE_REDIS, ping, plan.log(RTPENGINE_REDIS), proc)


# How often the lab's watcher pings each rtpengine; three misses in a row make it dead.
TAKEOVER_INTERVAL_S = "0.1"


def _start_media_takeover(lab: Lab, plan: _Plan) -> None:
    argv = [sys.executable, "-m", "sipshield.ops.cli", "media-takeover"]
    argv += ["--redis", lab.info["rtpengine_redis"], "--interval", TAKEOVER_INTERVAL_S]
    for engine in lab.info["rtpengines"]:
        fields = {key: engine[key] for key in ("name", "ng", "cli", "db", "inbox")}
        argv += ["--engine", ",".join(f"{key}={value}" for key, value in fields.items())]
    proc = _start(lab, MEDIA_TAKEOVER, argv)
    log = plan.log(MEDIA_TAKEOVER)
    _wait(MEDIA_TAKEOVER, lambda: "watching" in log.read_text(errors="replace"), log, proc)


def _start_pbx(lab: Lab, plan: _Plan) -> None:
    directory, ports = plan.directory, plan.ports
    argv = ["kamailio", "-f", str(directory / "pbx.cfg"), "-DD", "-E"]
    argv += ["-w", str(directory), "-Y", str(directory / "run-pbx")]
    for define in (
        f"PBX_LISTEN=udp:{PBX_HOST}:{ports['pbx']}",
        f'SBC_ADDR="{plan.sip_address}"',
        f"SBC_PORT={ports['sip']}",
        f"DOMAIN_NAME={DOMAIN}",
        f'PBX_DB_URL="text://{directory / "pbx-db"}"',
    ):
        argv += ["-A", define]
    proc = _start(lab, "pbx", argv)
    _wait("pbx", lambda: _udp_bound(ports["pbx"]), plan.log("pbx"), proc)


def _start_internet(lab: Lab, plan: _Plan, internet: lab_internet.InternetPlan) -> None:
    """The lab's DNS server, then the foreign domain's proxy."""
    directory = plan.directory
    proc = _start(lab, "dns", ["dnsmasq", f"--conf-file={directory / 'dnsmasq.conf'}"])
    log = plan.log("dns")
    _wait("dns", lambda: "cleared cache" in log.read_text(errors="replace"), log, proc)
    argv = ["kamailio", "-f", str(directory / "foreign.cfg"), "-DD", "-E"]
    argv += ["-w", str(directory), "-Y", str(directory / "run-foreign")]
    sbc_tls = f"{plan.sip_address}:{plan.ports['tls']}"
    for define in lab_internet.foreign_defines(internet, directory, sbc_tls):
        argv += ["-A", define]
    proc = _start(lab, "foreign", argv)
    _wait("foreign", lambda: _udp_bound(internet.proxy_udp), plan.log("foreign"), proc)


def _start_carrier(lab: Lab, plan: _Plan) -> None:
    directory, port = plan.directory, plan.ports[CARRIER]
    argv = ["kamailio", "-f", str(directory / "carrier.cfg"), "-DD", "-E"]
    argv += ["-w", str(directory), "-Y", str(directory / "run-carrier")]
    argv += ["-A", f"CARRIER_LISTEN=udp:{HOST}:{port}"]
    proc = _start(lab, "carrier", argv)
    _wait("carrier", lambda: _udp_bound(port), plan.log("carrier"), proc)


SBC_SHARED_MEMORY_MB = "256"


def _start_sbc(
    lab: Lab, plan: _Plan, sbc_config: Path | None, nat_keepalive_interval: int, sipdump: bool
) -> None:
    directory, ports, sip_address = plan.directory, plan.ports, plan.sip_address
    cfg = config_dir()
    argv = ["kamailio", "-f", str(sbc_config.resolve() if sbc_config else cfg / "kamailio.cfg")]
    argv += ["-DD", "-E", "-w", str(directory), "-Y", str(directory / "run-sbc")]
    # Shared memory for a few hundred calls per second (tm's transactions and
    # timers); Kamailio's 64 MB default runs out first under the benchmark.
    argv += ["-m", SBC_SHARED_MEMORY_MB]
    for define in (
        f"SIP_UDP=udp:{sip_address}:{ports['sip']}",
        f"SIP_TCP=tcp:{sip_address}:{ports['sip']}",
        f"SIP_TLS=tls:{sip_address}:{ports['tls']}",
        f'TLS_CFG="{directory / "tls.cfg"}"',
        f'SIPSHIELD_ENTRY="{cfg / "sipshield_kemi.py"}"',
        "WORKERS=2",
        f"NAT_KEEPALIVE_INTERVAL={nat_keepalive_interval}",
        # For reference configurations that route natively (benchmarks).
        f'PBX_URI="sip:{PBX_HOST}:{ports["pbx"]};transport=udp"',
        f'PBX_ADDR="{PBX_HOST}"',
        f"PBX_PORT={ports['pbx']}",
    ):
        argv += ["-A", define]
    if plan.policy.media is not None:
        # For reference configurations that anchor media natively (benchmarks):
        # the lab's rtpengines, as one rtpengine_sock set.
        engines = " ".join(f"udp:{address}" for address in plan.policy.media.rtpengine.ng)
        argv += ["-A", f'RTPENGINE_NG="{engines}"']
    if plan.policy.topology_hiding.enabled:
        argv += ["-A", f'TOPOS_REDIS="{topos_redis_server(plan.policy.redis.url)}"']
    if plan.metrics:
        argv += ["-A", f"METRICS=tcp:{HOST}:{ports['metrics']}"]
    if sipdump:
        (directory / "sipdump").mkdir(exist_ok=True)
        argv += ["-A", f'SIPDUMP_DIR="{directory / "sipdump"}"']
    if plan.internet is not None:
        # Kamailio resolves through the lab's DNS server, the host keeps its own.
        argv = lab_internet.in_lab_resolver(argv, directory / "resolv.conf")
    # A clean PATH: the embedded Python finds its standard library through it.
    proc = _start(lab, "sbc", argv, kamailio_environment(str(plan.policy_file)))

    def answers() -> bool:
        target = (sip_address, ports["sip"])
        return send_request(target, timeout=0.5, source_ip=sip_address) == 200

    _wait("sbc", answers, plan.log("sbc"), proc)


def _pong(address: tuple[str, int]) -> bool:
    # A fresh client each time: one that saw a failure marks the instance dead.
    # Its warnings are expected while rtpengine starts; the deadline reports a real failure.
    client = RtpengineClient([address], timeout=0.3, retries=0)
    quiet = logging.getLogger("sipshield.rtpengine")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        client.ping()
    except NgError:
        return False
    finally:
        quiet.setLevel(level)
        client.close()
    return True


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time so far of every live process in a process group.

    A Kamailio's cost is the sum over its main process and all its workers;
    benchmarks read this before and after a load.
    """
    total = 0
    for pid in group_members(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def down(directory: Path, timeout: float = 10.0) -> list[str]:
    """Stop every process of the lab in ``directory``; return what was stopped."""
    directory = directory.resolve()
    lab = Lab.load(directory)
    pids: dict[str, int] = lab.info.get("pids", {})
    stopped = []
    # Reverse start order: the SBC goes before what it depends on.
    for name, pid in reversed(list(pids.items())):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and group_members(pid):
                time.sleep(0.05)
            if not group_members(pid):
                break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        stopped.append(name)
    if any(group_members(pid) for pid in pids.values()):
        raise LabError(f"processes of the lab in {directory} survived SIGKILL")
    lab.json_path.rename(directory / "lab.json.down")
    return stopped
