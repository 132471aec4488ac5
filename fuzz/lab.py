"""The fuzz lab: a lab (Redis, rtpengine, SBC, PBX) running the fuzz policy (fuzz.policy).

It is started and stopped as the integration tests do (tests.integration.
lab_fixture), in a directory that is kept after the run: its logs and events
are the evidence behind the report and any finding.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from fuzz.corpus import Target
from tests.integration.lab_fixture import RunningLab, lab_down, lab_with_policy


@contextmanager
def fuzz_lab(directory: Path, policy: dict[str, Any], source: Path) -> Iterator[RunningLab]:
    """A lab running ``policy`` (made from ``source``) in ``directory``, emptied first."""
    _clear(directory)
    text = f"# made by fuzz.policy from {source}\n" + yaml.safe_dump(policy, sort_keys=False)
    print(f"lab up in {directory / 'lab'}", flush=True)
    with lab_with_policy(directory, text) as lab:
        yield lab


def target(lab: RunningLab) -> Target:
    return Target(
        lab.domain, {t: lab.sip_target(t) for t in ("udp", "tcp")}, lab.info["pbx"]["udp"]
    )


def _clear(directory: Path) -> None:
    """Remove the last run's directory, stopping its lab first if one was left running."""
    left = directory / "lab" / "lab.json"
    if left.exists():
        lab_down(RunningLab(left.parent, json.loads(left.read_text())))
    shutil.rmtree(directory, ignore_errors=True)
