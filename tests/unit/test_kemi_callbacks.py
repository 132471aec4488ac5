"""Callback names are plain strings; a typo fails silently in Kamailio, so check them."""

import re

from sipshield.edge.kemi import KEMI_CALLBACKS, KemiHandler
from tests.conftest import REPO


def test_every_callback_is_a_method():
    for name in KEMI_CALLBACKS:
        assert callable(getattr(KemiHandler, name, None)), name


def test_every_callback_named_in_kamailio_cfg_exists():
    cfg = (REPO / "kamailio-cfg" / "kamailio.cfg").read_text()
    named = re.findall(r'^kemi\.\w+_callback="(\w*)"', cfg, re.MULTILINE)
    # Modules' event callbacks (tls, dialog) too.
    named += re.findall(r'^modparam\("\w+", "event_callback", "(\w*)"\)', cfg, re.MULTILINE)
    assert named, "kamailio.cfg should name its KEMI callbacks"
    for name in filter(None, named):
        assert name in KEMI_CALLBACKS, name
