"""A plugin module that logs, at every level, the token a request carries in ``X-Log``."""

import logging
from typing import Literal

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE

# Under "sipshield": the logger the KEMI handler sends to Kamailio's log.
log = logging.getLogger("sipshield.plugins.log_on_request")


class LogOnRequestConfig(ModuleConfig):
    name: Literal["log_on_request"] = "log_on_request"


class LogOnRequest(SecurityModule):
    name = "log_on_request"
    Config = LogOnRequestConfig

    def check(self, msg, state):
        token = msg.header("X-Log")
        if token is not None:
            log.debug("debug %s", token)
            log.info("info %s", token)
            log.warning("warning %s", token)
            log.error("error %s", token)
        return CONTINUE
