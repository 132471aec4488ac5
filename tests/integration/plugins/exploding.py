"""A plugin module that crashes on demand, to prove crashes never reach Kamailio.

It raises when a request carries ``X-Explode``; every other request passes.
"""

from typing import Literal

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE


class ExplodingConfig(ModuleConfig):
    name: Literal["exploding"] = "exploding"


class Exploding(SecurityModule):
    name = "exploding"
    Config = ExplodingConfig

    def check(self, msg, state):
        if msg.header("X-Explode") is not None:
            raise RuntimeError("exploding on request")
        return CONTINUE
