"""Real softphones from Debian, driven headless against the lab: baresip and linphonec.

Nobody here wrote these clients, so they judge whether a call "works" as a
user would.  Both run on loopback only: baresip binds 127.0.0.1 for SIP and
media and is driven through its ``ctrl_tcp`` module (netstring JSON);
linphonec is driven through a pseudo-terminal, as a person would type.  Each
phone's media stays inside 10000-19999, clear of the lab's rtpengine ports.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pty
import re
import select
import socket
import struct
import subprocess
import threading
import time
import wave
from pathlib import Path
from typing import Any

from sipshield.lab.net import free_port
from tests.integration.lab_fixture import RunningLab

PHONE_RTP_PORTS = (10000, 19999)
# baresip's name of each media encryption (its account's mediaenc=).
BARESIP_MEDIAENC = {"none": None, "sdes": "srtp-mand", "dtls": "dtls_srtp"}
# linphone's name of each ([sip] media_encryption=).
LINPHONE_MEDIAENC = {"none": "none", "sdes": "srtp", "dtls": "dtls", "zrtp": "zrtp"}


def write_tone(path: Path, seconds: int = 30, hertz: int = 440) -> None:
    """A 16-bit mono 8 kHz WAV of a sine tone."""
    rate = 8000
    samples = (int(12000 * math.sin(2 * math.pi * hertz * n / rate)) for n in range(rate * seconds))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", v) for v in samples))


def tone_share(path: Path, hertz: int = 440) -> float:
    """How much of a recording's second half is the tone at ``hertz`` (0.0 to about 1.0).

    The Goertzel power at ``hertz`` over 0.1 s blocks (a whole number of
    cycles), relative to the blocks' energy: about 1 for the phones' tone, near
    0 for noise (media decrypted with a wrong key) and 0 for silence.
    """
    with wave.open(str(path)) as recording:
        rate, channels = recording.getframerate(), recording.getnchannels()
        frames = recording.readframes(recording.getnframes())
    samples = struct.unpack(f"<{len(frames) // 2}h", frames)[::channels]
    samples = samples[len(samples) // 2 :]
    block = rate // 10
    coefficient = 2 * math.cos(2 * math.pi * hertz / rate)
    power = energy = 0.0
    for start in range(0, len(samples) - block + 1, block):
        s1 = s2 = 0.0
        for x in samples[start : start + block]:
            s1, s2 = x + coefficient * s1 - s2, s1
        power += s1 * s1 + s2 * s2 - coefficient * s1 * s2
        energy += sum(x * x for x in samples[start : start + block])
    return 2 * power / (block * energy) if energy else 0.0


class PhoneError(AssertionError):
    """A phone did not do what the test asked; the message carries its log's tail."""


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _outbound(lab: RunningLab, transport: str) -> str:
    """The SBC as the phone's outbound proxy (the lab domain does not resolve)."""
    host, port = lab.sip(transport)
    return f"sip:{host}:{port};transport={transport}"


class Baresip:
    """One baresip 1.0 user agent with one account, registered through the SBC."""

    def __init__(
        self,
        lab: RunningLab,
        user: str,
        directory: Path,
        transport: str = "udp",
        encryption: str = "none",
    ) -> None:
        self.lab, self.user, self.transport = lab, user, transport
        self.directory = directory / f"baresip-{user}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = self.directory / "baresip.log"
        ctrl_port = free_port()
        mediaenc = BARESIP_MEDIAENC[encryption]
        account = (
            f"<sip:{user}@{lab.domain};transport={transport}>"
            f";auth_pass={lab.password(user)}"
            f';outbound="{_outbound(lab, transport)}"'
            + (f";mediaenc={mediaenc}" if mediaenc else "")
            + ";regint=600;answermode=manual"
        )
        (self.directory / "accounts").write_text(account + "\n")
        (self.directory / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    # Loopback only, for SIP and for the addresses in its SDP.
                    "net_interface 127.0.0.1",
                    "sip_listen 127.0.0.1:0",
                    f"sip_cafile {lab.info['tls']['ca']}",
                    f"rtp_ports {PHONE_RTP_PORTS[0]}-{PHONE_RTP_PORTS[1]}",
                    # A 440 Hz tone goes out (ausine makes 48 kHz stereo only;
                    # baresip resamples it for the codec).
                    "audio_source ausine,440",
                    "ausrc_srate 48000",
                    "ausrc_channels 2",
                    # No sound card: what it hears is dumped by sndfile, decoded.
                    f"snd_path {self.directory}",
                    "module_path /usr/lib/baresip/modules",
                    "module g711.so",
                    "module ausine.so",
                    "module aufile.so",
                    "module sndfile.so",
                    "module srtp.so",
                    "module dtls_srtp.so",
                    "module_app account.so",
                    "module_app menu.so",
                    "module_app ctrl_tcp.so",
                    f"ctrl_tcp_listen 127.0.0.1:{ctrl_port}",
                    "",
                ]
            )
        )
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["baresip", "-f", str(self.directory)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.events: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self._lock = threading.Condition()
        self.ctrl = self._connect(ctrl_port)
        threading.Thread(target=self._read, daemon=True).start()

    def _connect(self, port: int) -> socket.socket:
        deadline = time.monotonic() + 10
        while True:
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=1)
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise PhoneError(
                        f"baresip {self.user} did not start:\n{_tail(self.log)}"
                    ) from None
                time.sleep(0.05)

    def _read(self) -> None:
        buffer = b""
        self.ctrl.settimeout(None)
        while True:
            try:
                chunk = self.ctrl.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b":" in buffer:
                length, _, rest = buffer.partition(b":")
                size = int(length)
                if len(rest) < size + 1:
                    break
                message = json.loads(rest[:size])
                buffer = rest[size + 1 :]
                with self._lock:
                    (self.events if message.get("event") else self.responses).append(message)
                    self._lock.notify_all()

    def command(self, command: str, params: str = "") -> dict[str, Any]:
        body = json.dumps({"command": command, "params": params, "token": command}).encode()
        with self._lock:
            seen = len(self.responses)
        self.ctrl.sendall(b"%d:%s," % (len(body), body))
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.responses) > seen, timeout=5):
                raise PhoneError(f"baresip {self.user}: no answer to {command}")
            return self.responses[seen]

    def wait_event(self, kind: str, timeout: float = 10.0, since: int = 0) -> dict[str, Any]:
        """The first event of type ``kind`` (e.g. CALL_ESTABLISHED) after the ``since``-th."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.events[since:] if e.get("type") == kind), None)

        with self._lock:
            if not self._lock.wait_for(lambda: found() is not None, timeout=timeout):
                raise PhoneError(
                    f"baresip {self.user}: no {kind} within {timeout}s; events: "
                    f"{[e.get('type') + ' ' + str(e.get('param', '')) for e in self.events]}\n"
                    f"{_tail(self.log)}"
                )
            return found()  # type: ignore[return-value]

    def mark(self) -> int:
        """The number of events so far: wait_event(..., since=mark) waits for new ones."""
        with self._lock:
            return len(self.events)

    def heard(self) -> float:
        """How much of what it decoded in its last call was the other phone's tone."""
        dumps = sorted(self.directory.glob("dump-*-dec.wav"))
        return tone_share(dumps[-1]) if dumps else 0.0

    def registered(self, timeout: float = 10.0) -> None:
        # Polled: the first REGISTER may be answered before ctrl_tcp has a client.
        deadline = time.monotonic() + timeout
        while "OK" not in self.command("reginfo").get("data", ""):
            if time.monotonic() > deadline:
                raise PhoneError(f"baresip {self.user} did not register:\n{_tail(self.log)}")
            time.sleep(0.1)

    def dial(self, user: str) -> None:
        self.command("dial", f"sip:{user}@{self.lab.domain}")

    def wait_incoming(self, since: int) -> None:
        self.wait_event("CALL_INCOMING", since=since)

    def answer(self) -> None:
        self.command("accept")

    def wait_established(self, since: int) -> None:
        self.wait_event("CALL_ESTABLISHED", since=since)

    def hangup(self) -> None:
        self.command("hangup")

    def wait_closed(self, since: int) -> str:
        """The reason the call ended, e.g. "Connection reset by peer"."""
        return str(self.wait_event("CALL_CLOSED", since=since).get("param", ""))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.ctrl.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(5)


class Linphone:
    """linphonec 5.1 (liblinphone) at a pseudo-terminal, registered through the SBC.

    It verifies the SBC's certificate against the lab CA over TLS, and uses
    the GRUU the lab's registrar grants as its Contact.
    """

    def __init__(
        self,
        lab: RunningLab,
        user: str,
        directory: Path,
        transport: str = "udp",
        encryption: str = "none",
    ) -> None:
        self.lab, self.user = lab, user
        self.directory = directory / f"linphone-{user}"
        (self.directory / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.log = self.directory / "linphone.log"
        ports = {t: "0" for t in ("udp", "tcp", "tls")} | {transport: str(free_port())}
        proxy = _outbound(lab, transport)
        rc = self.directory / "linphonerc"
        rc.write_text(
            f"""[sip]
sip_port={ports["udp"]}
sip_tcp_port={ports["tcp"]}
sip_tls_port={ports["tls"]}
bind_address=127.0.0.1
default_proxy=0
media_encryption={LINPHONE_MEDIAENC[encryption]}
media_encryption_mandatory={0 if encryption == "none" else 1}
root_ca={lab.info["tls"]["ca"]}
verify_server_certs=1
verify_server_cn=1
[net]
ipv6=0
[rtp]
audio_rtp_port={PHONE_RTP_PORTS[0]}-{PHONE_RTP_PORTS[1]}
[video]
capture=0
display=0
[audio_codec_0]
mime=PCMU
rate=8000
channels=1
enabled=1
[audio_codec_1]
mime=opus
rate=48000
channels=2
enabled=0
[audio_codec_2]
mime=SILK
rate=16000
channels=1
enabled=0
[audio_codec_3]
mime=speex
rate=16000
channels=1
enabled=0
[audio_codec_4]
mime=speex
rate=8000
channels=1
enabled=0
[audio_codec_5]
mime=PCMA
rate=8000
channels=1
enabled=0
[audio_codec_6]
mime=G729
rate=8000
channels=1
enabled=0
[proxy_0]
reg_proxy=<{proxy}>
reg_route=<{proxy};lr>
reg_identity="{user}" <sip:{user}@{lab.domain}>
reg_expires=600
reg_sendregister=1
publish=0
[auth_info_0]
username={user}
passwd={lab.password(user)}
realm={lab.domain}
domain={lab.domain}
"""
        )
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            ["linphonec", "-c", str(rc), "-d", "5", "-l", str(self.log)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=self.directory,
            # Its call history database goes under HOME.
            env={**os.environ, "HOME": str(self.directory)},
            start_new_session=True,
        )
        os.close(slave)
        self.pty = master
        self.screen = ""
        self._lock = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        # No sound card here: calls play a 440 Hz tone from a file instead.
        self.tone = self.directory / "tone.wav"
        write_tone(self.tone)
        self.type("soundcard use files")
        # What it hears goes to a file, as baresip's does.
        self.received = self.directory / "received.wav"
        self.type(f"record {self.received}")

    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.pty], [], [], 0.5)
                if not ready:
                    if self.proc.poll() is not None:
                        return
                    continue
                chunk = os.read(self.pty, 65536)
            except OSError:
                return
            with self._lock:
                self.screen += chunk.decode(errors="replace")
                self._lock.notify_all()

    def type(self, line: str) -> None:
        os.write(self.pty, line.encode() + b"\n")

    def mark(self) -> int:
        with self._lock:
            return len(self.screen)

    def wait_for(self, pattern: str, timeout: float = 10.0, since: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` on the screen after position ``since``."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return regex.search(self.screen, since)

        with self._lock:
            if not self._lock.wait_for(lambda: found() is not None, timeout=timeout):
                raise PhoneError(
                    f"linphone {self.user}: no {pattern!r} within {timeout}s; screen:\n"
                    f"{self.screen[-1500:]}\nlog:\n{_tail(self.log)}"
                )
            return found()  # type: ignore[return-value]

    def heard(self) -> float:
        """How much of what it decoded in its last call was the other phone's tone."""
        return tone_share(self.received) if self.received.exists() else 0.0

    def registered(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            since = self.mark()
            self.type("status register")
            # "registered=0" (or -1) before, "registered, identity=..." once registered.
            match = self.wait_for(r"registered(=-?\d|, identity)", since=since)
            if match.group(1) == ", identity":
                return
            if time.monotonic() > deadline:
                raise PhoneError(f"linphone {self.user} did not register:\n{_tail(self.log)}")
            time.sleep(0.2)

    def dial(self, user: str) -> None:
        self.type(f"call sip:{user}@{self.lab.domain}")

    def wait_incoming(self, since: int) -> None:
        self.wait_for(r"Receiving new incoming call", since=since)

    def answer(self) -> None:
        self.type("answer")

    def wait_established(self, since: int) -> None:
        self.wait_for(r"Call \d+ with .* connected", since=since)
        # The tone replaces the microphone for the rest of the call.
        self.type(f"play {self.tone}")

    def hangup(self) -> None:
        self.type("terminate")

    def wait_closed(self, since: int) -> str:
        return self.wait_for(r"Call \d+ with .* ended \(([^)]*)\)", since=since).group(1)

    def zrtp_sas(self, since: int) -> str:
        """The ZRTP short authentication string, once the call is fully encrypted."""
        return self.wait_for(r"fully encrypted and auth token is (\w+)", since=since).group(1)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.type("quit")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(5)
        with contextlib.suppress(OSError):
            os.close(self.pty)
