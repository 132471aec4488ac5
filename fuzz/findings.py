"""Findings on disk: the offending bytes, and what is needed to send them again.

A finding traced to one message is two files in ``<findings>/<seed>/``:
``<index>-<what>.sip`` (the bytes as sent) and ``.json`` beside it (seed,
index, transport, template, mutations, the problem and its log or event
text, the lab's addresses).  One that could not be traced (a process died,
the SBC stopped answering) keeps the whole batch it happened in, in a
directory with one ``.sip``/``.json`` pair per message, so that ``--replay``
can bisect it.

The same bug usually shows many times (every INVITE of a kind, say): the
problems are grouped by their key (fuzz.watch.Problem.key), and only the
first few messages of each group are kept.

A replay rewrites the old lab's SBC and PBX addresses to the new lab's, so
that a Route or Request-URI naming the SBC still names it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fuzz.corpus import Fuzzed, Target
from fuzz.watch import Problem

# Messages kept per distinct problem.
KEEP = 3


@dataclass
class Finding:
    """One distinct problem: how often it was seen, the messages kept for it."""

    what: str
    key: str
    detail: str  # of the first occurrence
    count: int = 0
    indexes: list[int | None] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _meta(message: Fuzzed, problem: Problem | None, target: Target) -> dict[str, Any]:
    meta = {key: value for key, value in asdict(message).items() if key != "data"}
    meta["target"] = asdict(target)
    if problem is not None:
        meta["problem"] = {"what": problem.what, "key": problem.key, "detail": problem.detail}
    return meta


def _write(path: Path, message: Fuzzed, problem: Problem | None, target: Target) -> Path:
    path.with_suffix(".sip").write_bytes(message.data)
    meta = _meta(message, problem, target)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=list) + "\n")
    return path.with_suffix(".sip")


class Findings:
    def __init__(self, directory: Path, seed: int, target: Target) -> None:
        """Findings of seed ``seed`` go to ``directory/<seed>``, emptied first."""
        self.directory = directory / str(seed)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.target = target
        self.found: dict[str, Finding] = {}

    def add(self, problem: Problem, message: Fuzzed | None, batch: list[Fuzzed]) -> Path | None:
        """Count ``problem``; keep its message (or, untraced, its batch) if few are kept yet."""
        finding = self.found.setdefault(
            problem.key, Finding(problem.what, problem.key, problem.detail)
        )
        finding.count += 1
        if len(finding.files) >= KEEP:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        if message is not None:
            name = f"{message.index}-{problem.what}"
            path = _write(self.directory / name, message, problem, self.target)
        else:
            path = self._batch_folder(batch, problem)
            if str(path) in finding.files:
                return None  # this batch is kept already
            self._save_batch(path, batch, problem)
        finding.indexes.append(problem.index)
        finding.files.append(str(path))
        return path

    def _batch_folder(self, batch: list[Fuzzed], problem: Problem) -> Path:
        first = batch[0].index if batch else "none"
        return self.directory / f"batch{first}-{problem.what}"

    def _save_batch(self, folder: Path, batch: list[Fuzzed], problem: Problem) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "problem.txt").write_text(problem.detail + "\n")
        for message in batch:
            _write(folder / f"{message.index:07d}", message, None, self.target)

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(finding) for finding in self.found.values()]


def replay_files(path: Path) -> list[Path]:
    """The .sip files a replay sends: ``path`` itself, or every one in the directory, in order."""
    return sorted(path.glob("*.sip")) if path.is_dir() else [path]


def load(path: Path, target: Target) -> tuple[bytes, dict[str, Any]]:
    """The bytes of a finding, pointed at ``target``, and its metadata ({} when it has none)."""
    data = path.read_bytes()
    meta_path = path.with_suffix(".json")
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    old = meta.get("target")
    if old:
        for transport, address in old["sbc"].items():
            data = data.replace(address.encode(), target.sbc[transport].encode())
        data = data.replace(old["pbx"].encode(), target.pbx.encode())
    return data, meta
