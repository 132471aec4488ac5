"""The environment a Kamailio that runs sipshield is started with.

Kamailio embeds libpython, which has no ``argv[0]`` of its own: it looks up
``python3`` on PATH and takes its standard library from wherever that one
lives (a venv's ``pyvenv.cfg`` leads it further, to the venv's base
interpreter).  Started from a shell whose PATH leads to another Python
(pyenv, a venv of another build, a ``/usr/local`` install), it loads a
standard library built for another interpreter and fails with an
undefined-symbol ImportError, or finds none at all.  So Kamailio gets a PATH
that holds only the system's directories, whose ``python3`` is the one it
embeds; the lab, the tests and the Ansible units all start it so.
"""

from __future__ import annotations

import os
import sysconfig

# Debian's /usr/bin/python3 is the interpreter Kamailio's libpython belongs to.
EMBEDDED_PYTHON = "/usr/bin/python3"
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def kamailio_environment(policy: str, python_path: str | None = None) -> dict[str, str]:
    """What a sipshield Kamailio needs on top of the inherited environment.

    ``python_path`` defaults to this interpreter's site-packages (the venv
    sipshield is installed in) followed by any PYTHONPATH already set.
    """
    if python_path is None:
        entries = (sysconfig.get_paths()["purelib"], os.environ.get("PYTHONPATH", ""))
        python_path = os.pathsep.join(entry for entry in entries if entry)
    return {"PATH": CLEAN_PATH, "SIPSHIELD_POLICY": policy, "PYTHONPATH": python_path}
