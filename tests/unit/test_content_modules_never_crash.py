"""The content modules on mutated messages: a verdict every time, never an exception.

Seeded mutations (fuzz.mutations, plus body-only ones aimed at XML and text:
fuzz.body_mutations.insert_payloads) of every content sample go through each
content module that judges a request alone.  A crash would fail open or closed at run time; here it
fails the test, with the seed and index to replay it.  The lab-wide fuzz run
(`make fuzz`) sends such messages through the real SBC.
"""

from __future__ import annotations

import random

import pytest

from fuzz.body_mutations import insert_payloads
from fuzz.mutations import mutate
from sipshield.core.verdict import CONTINUE, Verdict
from sipshield.sip.message import MalformedMessage, RawSipMessage
from tests.unit.test_content_samples import HOP, MODULES, SAMPLE_FILES
from tests.validation_samples import load_sample

SEED = 1604
PER_SAMPLE = 400


def mutate_body(message: bytes, rng: random.Random) -> bytes:
    head, sep, body = message.partition(b"\r\n\r\n")
    return head + sep + insert_payloads(body, rng)


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[path.stem for path in SAMPLE_FILES])
def test_no_mutation_crashes_a_content_module(path) -> None:
    rng = random.Random(f"{SEED}:{path.stem}")
    original = load_sample(path).render()
    judged = 0
    for index in range(PER_SAMPLE):
        raw = mutate_body(original, rng) if index % 2 else mutate(original, rng)
        try:
            msg = RawSipMessage(raw)
        except MalformedMessage:
            continue
        judged += 1
        for name, module in MODULES.items():
            where = f"{name} on {path.stem} mutation {index} (seed {SEED})"
            try:
                outcome = module.check(msg, state=None)  # type: ignore[arg-type]
                if outcome is CONTINUE and module.checks_relay:
                    outcome = module.check_relay(msg, HOP, state=None)  # type: ignore[arg-type]
            except Exception as exc:  # the finding: report the message that caused it
                raise AssertionError(f"{where}: {exc!r}\n{raw!r}") from exc
            assert outcome is CONTINUE or isinstance(outcome, Verdict), where
    assert judged >= PER_SAMPLE // 3, "most mutations were unparsable: nothing was judged"
