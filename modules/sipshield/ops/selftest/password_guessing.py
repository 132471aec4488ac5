"""Password guessing: REGISTER with wrong passwords for a real account, and the time to a ban.

Each guess answers the PBX's challenge with a wrong password, as a cracking
tool does.  The guessing is stopped when a guess goes unanswered (the ban
drops it) or is refused differently from the first ones; the evidence says
after how many guesses and how long.  The ban is on the account from the
attacker's address only, so the account keeps working from its own.
"""

from __future__ import annotations

import secrets
import time

from sipshield.checks.brute_force import BruteForceConfig
from sipshield.core.policy import Policy
from sipshield.ops.selftest.attack import (
    Attack,
    Expectation,
    NotRunnable,
    Outcome,
    enforced,
    module,
)
from sipshield.ops.selftest.target import Context

# Guesses past the policy's limit before the attack gives up.
EXTRA_GUESSES = 3
GUESS_TIMEOUT_S = 2.0


class PasswordGuessing(Attack):
    name = "password-guessing"
    summary = "wrong passwords for a real account until it is banned (time to ban)"
    needs = ("accounts",)
    fresh_source = True
    leaves = "a ban on the test account from its source (brute_force) for bans.base_ttl_s"

    def expect(self, policy: Policy) -> Expectation:
        entry, phrase = enforced(policy, "brute_force")
        if entry is None:
            return Expectation(False, phrase)
        return Expectation(True, f"{phrase}: {entry.max_failures_per_user} failures per user")

    def run(self, ctx: Context) -> Outcome:
        entry = module(ctx.policy, "brute_force")
        settings = entry if isinstance(entry, BruteForceConfig) else BruteForceConfig()
        phone = ctx.phone(ctx.target.accounts[0], ip=ctx.attacker)
        codes: list[int | None] = []
        started = last_answer = time.monotonic()
        try:
            for _ in range(settings.max_failures_per_user + EXTRA_GUESSES):
                try:
                    codes.append(phone.register(password=secrets.token_hex(6)))
                except TimeoutError:
                    codes.append(None)
                    break
                last_answer = time.monotonic()
                if codes[-1] != codes[0]:
                    break
        finally:
            phone.close()
        elapsed = last_answer - started
        if codes[0] is None:
            raise NotRunnable("the first guess got no answer")
        if codes[0] == 200:
            raise NotRunnable("a random password was accepted: check the test account")
        stopped = codes[-1] is None or codes[-1] != codes[0]
        if not stopped:
            return Outcome(False, f"{len(codes)} guesses, every one answered {codes[0]}")
        return Outcome(
            True,
            f"guess #{len(codes)} {'unanswered' if codes[-1] is None else f'got {codes[-1]}'} "
            f"after {len(codes) - 1} answered {codes[0]}; {elapsed:.1f}s to ban",
        )
