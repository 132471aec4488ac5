"""Sample messages and what each one expects, fail2ban style.

Every file in ``tests/samples/validation/`` (the validation module's) and
``tests/samples/content/`` (the content modules') is one request.  It starts
with comment lines that the loader strips:

``# expect: pass | reject CODE | drop | alert | sanitise``
    the verdict, checked by the unit tests (required); ``alert`` and
    ``sanitise`` (content samples) let the request through, reported or with
    its text cleaned;
``# module: NAME``
    which module gives that verdict (content samples: each is judged by the
    module it is about, and a ``pass`` sample by every module);
``# lab: forwarded | reply CODE | none``
    what the running lab does with it, when that is not what ``expect``
    implies (pass: forwarded to the PBX; reject CODE: that reply; drop: none).
    Kamailio's core parser discards some messages before sipshield runs,
    and those say ``none``;
``# lab-tcp: ...``
    the same over TCP, where Content-Length frames the message, when it
    differs from ``lab``;
``# why: ...``
    what the sample is about (required);
``# line-endings: as-written``
    keep the file's LF line ends (otherwise LF becomes CRLF).

The rest of the file is the message, byte for byte: keep the empty line that
ends the headers, even when there is no body.

Placeholders in the message make each send unique and fit the lab:
``{call_id} {branch} {tag} {domain} {sbc} {pbx} {transport}``; ``{pad:N}`` is
N filler characters, ``{byte:XX}`` one byte in hex, and ``{content_length}``
the length of the body after everything else is filled in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SAMPLES = Path(__file__).resolve().parent / "samples" / "validation"
CONTENT_SAMPLES = SAMPLES.parent / "content"

_PAD = re.compile(rb"\{pad:(\d+)\}")
_BYTE = re.compile(rb"\{byte:([0-9a-fA-F]{2})\}")
_LEFT_OVER = re.compile(rb"\{[a-z_]+(:[0-9a-fA-F]+)?\}")
_KEYS = ("expect", "module", "lab", "lab-tcp", "why", "line-endings")


class SampleError(ValueError):
    """A sample file the loader cannot use; the message names the file."""


@dataclass(frozen=True)
class Expectation:
    """The module's verdict: ``pass``, ``reject`` with a code, ``drop``, ``alert``, ``sanitise``."""

    action: Literal["pass", "reject", "drop", "alert", "sanitise"]
    code: int | None = None


@dataclass(frozen=True)
class LabOutcome:
    """What the lab does: forwards to the PBX, replies with a code, or nothing."""

    action: Literal["forwarded", "reply", "none"]
    code: int | None = None


@dataclass(frozen=True)
class Sample:
    name: str
    expect: Expectation
    lab: dict[str, LabOutcome]
    why: str
    template: bytes
    crlf: bool
    module: str = ""

    def render(
        self,
        call_id: str = "sample-call-id",
        branch: str = "z9hG4bKsample",
        tag: str = "sampletag",
        domain: str = "sipshield.lab",
        sbc: str = "127.0.0.1:5060",
        pbx: str = "127.0.0.1:5090",
        transport: str = "udp",
    ) -> bytes:
        values = {
            "call_id": call_id,
            "branch": branch,
            "tag": tag,
            "domain": domain,
            "sbc": sbc,
            "pbx": pbx,
            "transport": transport.upper(),
        }
        data = self.template
        if self.crlf:
            data = data.replace(b"\n", b"\r\n")
        for key, value in values.items():
            data = data.replace(b"{" + key.encode() + b"}", value.encode())
        data = _PAD.sub(lambda m: b"x" * int(m.group(1)), data)
        data = _BYTE.sub(lambda m: bytes.fromhex(m.group(1).decode()), data)
        blank = b"\r\n\r\n" if self.crlf else b"\n\n"
        _, _, body = data.partition(blank)
        data = data.replace(b"{content_length}", str(len(body)).encode())
        left = _LEFT_OVER.search(data)
        if left:
            raise SampleError(f"{self.name}: unknown placeholder {left.group().decode()}")
        return data


def _expectation(text: str, where: str) -> Expectation:
    words = text.split()
    if len(words) == 1 and words[0] in ("pass", "drop", "alert", "sanitise"):
        return Expectation(words[0])  # type: ignore[arg-type]
    if len(words) == 2 and words[0] == "reject" and words[1].isdigit():
        return Expectation("reject", int(words[1]))
    raise SampleError(f"{where}: expect: pass, drop, alert, sanitise or reject CODE; not {text!r}")


def _lab_outcome(text: str, where: str) -> LabOutcome:
    words = text.split()
    if words == ["forwarded"] or words == ["none"]:
        return LabOutcome(words[0])  # type: ignore[arg-type]
    if len(words) == 2 and words[0] == "reply" and words[1].isdigit():
        return LabOutcome("reply", int(words[1]))
    raise SampleError(f"{where}: lab must be forwarded, none or reply CODE, got {text!r}")


def _implied_lab_outcome(expect: Expectation) -> LabOutcome:
    if expect.action in ("pass", "alert", "sanitise"):
        return LabOutcome("forwarded")
    if expect.action == "reject":
        return LabOutcome("reply", expect.code)
    return LabOutcome("none")


def load_sample(path: Path) -> Sample:
    text = path.read_bytes()
    meta: dict[str, str] = {}
    lines = text.split(b"\n")
    index = 0
    while index < len(lines) and lines[index].startswith(b"#"):
        key, colon, value = lines[index][1:].decode().partition(":")
        key = key.strip()
        if not colon or key not in _KEYS:
            raise SampleError(f"{path}:{index + 1}: unknown comment line; keys are {_KEYS}")
        meta[key] = value.strip()
        index += 1
    for required in ("expect", "why"):
        if not meta.get(required):
            raise SampleError(f"{path}: no '# {required}:' line")
    expect = _expectation(meta["expect"], str(path))
    lab = _lab_outcome(meta["lab"], str(path)) if "lab" in meta else _implied_lab_outcome(expect)
    lab_tcp = _lab_outcome(meta["lab-tcp"], str(path)) if "lab-tcp" in meta else lab
    return Sample(
        name=path.stem,
        expect=expect,
        lab={"udp": lab, "tcp": lab_tcp},
        why=meta["why"],
        template=b"\n".join(lines[index:]),
        crlf=meta.get("line-endings") != "as-written",
        module=meta.get("module", ""),
    )


def load_samples(directory: Path = SAMPLES) -> list[Sample]:
    return [load_sample(path) for path in sorted(directory.glob("*.sip"))]
