"""The content modules on mutated messages: a verdict every time, never an exception.

Seeded mutations (fuzz.mutations, plus body-only ones aimed at XML and
text) of every content sample go through each content module that
judges a request alone.  A crash would fail open or closed at run time; here it
fails the test, with the seed and index to replay it.  The lab-wide fuzz run
(`make fuzz`) sends such messages through the real SBC.
"""

from __future__ import annotations

import random

import pytest

from fuzz.mutations import mutate
from sipshield.core.verdict import CONTINUE, Verdict
from sipshield.sip.message import MalformedMessage, RawSipMessage
from tests.unit.test_content_samples import HOP, MODULES, SAMPLE_FILES
from tests.validation_samples import load_sample

SEED = 1604
PER_SAMPLE = 400
# Pieces that XML and text parsers have choked on.
BODY_PIECES = (
    b"<!DOCTYPE x [<!ENTITY a SYSTEM 'file:///etc/passwd'>]>", b"&a;", b"<![CDATA[", b"]]>",
    b"<?xml version='1.1' encoding='UTF-7'?>", b"<" * 50, b"</" * 50, b"\x00", b"\xff\xfe",
    b"\xef\xbb\xbf", b"\xe2\x80\xae", b"\xe2\x81\xa6", b"--", b"--b1--", b"\r\n\r\n",
    b"Content-Type: text/html\r\n\r\n", b"javascript:", b"data:", b"http://", b"www.",
    b"%0d%0a", b"${jndi:", b"' OR '1'='1", b"<script>", b"\xf0\x9f\x91\xa8\xe2\x80\x8d",
)  # fmt: skip


def mutate_body(message: bytes, rng: random.Random) -> bytes:
    head, sep, body = message.partition(b"\r\n\r\n")
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) + 1)
        piece = rng.choice(BODY_PIECES) * rng.choice((1, 1, 1, 30))
        data[at:at] = piece
    return head + sep + bytes(data)


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
