"""Kamailio's CPU while a banned source floods it, with kernel enforcement off and on.

The lab runs inside a network namespace behind a veth pair (tests.support.netns),
so that packets arrive from outside as they would in production and nftables
can drop them; the host's own ruleset is never touched.  The policy runs
ip_controls, bans and flood (limits far above the load, so that only the ban
acts).  The attacker's address is banned, then three phases of ``seconds``
each:

  baseline  the legitimate client alone;
  off       + the banned attacker floods, the Python ban check drops it;
  on        + the same flood, with `sipshield nft-sync` in the namespace, so
            the kernel drops it before Kamailio reads it.

The flood is SIPp sending fire-and-forget INVITEs (tests/sipp/invite_flood.xml)
at a rate far above what one SIPp process can reach, so it sends flat out; it
is stopped with SIGUSR1 (SIPp's clean stop) after ``seconds``.  The
legitimate client sends OPTIONS to the SBC at LEGIT_RATE from a second
address (tests/sipp/options.xml, SIPp retransmits from 500 ms); one counts as
failed when its 200 has not come after LEGIT_TIMEOUT_MS.

Measured in each phase: the CPU time (user + system, /proc/PID/stat) of every
process of the SBC's Kamailio group (the namespace shares the host's pids),
the INVITEs SIPp sent, the UDP datagrams the namespace's sockets read and
those dropped because a socket buffer was full (the namespace's
/proc/net/snmp), the packets nft-sync's chain dropped, and the legitimate
OPTIONS answered.

Needs root (network namespaces, nftables).  Run alone with
``python -m bench.kernel_flood [--quick] [--seconds N]`` from the
repository; bench/run.py imports it for bench/REPORT.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sipshield.lab.sip_probe import send_request
from sipshield.lab.sipp import run_sipp, sipp_command
from sipshield.lab.stack import group_cpu_seconds
from tests.support.netns import (
    Namespace,
    NetnsError,
    bans,
    kernel_drops,
    kernel_set,
    lab_in,
    namespace,
    nft_sync,
)

POLICY = """\
version: 1
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - {name: ip_controls, deny: [203.0.113.0/24]}
  - {name: bans}
  - name: flood
    limits: {register: 1000000, invite: 1000000, options: 1000000, other: 1000000}
"""
# Asked of SIPp; one SIPp process reaches a fraction of it, so it sends as fast as it can.
FLOOD_RATE = 200_000
LEGIT_RATE = 50
LEGIT_TIMEOUT_MS = 2000
QUICK_SECONDS = 3
PHASES = ("baseline", "off", "on")
_SUCCESSFUL = re.compile(r"^\s*Successful call\s+\|\s+\d+\s+\|\s+(\d+)", re.MULTILINE)


def udp_counters(ns: Namespace) -> dict[str, int]:
    """The namespace's Udp counters from /proc/net/snmp (InDatagrams, RcvbufErrors, ...)."""
    lines = [line.split() for line in ns.run("cat", "/proc/net/snmp").stdout.splitlines()]
    names, values = [line for line in lines if line and line[0] == "Udp:"][:2]
    return dict(zip(names[1:], map(int, values[1:]), strict=True))


class Flood:
    """SIPp flooding ``target`` from ``source`` until :meth:`stop`."""

    def __init__(self, target: str, source: str, domain: str):
        self._tmp = tempfile.TemporaryDirectory(prefix="sipp-flood-")
        self.workdir = Path(self._tmp.name)
        argv = sipp_command(
            "invite_flood", target, service="bob", local_ip=source, calls=10**9,
            rate=FLOOD_RATE, timeout_s=3600, keys={"domain": domain}, workdir=self.workdir,
        )  # fmt: skip
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.workdir,
            start_new_session=True,
        )

    def stop(self) -> tuple[int, float]:
        """Stop SIPp; the INVITEs it sent and for how long it ran."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGUSR1)  # SIPp's clean stop: screens written
            try:
                out, err = self.proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
            elapsed = time.monotonic() - self.started
            screen = self.workdir / "screen.log"
            text = (screen.read_text(errors="replace") if screen.exists() else "") + out
            counts = _SUCCESSFUL.findall(text)
            if not counts:
                raise RuntimeError(
                    f"SIPp flood (exit {self.proc.returncode}) left no counters:\n"
                    f"{err[-2000:]}\n{text[-2000:]}"
                )
            return max(map(int, counts)), elapsed
        finally:
            self._tmp.cleanup()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._tmp.cleanup()


def _phase(ns: Namespace, info: dict, seconds: int, flood: bool) -> dict:
    target, domain, sbc = info["sip"]["udp"], info["domain"], info["pids"]["sbc"]
    legit_calls = LEGIT_RATE * seconds
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        udp_before, cpu_before = udp_counters(ns), group_cpu_seconds(sbc)
        started = time.monotonic()
        legit = pool.submit(
            run_sipp, "options", target, local_ip=ns.legit, calls=legit_calls, rate=LEGIT_RATE,
            recv_timeout_ms=LEGIT_TIMEOUT_MS, timeout_s=seconds + 30, keys={"domain": domain},
        )  # fmt: skip
        flooder = Flood(target, ns.attacker, domain) if flood else None
        try:
            time.sleep(seconds)
            sent, flood_seconds = flooder.stop() if flooder else (0, 0.0)
        finally:
            if flooder:
                flooder.kill()
        window = time.monotonic() - started
        cpu = group_cpu_seconds(sbc) - cpu_before
        udp_after = udp_counters(ns)
        answered = legit.result()
    return {
        "window_s": round(window, 2),
        "kamailio_cpu_s": round(cpu, 2),
        "kamailio_cores": round(cpu / window, 2),
        "flood_sent": sent,
        "flood_rate": round(sent / flood_seconds) if flood_seconds else 0,
        "udp_read": udp_after["InDatagrams"] - udp_before["InDatagrams"],
        "udp_buffer_full": udp_after["RcvbufErrors"] - udp_before["RcvbufErrors"],
        "legit_ok": answered.successful,
        "legit_total": legit_calls,
    }


def measure(seconds: float = 10, quick: bool = False) -> dict:
    """Run the three phases in a fresh namespace and lab; {phase: measurements}.

    Raises tests.support.netns.NamespacesRefused when this host does not allow
    network namespaces (not root, a confined container).
    """
    seconds = max(1, round(min(seconds, QUICK_SECONDS) if quick else seconds))
    result: dict = {"seconds": seconds, "flood_rate_asked": FLOOD_RATE, "legit_rate": LEGIT_RATE}
    with (
        tempfile.TemporaryDirectory(prefix="bench-kernel-") as tmp,
        namespace("sipshield-bench") as ns,
    ):
        policy, lab_dir = Path(tmp) / "policy.yaml", Path(tmp) / "lab"
        policy.write_text(POLICY)
        with lab_in(ns, policy, lab_dir) as info:
            sbc = tuple(info["sip"]["udp"].rsplit(":", 1))
            address = (sbc[0], int(sbc[1]))
            # Answered, and the host has the SBC's neighbour entry before any flood.
            if send_request(address, source_ip=ns.legit, timeout=2) != 200:
                raise NetnsError(f"the SBC at {info['sip']['udp']} does not answer OPTIONS")
            bans(ns, lab_dir, "add", ns.attacker, "--ttl", "3600")
            if send_request(address, source_ip=ns.attacker, timeout=0.5) is not None:
                raise NetnsError(f"the ban of {ns.attacker} is not enforced")
            result["baseline"] = _phase(ns, info, seconds, flood=False)
            time.sleep(1)
            result["off"] = _phase(ns, info, seconds, flood=True)
            time.sleep(2)  # let Kamailio drain the backlog of the first flood
            with nft_sync(ns, lab_dir):
                if ns.attacker not in (kernel_set(ns) or {}):
                    raise NetnsError(f"nft-sync did not put {ns.attacker} in the kernel set")
                drops = kernel_drops(ns)
                result["on"] = _phase(ns, info, seconds, flood=True)
                result["on"]["kernel_dropped"] = kernel_drops(ns) - drops
            result["off"]["kernel_dropped"] = 0
            result["baseline"]["kernel_dropped"] = 0
    return result


def report_lines(result: dict) -> list[str]:
    """A Markdown section for bench/REPORT.md."""
    lines = [
        "## Kernel enforcement under a flood from a banned source",
        "",
        "| phase | flood sent (INVITE/s) | Kamailio CPU (s) | Kamailio CPU (cores) "
        "| UDP read by the SBC | dropped at full socket buffer | dropped by nftables "
        "| legitimate OPTIONS answered |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    titles = {
        "baseline": "no flood",
        "off": "flood, kernel enforcement off",
        "on": "flood, kernel enforcement on",
    }
    for phase in PHASES:
        r = result[phase]
        share = 100 * r["legit_ok"] / r["legit_total"] if r["legit_total"] else 0.0
        lines.append(
            f"| {titles[phase]} | {r['flood_sent']} ({r['flood_rate']}/s) "
            f"| {r['kamailio_cpu_s']:.2f} | {r['kamailio_cores']:.2f} | {r['udp_read']} "
            f"| {r['udp_buffer_full']} | {r['kernel_dropped']} "
            f"| {r['legit_ok']}/{r['legit_total']} ({share:.1f}%) |"
        )
    lines += [
        "",
        f"Each phase lasts {result['seconds']} s.  The SBC (2 UDP workers, policy ip_controls +"
        " bans + flood) runs in a network namespace behind a veth pair; the attacker's address"
        " is banned.  The flood is one SIPp sending fire-and-forget INVITEs as fast as it can"
        f" (asked for {result['flood_rate_asked']}/s).  Off: the Python ban check drops it;"
        " on: `sipshield nft-sync` mirrors the ban into nftables, which drops it at prerouting."
        f"  Meanwhile a legitimate client sends OPTIONS at {result['legit_rate']}/s from another"
        f" address; one counts as answered when its 200 arrives within {LEGIT_TIMEOUT_MS} ms"
        " (SIPp retransmits from 500 ms).  Kamailio CPU: user + system time of every SBC"
        " Kamailio process over the phase (/proc/PID/stat).  UDP counters: the namespace's"
        " /proc/net/snmp (InDatagrams, RcvbufErrors).  SIPp, Kamailio and the kernel share"
        f" {os.cpu_count()} cores, so the flood rate is what the attacker reached beside them.",
        "",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS} s per phase")
    parser.add_argument("--seconds", type=float, default=10, help="length of each phase")
    args = parser.parse_args()
    result = measure(args.seconds, args.quick)
    print("\n".join(report_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
