"""The validation module's verdict on every sample in tests/samples/validation/.

One test per sample file: the file names what the module must answer.  A file
without an ``# expect:`` line fails its own test, and so does the suite when
the module has no samples, or none of either kind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sipshield.checks.validation import SipValidation, ValidationConfig
from sipshield.core.verdict import CONTINUE, Drop, Outcome, Reject, decided_response
from sipshield.sip.message import RawSipMessage
from tests.validation_samples import SAMPLES, Expectation, SampleError, load_sample

SAMPLE_FILES = sorted(SAMPLES.glob("*.sip"))
MODULE = SipValidation(ValidationConfig())


def as_expectation(outcome: Outcome) -> Expectation:
    if outcome is CONTINUE:
        return Expectation("pass")
    if isinstance(outcome, Reject):
        return Expectation("reject", outcome.code)
    assert isinstance(outcome, Drop), f"unexpected outcome {outcome!r}"
    return Expectation("drop")


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[path.stem for path in SAMPLE_FILES])
def test_sample_verdict(path: Path) -> None:
    sample = load_sample(path)
    raw = sample.render()
    # What the chain does with the module's verdict (an ACK is never answered).
    outcome = decided_response(MODULE.judge(raw), raw.split(b" ", 1)[0].decode(), False)
    assert as_expectation(outcome) == sample.expect, f"{sample.why}; got {outcome!r}"
    if sample.expect.action == "pass":
        # check() is what the pipeline calls; it reads the view's raw bytes.
        assert MODULE.check(RawSipMessage(raw), state=None) is CONTINUE  # type: ignore[arg-type]


def test_the_module_has_valid_and_invalid_samples() -> None:
    expectations = [load_sample(path).expect.action for path in SAMPLE_FILES]
    valid = expectations.count("pass")
    assert len(expectations) >= 40, f"only {len(expectations)} samples in {SAMPLES}"
    assert valid >= 15, f"only {valid} valid samples: false positives go unnoticed"
    assert len(expectations) - valid >= 15, "too few malformed samples"


def test_a_sample_without_expect_is_refused(tmp_path: Path) -> None:
    sample = tmp_path / "no-expect.sip"
    sample.write_text("# why: forgot the verdict\nOPTIONS sip:x SIP/2.0\n\n")
    with pytest.raises(SampleError, match="expect"):
        load_sample(sample)


@pytest.mark.parametrize(
    "header",
    ["# expect: maybe", "# expect: reject", "# expect: pass\n# lab: reply", "# colour: blue"],
)
def test_a_sample_with_a_bad_header_is_refused(tmp_path: Path, header: str) -> None:
    sample = tmp_path / "bad.sip"
    sample.write_text(f"{header}\n# why: typo\nOPTIONS sip:x SIP/2.0\n\n")
    with pytest.raises(SampleError):
        load_sample(sample)


def test_placeholders_are_filled_and_content_length_counts_the_crlf_body(tmp_path: Path) -> None:
    sample = tmp_path / "s.sip"
    sample.write_text(
        "# expect: pass\n# why: loader\n"
        "MESSAGE sip:bob@{domain} SIP/2.0\nCall-ID: {call_id}\nX: {pad:3}{byte:41}\n"
        "Content-Length: {content_length}\n\nab\ncd\n"
    )
    raw = load_sample(sample).render(call_id="c1", domain="example.org")
    assert raw == (
        b"MESSAGE sip:bob@example.org SIP/2.0\r\nCall-ID: c1\r\nX: xxxA\r\n"
        b"Content-Length: 8\r\n\r\nab\r\ncd\r\n"
    )


def test_an_unknown_placeholder_is_refused(tmp_path: Path) -> None:
    sample = tmp_path / "s.sip"
    sample.write_text("# expect: pass\n# why: typo\nOPTIONS sip:{domian} SIP/2.0\n\n")
    with pytest.raises(SampleError, match="domian"):
        load_sample(sample).render()
