"""Every attack, in the order the selftest runs them (quiet ones first, floods last)."""

from __future__ import annotations

from sipshield.ops.selftest.attack import Attack
from sipshield.ops.selftest.device_notify import CheckSyncNotify
from sipshield.ops.selftest.enumeration import ExtensionEnumeration
from sipshield.ops.selftest.fingerprint import OwnRepliesFingerprint, RelayedRepliesFingerprint
from sipshield.ops.selftest.floods import InviteFlood, OptionsFlood, RegisterFlood, SlowSweep
from sipshield.ops.selftest.forged_requests import ForgedBye, ForgedCancel
from sipshield.ops.selftest.malformed import MalformedRequests
from sipshield.ops.selftest.media_offers import SdesOverPlain, SrtpDowngrade
from sipshield.ops.selftest.password_guessing import PasswordGuessing
from sipshield.ops.selftest.premium_refer import PremiumRefer
from sipshield.ops.selftest.rtp_injection import RtpInjection
from sipshield.ops.selftest.tls_handshakes import OldTlsVersions, WeakCiphers

CATALOGUE: tuple[Attack, ...] = (
    OwnRepliesFingerprint(),
    RelayedRepliesFingerprint(),
    ExtensionEnumeration(),
    MalformedRequests(),
    OldTlsVersions(),
    WeakCiphers(),
    ForgedBye(),
    ForgedCancel(),
    PremiumRefer(),
    SrtpDowngrade(),
    SdesOverPlain(),
    CheckSyncNotify(),
    RtpInjection(),
    PasswordGuessing(),
    SlowSweep(),
    OptionsFlood(),
    RegisterFlood(),
    InviteFlood(),
)


def by_name(names: list[str]) -> tuple[Attack, ...]:
    """The named attacks, in catalogue order; ValueError names an unknown one."""
    known = {attack.name for attack in CATALOGUE}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(
            f"unknown attack(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return tuple(attack for attack in CATALOGUE if attack.name in names)
