"""Media policy: what rtpengine is told for each leg of a call, as pure functions.

A call crosses the SBC on legs that each join one *outside* party (a remote
user or a trunk) with the *inside* (the PBX).  Each peer class has a
:class:`PeerMedia` policy; for every offer and answer, :func:`plan_offer` and
:func:`answer_options` turn the policy, the SDP and the signalling hop into
rtpengine's :class:`~sipshield.rtpengine.MediaOptions`, or into a refusal.

Two rules hold whatever the policy says:

- SDES keys are generated only towards a TLS hop.  Where SRTP is wanted
  towards a plain hop, the keys are negotiated with DTLS-SRTP instead, so
  bridging never puts ``a=crypto`` on plain signalling (see sdes_guard).
- An offer carrying ``a=zrtp-hash`` keeps its transport: ZRTP negotiates its
  keys inside the media, end to end, and anchoring relays it untouched.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sipshield.core.policy_types import HostPort, Network
from sipshield.rtpengine import MediaOptions
from sipshield.sip.sdp import M_LINE, SdpFacts

# mandatory: SRTP on this party's leg; plain offers from it are refused (488)
#            and offers towards it are made SRTP.
# optional:  SRTP when the offer has it (re-keyed per leg), plain otherwise.
# bridge:    SRTP on this party's leg, plain RTP towards the PBX.
# passthrough: this leg is not anchored; the SDP is left as it is.
SrtpMode = Literal["mandatory", "optional", "bridge", "passthrough"]
OnFailure = Literal["reject", "passthrough"]
MediaType = Literal["audio", "video", "image", "text", "application", "message"]

# The SDES suites rtpengine 10.5 knows, strongest first.
SDES_SUITES = (
    "AEAD_AES_256_GCM",
    "AEAD_AES_128_GCM",
    "AES_256_CM_HMAC_SHA1_80",
    "AES_256_CM_HMAC_SHA1_32",
    "AES_192_CM_HMAC_SHA1_80",
    "AES_192_CM_HMAC_SHA1_32",
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
    "F8_128_HMAC_SHA1_80",
    "F8_128_HMAC_SHA1_32",
    "NULL_HMAC_SHA1_80",
    "NULL_HMAC_SHA1_32",
)
DEFAULT_SDES_SUITES = (
    "AEAD_AES_256_GCM",
    "AEAD_AES_128_GCM",
    "AES_256_CM_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_80",
)
# rtpengine writes SDES keys in base64 without its "=" padding unless told to
# pad.  Phones decode unpadded keys short by a byte or two: baresip 1.0 and
# linphone 5.1 then key every suite but AES_CM_128 (30 bytes, no padding)
# wrongly, and the call is silent.  RFC 4568 keys are RFC 4648 base64, padded.
SDES_PAD = "pad"
# The peer class of a leg whose outside party is another SIP domain.
INTERNET = "internet"
NOT_ACCEPTABLE = 488
UNAVAILABLE = 503


def weak_suite(suite: str) -> bool:
    """NULL ciphers encrypt nothing; F8 is legacy; 32-bit tags are forgeable."""
    return suite.startswith(("NULL_", "F8_")) or suite.endswith("_32")


def _check_suites(value: list[str]) -> list[str]:
    unknown = [s for s in value if s not in SDES_SUITES]
    if unknown:
        raise ValueError(f"unknown SDES suites {unknown}; known: {', '.join(SDES_SUITES)}")
    weak = [s for s in value if weak_suite(s)]
    if weak:
        raise ValueError(f"weak SDES suites (NULL, F8 or 32-bit tag) are not allowed: {weak}")
    return value


def _check_ip_port(value: str) -> str:
    ipaddress.ip_address(value.rpartition(":")[0].strip("[]"))
    return value


SdesSuites = Annotated[list[str], AfterValidator(_check_suites)]
NgAddress = Annotated[HostPort, AfterValidator(_check_ip_port)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PeerMedia(_Strict):
    """The media policy of one peer class."""

    srtp: SrtpMode = "optional"
    # SDES suites offered towards this party and accepted from it, in order of
    # preference.  Weak suites are refused by the policy check.
    sdes_suites: SdesSuites = Field(default_factory=lambda: list(DEFAULT_SDES_SUITES), min_length=1)
    # Media is forwarded only from the address rtpengine learned for this
    # party (anti-injection).  rtpengine learns it in the first ~3 s of media.
    strict_source: bool = True
    # Let this party's media move to a new source address in mid-call.
    media_handover: bool = False
    # Symmetric RTP: send media where this party's media comes from (NAT).
    # False sends to the SDP address only.
    latching: bool = True
    # ICE candidates towards this party: remove them (media through the
    # anchor only), force rtpengine's own, or keep what the offer had.
    ice: Literal["remove", "force", "keep"] = "remove"
    # Addresses this party's SDP may point media at; empty allows any.
    media_networks: list[Network] = Field(default_factory=list)
    # Media types this party may use (m= lines); others are rejected (port 0)
    # in every offer to or from it.  Empty allows any.
    media_types: list[MediaType] = Field(default_factory=list)
    # Codecs (encoding names, as in a=rtpmap) this party may use; rtpengine
    # strips the others from every offer to or from it.  Empty allows any.
    # List telephone-event too where DTMF is wanted.
    codecs: list[str] = Field(default_factory=list)

    @property
    def allowed_codecs(self) -> frozenset[str]:
        return frozenset(c.upper() for c in self.codecs)


class RtpengineSettings(_Strict):
    # ng control addresses (IP:PORT); a call's commands go to one chosen by
    # its Call-ID, the others take over when it stops answering.
    ng: list[NgAddress] = Field(min_length=1)
    timeout_ms: int = Field(default=500, gt=0, le=5000)
    retries: int = Field(default=1, ge=0, le=5)
    # How long an instance that stopped answering is skipped.
    dead_retry_s: float = Field(default=30.0, ge=0, le=3600)


class MediaSettings(_Strict):
    rtpengine: RtpengineSettings
    # No rtpengine answers: "reject" fails the call (503); "passthrough" lets
    # it go on unanchored, except where SRTP is mandatory or bridged (503).
    on_failure: OnFailure = "reject"
    users: PeerMedia = Field(default_factory=PeerMedia)
    pbx: PeerMedia = Field(default_factory=PeerMedia)
    # By trunk name (peers.trunks[].name); a trunk not named gets users'.
    trunks: dict[str, PeerMedia] = Field(default_factory=dict)
    # Calls with other SIP domains (the policy's internet section): strangers'
    # media, so SRTP is mandatory unless the policy says otherwise.
    internet: PeerMedia = Field(default_factory=lambda: PeerMedia(srtp="mandatory"))

    @model_validator(mode="after")
    def _pbx_is_inside(self) -> MediaSettings:
        if self.pbx.srtp == "bridge":
            raise ValueError("pbx.srtp cannot be bridge: bridging is set on the outside classes")
        return self

    def for_class(self, name: str) -> PeerMedia:
        if name.startswith("trunk:"):
            return self.trunks.get(name[6:], self.users)
        if name == INTERNET:
            return self.internet
        return self.pbx if name == "pbx" else self.users


# --- decisions --------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One end of a leg as the signalling sees it."""

    policy: PeerMedia
    outside: bool
    tls: bool  # the signalling hop to this side is TLS


@dataclass(frozen=True)
class Refusal:
    code: int
    reason: str


@dataclass(frozen=True)
class OfferPlan:
    """What to do with an offer: anchor it with ``options``, or leave it alone."""

    options: MediaOptions | None  # None: not anchored (passthrough)


def offer_problem(facts: SdpFacts, offerer: Side) -> Refusal | None:
    """Why an offer from ``offerer`` must be refused, or None."""
    if not offerer.outside or offerer.policy.srtp == "passthrough":
        return None
    policy = offerer.policy
    if policy.srtp in ("mandatory", "bridge") and not facts.encrypted:
        return Refusal(NOT_ACCEPTABLE, f"plain RTP offer where SRTP is {policy.srtp}")
    if facts.crypto_suites and not set(facts.crypto_suites) & set(policy.sdes_suites):
        return Refusal(
            NOT_ACCEPTABLE,
            "no acceptable SDES suite offered: " + ", ".join(sorted(set(facts.crypto_suites))),
        )
    forbidden = forbidden_addresses(facts, policy)
    if forbidden:
        return Refusal(NOT_ACCEPTABLE, f"media address not allowed: {', '.join(forbidden)}")
    return None


def forbidden_addresses(facts: SdpFacts, policy: PeerMedia) -> list[str]:
    if not policy.media_networks:
        return []
    networks = [ipaddress.ip_network(n) for n in policy.media_networks]
    out = []
    for address in facts.addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            out.append(address)  # a host name: media must go to an address
            continue
        if not any(ip in net for net in networks):
            out.append(address)
    return out


def reject_media_types(sdp: str, policy: PeerMedia) -> str:
    """``sdp`` with the media sections of types ``policy`` does not allow rejected.

    A rejected section keeps its place with port 0 (RFC 3264), so the answer's
    sections still line up with the offer's.
    """
    if not policy.media_types:
        return sdp

    def reject(m: re.Match[str]) -> str:
        if m.group(1).lower() in policy.media_types:
            return m.group(0)
        return f"m={m.group(1)} 0{m.group(3)}{m.group(4)}"

    return M_LINE.sub(reject, sdp)


def codecs_to_strip(facts: SdpFacts, policy: PeerMedia) -> tuple[str, ...]:
    """The codecs of an offer that ``policy`` does not allow, for rtpengine to strip."""
    if not policy.codecs:
        return ()
    allowed = policy.allowed_codecs
    found = {c for s in facts.sections for c in s.codecs}
    return tuple(sorted(found - allowed))


def media_problem(facts: SdpFacts, policy: PeerMedia) -> Refusal | None:
    """A refusal when an offer (before filtering) has no media that ``policy`` allows."""
    sections = [
        s
        for s in facts.sections
        if not policy.media_types or s.kind in policy.media_types  # type: ignore[comparison-overlap]
    ]
    if facts.sections and not sections:
        kinds = ", ".join(sorted({s.kind for s in facts.sections}))
        return Refusal(NOT_ACCEPTABLE, f"media type not allowed: {kinds}")
    allowed = policy.allowed_codecs
    if policy.codecs and sections and not any(set(s.codecs) & allowed for s in sections):
        offered = sorted({c for s in sections for c in s.codecs})
        return Refusal(NOT_ACCEPTABLE, f"no allowed codec offered: {', '.join(offered)}")
    return None


def _srtp_protocol(facts: SdpFacts, tls: bool) -> str:
    """SDES (RTP/SAVP) over TLS signalling, DTLS-SRTP over plain signalling."""
    base = "RTP/SAVP" if tls else "UDP/TLS/RTP/SAVP"
    return base + ("F" if facts.feedback else "")


def _target_protocol(facts: SdpFacts, offerer: Side, receiver: Side) -> str | None:
    """The transport of the offer sent to ``receiver``; None keeps the offerer's.

    SRTP reaches each receiver in the one flavour its signalling hop allows,
    whatever flavour the offerer chose: SDES over TLS, DTLS-SRTP over a plain
    hop.  A call between two TLS users crosses the PBX on a plain hop, so the
    PBX offers DTLS back to the SBC; keeping that profile and adding SDES to
    it made an offer that real phones refuse (488).
    """
    if facts.zrtp:
        return None
    outside = offerer if offerer.outside else receiver
    if not receiver.outside and outside.policy.srtp == "bridge":
        return "RTP/AVPF" if facts.feedback else "RTP/AVP"
    if receiver.policy.srtp in ("mandatory", "bridge") or facts.srtp_profile:
        return _srtp_protocol(facts, receiver.tls)
    if facts.crypto_suites and not receiver.tls:
        # Best-effort SRTP (a=crypto on RTP/AVP) stays SRTP, but SDES never
        # crosses a plain hop: DTLS-SRTP instead.
        return _srtp_protocol(facts, False)
    return None


def _common_flags(outside: PeerMedia) -> tuple[str, ...]:
    flags: list[str] = []
    if outside.strict_source:
        flags.append("strict-source")
    if outside.media_handover:
        flags.append("media-handover")
    if not outside.latching:
        flags.append("asymmetric")
    return tuple(flags)


def _sdes_flags(receiver: Side, protocol: str | None, facts: SdpFacts) -> tuple[str, ...]:
    dtls_only = (protocol or "").startswith("UDP/TLS") or (
        protocol is None and not receiver.tls and facts.dtls
    )
    if dtls_only or not receiver.tls:
        return ("off",)
    return _sdes_allowed(receiver.policy)


def _sdes_allowed(policy: PeerMedia) -> tuple[str, ...]:
    """rtpengine's SDES flags for keys towards a party with ``policy``."""
    return (SDES_PAD, *(f"no-{s}" for s in SDES_SUITES if s not in policy.sdes_suites))


def plan_offer(facts: SdpFacts, offerer: Side, receiver: Side) -> OfferPlan:
    """rtpengine options for an offer from ``offerer`` relayed to ``receiver``."""
    outside = offerer if offerer.outside else receiver
    if outside.policy.srtp == "passthrough":
        return OfferPlan(None)
    protocol = _target_protocol(facts, offerer, receiver)
    ice = receiver.policy.ice
    return OfferPlan(
        MediaOptions(
            flags=_common_flags(outside.policy),
            replace=("origin", "session-connection"),
            transport_protocol=protocol,  # type: ignore[arg-type]
            ice=None if ice == "keep" else ice,
            sdes=() if facts.zrtp else _sdes_flags(receiver, protocol, facts),
            codec_strip=codecs_to_strip(facts, outside.policy),
            # The outside offerer opens the DTLS handshake (see answer_options).
            dtls_reverse="passive" if offerer.outside else None,
        )
    )


def answer_options(answerer: Side, receiver: Side) -> MediaOptions | None:
    """rtpengine options for an answer relayed back to the offerer ``receiver``.

    Towards an outside offerer rtpengine is the DTLS server: it answers
    ``a=setup:passive`` (and took that role already at the offer,
    ``DTLS-reverse``), so the phone opens the handshake.  A phone behind NAT
    can always send it; and rtpengine 10.5, left to itself, sends its
    ClientHello as soon as it sees the offer, before the phone knows its role,
    which linphone 5.1 cannot recover from (no audio from the caller).
    """
    outside = answerer if answerer.outside else receiver
    if outside.policy.srtp == "passthrough":
        return None
    ice = receiver.policy.ice
    return MediaOptions(
        flags=_common_flags(outside.policy),
        replace=("origin", "session-connection"),
        ice=None if ice == "keep" else ice,
        sdes=_sdes_allowed(receiver.policy) if receiver.outside else (),
        dtls="passive" if receiver.outside else None,
    )


def fails_closed(settings: MediaSettings, outside: PeerMedia) -> bool:
    """Whether a call must fail when rtpengine is unreachable."""
    return settings.on_failure == "reject" or outside.srtp in ("mandatory", "bridge")
