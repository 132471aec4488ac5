"""What a person needs to call through a running lab with a softphone of their own.

The lab's domain does not resolve, its certificate comes from the lab's own
CA, and the media encryption a phone may use depends on the transport it
registers over and on the policy.  ``make run`` prints these lines under the
list of services; docs/calling-through-the-lab.md explains them.
"""

from __future__ import annotations

from typing import Any

from sipshield.core.policy import Policy

GUIDE = "docs/calling-through-the-lab.md"


def media_choices(policy: Policy, tls: bool) -> str:
    """The media encryption a remote user's phone may choose on a plain or a TLS hop."""
    if policy.media is None or policy.media.users.srtp == "passthrough":
        return "any: media is not anchored, the phones' own choice goes through"
    # SDES keys travel in the SDP: only ever over TLS (sdes_guard refuses them otherwise).
    srtp = "SDES-SRTP or ZRTP" if tls else "DTLS-SRTP or ZRTP (SDES refused: keys in clear)"
    if policy.media.users.srtp == "optional":
        return f"none, {srtp}"
    return f"{srtp} (SRTP is {policy.media.users.srtp})"


def softphone_settings(info: dict[str, Any], policy: Policy) -> list[str]:
    """The banner lines: account, outbound proxy per transport, CA, media encryption."""
    plain = [f"sip:{info['sip'][t]};transport={t}" for t in ("udp", "tcp") if t in info["sip"]]
    lines = [
        "call through it with a softphone:",
        f"  account          USER@{info['domain']}, password as above (auth user = USER)",
        f"  outbound proxy   {' or '.join(plain)}",
        f"                   media: {media_choices(policy, tls=False)}",
    ]
    if "tls" in info["sip"]:
        lines += [
            f"                   sip:{info['sip']['tls']};transport=tls",
            f"                   media: {media_choices(policy, tls=True)}",
            f"  TLS CA           {info['tls']['ca']}",
        ]
    lines.append(f"  the domain does not resolve: the outbound proxy is required ({GUIDE})")
    return lines
