"""What the benchmark compares: each configuration of the SBC, and which against which.

Every configuration is a full lab (``sipshield lab up``: SBC, PBX, Redis,
rtpengine on loopback); only its SBC differs.  sipshield's run the reference
kamailio-cfg/kamailio.cfg with a benchmark policy; the others replace it with
a configuration of this directory (their lab still has a policy, which only
places the PBX).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
POLICIES = BENCH / "policies"
# The Python floor's KEMI script, named to python-floor.cfg by the environment.
FLOOR_SCRIPT_VARIABLE = "SIPSHIELD_BENCH_FLOOR_SCRIPT"


@dataclass(frozen=True)
class Target:
    name: str
    policy: Path
    # None: sipshield's own kamailio.cfg; otherwise the configuration that replaces it.
    sbc_config: Path | None
    summary: str
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def uses_redis(self) -> bool:
        """Only sipshield talks to the lab's Redis; the others leave it idle."""
        return self.sbc_config is None


def _native(name: str, summary: str) -> Target:
    return Target(name, POLICIES / "sipshield-validation.yaml", BENCH / f"{name}.cfg", summary)


def _sipshield(name: str, summary: str) -> Target:
    return Target(name, POLICIES / f"{name}.yaml", None, summary)


NATIVE_MINIMAL = "native-minimal"
PYTHON_FLOOR = "python-floor"
FLOORS = (NATIVE_MINIMAL, PYTHON_FLOOR)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        _native(
            NATIVE_MINIMAL,
            "Kamailio alone: maxfwd, sanity_check and sl_send_reply answer OPTIONS;"
            " the rest is relayed without NAT handling or reply route",
        ),
        Target(
            PYTHON_FLOOR,
            POLICIES / "sipshield-validation.yaml",
            BENCH / "python-floor.cfg",
            "a KEMI script that only calls KSR.sl.sl_send_reply for OPTIONS and routes"
            " the rest as native-reference does, with no check",
            {FLOOR_SCRIPT_VARIABLE: str(BENCH / "python_floor.py")},
        ),
        _native(
            "native-reference", "sipshield's routing in Kamailio's language, with sanity_check"
        ),
        _native(
            "native-protection",
            "native-reference plus deny list, htable bans, request counts per source"
            " and method, scanner User-Agents and reply counting",
        ),
        _sipshield("sipshield-validation", "validation"),
        _sipshield(
            "sipshield-protection", "ip_controls, bans, validation, flood, scanner, brute_force"
        ),
        _sipshield(
            "sipshield-dialog", "validation, dialog_guard tokens, cancel and registration guards"
        ),
        _sipshield("sipshield-dialog-records", "sipshield-dialog with dialog records in Redis"),
    )
}


@dataclass(frozen=True)
class Comparison:
    title: str
    ours: str
    native: str
    # What the native equivalent does not do that sipshield does (for the notes).
    gap: str


COMPARISONS = (
    Comparison(
        "validation vs sanity_check",
        "sipshield-validation",
        "native-reference",
        "sanity_check judges less than validation (sipshield.checks.validation).",
    ),
    Comparison(
        "signalling protection vs its native equivalent",
        "sipshield-protection",
        "native-protection",
        "the native counts (requests, failed authentications, sweeps) and bans live in"
        " this node's htable; sipshield's are shared through Redis (flood's merged from"
        " each node's counts every 200 ms).",
    ),
    Comparison(
        "hijack defences vs sanity_check",
        "sipshield-dialog",
        "native-reference",
        "Kamailio has no equivalent of signed dialog tokens or the CANCEL and"
        " registration guards: the native side only routes and runs sanity_check.",
    ),
    Comparison(
        "hijack defences with dialog records vs sanity_check",
        "sipshield-dialog-records",
        "native-reference",
        "as above, and no equivalent of the dialog records (CSeq per side in Redis).",
    ),
)

# Capacity is stepped for these only (it is the costly measurement).
CAPACITY = {
    "options": (NATIVE_MINIMAL, PYTHON_FLOOR, "sipshield-protection", "native-protection"),
    "call": ("sipshield-protection", "native-protection"),
}
# (workload, configuration, reference): the capacity ratios the report shows.
CAPACITY_RATIOS = (
    ("options", PYTHON_FLOOR, NATIVE_MINIMAL),
    ("options", "sipshield-protection", NATIVE_MINIMAL),
    ("options", "sipshield-protection", PYTHON_FLOOR),
    ("options", "sipshield-protection", "native-protection"),
    ("call", "sipshield-protection", "native-protection"),
)
# The lab that writes per-module times (SIPSHIELD_STAGE_TIMES): a copy of this
# configuration, apart from the cost labs so the timing never touches their figures.
STAGE_TIMED = "sipshield-protection"
STAGE_LAB = f"{STAGE_TIMED}+stage-times"
