"""Signed dialog tokens: the HMAC codec and the key ring, with no I/O but the key file.

Every Record-Route that sipshield inserts carries one token that binds the
peer *outside* that leg of the dialog:

- role ``c`` (caller leg): the request came from outside; the token binds its
  source address, port and transport;
- role ``e`` (callee leg): the request leaves towards outside; the token binds
  the next hop it is relayed to (the registered contact's received address,
  or a trunk).

A proxy that record-routes a dialog only once (a single proxy between two
outside parties, as in the drop-in) puts both into that one entry: the
caller's token under ``shd`` (at record-route time) and the callee's under
``shdb`` (per branch, once the branch's destination is known).

The token is ``KID.ROLE TRANSPORT PORT.MAC`` (for example
``k1.cu5062.Zm9vYmFy...``): the key ID, the role, the transport letter and the
port in clear, and a truncated HMAC-SHA256 over the Call-ID, the dialog's
From tag, the role, the transport, the IP address and the port.  The IP is
not in the token: the verifier puts in the request's own source address, so a
request from anywhere else fails the MAC.  The port is in clear so that a
policy may tolerate NAT rebinding (same IP, other port) and still check the
MAC.  Nothing is stored per dialog: any node holding the keys verifies any
dialog.

Keys live in a file named by the policy, newest first, one per line::

    # ID SECRET-HEX (at least 16 bytes)
    k2 6b0f...      <- current: signs new dialogs
    k1 9a31...      <- previous: still verifies dialogs signed before the rotation

The file is re-read when it changes, so a rotation needs no restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PARAM = "shd"
# A second token in the same Record-Route entry, added per branch, for a proxy
# that record-routes a dialog once (the drop-in in a single-proxy
# configuration): PARAM then binds the caller and BRANCH_PARAM the callee.
BRANCH_PARAM = "shdb"
PARAMS = (PARAM, BRANCH_PARAM)
CALLER: str = "c"
CALLEE: str = "e"
ROLES = (CALLER, CALLEE)
TRANSPORT_LETTERS = {"udp": "u", "tcp": "t", "tls": "s", "ws": "w", "wss": "x", "sctp": "p"}
_LETTER_TRANSPORTS = {letter: name for name, letter in TRANSPORT_LETTERS.items()}
MAC_BYTES = 16
MIN_SECRET_BYTES = 16
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_TOKEN = re.compile(r"^([A-Za-z0-9_-]{1,16})\.([ce])([a-z])(\d{1,5})\.([A-Za-z0-9_-]{22})$")
# How often a worker looks at the key file for a rotation.
RELOAD_CHECK_S = 1.0


class KeyFileError(ValueError):
    """The key file cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class Binding:
    """What a token binds: one dialog, one side, one peer address."""

    call_id: str
    from_tag: str
    role: str
    transport: str
    ip: str
    port: int


@dataclass(frozen=True)
class Token:
    """A token as parsed from a Route header; the MAC is not checked yet."""

    key_id: str
    role: str
    transport: str
    port: int
    mac: bytes


def _mac(secret: bytes, key_id: str, binding: Binding) -> bytes:
    message = b"\0".join(
        part.encode("utf-8", errors="surrogateescape")
        for part in (
            "sipshield-dialog-v1",
            key_id,
            binding.role,
            binding.transport.lower(),
            binding.ip,
            str(binding.port),
            binding.call_id,
            binding.from_tag,
        )
    )
    return hmac.new(secret, message, hashlib.sha256).digest()[:MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode(secret: bytes, key_id: str, binding: Binding) -> str:
    letter = TRANSPORT_LETTERS.get(binding.transport.lower())
    if letter is None:
        raise ValueError(f"no token transport letter for {binding.transport!r}")
    if binding.role not in ROLES:
        raise ValueError(f"token role must be one of {ROLES}, got {binding.role!r}")
    mac = _b64(_mac(secret, key_id, binding))
    return f"{key_id}.{binding.role}{letter}{binding.port}.{mac}"


def decode(value: str) -> Token | None:
    """Parse a token; None when it is not one (wrong shape, not tampered-with detail)."""
    match = _TOKEN.match(value)
    if match is None:
        return None
    key_id, role, letter, port, mac = match.groups()
    transport = _LETTER_TRANSPORTS.get(letter)
    if transport is None or not 0 < int(port) < 65536:
        return None
    return Token(key_id, role, transport, int(port), base64.urlsafe_b64decode(mac + "=="))


def token_matches(secret: bytes, token: Token, binding: Binding) -> bool:
    return hmac.compare_digest(_mac(secret, token.key_id, binding), token.mac)


def parse_key_file(text: str, source: str) -> list[tuple[str, bytes]]:
    """``[(key_id, secret), ...]``, newest first; raise KeyFileError naming the line."""
    keys: list[tuple[str, bytes]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise KeyFileError(f"{source}:{number}: expected 'KEY-ID SECRET-HEX'")
        key_id, secret_hex = parts
        if not _KEY_ID.match(key_id):
            raise KeyFileError(f"{source}:{number}: key ID must be 1-16 of [A-Za-z0-9_-]")
        if any(key_id == known for known, _ in keys):
            raise KeyFileError(f"{source}:{number}: key ID {key_id} given twice")
        try:
            secret = bytes.fromhex(secret_hex)
        except ValueError:
            raise KeyFileError(f"{source}:{number}: the secret is not hex") from None
        if len(secret) < MIN_SECRET_BYTES:
            raise KeyFileError(
                f"{source}:{number}: secret of {len(secret)} bytes; at least {MIN_SECRET_BYTES}"
            )
        keys.append((key_id, secret))
    if not keys:
        raise KeyFileError(f"{source}: no key; the first line must hold the current key")
    return keys


def read_key_file(path: Path) -> list[tuple[str, bytes]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the dialog-token keys: {exc.strerror}") from None
    return parse_key_file(text, str(path))


def rotate_key_file(path: Path, keep: int = 2) -> str:
    """Put a fresh current key on top of ``path`` and keep ``keep - 1`` older ones.

    The file is replaced atomically and readable by its owner only.  Returns the
    new key ID.
    """
    old = read_key_file(path) if path.exists() else []
    key_id = f"k{int(time.time())}{secrets.token_hex(2)}"[:16]
    keys = [(key_id, secrets.token_bytes(32)), *old][:keep]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# sipshield dialog-token keys, newest (current) first: ID SECRET-HEX\n")
        out.writelines(f"{kid} {secret.hex()}\n" for kid, secret in keys)
    tmp.replace(path)
    return key_id


class KeyRing:
    """The current key (signs) and the previous ones (verify), from the key file.

    A worker checks the file's modification time at most every
    ``RELOAD_CHECK_S``; a rotation is picked up without a restart.  A file that
    became unreadable or invalid keeps the keys loaded before (and says so
    through ``on_reload_error``), so a botched rotation does not cut calls.
    """

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.monotonic,
        on_reload_error: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self._clock = clock
        self._on_reload_error = on_reload_error
        self._keys = read_key_file(path)
        self._mtime = self._stat()
        self._next_check = clock() + RELOAD_CHECK_S

    def _stat(self) -> int:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return -1

    def _refresh(self) -> None:
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + RELOAD_CHECK_S
        mtime = self._stat()
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            self._keys = read_key_file(self.path)
        except KeyFileError as exc:
            if self._on_reload_error:
                self._on_reload_error(f"{exc}; keeping the keys loaded before")

    @property
    def key_ids(self) -> list[str]:
        self._refresh()
        return [key_id for key_id, _ in self._keys]

    def sign(self, binding: Binding) -> str:
        self._refresh()
        key_id, secret = self._keys[0]
        return encode(secret, key_id, binding)

    def secret(self, key_id: str) -> bytes | None:
        self._refresh()
        return next((secret for kid, secret in self._keys if kid == key_id), None)
