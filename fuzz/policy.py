"""The fuzz lab's policy: the example policy, every module on, no limit the fuzz can reach.

The point is that every module judges every message.  With the example's
limits the sender would be rate-limited and then banned within seconds, and
the rest of the run would measure the ban.  So, read from
kamailio-cfg/policy.example.yaml at run time (a module added there is fuzzed
too):
  - every module stays, in its order; one that is off is switched to enforce;
  - the modules that count per source or sender in a window (flood,
    scanner, brute_force, spit, presence_privacy's sweeps) keep running
    with limits no run reaches;
  - a ban lasts one second (a scanner User-Agent among the seeds still bans,
    and the bans module enforces it, but the sender is not silenced);
  - ip_controls allows and denies nothing (an allowed source skips the checks).
The senders spread over many loopback addresses as well (fuzz.sender).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "kamailio-cfg" / "policy.example.yaml"
UNREACHABLE = 10**9
# module name -> settings laid over the example's
MODULE_OVERRIDES: dict[str, dict[str, Any]] = {
    "flood": {
        "limits": dict.fromkeys(("register", "invite", "options", "other"), UNREACHABLE),
        "global_limit": None,
    },
    "scanner": {"max_distinct_failed_users": UNREACHABLE, "max_failures": UNREACHABLE},
    "brute_force": {"max_failures_per_user": UNREACHABLE, "max_failures_per_source": UNREACHABLE},
    "ip_controls": {"allow": [], "deny": []},
    "spit": dict.fromkeys(
        ("max_messages", "max_recipients", "max_recipients_per_body", "max_first_contacts"),
        UNREACHABLE,
    ),
    "presence_privacy": {"max_presentities": UNREACHABLE},
}
BANS = {"base_ttl_s": 1, "escalation_factor": 1.0, "max_ttl_s": 1}


def fuzz_policy(example: Path = EXAMPLE) -> tuple[dict[str, Any], list[str]]:
    """The fuzz policy as data, and what was changed from ``example`` (for the report)."""
    policy = yaml.safe_load(example.read_text())
    changes = [f"bans: {BANS}"]
    policy["bans"] = {**policy.get("bans", {}), **BANS}
    for entry in policy.get("modules", []):
        name = entry.get("name")
        if entry.get("mode") == "off":
            entry["mode"] = "enforce"
            changes.append(f"{name}: mode off -> enforce")
        overrides = MODULE_OVERRIDES.get(name, {})
        if overrides:
            entry.update(overrides)
            changes.append(f"{name}: {overrides}")
    return policy, changes


def write_fuzz_policy(path: Path, example: Path = EXAMPLE) -> list[str]:
    """Write the fuzz policy to ``path``; return what was changed from ``example``."""
    policy, changes = fuzz_policy(example)
    header = f"# The fuzz lab's policy, made by fuzz.policy from {example.name}:\n"
    header += "".join(f"#   {change}\n" for change in changes)
    path.write_text(header + yaml.safe_dump(policy, sort_keys=False))
    return changes


def module_names(policy: dict[str, Any]) -> list[str]:
    return [entry.get("name", "?") for entry in policy.get("modules", [])]
