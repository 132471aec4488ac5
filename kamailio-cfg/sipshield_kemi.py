"""KEMI entry script for app_python3: it only locates and loads sipshield.

Kamailio embeds /usr/bin/python3 and reads PYTHONPATH, but directories on
PYTHONPATH are not "site" directories, so the .pth files of a venv (editable
installs among them) would be ignored.  Adding each entry as a site directory
makes a venv's site-packages on PYTHONPATH behave as it does inside the venv.
The policy file comes from SIPSHIELD_POLICY.

The reference kamailio.cfg calls mod_init (sipshield routes); the drop-in,
sipshield-dropin.cfg, names mod_init_dropin (the operator's configuration
routes, so sipshield only screens and leaves NAT handling alone).
"""

import os
import site

for _entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    if _entry:
        site.addsitedir(_entry)

import KSR  # noqa: E402 - provided by Kamailio at run time

from sipshield.edge.kemi import load_handler  # noqa: E402

POLICY = os.environ.get("SIPSHIELD_POLICY", "/etc/sipshield/policy.yaml")


def mod_init():
    return load_handler(KSR, POLICY)


def mod_init_dropin():
    return load_handler(KSR, POLICY, routes=False)
