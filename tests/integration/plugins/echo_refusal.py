"""A plugin module that refuses with words taken from the request, as a careless one might.

A request carrying ``X-Refuse`` is answered 403 with that header's value as
the reason phrase and again in an ``X-Echo`` header of the reply: what
remediation must make harmless, whatever the value holds.
"""

from typing import Literal

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Reject


class EchoRefusalConfig(ModuleConfig):
    name: Literal["echo_refusal"] = "echo_refusal"


class EchoRefusal(SecurityModule):
    name = "echo_refusal"
    Config = EchoRefusalConfig

    def check(self, msg, state):
        words = msg.header("X-Refuse")
        if words is None:
            return CONTINUE
        return Reject("refused on request", code=403, phrase=words, headers=(("X-Echo", words),))
