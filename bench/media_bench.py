"""The cost of SRTP calls: SBC CPU per call and per ng exchange against Kamailio's own
rtpengine module, ng round trips, rtpengine's SRTP capacity.

Three measurements, each against real labs (sipshield.lab):

  setup     sequential calls between two TLS users (INVITE, 407, INVITE, 180,
            200, ACK, BYE through the SBC and the lab PBX, each call crossing
            the SBC twice) through four SBCs, all up at once: sipshield under
            a policy where SRTP (SDES) is mandatory for users, sipshield under
            the same policy without its ``media:`` section (plain RTP offers),
            and bench/native-media.cfg (Kamailio's rtpengine module, the ng
            options sipshield sends for this call) with and without media.
            Interleaved rounds (5, or 7 in a full run; A, B, C, D, A, B, ...);
            per round, the SBC's Kamailio CPU (every task of its process
            group, /proc/PID/task/TID/schedstat, nanoseconds) over the calls,
            and the ng commands rtpengine counted (its ``statistics``).
            Media handling's cost is, per round, (with media - without) / ng
            exchanges per call, for sipshield and for the native module.
  ng        round-trip times of offer, answer and delete from this process to
            the lab's rtpengine, with the options the SBC sends for an SDES
            call (sipshield.edge.media_policy), one call at a time.
  capacity  N concurrent calls set up directly over ng, each bridging plain
            RTP in to SRTP (SDES, AES_CM_128_HMAC_SHA1_80) out, so rtpengine
            encrypts and authenticates every packet; one Python sender sends
            50 packets/s per call (20 ms of PCMU), one receiver counts.  N
            grows until a step loses packets.

Run alone with ``python -m bench.media_bench [--quick]`` from the repository;
bench/run.py imports it (``measure``, ``report_lines``) for bench/REPORT.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import group_cpu_ns
from bench.stats import Spread, percentile
from sipshield.edge.media_policy import PeerMedia, Side, answer_options, plan_offer
from sipshield.lab import stack as sblab
from sipshield.lab.sip_ua import Answering, UserAgent, sdp
from sipshield.lab.stack import group_cpu_seconds
from sipshield.rtpengine import RtpengineClient
from sipshield.sip.sdp import SdpFacts
from tests.integration.lab_fixture import RunningLab

REPO = Path(__file__).resolve().parent.parent
NATIVE_MEDIA = REPO / "bench" / "native-media.cfg"

PPS = 50
# What sipshield's media handling may cost per ng exchange, against the native module's.
TARGET_RATIO = 1.5
# How long a failed call may take to end, before the next round starts.
SETTLE_S = 40.0
# Per SBC, before the rounds: every worker's first messages, TLS, Redis, rtpengine.
WARM_UP_CALLS = 5
# Long enough for every round of a full run: bob registers once per lab.
REGISTRATION_S = 3600
# An offer's SDES line (an offerer picks its own tags).
CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(30)).decode()
ANSWER_SUITE = "AES_CM_128_HMAC_SHA1_80"
ANSWER_KEY = base64.b64encode(bytes(range(30))).decode()


def sdes_answer(offer: str) -> str:
    """The answerer's a=crypto line: it must carry the tag of the offered line it accepts."""
    for line in offer.splitlines():
        if line.startswith("a=crypto:") and f" {ANSWER_SUITE} " in line:
            tag = line.split(":", 1)[1].split()[0]
            return f"a=crypto:{tag} {ANSWER_SUITE} inline:{ANSWER_KEY}"
    raise RuntimeError(f"rtpengine offered no {ANSWER_SUITE}: {offer}")


POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
"""
MEDIA = """\
media:
  rtpengine: {ng: ["127.0.0.1:2223"]}
  users: {srtp: mandatory}
"""


@dataclass(frozen=True)
class Setup:
    """One SBC of the setup measurement."""

    name: str
    title: str
    policy: str
    sbc_config: Path | None  # None: sipshield's kamailio.cfg
    srtp: bool  # SDES offers; without media nothing would anchor them, so plain RTP


SETUPS = (
    Setup("sipshield-srtp", "sipshield, SDES SRTP mandatory", POLICY + MEDIA, None, True),
    Setup("sipshield-no-media", "sipshield, policy without `media:`", POLICY, None, False),
    Setup(
        "native-srtp",
        "native rtpengine module, same ng options",
        POLICY + MEDIA,
        NATIVE_MEDIA,
        True,
    ),
    Setup("native-no-media", "native, same routing without media", POLICY, NATIVE_MEDIA, False),
)
# (who, with media, without media): media handling costs the difference.
COMPARED = (
    ("sipshield", "sipshield-srtp", "sipshield-no-media"),
    ("native rtpengine module", "native-srtp", "native-no-media"),
)


def _percentiles(samples: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "max": max(samples),
    }


def _srtp_answer(offer: str) -> str:
    """The callee's SDP: its a=crypto accepts one of the lines rtpengine offered it."""
    return sdp(4002, "RTP/SAVP", "127.0.0.1", sdes_answer(offer))


class _Parties:
    """alice calling a user over TLS through one lab, registered once for every round.

    After a failed call the callee is another user: the failed call's messages
    may still come, and a binding left behind would have the PBX fork every
    later call to it.
    """

    def __init__(self, lab: RunningLab) -> None:
        self.lab = lab
        self.callees = (u["username"] for u in lab.info["users"] if u["username"] != "alice")
        self.answering: Answering | None = None
        self._open()

    def _open(self) -> None:
        self.callee_name = next(self.callees)
        self.callee = UserAgent(self.lab, self.callee_name, "tls")
        status = self.callee.register(REGISTRATION_S)
        if status != 200:
            raise RuntimeError(
                f"{self.callee_name}'s REGISTER through {self.lab.directory} answered {status}"
            )
        self.caller = UserAgent(self.lab, "alice", "tls")

    def close(self) -> None:
        if self.answering is not None:
            self.answering.done.wait(20)
        with contextlib.suppress(Exception):  # best effort: no call goes to it any more
            self.callee.register(expires=0)
        self.caller.close()
        self.callee.close()

    def reset(self) -> None:
        """Fresh connections and another callee, once the failed call has ended.

        Its transactions time out (the SBC's fr_inv_timer, 30 s) and free its
        media; that happens before the next call, not inside a later round.
        """
        self.close()
        host, _, port = self.lab.info["rtpengine_ng"].rpartition(":")
        client = RtpengineClient([(host, int(port))], timeout=1.0)
        deadline = time.monotonic() + SETTLE_S
        while client.list_calls() and time.monotonic() < deadline:
            time.sleep(0.5)
        client.close()
        self._open()

    def call(self, srtp: bool) -> str | None:
        """One call and its BYE; what went wrong, or None."""
        offer = sdp(4000, "RTP/SAVP", "127.0.0.1", CRYPTO) if srtp else sdp(4000)
        answer = _srtp_answer if srtp else sdp(4002)
        self.answering = answering = self.callee.answer_in_background(answer)
        try:
            call = self.caller.call(self.callee_name, offer)
            if call.reply is None or call.reply.status != 200:
                reply = call.reply.start if call.reply else "nothing"
                return f"INVITE answered {reply} (callee: {answering.error!r})"
            if srtp and "a=crypto:" not in call.reply.body:
                return "no SDES answer reached the caller"
            status = call.bye()
            if status != 200:
                return f"BYE answered {status}"
        except Exception as exc:  # whatever broke, the round reports it
            return f"{type(exc).__name__}: {exc} (callee: {answering.error!r})"
        if not answering.done.wait(5) or answering.error is not None:
            return f"the callee did not finish: {answering.error!r}"
        return None


def _ng_counts(client: RtpengineClient) -> dict[str, int]:
    """rtpengine's ng commands so far, by name (``statistics``, ours, left out), and errors."""
    stats = client.statistics()["controlstatistics"]
    assert isinstance(stats, dict)
    counts = {
        key[5:-5]: int(value)  # type: ignore[arg-type]
        for key, value in stats.items()
        if key.startswith("total") and key.endswith("count") and key != "totalstatscount"
    }
    proxies = stats.get("proxies") or []
    counts["errors"] = sum(int(p.get("errorcount", 0)) for p in proxies)  # type: ignore[union-attr]
    return counts


def _errors_logged(log: Path, offset: int) -> str:
    """The first error lines Kamailio logged past ``offset`` of its log."""
    with contextlib.suppress(OSError), log.open("rb") as fh:
        fh.seek(offset)
        lines = fh.read().decode(errors="replace").splitlines()
        errors = [line.strip()[:200] for line in lines if "ERROR" in line or "CRITICAL" in line]
        if errors:
            return f"; {log.name}: " + " | ".join(errors[:3])
    return ""


def _round(lab: RunningLab, parties: _Parties, setup: Setup, calls: int) -> dict:
    """``calls`` calls through one SBC: its CPU, rtpengine's ng commands, the first failure."""
    host, _, port = lab.info["rtpengine_ng"].rpartition(":")
    client = RtpengineClient([(host, int(port))], timeout=1.0)
    pgid = lab.info["pids"]["sbc"]
    log = Path(lab.info["logs"]["sbc"])
    log_offset = log.stat().st_size
    ng_before = _ng_counts(client)
    cpu_before = group_cpu_ns(pgid)
    done, failure = 0, None
    for n in range(calls):
        problem = parties.call(setup.srtp)
        if problem is not None:
            failure = f"call {n + 1} of {calls}: {problem}"
            break
        done += 1
    cpu_ns = group_cpu_ns(pgid) - cpu_before
    ng_after = _ng_counts(client)
    if failure is not None:
        failure += _errors_logged(log, log_offset)
        parties.reset()
    client.close()
    delta = {name: ng_after[name] - ng_before.get(name, 0) for name in ng_after}
    return {
        "calls": done,
        "cpu_us": cpu_ns / 1e3,
        "ng": {name: n for name, n in delta.items() if n and name != "errors"},
        "ng_errors": delta["errors"],
        "failure": failure,
    }


def _lab(directory: Path, policy: str, sbc_config: Path | None = None) -> RunningLab:
    path = directory / "policy.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(policy)
    lab = sblab.up(path, directory / "lab", sbc_config=sbc_config)
    return RunningLab(lab.directory, lab.info)


def _ng_rtt(ng: str, count: int) -> dict[str, dict[str, float]]:
    host, _, port = ng.rpartition(":")
    client = RtpengineClient([(host, int(port))], timeout=1.0)
    outside = Side(PeerMedia(srtp="mandatory"), outside=True, tls=True)
    inside = Side(PeerMedia(), outside=False, tls=False)
    times: dict[str, list[float]] = {"offer": [], "answer": [], "delete": []}
    offer_sdp = sdp(4000, "RTP/SAVP", "127.0.0.1", CRYPTO)
    for n in range(count):
        call_id = f"bench-{n}-{secrets.token_hex(4)}"
        options = plan_offer(SdpFacts.parse(offer_sdp), outside, inside).options
        t0 = time.perf_counter()
        client.offer(offer_sdp, call_id, "ft", options)
        t1 = time.perf_counter()
        client.answer(sdp(4002), call_id, "ft", "tt", answer_options(inside, outside))
        t2 = time.perf_counter()
        client.delete(call_id, delete_delay=0)
        t3 = time.perf_counter()
        times["offer"].append((t1 - t0) * 1e6)
        times["answer"].append((t2 - t1) * 1e6)
        times["delete"].append((t3 - t2) * 1e6)
    client.close()
    return {name: _percentiles(samples) for name, samples in times.items()}


def _capacity_step(ng: str, rtpengine_pgid: int, calls: int, seconds: float) -> dict[str, float]:
    host, _, port = ng.rpartition(":")
    client = RtpengineClient([(host, int(port))], timeout=2.0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    receiver.bind(("127.0.0.1", 0))
    # bridge: SRTP (SDES) on the outside leg, plain RTP inside, which is what a
    # plain-RTP sender can feed; under "mandatory" the inside leg is DTLS-SRTP.
    srtp_out = Side(PeerMedia(srtp="bridge"), outside=True, tls=True)
    inside = Side(PeerMedia(), outside=False, tls=False)
    targets, ids = [], []
    a_sdp = sdp(sender.getsockname()[1])
    for n in range(calls):
        call_id = f"cap-{n}-{secrets.token_hex(4)}"
        ids.append(call_id)
        options = plan_offer(SdpFacts.parse(a_sdp), inside, srtp_out).options
        offered = client.offer(a_sdp, call_id, "a", options).sdp
        b_sdp = sdp(receiver.getsockname()[1], "RTP/SAVP", "127.0.0.1", sdes_answer(offered))
        answered = client.answer(b_sdp, call_id, "a", "b", answer_options(srtp_out, inside)).sdp
        if "RTP/SAVP" not in offered:
            raise RuntimeError(f"rtpengine did not offer SRTP: {offered}")
        targets.append(("127.0.0.1", int(answered.split("m=audio ")[1].split()[0])))
    received = 0
    stop = threading.Event()

    def receive() -> None:
        nonlocal received
        receiver.settimeout(0.2)
        while not stop.is_set():
            try:
                receiver.recv(2048)
                received += 1
            except TimeoutError:
                pass

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    payload = b"\xff" * 160
    sent = 0
    cpu_before = group_cpu_seconds(rtpengine_pgid)
    start = time.monotonic()
    ticks = int(seconds * PPS)
    late = 0
    for tick in range(ticks):
        header_seq = tick.to_bytes(2, "big") + (tick * 160).to_bytes(4, "big")
        for n, target in enumerate(targets):
            sender.sendto(b"\x80\x00" + header_seq + (n + 1).to_bytes(4, "big") + payload, target)
            sent += 1
        wait = start + (tick + 1) / PPS - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            late += 1
    elapsed = time.monotonic() - start
    time.sleep(0.5)
    cpu = group_cpu_seconds(rtpengine_pgid) - cpu_before
    stop.set()
    thread.join()
    for call_id in ids:
        client.delete(call_id, delete_delay=0)
    for sock in (sender, receiver):
        sock.close()
    client.close()
    return {
        "calls": calls,
        "sent": sent,
        "received": received,
        "rate": sent / elapsed,
        "sender_late_ticks": late / ticks,
        "rtpengine_cores": cpu / elapsed,
    }


def _setup_rounds(labs: dict[str, RunningLab], rounds: int, calls: int) -> dict[str, list[dict]]:
    """Interleaved rounds through every SBC; per SBC, its rounds in order."""
    parties = {}
    try:
        for setup in SETUPS:
            party = parties[setup.name] = _Parties(labs[setup.name])
            for _ in range(WARM_UP_CALLS):
                if party.call(setup.srtp) is not None:
                    party.reset()  # the rounds report what keeps failing
        records: dict[str, list[dict]] = {setup.name: [] for setup in SETUPS}
        for _ in range(rounds):
            for setup in SETUPS:
                lab = labs[setup.name]
                records[setup.name].append(_round(lab, parties[setup.name], setup, calls))
        return records
    finally:
        for party in parties.values():
            party.close()


def measure(quick: bool) -> dict:
    rounds, calls = (5, 30) if quick else (7, 100)
    steps = (25, 50, 100) if quick else (50, 100, 200, 400, 800)
    seconds = 3.0 if quick else 8.0
    result: dict = {"calls": calls, "rounds": rounds, "seconds": seconds, "cores": os.cpu_count()}
    labs: dict[str, RunningLab] = {}
    with tempfile.TemporaryDirectory(prefix="media-bench-") as tmp:
        try:
            for setup in SETUPS:
                labs[setup.name] = _lab(Path(tmp) / setup.name, setup.policy, setup.sbc_config)
            result["setup"] = _setup_rounds(labs, rounds, calls)
            # The rest runs against sipshield's SRTP lab alone.
            for name in [name for name in labs if name != "sipshield-srtp"]:
                sblab.down(labs.pop(name).directory)
            lab = labs["sipshield-srtp"]
            result["ng"] = _ng_rtt(lab.info["rtpengine_ng"], calls * 5)
            pgid = lab.info["pids"]["rtpengine"]
            result["capacity"] = []
            # A bridged call holds 4 ports (RTP and RTCP on each leg); steps
            # beyond the lab's port range would measure the range, not rtpengine.
            low, high = lab.info["rtp_ports"]
            result["port_limit"] = (high - low + 1) // 4 - 10
            for n in (n for n in steps if n <= result["port_limit"]):
                step = _capacity_step(lab.info["rtpengine_ng"], pgid, n, seconds)
                result["capacity"].append(step)
                if step["received"] < step["sent"] or step["sender_late_ticks"] > 0.05:
                    break
        finally:
            for lab in labs.values():
                sblab.down(lab.directory)
    return result


def _per_call(record: dict) -> tuple[float, float] | None:
    """(SBC CPU µs, ng exchanges) per call of one round; None when a call failed."""
    if record["failure"] is not None or not record["calls"]:
        return None
    return record["cpu_us"] / record["calls"], sum(record["ng"].values()) / record["calls"]


def _spread(values: list[float], rounds: int, digits: int = 0) -> str:
    """Median (min-max) of the ``values`` that ``rounds`` rounds gave (failed ones give none)."""
    spread = Spread.of(values)
    if spread is None:
        return "no round without failures"
    text = spread.text(digits)
    return text if spread.count == rounds else f"{text}, {spread.count} of {rounds} rounds"


def _ng_breakdown(records: list[dict]) -> str:
    """ng exchanges per call over the rounds without failures, by command."""
    calls = sum(r["calls"] for r in records if r["failure"] is None)
    totals: dict[str, int] = {}
    for record in records:
        if record["failure"] is None:
            for name, n in record["ng"].items():
                totals[name] = totals.get(name, 0) + n
    if not calls or not totals:
        return "0"
    parts = ", ".join(f"{n / calls:g} {name}" for name, n in sorted(totals.items()))
    return f"{sum(totals.values()) / calls:g} ({parts})"


def _media_cost(setup: dict[str, list[dict]]) -> dict[str, list[float | None]]:
    """Per round, what media handling adds per ng exchange (µs), for each of COMPARED.

    Rounds are paired: the SBC with media and the one without ran one after
    the other.  None where either had a failed call.
    """
    out: dict[str, list[float | None]] = {}
    for who, with_media, without in COMPARED:
        out[who] = []
        for a, b in zip(setup[with_media], setup[without], strict=True):
            pa, pb = _per_call(a), _per_call(b)
            out[who].append(
                None if pa is None or pb is None or not pa[1] else (pa[0] - pb[0]) / pa[1]
            )
    return out


def report_lines(result: dict) -> list[str]:
    """A Markdown section for bench/REPORT.md."""
    setup, rounds = result["setup"], result["rounds"]
    lines = [
        "## Media: the cost of an SRTP call",
        "",
        "| SBC | ng exchanges per call (rtpengine's count) | SBC CPU per call (µs) "
        "| SBC CPU per ng exchange (µs) |",
        "|---|---|---:|---:|",
    ]
    for config in SETUPS:
        records = setup[config.name]
        known = [p for p in map(_per_call, records) if p is not None]
        per_exchange = [cpu / ng for cpu, ng in known if ng]
        lines.append(
            f"| {config.title} | {_ng_breakdown(records)} "
            f"| {_spread([cpu for cpu, _ in known], rounds)} "
            f"| {_spread(per_exchange, rounds) if per_exchange else 'n/a'} |"
        )
    cost = _media_cost(setup)
    (ours, ours_cost), (native, native_cost) = cost.items()
    ratios = [a / b for a, b in zip(ours_cost, native_cost, strict=True) if a is not None and b]
    ours_known = [c for c in ours_cost if c is not None]
    native_known = [c for c in native_cost if c is not None]
    lines += [
        "",
        f"| media handling adds, per ng exchange (µs) | {ours} | {native} | ratio |",
        "|---|---:|---:|---:|",
        f"| (with media - without) / ng exchanges | {_spread(ours_known, rounds)} "
        f"| {_spread(native_known, rounds)} | {_spread(ratios, rounds, 2)} |",
    ]
    if ratios:
        median = statistics.median(ratios)
        verdict = "met" if median <= TARGET_RATIO else "not met"
        lines += [
            "",
            f"Target: media handling per ng exchange at most {TARGET_RATIO}x the native"
            f" module's; {verdict} (median ratio {median:.2f}).",
        ]
    failures = [
        f"- {name}, round {n + 1}: {record['failure']}"
        for name, records in setup.items()
        for n, record in enumerate(records)
        if record["failure"] is not None
    ] + [
        f"- {name}, round {n + 1}: rtpengine counted {record['ng_errors']} ng errors"
        for name, records in setup.items()
        for n, record in enumerate(records)
        if record["ng_errors"]
    ]
    if failures:
        lines += ["", "Rounds with failures (no cost counted for them):", "", *failures]
    lines += [
        "",
        "| ng command | p50 (µs) | p90 (µs) | p99 (µs) | max (µs) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, p in result["ng"].items():
        lines.append(
            f"| {name} | {p['p50']:.0f} | {p['p90']:.0f} | {p['p99']:.0f} | {p['max']:.0f} |"
        )
    lines += [
        "",
        "| concurrent SRTP calls | packets/s | sent | received | lost | rtpengine CPU (cores) "
        "| sender late ticks |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sustained = 0
    for step in result["capacity"]:
        lost = step["sent"] - step["received"]
        if lost == 0 and step["sender_late_ticks"] <= 0.05:
            sustained = step["calls"]
        lines.append(
            f"| {step['calls']} | {step['rate']:.0f} | {step['sent']} | {step['received']} "
            f"| {lost} | {step['rtpengine_cores']:.2f} | {100 * step['sender_late_ticks']:.0f}% |"
        )
    last = result["capacity"][-1]
    limit = (
        "the last step lost packets"
        if last["received"] < last["sent"]
        else "the Python sender fell behind"
        if last["sender_late_ticks"] > 0.05
        else "no step lost packets: the capacity is higher than the largest step, which the"
        f" lab's port range bounds at {result.get('port_limit', '?')} calls"
    )
    lines += [
        "",
        f"CPU per call: {result['rounds']} interleaved rounds of {result['calls']} sequential"
        " calls between two TLS users through each SBC and its lab PBX (INVITE, 407, INVITE,"
        " 180, 200, ACK, BYE; each call crosses the SBC twice, one rtpengine call per"
        " crossing), the four SBCs up at once; CPU time of every task of the SBC's Kamailio"
        " (/proc/PID/task/TID/schedstat) divided by the calls, median (min-max) over the"
        " rounds.  ng exchanges are the commands the lab's rtpengine counted (its ng"
        " `statistics`) over the round.  Native: bench/native-media.cfg, Kamailio's"
        " rtpengine module sending the ng options sipshield sends for this call; without"
        " media, the same routing.  Media handling per ng exchange pairs each round with"
        " media with the round without that ran next to it.  ng: round trips from a Python"
        " client to the lab's rtpengine over loopback, with the options the SBC sends for"
        " an SDES call.  Capacity: calls set up directly over"
        " ng, each bridging plain RTP in to SDES SRTP (AES_CM_128_HMAC_SHA1_80) out, one"
        f" Python sender at {PPS} packets/s per call for {result['seconds']:.0f} s per step;"
        f" userspace rtpengine sustained **{sustained}** concurrent SRTP calls without loss"
        f" ({limit}).  Sender, receiver and rtpengine share {result['cores']} cores.",
        "",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, three small steps")
    args = parser.parse_args()
    print("\n".join(report_lines(measure(args.quick))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
