"""What an attack is: what it expects from a policy, what it does, what it leaves behind."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

from sipshield.core.policy import Policy
from sipshield.ops.selftest.target import Context

Need = Literal["accounts", "tls"]


@dataclass(frozen=True)
class Expectation:
    """What the policy says should happen: ``stopped`` or not, and why."""

    stopped: bool
    because: str


@dataclass(frozen=True)
class Outcome:
    """What happened on the wire: ``stopped`` or not, with the evidence."""

    stopped: bool
    evidence: str


class NotRunnable(Exception):
    """The attack could not be carried out here (say why); it is reported as skipped."""


class Attack(ABC):
    """One attack.  Subclasses set the class attributes and the two methods."""

    name: str
    summary: str
    # What the attack leaves on the target (bans on its source, counts, calls).
    leaves: str = "nothing"
    # True when it leaves a ban or counts behind: it gets a source of its own.
    fresh_source: bool = False
    needs: tuple[Need, ...] = ()

    @abstractmethod
    def expect(self, policy: Policy) -> Expectation: ...

    @abstractmethod
    def run(self, ctx: Context) -> Outcome: ...


def module(policy: Policy, name: str) -> Any | None:
    """The policy's entry for a module, or None when it is not listed."""
    return next((m for m in policy.modules if m.name == name), None)


def enforced(policy: Policy, name: str) -> tuple[Any | None, str]:
    """The module's entry when it enforces (else None), and a phrase saying which it is."""
    entry = module(policy, name)
    if entry is None:
        return None, f"{name} is not in the policy"
    if entry.mode == "off":
        return None, f"{name} is off"
    if entry.mode != "enforce":
        return None, f"{name} is in {entry.mode} mode"
    return entry, f"{name} enforces"


def expect_enforced(policy: Policy, name: str, how: str = "") -> Expectation:
    """Stopped when the module enforces (``how`` says how it stops the attack)."""
    entry, phrase = enforced(policy, name)
    if entry is None:
        return Expectation(False, phrase)
    return Expectation(True, f"{phrase}: {how}" if how else phrase)
