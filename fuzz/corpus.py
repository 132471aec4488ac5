"""The fuzzed messages of a run: message ``index`` of seed ``seed`` is always the same.

Each message has its own RNG, seeded from (seed, index), so any one of them
is rebuilt without the others (a finding names its seed and index) and the
order the senders take them in changes nothing.  Its Call-ID and Via branch
carry ``fz<seed>-<index>``, which comes back in replies, events, and the SBC's
and PBX's logs (Kamailio's log prefix names the Call-ID): that is how a
reply, an event or a traceback is traced to the message that caused it, as
long as the mutations left one of them readable.

Two kinds: ``message`` (any seed, whole-message mutations: fuzz.mutations) and
``body`` (MESSAGE/NOTIFY/PUBLISH seeds, body mutations: fuzz.body_mutations).
Bodies are spread evenly through the run, so a short run has both kinds.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from fuzz.body_mutations import mutate_body
from fuzz.mutations import mutate_named
from fuzz.seeds import Seed, Seeds

Kind = Literal["message", "body"]
Transport = Literal["udp", "tcp"]
# Largest UDP payload over IPv4; a bigger message goes over TCP instead.
UDP_MAX = 65507
# How the seed families are drawn for whole-message mutations (a family that
# is absent, such as content, gives its weight to the others).
MESSAGE_FAMILIES = {"validation": 0.45, "torture": 0.35, "bodies": 0.1, "content": 0.1}
BODY_FAMILIES = {"bodies": 0.55, "content": 0.25, "validation": 0.15, "torture": 0.05}
TOKEN = re.compile(rb"fz(\d+)-(\d+)")


def token(seed: int, index: int) -> str:
    return f"fz{seed}-{index}"


def find_index(data: bytes | str, seed: int) -> int | None:
    """The index of the message a reply, log line or event is about, if it names one of ours."""
    if isinstance(data, str):
        # Events carry what Kamailio read, undecodable bytes as lone surrogates.
        data = data.encode(errors="surrogatepass")
    for match in TOKEN.finditer(data):
        if int(match.group(1)) == seed:
            return int(match.group(2))
    return None


@dataclass(frozen=True)
class Target:
    """Where the lab listens: what the templates' {domain}, {sbc} and {pbx} become."""

    domain: str
    sbc: dict[str, str]  # transport -> host:port
    pbx: str


@dataclass(frozen=True)
class Fuzzed:
    seed: int
    index: int
    kind: Kind
    transport: Transport
    template: str  # family/name
    method: str  # the seed's, before any mutation
    mutations: tuple[str, ...]
    framed: bool | None  # body kind: whether Content-Length matches the body
    data: bytes


class Corpus:
    def __init__(
        self,
        seeds: Seeds,
        target: Target,
        seed: int,
        total: int,
        bodies: int,
        udp_share: float = 0.6,
    ) -> None:
        if not 0 <= bodies <= total:
            raise ValueError(f"bodies ({bodies}) must be within 0..total ({total})")
        self.seeds = seeds
        self.target = target
        self.seed = seed
        self.total = total
        self.bodies = bodies
        self.udp_share = udp_share
        self._messages = _weighted(seeds.messages, MESSAGE_FAMILIES)
        self._body_seeds = _weighted(seeds.bodies, BODY_FAMILIES)
        if bodies and not self._body_seeds[0]:
            raise ValueError("no seed with a MESSAGE, NOTIFY or PUBLISH body")

    def kind(self, index: int) -> Kind:
        """Exactly ``bodies`` of ``total`` are body-focused, evenly spread."""
        before, after = index * self.bodies // self.total, (index + 1) * self.bodies // self.total
        return "body" if after > before else "message"

    def make(self, index: int) -> Fuzzed:
        rng = random.Random(f"{self.seed}/{index}")
        kind = self.kind(index)
        transport: Transport = "udp" if rng.random() < self.udp_share else "tcp"
        families, weights = self._body_seeds if kind == "body" else self._messages
        family = rng.choices(families, weights)[0]
        pool = self.seeds.bodies if kind == "body" else self.seeds.messages
        chosen = rng.choice(pool[family])
        raw = self._render(chosen, index, transport)
        framed: bool | None = None
        if kind == "body":
            mutated = mutate_body(raw, rng)
            data, names, framed = mutated.message, mutated.mutations, mutated.framed
        else:
            data, names = mutate_named(raw, rng)
        if transport == "udp" and len(data) > UDP_MAX:
            transport = "tcp"
        return Fuzzed(
            self.seed, index, kind, transport, chosen.name, chosen.method, names, framed, data
        )

    def _render(self, chosen: Seed, index: int, transport: Transport) -> bytes:
        name = token(self.seed, index)
        return chosen.sample.render(
            call_id=f"{name}@fuzz",
            branch=f"z9hG4bK-{name}",
            tag=f"t{index}",
            domain=self.target.domain,
            sbc=self.target.sbc[transport],
            pbx=self.target.pbx,
            transport=transport,
        )


def _weighted(
    available: dict[str, list[Seed]], weights: dict[str, float]
) -> tuple[list[str], list[float]]:
    families = [family for family in weights if available.get(family)]
    return families, [weights[family] for family in families]
