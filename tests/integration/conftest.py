"""Fixtures that start the real lab: Kamailio (SBC and PBX), Redis and rtpengine."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.lab_fixture import PLUGINS, RunningLab, lab_down, lab_up

EXAMPLE_POLICY = REPO / "kamailio-cfg" / "policy.example.yaml"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    """A lab running the example policy, one per test file that asks for it.

    Per file, not per session: the example policy's flood, scanner and
    brute-force limits count per source, and test files that shared one lab
    (all sending from 127.0.0.1) could push each other over them, so a result
    depended on which files ran before.
    """
    running = lab_up(EXAMPLE_POLICY, tmp_path_factory.mktemp("lab"))
    yield running
    lab_down(running)


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[[str], RunningLab]]:
    """Start a lab with a policy written by the test (YAML text, dedented)."""
    started: list[RunningLab] = []

    def start(policy_text: str) -> RunningLab:
        policy = tmp_path / f"policy{len(started)}.yaml"
        policy.write_text(textwrap.dedent(policy_text))
        running = lab_up(policy, tmp_path / f"lab{len(started)}", extra_pythonpath=PLUGINS)
        started.append(running)
        return running

    yield start
    for running in started:
        lab_down(running)
