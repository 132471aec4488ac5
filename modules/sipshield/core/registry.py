"""The built-in security modules, by the name the policy gives them.

Adding a module means writing its file and listing its class here; the policy
schema and the pipeline both read this table, so there is no second list to
keep in step.
"""

from __future__ import annotations

from sipshield.checks.ban_check import BanCheck
from sipshield.checks.brute_force import BruteForce
from sipshield.checks.cancel_guard import CancelGuard
from sipshield.checks.content.content_policy import ContentPolicy
from sipshield.checks.content.device_control import DeviceControl
from sipshield.checks.content.im_links import ImLinks
from sipshield.checks.content.presence_privacy import PresencePrivacy
from sipshield.checks.content.spit import Spit
from sipshield.checks.content.text_safety import TextSafety
from sipshield.checks.content.xml_bodies import XmlBodies
from sipshield.checks.dialog_guard import DialogGuard
from sipshield.checks.flood import FloodControl
from sipshield.checks.internet_limits import InternetLimits
from sipshield.checks.ip_controls import IpControls
from sipshield.checks.refer_policy import ReferPolicy
from sipshield.checks.registration_guard import RegistrationGuard
from sipshield.checks.scanner import ScannerDetection
from sipshield.checks.sdes_guard import SdesGuard
from sipshield.checks.tls_policy import TlsPolicy
from sipshield.checks.toll_fraud.toll_fraud import TollFraud
from sipshield.checks.validation import SipValidation
from sipshield.core.module import SecurityModule

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
        ContentPolicy,
        XmlBodies,
        DeviceControl,
        TextSafety,
        ImLinks,
        Spit,
        PresencePrivacy,
        TollFraud,
        InternetLimits,
    )
}
