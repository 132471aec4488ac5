"""The messages the fuzz starts from: every template it can find, by family.

Families:
  validation  tests/samples/validation/*.sip, the validation module's samples;
  torture     fuzz/templates/torture/*.sip, RFC 4475-style torture cases, requests
              and a few stray responses;
  bodies      fuzz/templates/bodies/*.sip, MESSAGE/NOTIFY/PUBLISH with the bodies
              SIP carries (presence, watcherinfo, dialog-info, IMDN, CPIM, ...);
  content     tests/samples/content/*.sip, the content modules' samples (none
              is fine: the directory may be absent).

All are in the validation samples' template format and rendered by its code
(tests.validation_samples).  The fuzz reads only the message, ``# why:`` and
``# line-endings:``; a template without an ``# expect:`` line (the fuzz's own)
or with comment keys the validation loader does not know (another suite's) is
still a seed.  A template that does not render is left out with a warning, so
a sample being written elsewhere never stops a run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tests.validation_samples import (
    CONTENT_SAMPLES,
    SAMPLES,
    Expectation,
    Sample,
    SampleError,
    load_sample,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
TORTURE = TEMPLATES / "torture"
BODIES = TEMPLATES / "bodies"
FAMILIES = {"validation": SAMPLES, "torture": TORTURE, "bodies": BODIES, "content": CONTENT_SAMPLES}
# Methods whose bodies the body-focused fuzz aims at.
BODY_METHODS = ("MESSAGE", "NOTIFY", "PUBLISH")
# Stands in for a template's expectation, which the fuzz never reads.
_UNJUDGED = Expectation("pass")


@dataclass(frozen=True)
class Seed:
    family: str
    sample: Sample

    @property
    def name(self) -> str:
        return f"{self.family}/{self.sample.name}"

    @property
    def method(self) -> str:
        """The first word of the first line: a method, or SIP/2.0 for a response."""
        words = self.sample.template.split(b"\n", 1)[0].split(None, 1)
        return words[0].decode(errors="replace") if words else "?"

    @property
    def has_body(self) -> bool:
        separator = b"\n\n" if b"\n\n" in self.sample.template else b"\r\n\r\n"
        return bool(self.sample.template.partition(separator)[2].strip())


def _lenient(path: Path) -> Sample:
    """A template whose comment lines the validation loader refuses: keep the message."""
    lines = path.read_bytes().split(b"\n")
    meta: dict[str, str] = {}
    index = 0
    while index < len(lines) and lines[index].startswith(b"#"):
        key, _, value = lines[index][1:].decode(errors="replace").partition(":")
        meta[key.strip()] = value.strip()
        index += 1
    return Sample(
        name=path.stem,
        expect=_UNJUDGED,
        lab={},
        why=meta.get("why", ""),
        template=b"\n".join(lines[index:]),
        crlf=meta.get("line-endings") != "as-written",
    )


def _load(path: Path) -> Sample:
    try:
        return load_sample(path)
    except SampleError:
        return _lenient(path)


def _renders(sample: Sample) -> bool:
    try:
        sample.render()
    except (SampleError, ValueError) as exc:
        print(f"fuzz: seed {sample.name} left out: {exc}", file=sys.stderr)
        return False
    return True


def load_family(family: str, directory: Path | None = None) -> list[Seed]:
    """The seeds of one family, sorted by file name; none when its directory is absent."""
    directory = directory or FAMILIES[family]
    if not directory.is_dir():
        return []
    samples = (_load(path) for path in sorted(directory.glob("*.sip")))
    return [Seed(family, sample) for sample in samples if _renders(sample)]


@dataclass(frozen=True)
class Seeds:
    """Every family's seeds; ``bodies`` are the ones the body-focused fuzz starts from."""

    by_family: dict[str, list[Seed]]

    @classmethod
    def load(cls) -> Seeds:
        return cls({family: load_family(family) for family in FAMILIES})

    @property
    def messages(self) -> dict[str, list[Seed]]:
        """Seeds for whole-message mutations: every family that has any."""
        return {family: seeds for family, seeds in self.by_family.items() if seeds}

    @property
    def bodies(self) -> dict[str, list[Seed]]:
        """Seeds for body mutations: MESSAGE/NOTIFY/PUBLISH requests that carry a body."""
        chosen = {
            family: [s for s in seeds if s.method in BODY_METHODS and s.has_body]
            for family, seeds in self.by_family.items()
        }
        return {family: seeds for family, seeds in chosen.items() if seeds}
