"""The attacks mixed into the soak: one every so often, each kind in turn.

  scanner sweep      OPTIONS across extensions (options_sweep) with sipvicious'
                     User-Agent, "friendly-scanner", from three addresses never
                     seen before: scanners on the internet come from ever new
                     addresses, so whatever sipshield keeps per banned address
                     must not pile up;
  INVITE flood       invite_flood, far past the flood limit;
  password guessing  wrong passwords for dave (register_many);
  malformed          every validation sample that must be refused (soak.malformed);
  REGISTER flood     register_flood.

Floods, guessing and malformed messages come from small pools of addresses
that return (three per kind, in turn), as a botnet's do: their bans escalate
(the soak policy doubles each repeat, up to four minutes) and expire before
they come back.  After each attack that must be banned, Redis is asked
whether the ban is there.  Every attacker is on loopback (127.0.0.x and
127.0.N.x), never 127.0.0.1, where the legitimate users are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

from bench.labs import BenchLab
from sipshield.lab.sipp import credentials_file, run_sipp
from soak.malformed import refused_samples, send_round

SCANNER_USER_AGENT = "friendly-scanner"
SCANNERS_PER_SWEEP = 3
SWEEP_PROBES = 20
FLOOD_REQUESTS, FLOOD_RATE = 400, 100
GUESSES, GUESS_RATE = 20, 10
GUESSED_USER = "dave"
POOLS = {
    "INVITE flood": ("127.0.0.111", "127.0.0.112", "127.0.0.113"),
    "password guessing": ("127.0.0.121", "127.0.0.122", "127.0.0.123"),
    "malformed": ("127.0.0.131", "127.0.0.132", "127.0.0.133"),
    "REGISTER flood": ("127.0.0.141", "127.0.0.142", "127.0.0.143"),
}
ORDER = ("scanner sweep", "INVITE flood", "password guessing", "malformed", "REGISTER flood")


def fresh_address(n: int) -> str:
    """The n-th never-seen scanner address: 127.0.1.1, 127.0.1.2, ... 127.0.1.250, 127.0.2.1."""
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


@dataclass
class Attack:
    kind: str
    sources: list[str]
    # Seconds since the soak's load started.
    at_s: float
    seconds: float = 0.0
    sent: int = 0
    # Scopes that must be banned after it, and those that were.
    expected_bans: list[str] = field(default_factory=list)
    bans: list[str] = field(default_factory=list)
    # Anything that did not go as the attack expects (malformed answers).
    unexpected: list[str] = field(default_factory=list)

    @property
    def missed_bans(self) -> list[str]:
        return [scope for scope in self.expected_bans if scope not in self.bans]

    def as_json(self) -> dict:
        return {**asdict(self), "missed_bans": self.missed_bans}


class AttackSchedule:
    """A thread that runs one attack every ``every_s`` seconds until stopped."""

    def __init__(self, lab: BenchLab, every_s: float, started: float, workdir: Path) -> None:
        self.lab, self.every_s, self.started = lab, every_s, started
        self.target = lab.endpoint.target
        self.domain = lab.endpoint.domain
        self.redis = redis.Redis.from_url(lab.info["redis"], decode_responses=True)
        self.guesses = credentials_file(
            workdir / "guesses.csv", [(GUESSED_USER, f"guess{n}") for n in range(GUESSES)]
        )
        self.samples = refused_samples()
        self.attacks: list[Attack] = []
        self._scanners = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attacks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # An attack in progress ends by itself (each has its SIPp timeout).
        self._thread.join(timeout=120)

    def _run(self) -> None:
        runs: dict[str, Callable[[Attack], None]] = {
            "scanner sweep": self._sweep,
            "INVITE flood": self._flood("invite_flood"),
            "password guessing": self._guess,
            "malformed": self._malformed,
            "REGISTER flood": self._flood("register_flood"),
        }
        round_number = 0
        while not self._stop.wait(self.every_s):
            kind = ORDER[round_number % len(ORDER)]
            if kind == "scanner sweep":
                sources = [fresh_address(self._scanners + i) for i in range(SCANNERS_PER_SWEEP)]
                self._scanners += SCANNERS_PER_SWEEP
            else:
                pool = POOLS[kind]
                sources = [pool[(round_number // len(ORDER)) % len(pool)]]
            attack = Attack(kind, sources, time.monotonic() - self.started)
            begun = time.monotonic()
            try:
                runs[kind](attack)
                attack.bans = [s for s in attack.expected_bans if self._banned(s)]
            except Exception as exc:  # an attack that breaks must not end the soak
                attack.unexpected.append(f"the attack itself failed: {exc}")
            attack.seconds = time.monotonic() - begun
            self.attacks.append(attack)
            round_number += 1

    def _banned(self, scope: str) -> bool:
        return bool(self.redis.exists(f"sipshield:ban:{scope}"))

    def _sipp(self, scenario: str, source: str, calls: int, rate: float, **options: object) -> int:
        keys = {"domain": self.domain, **options.pop("keys", {})}  # type: ignore[dict-item]
        result = run_sipp(
            scenario,
            self.target,
            local_ip=source,
            calls=calls,
            rate=rate,
            keys=keys,
            timeout_s=int(calls / rate) + 10,
            **options,
        )
        return result.successful + result.failed

    def _sweep(self, attack: Attack) -> None:
        for source in attack.sources:
            attack.sent += self._sipp(
                "options_sweep",
                source,
                SWEEP_PROBES,
                SWEEP_PROBES,
                keys={"user_agent": SCANNER_USER_AGENT},
            )
            attack.expected_bans.append(f"ip:{source}")

    def _flood(self, scenario: str) -> Callable[[Attack], None]:
        def run(attack: Attack) -> None:
            (source,) = attack.sources
            attack.sent += self._sipp(
                scenario, source, FLOOD_REQUESTS, FLOOD_RATE, service=GUESSED_USER
            )
            attack.expected_bans.append(f"ip:{source}")

        return run

    def _guess(self, attack: Attack) -> None:
        (source,) = attack.sources
        attack.sent += self._sipp(
            "register_many",
            source,
            GUESSES,
            GUESS_RATE,
            injection_file=self.guesses,
            recv_timeout_ms=1000,
        )
        attack.expected_bans.append(f"user:{source}:{GUESSED_USER}")

    def _malformed(self, attack: Attack) -> None:
        (source,) = attack.sources
        result = send_round(
            self.samples, self.target, self.lab.info["pbx"]["udp"], self.domain, source
        )
        attack.sent += result.sent
        attack.unexpected += result.unexpected
