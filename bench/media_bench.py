"""The cost of SRTP calls: ng round trips, SBC CPU per call, rtpengine's SRTP capacity.

Three measurements, each against a real lab (sipshield.lab):

  setup     ``calls`` sequential calls between two TLS users (INVITE, 407,
            INVITE, 180, 200, ACK, BYE through the SBC and the lab PBX, each
            call crossing the SBC twice), under a policy where SRTP (SDES) is
            mandatory for users, then the same flow under the same policy
            without its ``media:`` section (plain RTP offers).  The SBC's
            Kamailio CPU (user + system, every process of its group) over the
            calls, divided by the calls.
  ng        round-trip times of offer, answer and delete from this process to
            the lab's rtpengine, with the options the SBC sends for an SDES
            call (sipshield.edge.media_policy), one call at a time.
  capacity  N concurrent calls set up directly over ng, each bridging plain
            RTP in to SRTP (SDES, AES_CM_128_HMAC_SHA1_80) out, so rtpengine
            encrypts and authenticates every packet; one Python sender sends
            50 packets/s per call (20 ms of PCMU), one receiver counts.  N
            grows until a step loses packets.

Run alone with ``python -m bench.media_bench [--quick]`` from the repository;
bench/run.py imports it for bench/REPORT.md.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from sipshield.edge.media_policy import PeerMedia, Side, answer_options, plan_offer
from sipshield.lab import stack as sblab
from sipshield.lab.stack import group_cpu_seconds
from sipshield.rtpengine import RtpengineClient
from sipshield.sip.sdp import SdpFacts
from tests.integration.lab_fixture import RunningLab
from tests.integration.sip_ua import UserAgent, sdp

REPO = Path(__file__).resolve().parent.parent

PPS = 50
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


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1]}


def _calls(lab: RunningLab, count: int, srtp: bool) -> float:
    """SBC CPU µs per call for ``count`` sequential calls alice -> bob over TLS."""
    callee = UserAgent(lab, "bob", "tls")
    assert callee.register() == 200
    caller = UserAgent(lab, "alice", "tls")
    offer = (lambda: sdp(4000, "RTP/SAVP", "127.0.0.1", CRYPTO)) if srtp else (lambda: sdp(4000))
    # The answer's a=crypto accepts one of the lines rtpengine offered the callee.
    answer = (lambda o: sdp(4002, "RTP/SAVP", "127.0.0.1", sdes_answer(o))) if srtp else sdp(4002)
    pgid = lab.info["pids"]["sbc"]
    before = group_cpu_seconds(pgid)
    for _ in range(count):
        answering = callee.answer_in_background(answer)
        call = caller.call("bob", offer())
        answering.wait()
        if call.reply is None or call.reply.status != 200:
            raise RuntimeError(f"call failed: {call.reply}")
        if srtp and "a=crypto:" not in call.reply.body:
            raise RuntimeError(f"no SDES answer reached the caller: {call.reply.body}")
        if call.bye() != 200:
            raise RuntimeError("BYE failed")
        answering.done.wait(5)
    cpu = group_cpu_seconds(pgid) - before
    caller.close()
    callee.close()
    return cpu / count * 1e6


def _lab(directory: Path, policy: str) -> RunningLab:
    path = directory / "policy.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(policy)
    lab = sblab.up(path, directory / "lab")
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


def measure(quick: bool) -> dict:
    calls = 20 if quick else 100
    steps = (25, 50, 100) if quick else (50, 100, 200, 400, 800)
    seconds = 3.0 if quick else 8.0
    result: dict = {"calls": calls, "seconds": seconds, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="media-bench-") as tmp:
        for name, policy in (("srtp", POLICY + MEDIA), ("no_media", POLICY)):
            lab = _lab(Path(tmp) / name, policy)
            try:
                _calls(lab, 3, srtp=name == "srtp")  # warm-up: workers, TLS, Redis
                result[f"cpu_us_{name}"] = _calls(lab, calls, srtp=name == "srtp")
                if name == "srtp":
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
                sblab.down(lab.directory)
    return result


def report_lines(result: dict) -> list[str]:
    """A Markdown section for bench/REPORT.md."""
    srtp, plain = result["cpu_us_srtp"], result["cpu_us_no_media"]
    lines = [
        "## Media: the cost of an SRTP call",
        "",
        "| call flow | SBC Kamailio CPU per call (µs) |",
        "|---|---:|",
        f"| SDES SRTP mandatory, anchored in rtpengine | {srtp:.0f} |",
        f"| same flow, policy without `media:` | {plain:.0f} |",
        f"| media handling adds | {srtp - plain:.0f} ({100 * (srtp - plain) / plain:.0f}%) |",
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
        f"CPU per call: {result['calls']} sequential calls between two TLS users through the"
        " SBC and the lab PBX (INVITE, 407, INVITE, 180, 200, ACK, BYE; each call crosses"
        " the SBC twice, so rtpengine gets two offers, two answers and two deletes), user +"
        " system time of every SBC Kamailio process (/proc/PID/stat) divided by the calls."
        "  ng: round trips from a Python client to the lab's rtpengine over loopback, with"
        " the options the SBC sends for an SDES call.  Capacity: calls set up directly over"
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
