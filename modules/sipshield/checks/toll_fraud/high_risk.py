"""The operator's list of high-risk prefixes, re-read when the file changes.

One E.164 prefix per line ("+882", "+8816"); "#" starts a comment.  Fraud
teams publish such lists (IRSF number ranges) and change them often, so the
file is re-read without a restart: each worker looks at its modification time
at most every ``RELOAD_CHECK_S``, as dialog_guard does with its keys.  A file
that became unreadable or invalid keeps the list loaded before, and says so.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("sipshield.checks.toll_fraud")

RELOAD_CHECK_S = 1.0
PREFIX = re.compile(r"\+[0-9]{1,15}")


class PrefixFileError(ValueError):
    """The file cannot be read or holds something that is not a prefix; names the line."""


def read_prefix_file(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PrefixFileError(f"{path}: {exc.strerror or exc}") from None
    prefixes = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if not PREFIX.fullmatch(entry):
            raise PrefixFileError(f"{path}:{number}: {entry!r} is not an E.164 prefix like +882")
        prefixes.append(entry)
    return tuple(prefixes)


class HighRiskPrefixes:
    def __init__(self, path: Path | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._prefixes = read_prefix_file(path) if path is not None else ()
        self._mtime = self._stat()
        self._next_check = clock() + RELOAD_CHECK_S

    def _stat(self) -> int:
        try:
            return self.path.stat().st_mtime_ns if self.path is not None else -1
        except OSError:
            return -1

    @property
    def prefixes(self) -> tuple[str, ...]:
        if self.path is None:
            return ()
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + RELOAD_CHECK_S
            mtime = self._stat()
            if mtime != self._mtime:
                self._mtime = mtime
                try:
                    self._prefixes = read_prefix_file(self.path)
                    log.info(
                        "high-risk prefixes reloaded: %d from %s", len(self._prefixes), self.path
                    )
                except PrefixFileError as exc:
                    log.error("%s; keeping the %d prefixes loaded before", exc, len(self._prefixes))
        return self._prefixes
