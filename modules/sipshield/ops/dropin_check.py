"""``sipshield dropin check CFG``: what ``kamailio -c`` lets through in a drop-in.

``kamailio -c`` parses the configuration with the defines of the moment and
stops there.  It accepts an include of ``sipshield-dropin.cfg`` inside a
``#!ifdef`` block that the real start skips (the start then fails with
``route "SIPSHIELD" not found``), ``route(SIPSHIELD)`` calls without the
include, a ``SIPSHIELD_ENTRY`` that names no file, and a policy it never
reads.  This check reads the configuration as text, following its includes,
and loads what Kamailio would load at start:

- the include: present once, outside every conditional block;
- the route calls the drop-in needs, outside conditional blocks too;
- the modules and blocks that clash with the drop-in's;
- the KEMI entry (``SIPSHIELD_ENTRY``, quoted when given with ``-A``): it
  compiles, has the drop-in's start, and imports sipshield from PYTHONPATH
  with the interpreter Kamailio embeds;
- the policy: valid, and its events file writable by the ``kamailio`` user.

Each problem is one line that names the file and line (or the setting) and
says what to do.
"""

from __future__ import annotations

import ast
import grp
import os
import pwd
import re
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sipshield.core.policy import PolicyError, load_policy
from sipshield.edge.dropin import HAVE_LOCAL_RESPONSE
from sipshield.edge.kamailio_env import EMBEDDED_PYTHON, kamailio_environment

DEFAULT_ENTRY = "/usr/share/sipshield/sipshield_kemi.py"
DEFAULT_INCLUDE = "/usr/share/sipshield/sipshield-dropin.cfg"
ENTRY_DEFINE = "SIPSHIELD_ENTRY"
# The entry's function that sipshield-dropin.cfg names (mod_init_function).
DROPIN_START = "mod_init_dropin"
KAMAILIO_USER = "kamailio"

# The calls the drop-in needs, with what is lost without each.
ROUTE_CALLS = {
    "SIPSHIELD": "first in request_route: without it no request is screened",
    "SIPSHIELD_REPLY": "first in reply_route: without it failed authentications and "
    "sweeps are not counted from relayed replies",
    "SIPSHIELD_RECORD_ROUTE": "right after record_route(): without it dialog_guard "
    "refuses the caller's in-dialog requests",
    "SIPSHIELD_BRANCH": "first in the branch_route your relaying arms: without it "
    "dialog_guard refuses the callee's in-dialog requests",
}
LOCAL_REPLY_CALL = "SIPSHIELD_LOCAL_REPLY"
# Loaded by the drop-in unless already loaded: a loadmodule after the include is a second one.
DROPIN_LOADS = ("pv", "tm", "tmx", "sl", "htable", "rtimer")
# app_python3 runs one script; these would run the operator's own instead.
PYTHON_MODULES = ("app_python3", "app_python3s", "app_python")

_DIRECTIVE = re.compile(r"^(?:#!|!!)(\w+)\s*(.*)$")
_INCLUDE = re.compile(r'^(?:#!|!!)?(include_file|import_file)\s+"([^"]+)"')
_ROUTE_CALL = re.compile(r'\broute\(\s*"?(SIPSHIELD\w*?)"?\s*\)')
_LOADMODULE = re.compile(r'^loadmodule\s+"([^"]+)"')
_CFGENGINE = re.compile(r'^cfgengine\s+"([^"]+)"')
_LOCAL_RESPONSE = re.compile(r"^event_route\s*\[\s*sl:local-response\s*\]")
_OPENS = ("ifdef", "ifndef", "ifexp")


@dataclass(frozen=True)
class Problem:
    where: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


@dataclass(frozen=True)
class Line:
    """One line of configuration, without comments, and the conditional blocks around it."""

    path: Path
    number: int
    text: str
    conditions: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"

    def inside(self) -> str:
        """Where the innermost conditional block opened, for a message."""
        return self.conditions[-1]


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    include: Line | None = None
    entry: str = DEFAULT_ENTRY
    policy: str = ""
    modules: str = ""

    def add(self, where: str, text: str) -> None:
        self.problems.append(Problem(where, text))

    def summary(self) -> str:
        """What was found, when nothing is wrong."""
        where = self.include.where if self.include else "?"
        return (
            f"the drop-in is in place: include at {where}, every route call, "
            f"entry {self.entry}, policy {self.policy}: {self.modules}"
        )


def _without_block_comments(text: str) -> list[str]:
    """The file's lines with /* ... */ comments blanked (line numbers kept)."""
    blanked = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group().count("\n"), text, flags=re.S)
    return blanked.splitlines()


def _resolve(target: str, including: Path) -> Path:
    path = Path(target)
    return path if path.is_absolute() else including.parent / path


def is_dropin(path: Path) -> bool:
    """The file is sipshield's drop-in: it defines route[SIPSHIELD]."""
    if path.name == "sipshield-dropin.cfg":
        return True
    try:
        return "route[SIPSHIELD]" in path.read_text(errors="replace")
    except OSError:
        return False


def read_config(
    path: Path, conditions: tuple[str, ...] = (), seen: frozenset[Path] = frozenset()
) -> Iterator[Line]:
    """The configuration's lines in the order Kamailio reads them, following its includes.

    The drop-in's own include is yielded as a line, never read into: what it
    holds is sipshield's.  Preprocessor lines (``#!``) are yielded as they
    are; other comments are left out.
    """
    stack = list(conditions)
    for number, raw in enumerate(_without_block_comments(path.read_text(errors="replace")), 1):
        text = raw.strip()
        if not text:
            continue
        directive = _DIRECTIVE.match(text)
        if directive is not None:
            name = directive.group(1)
            if name in _OPENS:
                stack.append(f"#!{name} {directive.group(2)}".strip() + f" ({path}:{number})")
                continue
            if name == "endif":
                if len(stack) > len(conditions):
                    stack.pop()
                continue
            if name == "else":
                continue
        elif text.startswith("#") or text.startswith("//"):
            continue
        line = Line(path, number, text, tuple(stack))
        yield line
        include = _INCLUDE.match(text)
        if include is None:
            continue
        target = _resolve(include.group(2), path)
        if is_dropin(target) or target in seen or not target.is_file():
            continue
        yield from read_config(target, tuple(stack), seen | {path})


def _defines(arguments: list[str]) -> dict[str, str]:
    """``-A NAME=VALUE`` (or ``-A NAME``) as Kamailio takes them."""
    defines = {}
    for argument in arguments:
        name, _, value = argument.partition("=")
        defines[name.strip()] = value
    return defines


def check_config(lines: list[Line], defines: dict[str, str], report: Report) -> None:
    """The include, the route calls and the clashes, as the configuration's text shows them."""
    includes = [
        (index, line, target)
        for index, line in enumerate(lines)
        if (m := _INCLUDE.match(line.text)) and is_dropin(target := _resolve(m.group(2), line.path))
    ]
    main = lines[0].path if lines else Path("kamailio.cfg")
    if not includes:
        report.add(
            str(main),
            f'no include of sipshield-dropin.cfg: put include_file "{DEFAULT_INCLUDE}" '
            "on the line just before `request_route {`, outside every #!ifdef block",
        )
    for _, line, _ in includes[1:]:
        report.add(line.where, f"a second include of the drop-in (first at {includes[0][1].where})")
    include_index = includes[0][0] if includes else len(lines)
    if includes:
        _, include, target = includes[0]
        report.include = include
        if not target.is_file():
            report.add(include.where, f"{target} does not exist (sipshield install-dropin puts it)")
        if include.conditions:
            report.add(
                include.where,
                f"the include is inside {include.inside()}: Kamailio skips it unless that "
                'condition holds, and the start fails with route "SIPSHIELD" not found; '
                "move it to the line just before `request_route {`, outside every #!ifdef block",
            )
    called: dict[str, Line] = {}
    for line in lines:
        for name in _ROUTE_CALL.findall(line.text):
            called.setdefault(name, line)
    own_local_response = next((ln for ln in lines if _LOCAL_RESPONSE.match(ln.text)), None)
    wanted = dict(ROUTE_CALLS)
    if own_local_response is not None:
        wanted[LOCAL_REPLY_CALL] = (
            "first in your event_route[sl:local-response]: without it the replies "
            "Kamailio sends itself are not counted"
        )
        defined = HAVE_LOCAL_RESPONSE in defines or any(
            re.match(rf"^#!(define|trydef)\s+{HAVE_LOCAL_RESPONSE}\b", ln.text)
            for ln in lines[:include_index]
        )
        if not defined:
            report.add(
                own_local_response.where,
                f"your own event_route[sl:local-response] clashes with the drop-in's "
                f"(duplicate route): put #!define {HAVE_LOCAL_RESPONSE} before the include",
            )
    for name, purpose in wanted.items():
        line = called.get(name)
        if line is None:
            report.add(str(main), f"no route({name}); call it {purpose}")
        elif line.conditions:
            report.add(
                line.where,
                f"route({name}) is inside {line.inside()}: it runs only when that "
                "condition holds; move it out of the block",
            )
    _check_modules(lines, include_index, report)


def _check_modules(lines: list[Line], include_index: int, report: Report) -> None:
    for index, line in enumerate(lines):
        engine = _CFGENGINE.match(line.text)
        if engine is not None and engine.group(1) != "native":
            report.add(
                line.where,
                f'cfgengine "{engine.group(1)}": this configuration routes in a script; '
                "compose sipshield in that script instead (docs/dropin.md, your own KEMI "
                "script)",
            )
        loaded = _LOADMODULE.match(line.text)
        if loaded is None:
            continue
        module = Path(loaded.group(1)).name.removesuffix(".so")
        if module in PYTHON_MODULES:
            report.add(
                line.where,
                f"{module} is loaded here, and app_python3 runs one script: compose sipshield "
                "in your own script instead of including the drop-in (docs/dropin.md)",
            )
        elif module in DROPIN_LOADS and index > include_index:
            report.add(
                line.where,
                f"{module} is loaded after the include, which has loaded it already; "
                "Kamailio refuses the second loadmodule: put the include below your "
                "loadmodule lines",
            )


def entry_path(lines: list[Line], defines: dict[str, str], report: Report) -> str | None:
    """Where Kamailio will look for the KEMI entry; None when the -A form cannot work."""
    if ENTRY_DEFINE in defines:
        value = defines[ENTRY_DEFINE]
        if not (len(value) >= 2 and value.startswith('"') and value.endswith('"')):
            report.add(
                f"-A {ENTRY_DEFINE}={value}",
                "not a string, and Kamailio's error will point into the drop-in: "
                f"quote it, -A '{ENTRY_DEFINE}=\"{value.strip(chr(34))}\"'",
            )
            return None
        return value[1:-1]
    before = lines if report.include is None else lines[: lines.index(report.include)]
    for line in before:
        m = re.match(rf'^#!(?:define|trydef|redefine)\s+{ENTRY_DEFINE}\s+"([^"]*)"', line.text)
        if m is not None:
            return m.group(1)
    return DEFAULT_ENTRY


def check_entry(entry: str, python_path: str | None, policy: str, report: Report) -> None:
    """The entry compiles, has the drop-in's start, and finds sipshield as Kamailio would."""
    report.entry = entry
    try:
        source = Path(entry).read_text()
        tree = ast.parse(source, entry)
    except OSError as exc:
        report.add(f"{ENTRY_DEFINE} {entry}", f"cannot read the KEMI entry: {exc.strerror}")
        return
    except SyntaxError as exc:
        report.add(f"{entry}:{exc.lineno}", f"the KEMI entry does not compile: {exc.msg}")
        return
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    if DROPIN_START not in functions:
        report.add(
            entry,
            f"no {DROPIN_START}(), which sipshield-dropin.cfg starts sipshield with: "
            "install the entry of this sipshield version (sipshield install-dropin)",
        )
    env = kamailio_environment(policy, python_path)
    # What the entry does before it imports sipshield, run by the interpreter Kamailio embeds.
    probe = (
        "import os, site\n"
        "for entry in os.environ.get('PYTHONPATH', '').split(os.pathsep):\n"
        "    entry and site.addsitedir(entry)\n"
        "import sipshield.edge.kemi\n"
    )
    done = subprocess.run(
        [EMBEDDED_PYTHON, "-c", probe],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        report.add(
            f"PYTHONPATH={env['PYTHONPATH']}",
            f"the entry cannot import sipshield there ({last}); set PYTHONPATH in Kamailio's "
            "environment to the site-packages of sipshield's venv",
        )


def check_policy(policy_path: str, report: Report) -> None:
    report.policy = policy_path
    try:
        policy = load_policy(policy_path)
    except PolicyError as exc:
        for line in exc.errors:
            report.add("SIPSHIELD_POLICY", line)
        return
    report.modules = ", ".join(f"{m.name}({m.mode})" for m in policy.modules) or "no modules"
    if policy.events.file is not None:
        problem = unwritable_by(policy.events.file, KAMAILIO_USER)
        if problem:
            report.add(f"{policy_path}: events.file", problem)


def _allows(target: Path, account: pwd.struct_passwd, groups: set[int], bits: int) -> bool:
    """Whether ``account`` has the permission ``bits`` (7 = rwx) on ``target``."""
    info = target.stat()
    if info.st_uid == account.pw_uid:
        granted = info.st_mode >> 6
    elif info.st_gid in groups:
        granted = info.st_mode >> 3
    else:
        granted = info.st_mode
    return granted & bits == bits


def unwritable_by(path: Path, user: str) -> str | None:
    """Why ``user`` cannot append to ``path`` (or create it), or None when it can."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return None  # no such user on this host: nothing to say
    if account.pw_uid == 0:
        return None
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    # The file, or the directory where sipshield would create it (and its parents).
    target = path.absolute()
    while not target.exists():
        target = target.parent
    blocked = next(
        (d for d in reversed(target.parents) if not _allows(d, account, groups, stat.S_IXOTH)),
        None,
    )
    if blocked is None and _allows(target, account, groups, stat.S_IWOTH):
        return None
    what = f"{blocked} cannot be entered" if blocked else f"{target} is not writable"
    missing = "" if target == path.absolute() else f" (to create {path})"
    return (
        f"{what} by the {user} user{missing}: every event would log a PermissionError "
        f"(sipshield install-dropin creates {path.parent} owned by {user})"
    )


def check(
    config: Path,
    arguments: list[str],
    policy: str,
    python_path: str | None = None,
) -> Report:
    """Everything above, for ``config`` started with ``-A arguments``."""
    report = Report()
    try:
        lines = list(read_config(config))
    except OSError as exc:
        report.add(str(config), f"cannot read: {exc.strerror}")
        return report
    defines = _defines(arguments)
    check_config(lines, defines, report)
    entry = entry_path(lines, defines, report)
    if entry is not None:
        check_entry(entry, python_path, policy, report)
    check_policy(policy, report)
    return report
