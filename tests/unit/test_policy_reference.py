"""docs/policy-reference.md is generated from the policy's models and is kept current.

When the first test fails, a model changed: regenerate the reference with
    python -m sipshield.ops.policy_reference docs/policy-reference.md
"""

from pydantic import BaseModel, Field

from sipshield.core.registry import BUILTIN_MODULES
from sipshield.ops.policy_reference import Setting, render, settings
from tests.conftest import REPO

REFERENCE = REPO / "docs" / "policy-reference.md"
REGENERATE = "python -m sipshield.ops.policy_reference docs/policy-reference.md"


def test_the_checked_in_reference_is_what_the_models_generate():
    assert REFERENCE.read_text() == render(), f"stale reference: run {REGENERATE}"


class Sample(BaseModel):
    # What the first one does,
    # over two lines.
    first: int = Field(default=3, gt=0)
    second: list[str] = Field(default_factory=lambda: ["a", "b"])  # said at the end

    third: str | None = None
    # A comment with a blank line after it describes nothing.

    fourth: str


def test_a_fields_row_holds_its_declared_type_default_and_comment():
    assert settings(Sample) == [
        Setting("first", "int", "3", "What the first one does, over two lines."),
        Setting("second", "list[str]", '["a", "b"]', "said at the end"),
        Setting("third", "str | None", "null", ""),
        Setting("fourth", "str", "required", ""),
    ]


def test_the_reference_has_a_row_for_real_settings_and_a_section_per_module():
    text = REFERENCE.read_text()
    assert (
        '| `file` | `Path \\| None` | `"/var/log/sipshield/events.jsonl"` | JSON-lines file of '
        "security events; None sends them to the Kamailio log only. |"
    ) in text
    assert "| `node` | `str` | `socket.gethostname()` |" in text
    for name in [*BUILTIN_MODULES, "plugin"]:
        assert f"\n## Module `{name}`\n" in text
