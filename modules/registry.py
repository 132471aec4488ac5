"""The built-in security modules, by the name the policy gives them.

Adding a module means writing its file and listing its class here; the policy
schema and the pipeline both read this table, so there is no second list to
keep in step.
"""

from __future__ import annotations

from sipshield.ban_check import BanCheck
from sipshield.brute_force import BruteForce
from sipshield.cancel_guard import CancelGuard
from sipshield.dialog_guard import DialogGuard
from sipshield.flood import FloodControl
from sipshield.ip_controls import IpControls
from sipshield.module import SecurityModule
from sipshield.refer_policy import ReferPolicy
from sipshield.registration_guard import RegistrationGuard
from sipshield.scanner import ScannerDetection
from sipshield.sdes_guard import SdesGuard
from sipshield.tls_policy import TlsPolicy
from sipshield.validation import SipValidation

BUILTIN_MODULES: dict[str, type[SecurityModule]] = {
    module.name: module
    for module in (
        IpControls,
        BanCheck,
        SipValidation,
        FloodControl,
        ScannerDetection,
        BruteForce,
        TlsPolicy,
        SdesGuard,
        DialogGuard,
        CancelGuard,
        RegistrationGuard,
        ReferPolicy,
    )
}
