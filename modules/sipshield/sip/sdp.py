"""SDP as sipshield reads it: media sections, codecs, c= addresses, keys (SDES,
DTLS fingerprints, ZRTP hashes), and the removal of SDES keys.

One module owns these, so the media policy, sdes_guard and dialog_guard read
an SDP the same way.  Where the SDP is in a message body is
:mod:`sipshield.sip.sdp_body`'s to say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Payload types with a fixed encoding (RFC 3551), named where no rtpmap names them.
STATIC_PAYLOADS = {
    "0": "PCMU",
    "3": "GSM",
    "4": "G723",
    "8": "PCMA",
    "9": "G722",
    "13": "CN",
    "18": "G729",
    "34": "H263",
}

_M_PROTO = re.compile(r"^m=(\S+)\s+(\d+)(?:/\d+)?\s+(\S+)", re.MULTILINE)
_CRYPTO = re.compile(r"^a=crypto:\s*\d+\s+(\S+)", re.MULTILINE | re.IGNORECASE)
_C_LINE = re.compile(r"^c=IN\s+IP[46]\s+([^\s/]+)", re.MULTILINE)
_SRTP_PROTOS = ("RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF")
_RTPMAP = re.compile(r"^a=rtpmap:\s*(\d+)\s+([^/\s]+)", re.MULTILINE | re.IGNORECASE)
# A whole m= line: media, port, the rest of the transport, the formats.
M_LINE = re.compile(r"^m=(\S+)\s+(\d+)((?:/\d+)?\s+\S+)(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class MediaSection:
    kind: str  # audio, video, ...
    codecs: tuple[str, ...]  # encoding names (upper case), in the m= line's order


def _sections(sdp: str) -> tuple[MediaSection, ...]:
    """The active media sections (port not 0) with their codec names."""
    out = []
    starts = [m.start() for m in M_LINE.finditer(sdp)]
    # Each section ends where the next begins, the last at the end (none: none).
    for begin, end in zip(starts, [*starts[1:], len(sdp)][: len(starts)], strict=True):
        text = sdp[begin:end]
        m_line = M_LINE.match(text)
        assert m_line is not None
        if m_line.group(2) == "0":
            continue
        names = {pt: name.upper() for pt, name in _RTPMAP.findall(text)}
        formats = m_line.group(4).split()
        out.append(
            MediaSection(
                m_line.group(1).lower(),
                tuple(names.get(f) or STATIC_PAYLOADS.get(f, f) for f in formats),
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class SdpFacts:
    protocols: tuple[str, ...]  # of the active media sections (port not 0)
    crypto_suites: tuple[str, ...]
    dtls: bool
    zrtp: bool
    addresses: tuple[str, ...]
    sections: tuple[MediaSection, ...] = ()

    @classmethod
    def parse(cls, sdp: str) -> SdpFacts:
        return cls(
            protocols=tuple(p.upper() for _, port, p in _M_PROTO.findall(sdp) if port != "0"),
            crypto_suites=tuple(s.upper() for s in _CRYPTO.findall(sdp)),
            dtls=bool(re.search(r"^a=fingerprint:", sdp, re.MULTILINE | re.IGNORECASE)),
            zrtp=bool(re.search(r"^a=zrtp-hash:", sdp, re.MULTILINE | re.IGNORECASE)),
            addresses=tuple(_C_LINE.findall(sdp)),
            sections=_sections(sdp),
        )

    @property
    def encrypted(self) -> bool:
        """Every active media section negotiates SRTP (SDES, DTLS, OSRTP) or ZRTP."""
        if self.zrtp:
            return True
        return self.srtp_profile or (bool(self.protocols) and bool(self.crypto_suites))

    @property
    def srtp_profile(self) -> bool:
        """Every active media section uses an SRTP profile (SAVP): SRTP is not optional."""
        return bool(self.protocols) and all(p in _SRTP_PROTOS for p in self.protocols)

    @property
    def feedback(self) -> bool:
        return any(p.endswith("F") for p in self.protocols)


# --- SDES keys (a=crypto), on the bytes as they travel ------------------------------

_CRYPTO_LINE = re.compile(rb"^a=crypto:", re.MULTILINE | re.IGNORECASE)
_ANY_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\n|\r)|[^\r\n]+$")


def has_sdes(body: bytes) -> bool:
    return bool(_CRYPTO_LINE.search(body))


def strip_sdes(body: bytes) -> bytes | None:
    """``body`` without its a=crypto lines, or None when DTLS-SRTP is not offered instead.

    A media section keeps working without SDES only if it, or the session
    part, carries a DTLS fingerprint.
    """
    lines = _ANY_LINE.findall(body)
    sections: list[list[bytes]] = [[]]
    for line in lines:
        if line.lower().startswith(b"m="):
            sections.append([])
        sections[-1].append(line)
    session_dtls = any(line.lower().startswith(b"a=fingerprint:") for line in sections[0])
    out: list[bytes] = []
    for section in sections:
        crypto = [line for line in section if _CRYPTO_LINE.match(line)]
        dtls = session_dtls or any(line.lower().startswith(b"a=fingerprint:") for line in section)
        if crypto and not dtls:
            return None
        out += [line for line in section if not _CRYPTO_LINE.match(line)]
    return b"".join(out)
