"""``sipshield install-dropin``: put in place what a by-hand drop-in needs.

The Ansible role does this on a host; an operator who adds the drop-in to
their kamailio.cfg by hand runs this from the venv sipshield is installed in:

- the drop-in and the KEMI entry of this sipshield version, in
  ``/usr/share/sipshield`` (replaced: the entry must match the drop-in);
- a policy in ``/etc/sipshield/policy.yaml``, the given one or, when there is
  none yet, the starter that watches and blocks nothing (kept when present);
- the directory of the policy's events file, owned by the ``kamailio`` user,
  which appends to it from every worker;
- the systemd drop-in that gives Kamailio its environment (a clean PATH, the
  policy, this venv's site-packages).

Everything goes under ``root`` (``/`` on a host; a staging directory in the
tests), and every path written or printed is the one under ``root``.  Then it
prints the lines to add to kamailio.cfg and the command that checks them.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from sipshield.core.policy import load_policy
from sipshield.edge.kamailio_env import kamailio_environment

SHARE = Path("usr/share/sipshield")
POLICY = Path("etc/sipshield/policy.yaml")
SYSTEMD_DROPIN = Path("etc/systemd/system/kamailio.service.d/sipshield.conf")
# The starter policy names this events file; under another root it moves with it.
STARTER = "policy.monitor.yaml"
STARTER_EVENTS = "/var/log/sipshield/events.jsonl"
INSTALLED = ("sipshield-dropin.cfg", "sipshield_kemi.py")
KAMAILIO_USER = "kamailio"


class InstallError(RuntimeError):
    """What could not be installed, and why."""


@dataclass(frozen=True)
class Installation:
    include: Path
    entry: Path
    policy: Path
    policy_written: bool
    events_dir: Path | None
    systemd_dropin: Path
    environment: dict[str, str]

    def instructions(self) -> list[str]:
        """What the operator does next, with the exact lines."""
        written = " (the starter: every module in monitor; set domain and peers.pbx)"
        lines = [
            f"installed {self.include} and {self.entry}",
            f"policy {self.policy}" + (written if self.policy_written else " (kept as it was)"),
        ]
        if self.events_dir is not None:
            lines.append(f"events directory {self.events_dir}, owned by {KAMAILIO_USER}")
        lines += [
            f"Kamailio's environment: {self.systemd_dropin} (then systemctl daemon-reload)",
            "",
            "In your kamailio.cfg, on the line just before `request_route {`, outside every "
            "#!ifdef block:",
            f'    include_file "{self.include}"',
        ]
        define = ""
        if self.entry != Path("/") / SHARE / INSTALLED[1]:
            define = f" -A 'SIPSHIELD_ENTRY=\"{self.entry}\"'"
            lines += [
                "and, before it, where the entry is:",
                f'    #!define SIPSHIELD_ENTRY "{self.entry}"',
                f"or start Kamailio with{define} (quoted so)",
            ]
        lines += [
            "then the route calls (docs/dropin.md): route(SIPSHIELD), route(SIPSHIELD_REPLY), "
            "route(SIPSHIELD_RECORD_ROUTE), route(SIPSHIELD_BRANCH); and before you restart:",
            f"    sipshield dropin check /etc/kamailio/kamailio.cfg --policy {self.policy}{define}",
        ]
        return lines


def _source(name: str, source_dir: Path) -> Path:
    path = source_dir / name
    if not path.is_file():
        raise InstallError(f"{path} is missing: this sipshield has no {name} to install")
    return path


def _kamailio_ids() -> tuple[int, int]:
    try:
        user = pwd.getpwnam(KAMAILIO_USER)
    except KeyError:
        raise InstallError(
            f"no {KAMAILIO_USER} user on this host: install the kamailio package first"
        ) from None
    try:
        group = grp.getgrnam(KAMAILIO_USER).gr_gid
    except KeyError:
        group = user.pw_gid
    return user.pw_uid, group


def install(root: Path, source_dir: Path, policy_source: Path | None = None) -> Installation:
    """Install under ``root`` from ``source_dir`` (the kamailio-cfg of this sipshield)."""
    root = root.resolve()
    uid, gid = _kamailio_ids()
    share = root / SHARE
    share.mkdir(parents=True, exist_ok=True)
    for name in INSTALLED:
        shutil.copyfile(_source(name, source_dir), share / name)
        (share / name).chmod(0o644)
    policy = root / POLICY
    policy.parent.mkdir(parents=True, exist_ok=True)
    written = False
    if policy_source is not None:
        load_policy(policy_source)  # a PolicyError names the file, line and field
        shutil.copyfile(policy_source, policy)
        written = True
    elif not policy.exists():
        starter = _source(STARTER, source_dir).read_text()
        policy.write_text(starter.replace(STARTER_EVENTS, str(root / STARTER_EVENTS[1:])))
        written = True
    # Kamailio reads the policy as the kamailio user; it may hold Redis credentials.
    os.chown(policy, 0, gid)
    policy.chmod(0o640)
    events = load_policy(policy).events.file
    events_dir = None
    if events is not None:
        events_dir = events.parent
        events_dir.mkdir(parents=True, exist_ok=True)
        os.chown(events_dir, uid, gid)
        events_dir.chmod(0o750)
    environment = kamailio_environment(str(policy))
    unit = root / SYSTEMD_DROPIN
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(
        "# Written by sipshield install-dropin.  PATH: Kamailio's embedded Python takes\n"
        "# its standard library from the first python3 on PATH (docs/dropin.md).\n"
        "[Service]\n" + "".join(f"Environment={k}={v}\n" for k, v in environment.items())
    )
    return Installation(
        include=share / INSTALLED[0],
        entry=share / INSTALLED[1],
        policy=policy,
        policy_written=written,
        events_dir=events_dir,
        systemd_dropin=unit,
        environment=environment,
    )
