"""KEMI entry script for app_python3: it only locates and loads sipshield.

Kamailio embeds /usr/bin/python3 and reads PYTHONPATH, but directories on
PYTHONPATH are not "site" directories, so the .pth files of a venv (editable
installs among them) would be ignored.  Adding each entry as a site directory
makes a venv's site-packages on PYTHONPATH behave as it does inside the venv.
The policy file comes from SIPSHIELD_POLICY.
"""

import os
import site

for _entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    if _entry:
        site.addsitedir(_entry)

import KSR  # noqa: E402 - provided by Kamailio at run time

from sipshield.edge.kemi import load_handler  # noqa: E402


def mod_init():
    return load_handler(KSR, os.environ.get("SIPSHIELD_POLICY", "/etc/sipshield/policy.yaml"))
