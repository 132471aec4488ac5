"""The built-in security modules, by the name the policy gives them.

Adding a module means writing its file and listing its class here; the policy
schema and the pipeline both read this table, so there is no second list to
keep in step.
"""

from __future__ import annotations

from sipshield.flood import FloodControl
from sipshield.module import SecurityModule

BUILTIN_MODULES: dict[str, type[SecurityModule]] = {
    module.name: module for module in (FloodControl,)
}
