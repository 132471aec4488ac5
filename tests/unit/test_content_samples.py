"""The content modules' verdicts on every sample in tests/samples/content/.

Each sample names the module it is about and what that module answers with
its default settings; a ``pass`` sample must pass every content module that
judges a single request (spit and presence_privacy count in Redis: their lab
tests cover them).  A sanitised sample's text is compared with the text minus
the characters listed here, not with the module's own idea of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sipshield.checks.content.content_policy import ContentPolicy, ContentPolicyConfig
from sipshield.checks.content.device_control import DeviceControl, DeviceControlConfig
from sipshield.checks.content.im_links import ImLinks, ImLinksConfig
from sipshield.checks.content.text_safety import TextSafety, TextSafetyConfig
from sipshield.checks.content.xml_bodies import XmlBodies, XmlBodiesConfig
from sipshield.core.hop import Hop
from sipshield.core.module import SecurityModule
from sipshield.core.verdict import CONTINUE, Alert, Outcome, Reject, Rewrite
from sipshield.sip.message import RawSipMessage
from tests.validation_samples import CONTENT_SAMPLES, Expectation, load_sample

SAMPLE_FILES = sorted(CONTENT_SAMPLES.glob("*.sip"))
MODULES: dict[str, SecurityModule] = {
    "content_policy": ContentPolicy(ContentPolicyConfig()),
    "xml_bodies": XmlBodies(XmlBodiesConfig()),
    "device_control": DeviceControl(DeviceControlConfig()),
    "text_safety": TextSafety(TextSafetyConfig()),
    "im_links": ImLinks(ImLinksConfig()),
}
HOP = Hop(next_hop="sip:127.0.0.1:5090", ruri="sip:bob@sipshield.lab", tls=False)
# What the samples hide in their text: bidi overrides and isolates, zero-width space.
HIDDEN = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b"


def verdict(module: SecurityModule, msg: RawSipMessage) -> Outcome:
    outcome = module.check(msg, state=None)  # type: ignore[arg-type]
    if outcome is CONTINUE and module.checks_relay:
        outcome = module.check_relay(msg, HOP, state=None)  # type: ignore[arg-type]
    return outcome


def as_expectation(outcome: Outcome) -> Expectation:
    if outcome is CONTINUE:
        return Expectation("pass")
    if isinstance(outcome, Reject):
        return Expectation("reject", outcome.code)
    if isinstance(outcome, Alert):
        return Expectation("alert")
    assert isinstance(outcome, Rewrite), f"unexpected outcome {outcome!r}"
    return Expectation("sanitise")


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[path.stem for path in SAMPLE_FILES])
def test_sample_verdict(path: Path) -> None:
    sample = load_sample(path)
    msg = RawSipMessage(sample.render())
    if sample.expect.action == "pass":
        for name, module in MODULES.items():
            assert verdict(module, msg) is CONTINUE, f"{name}: {sample.why}"
        return
    assert sample.module in MODULES, f"{path.name}: '# module:' names no content module"
    outcome = verdict(MODULES[sample.module], msg)
    assert as_expectation(outcome) == sample.expect, f"{sample.why}; got {outcome!r}"
    if isinstance(outcome, Rewrite):
        text = outcome.part.text
        assert any(char in text for char in HIDDEN)
        assert outcome.text == "".join(char for char in text if char not in HIDDEN)


def test_every_content_module_has_samples_of_both_kinds() -> None:
    samples = [load_sample(path) for path in SAMPLE_FILES]
    judged = {s.module for s in samples if s.expect.action != "pass"}
    assert set(MODULES) <= judged, f"no attack sample for {set(MODULES) - judged}"
    assert sum(s.expect.action == "pass" for s in samples) >= 10, "too few legitimate samples"
