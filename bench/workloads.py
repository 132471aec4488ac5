"""The SIP flows the benchmarks send with SIPp, and what one run of them did.

A flow is a SIPp scenario (tests/sipp/) and the number of SIP requests the
SBC handles for each call of it that succeeds; a run's handled requests are
SIPp's own count of successful calls times that number, never the calls asked
for.  Every SIPp runs on the load core (bench.cpu).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.cpu import LOAD_CPU_LIST
from sipshield.lab.sipp import SippResult, SippServer, run_sipp

CALLER, CALLEE = "alice", "bob"
TALK_MS = 100
# The callee stays registered for the whole benchmark.
CALLEE_EXPIRES_S = 7200


@dataclass(frozen=True)
class Flow:
    name: str
    scenario: str
    # SIP requests the SBC handles per successful call.
    requests: int
    authenticated: bool = False
    # A callee (SIPp's ``callee`` scenario, registered as CALLEE) answers.
    answered: bool = False
    callee: str = "call_uas"
    # A call to this number instead, out through the lab's carrier, which answers.
    number: str = ""


# Through a lab: the PBX challenges, and each call crosses the SBC twice.
LAB_FLOWS = (
    # OPTIONS to the SBC itself
    Flow("options", "options", 1),
    # REGISTER, 401, REGISTER with credentials, 200
    Flow("register", "register", 2, authenticated=True),
    # From the caller INVITE, ACK (of the 407), INVITE, ACK, BYE; from the PBX
    # towards the callee INVITE, ACK, BYE.
    Flow("call", "call_uac", 8, authenticated=True, answered=True),
)


@dataclass(frozen=True)
class Endpoint:
    """Where a flow goes: the SBC's address, the SIP domain, the users' passwords."""

    target: str
    domain: str
    callee_port: int
    passwords: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FlowResult:
    calls: int
    successful: int
    failed: int
    elapsed_s: float
    response_times_ms: tuple[float, ...]
    # SIPp's account of the failures, when there were any.
    problem: str = ""


def register_callee(endpoint: Endpoint) -> None:
    """Register CALLEE from ``endpoint.callee_port``, where each call run's callee listens."""
    password = endpoint.passwords.get(CALLEE)
    result = run_sipp(
        "register" if password else "register_noauth",
        endpoint.target,
        service=CALLEE,
        local_port=endpoint.callee_port,
        auth=(CALLEE, password) if password else None,
        keys={"domain": endpoint.domain, "expires": str(CALLEE_EXPIRES_S)},
    )
    if not result.ok:
        raise RuntimeError(
            f"{endpoint.target}: the callee's registration failed\n{result.explain()}"
        )


def run_flow(
    endpoint: Endpoint, flow: Flow, calls: int, rate: float, recv_timeout_ms: int = 5000
) -> FlowResult:
    keys = {"domain": endpoint.domain}
    auth = (CALLER, endpoint.passwords[CALLER]) if flow.authenticated else None
    options = {
        "calls": calls,
        "rate": rate,
        "timeout_s": int(calls / rate) + 30,
        "recv_timeout_ms": recv_timeout_ms,
        "cpus": LOAD_CPU_LIST,
        "auth": auth,
    }
    if flow.number:
        keys |= {"caller": CALLER}
        result = run_sipp(
            flow.scenario,
            endpoint.target,
            service=flow.number,
            talk_ms=TALK_MS,
            keys=keys,
            **options,
        )
        return _outcome(result, calls)
    if not flow.answered:
        result = run_sipp(flow.scenario, endpoint.target, service=CALLER, keys=keys, **options)
        return _outcome(result, calls)
    callee = SippServer(
        flow.callee,
        local_port=endpoint.callee_port,
        calls=calls,
        keys=keys,
        cpus=LOAD_CPU_LIST,
        timeout_s=options["timeout_s"],
    )
    caller = run_sipp(
        flow.scenario,
        endpoint.target,
        service=CALLEE,
        talk_ms=TALK_MS,
        keys={**keys, "caller": CALLER},
        **options,
    )
    # When every call went through, the callee ends by itself after its last
    # BYE; otherwise it waits for calls that never come.
    answered = callee.finish(timeout_s=30 if caller.ok else 2)
    if caller.ok and not answered.ok:
        # The caller's calls succeeded, yet the callee saw something wrong.
        return _outcome(caller, calls, extra_failed=max(answered.failed, 1), also=answered)
    return _outcome(caller, calls)


def _outcome(
    result: SippResult, calls: int, extra_failed: int = 0, also: SippResult | None = None
) -> FlowResult:
    failed = result.failed + extra_failed
    if result.returncode != 0 and failed == 0:
        # SIPp itself failed (it could not start, or hit its global timeout).
        failed = max(calls - result.successful, 1)
    problem = ""
    if failed:
        # SIPp's error log names the message it did not expect; its screen only counts.
        shown = also or result
        problem = (
            f"sipp exit {shown.returncode}, {shown.successful} ok, {shown.failed} failed\n"
            + (shown.errors[-1500:] or shown.output[-1000:])
        )
    return FlowResult(
        calls=calls,
        successful=result.successful,
        failed=failed,
        elapsed_s=result.elapsed_s,
        response_times_ms=result.response_times_ms,
        problem=problem,
    )
