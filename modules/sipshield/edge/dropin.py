"""sipshield inside routing that is not sipshield's: the operator's own.

Two kinds of configuration keep their routing and call sipshield from it:

- a native kamailio.cfg includes ``kamailio-cfg/sipshield-dropin.cfg`` and
  calls its routes; they reach the handler's ``sipshield_*`` methods through
  ``python_exec`` (:mod:`sipshield.edge.kemi`).  :func:`add_to_native_config` makes
  that edit in code: the tests and the benchmark apply it to Debian's stock
  configuration, and the Ansible role makes the same edit on a host;
- an operator's own KEMI Python script builds a :class:`Shield` in its
  ``mod_init`` and asks it about each request and each reply.

Either way the pipeline is the one the reference configuration runs: the same
handler, built by the same :func:`sipshield.edge.kemi.load_handler`.
"""

from __future__ import annotations

import os
import re
from typing import Any

from sipshield.edge.kemi import KemiHandler, Screening, load_handler

DEFAULT_POLICY = "/etc/sipshield/policy.yaml"


class Shield:
    """sipshield for an operator's KEMI script; one per Kamailio, built in ``mod_init``.

    ::

        def mod_init():
            return Routing(sipshield.edge.dropin.Shield.load(KSR))

        class Routing:
            def child_init(self, rank):
                return self.shield.child_init(rank)

            def ksr_request_route(self, msg):
                if self.shield.request().blocked:
                    return 1          # answered or dropped already
                ...                   # your routing, untouched

            def ksr_reply_route(self, msg):
                self.shield.reply()
                ...

    and, for dialog_guard, ``self.shield.record_route()`` after
    ``KSR.rr.record_route()`` and ``self.shield.branch()`` in the branch route.
    """

    def __init__(self, handler: KemiHandler) -> None:
        self.handler = handler

    @classmethod
    def load(cls, ksr: Any, policy_path: str | None = None) -> Shield:
        """Load and validate the policy (default: $SIPSHIELD_POLICY); raise when it is invalid.

        Raising from ``mod_init`` stops Kamailio from starting, as the
        reference configuration does; the policy's errors are in the log.
        """
        path = policy_path or os.environ.get("SIPSHIELD_POLICY", DEFAULT_POLICY)
        handler = load_handler(ksr, path, routes=False)
        if handler is None:
            raise RuntimeError(f"sipshield: invalid policy {path}; see the errors logged above")
        return cls(handler)

    def child_init(self, rank: int) -> int:
        """Call from the script's ``child_init``: each worker opens its own connections."""
        return self.handler.child_init(rank)

    def request(self) -> Screening:
        """Run the pipeline on the current request and apply the verdict.

        When the result is ``blocked`` the request has been answered or
        dropped: end the route without routing it.  Otherwise route it as
        usual; ``module``, ``action`` and ``reason`` say what stopped it or
        (for an ``accept``) what let it through early.
        """
        return self.handler.screen(arm_reply_route=False)

    def reply(self) -> None:
        """Call from a reply route that sees final replies (failed-auth and sweep counting)."""
        self.handler.observe_reply()

    def record_route(self) -> None:
        """Call right after ``record_route()`` for a dialog-forming request.

        With dialog_guard on, it signs the caller's leg into the Record-Route.
        """
        self.handler.on_record_route()

    def branch(self) -> None:
        """Call first in the branch route (``KSR.tm.t_on_branch``) of relayed requests.

        With dialog_guard on, it signs the callee's leg (the branch's
        destination) into the same Record-Route entry.  Without it the
        callee's in-dialog requests carry no token of theirs and are refused.
        """
        self.handler.on_branch()

    def timer(self) -> None:
        """Call from the node's timer (rtimer, every 200 ms): flood's counts are merged
        across nodes there.  The configuration declares the timer and the htable
        (docs/dropin.md)."""
        self.handler.ksr_timer(None)


# --- the native drop-in, as an edit of a kamailio.cfg ---------------------

MARK = "# sipshield drop-in"
_REQUEST_ROUTE = re.compile(r"^request_route\s*\{[^\n]*\n", re.MULTILINE)
_REPLY_ROUTE = re.compile(r"^reply_route\s*\{[^\n]*\n", re.MULTILINE)
_RECORD_ROUTE = re.compile(r"^([ \t]*)record_route\(\);[^\n]*\n", re.MULTILINE)
_BRANCH_ROUTE = re.compile(r"^branch_route\[[^\]]*\]\s*\{[^\n]*\n", re.MULTILINE)
# The event route of the replies Kamailio sends itself statelessly.  The
# drop-in defines it unless the configuration has its own (Kamailio refuses a
# second block) and says so with this define.
_LOCAL_RESPONSE_ROUTE = re.compile(
    r"^event_route\s*\[\s*sl:local-response\s*\]\s*\{[^\n]*\n", re.MULTILINE
)
HAVE_LOCAL_RESPONSE = "SIPSHIELD_HAVE_SL_LOCAL_RESPONSE"


class ConfigShapeError(ValueError):
    """The configuration lacks a place the drop-in needs; the message names it."""


def add_to_native_config(text: str, include: str) -> str:
    """``text`` with the drop-in added: the include and the route calls.

    Each added line ends with :data:`MARK`, so :func:`remove_from_native_config`
    gives back exactly the original.  The include goes just before
    ``request_route`` (after the module section), the request call first in
    ``request_route``, the reply call first in ``reply_route`` (a new
    ``reply_route`` is appended when there is none), the record-route hook
    after the first ``record_route();`` line, and the branch hook first in
    every ``branch_route`` (dialog_guard signs the callee's leg there; a
    configuration with no branch route gets no branch call, and its callees'
    in-dialog requests are refused when dialog_guard is on).  The drop-in
    defines ``event_route[sl:local-response]`` itself; where the configuration
    has one already, :data:`HAVE_LOCAL_RESPONSE` is defined before the include
    and the local-reply call goes first in that block.
    """
    if MARK in text:
        raise ConfigShapeError("the configuration has the sipshield drop-in already")
    request = _REQUEST_ROUTE.search(text)
    if request is None:
        raise ConfigShapeError("no `request_route {` line to protect")
    record = _RECORD_ROUTE.search(text, request.end())
    if record is None:
        raise ConfigShapeError("no `record_route();` line after request_route")
    indent = record.group(1)
    include_line = f'include_file "{include}"  {MARK}\n'
    edits = []
    local_response = _LOCAL_RESPONSE_ROUTE.search(text)
    if local_response is not None:
        include_line = f"#!define {HAVE_LOCAL_RESPONSE}  {MARK}\n{include_line}"
        edits.append((local_response.end(), f"\troute(SIPSHIELD_LOCAL_REPLY);  {MARK}\n"))
    edits += [
        (request.start(), include_line),
        (request.end(), f"\troute(SIPSHIELD);  {MARK}\n"),
        (record.end(), f"{indent}route(SIPSHIELD_RECORD_ROUTE);  {MARK}\n"),
    ]
    for branch in _BRANCH_ROUTE.finditer(text):
        edits.append((branch.end(), f"\troute(SIPSHIELD_BRANCH);  {MARK}\n"))
    reply = _REPLY_ROUTE.search(text)
    if reply is not None:
        edits.append((reply.end(), f"\troute(SIPSHIELD_REPLY);  {MARK}\n"))
    for position, line in sorted(edits, reverse=True):
        text = text[:position] + line + text[position:]
    if reply is None:
        text += f"reply_route {{  {MARK}\n\troute(SIPSHIELD_REPLY);  {MARK}\n}}  {MARK}\n"
    return text


def remove_from_native_config(text: str) -> str:
    """``text`` without the lines :func:`add_to_native_config` added."""
    lines = text.splitlines(keepends=True)
    return "".join(line for line in lines if not line.rstrip().endswith(MARK))
