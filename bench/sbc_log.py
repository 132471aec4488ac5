"""What an SBC logged while a run failed: its most frequent error or warning.

A failed run reports SIPp's side (timeouts, unexpected replies); the SBC's
log says why from the other side (out of shared memory, a ban, a Python
exception), so the report shows both.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

# Kamailio's line: "<rank>(<pid>) ERROR: {<method> <call-id>} <module> [file:line]: text"
_PROBLEM = re.compile(r"(?:ERROR|WARNING): (?:\{[^}]*\} )?(.*)")


def size(log: Path) -> int:
    """Where the run's lines will start."""
    try:
        return log.stat().st_size
    except OSError:
        return 0


def most_frequent_problem(log: Path, offset: int) -> str:
    """The most frequent ERROR or WARNING line since ``offset``, with its count; "" if none."""
    try:
        with open(log, errors="replace") as text:
            text.seek(offset)
            found = Counter(m.group(1).strip() for line in text if (m := _PROBLEM.search(line)))
    except OSError:
        return ""
    if not found:
        return ""
    line, count = found.most_common(1)[0]
    return f"{count}x {line}"
