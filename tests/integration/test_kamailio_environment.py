"""The lab's Kamailio starts with a clean PATH, whatever the shell that starts the lab.

Kamailio's embedded Python takes its standard library from the first
``python3`` on PATH (:mod:`sipshield.edge.kamailio_env`).  Here the lab is
brought up from a PATH that leads first to a venv of another Python, as pyenv
or a ``/usr/local`` build would: the venv's ``pyvenv.cfg`` names a base
installation whose standard library is not Kamailio's (its ``os.py`` refuses to
load).  The SBC still comes up, and its Python runs Debian's standard library.

The same SBC runs the reference kamailio.cfg with nat_traversal taken out:
where sipshield routes, the missing module is reported at start.  (The
drop-in leaves NAT to the operator and says nothing: test_dropin_stock.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipshield.lab.stack import config_dir
from tests.integration.conftest import EXAMPLE_POLICY
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up

pytestmark = pytest.mark.integration

NAT_WARNING = "nat_traversal is not loaded: users registered from behind NAT get no keepalive"


def another_pythons_venv(root: Path) -> Path:
    """The bin directory of a venv whose base Python is not Debian's; returned for PATH."""
    base = root / "another-python"
    stdlib = base / "lib" / "python3.11"
    stdlib.mkdir(parents=True)
    (stdlib / "os.py").write_text('raise ImportError("another Python\'s standard library")\n')
    (base / "bin").mkdir()
    venv = root / "venv-of-another-python"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").symlink_to("/usr/bin/python3")
    (venv / "pyvenv.cfg").write_text(f"home = {base / 'bin'}\n")
    return venv / "bin"


def reference_without_nat_traversal() -> str:
    lines = (config_dir() / "kamailio.cfg").read_text().splitlines(keepends=True)
    kept = [line for line in lines if '"nat_traversal' not in line]
    assert len(lines) - len(kept) == 5  # the loadmodule and its four modparams
    return "".join(kept)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    root = tmp_path_factory.mktemp("foreign-python")
    foreign = another_pythons_venv(root)
    config = root / "kamailio.cfg"
    config.write_text(reference_without_nat_traversal())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{foreign}{os.pathsep}{os.environ['PATH']}")
        running = lab_up(EXAMPLE_POLICY, root / "lab", None, "--sbc-config", str(config))
    yield running
    lab_down(running)


def test_the_sbc_answers_although_path_leads_to_another_python(lab: RunningLab):
    assert lab.options() == 200
    log = Path(lab.info["logs"]["sbc"]).read_text(errors="replace")
    assert "sipshield loaded policy" in log
    assert "another Python's standard library" not in log


def test_routing_without_nat_traversal_is_reported_at_start(lab: RunningLab):
    log = Path(lab.info["logs"]["sbc"]).read_text(errors="replace")
    assert NAT_WARNING in log
