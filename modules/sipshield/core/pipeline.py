"""The ordered, frozen chain of security modules.

The policy lists the modules in order; :meth:`Pipeline.build` instantiates the
ones that are not ``off`` once, and the chain cannot change afterwards.  For
each request the modules run in order until one returns a stopping verdict.

- ``monitor`` mode: the verdict becomes an event and the next module runs.
- A module that raises never breaks Kamailio: the exception is logged with its
  traceback, becomes an ``error`` event, and the request goes on (``open``) or
  is answered 500 (``closed``), as the policy says.
- A module that needs Redis while Redis is down is handled by
  ``redis.on_failure`` (open: skip that check; closed: 503).
- A module that returns something that is neither CONTINUE nor a verdict is a
  bug; it is treated like a crash and the error names the class.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from sipshield.core.call_event import CallEvent
from sipshield.core.events import Event, EventSink
from sipshield.core.hop import Hop
from sipshield.core.module import FailureMode, Mode, ModuleConfig, ModuleDisabled, SecurityModule
from sipshield.core.policy import PluginConfig, Policy, PolicyError
from sipshield.core.registry import BUILTIN_MODULES
from sipshield.core.site import Site
from sipshield.core.stage_timing import StageTimes
from sipshield.core.state import SharedState, StateUnavailable
from sipshield.core.verdict import (
    CONTINUE,
    PASS,
    Accept,
    Alert,
    Ban,
    Decision,
    EndCall,
    Outcome,
    Reject,
    Rewrite,
    Verdict,
    decided_response,
)
from sipshield.sip.message import SipRequest
from sipshield.sip.reply import ReplyFacts

log = logging.getLogger("sipshield.core.pipeline")


@dataclass(frozen=True)
class Stage:
    name: str
    module: SecurityModule
    mode: Mode
    on_error: FailureMode
    drops: bool = False  # the module's policy answers droppable refusals by dropping


def drops_refusals(module: SecurityModule) -> bool:
    """Whether the module's policy answers its droppable refusals by dropping."""
    setting = module.response_setting
    return setting is not None and getattr(module.config, setting, None) == "drop"


def _load_plugin(index: int, entry: PluginConfig, source: str) -> SecurityModule:
    where = f"{source}: modules[{index}]"
    module_path, _, class_name = entry.target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_path), class_name)
    except (ImportError, AttributeError) as exc:
        raise PolicyError(
            source, [f"{where}.target: cannot import {entry.target}: {exc}"]
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, SecurityModule)):
        raise PolicyError(source, [f"{where}.target: {entry.target} is not a SecurityModule"])
    try:
        options = cls.Config.model_validate(
            {**entry.options, "mode": entry.mode, "on_error": entry.on_error}
        )
    except ValidationError as exc:
        raise PolicyError(
            source,
            [
                f"{where}.options.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in exc.errors(include_url=False)
            ],
        ) from None
    return cls(options)


class Pipeline:
    def __init__(
        self,
        stages: tuple[Stage, ...],
        state: SharedState,
        events: EventSink,
        on_redis_failure: FailureMode = "open",
    ) -> None:
        self.stages = stages
        self.state = state
        self.events = events
        self.on_redis_failure = on_redis_failure
        # The benchmark's per-module times; None (no cost) unless asked for.
        self.times = StageTimes.from_environment()
        self._stage_names = {id(stage.module): stage.name for stage in stages}
        self.timed_stages = tuple(stage for stage in stages if stage.module.has_timer)

    @classmethod
    def build(
        cls,
        policy: Policy,
        state: SharedState,
        events: EventSink,
        source: str = "<policy>",
        site: Site | None = None,
    ) -> Pipeline:
        stages: list[Stage] = []
        site = site or Site.from_policy(policy)
        for index, entry in enumerate(policy.modules):
            if entry.mode == "off":
                log.info("module %s is off", entry.name)
                continue
            try:
                if isinstance(entry, PluginConfig):
                    module = _load_plugin(index, entry, source)
                    name = f"{entry.name}:{type(module).__name__}"
                else:
                    module = BUILTIN_MODULES[entry.name](entry)
                    name = entry.name
            except ModuleDisabled as why:
                log.warning("module %s switched itself off: %s", entry.name, why)
                continue
            module.bind(site)
            config: ModuleConfig = module.config
            stages.append(
                Stage(
                    name,
                    module,
                    config.mode,
                    config.on_error or policy.on_module_error,
                    drops_refusals(module),
                )
            )
        log.info("pipeline: %s", " -> ".join(f"{s.name}({s.mode})" for s in stages) or "empty")
        return cls(tuple(stages), state, events, policy.redis.on_failure)

    @property
    def observes_replies(self) -> bool:
        return any(stage.module.observes_replies for stage in self.stages)

    def run(self, msg: SipRequest) -> Decision:
        """The request phase: every stage's check, as the request arrives."""
        if self.times is not None:
            return self._timed_run(msg, self.times)
        return self._chain(
            msg, self.stages, lambda module: module.check(msg, self.state), relay=False
        )

    def _timed_run(self, msg: SipRequest, times: StageTimes) -> Decision:
        names = self._stage_names

        def judge(module: SecurityModule) -> Outcome:
            started = time.thread_time_ns()
            try:
                return module.check(msg, self.state)
            finally:
                times.add(names[id(module)], time.thread_time_ns() - started)

        try:
            return self._chain(msg, self.stages, judge, relay=False)
        finally:
            times.request_done()

    def on_timer(self) -> list[EndCall]:
        """The modules' periodic work (the node's timer process calls this); the calls
        they ask to end (each with its event; in monitor mode only the event)."""
        ending: list[EndCall] = []
        for stage in self.timed_stages:
            try:
                calls = stage.module.on_timer(self.state) or []
            except StateUnavailable:
                continue  # SharedState logs the outage once; the work waits for Redis
            except Exception:
                log.exception("module %s failed in its periodic work", stage.name)
                continue
            for call in calls:
                self._emit_call(
                    stage, CallEvent("ended", call.call_id), "end", call.reason, stage.mode
                )
                if stage.mode == "enforce":
                    ending.append(call)
        return ending

    def run_relay(self, msg: SipRequest, hop: Hop) -> Decision:
        """The relay phase: the stages that judge a request just before it leaves over ``hop``."""
        return self._chain(
            msg,
            self.relay_stages,
            lambda module: module.check_relay(msg, hop, self.state),
            relay=True,
        )

    def module(self, name: str) -> SecurityModule | None:
        """The module of the stage called ``name`` (on, in either mode), or None."""
        return next((stage.module for stage in self.stages if stage.name == name), None)

    @property
    def relay_stages(self) -> tuple[Stage, ...]:
        return tuple(stage for stage in self.stages if stage.module.checks_relay)

    def _chain(
        self,
        msg: SipRequest,
        stages: tuple[Stage, ...],
        judge: Callable[[SecurityModule], Outcome],
        relay: bool,
    ) -> Decision:
        rewrites: list[Rewrite] = []
        for stage in stages:
            try:
                outcome = judge(stage.module)
            except StateUnavailable:
                # The outage itself is logged once by SharedState, not per request.
                if self.on_redis_failure == "open":
                    continue
                return self._stop(stage, msg, Reject("shared state (redis) unavailable", code=503))
            except Exception as exc:
                failed = self._crashed(stage, msg, f"{type(exc).__name__}: {exc}", exc)
                if failed is None:
                    continue
                return failed
            if outcome is CONTINUE:
                continue
            if not isinstance(outcome, Verdict) or (isinstance(outcome, Rewrite) and not relay):
                # A rewrite made as the request arrives would be overwritten
                # by the media anchoring: only the relay phase rewrites.
                hook = "check_relay" if relay else "check"
                expected = "CONTINUE or a Verdict" + ("" if relay else " (Rewrite: relay only)")
                problem = (
                    f"{type(stage.module).__name__}.{hook} returned {outcome!r}; "
                    f"expected {expected}"
                )
                failed = self._crashed(stage, msg, problem, None)
                if failed is None:
                    continue
                return failed
            outcome = decided_response(outcome, msg.method, stage.drops)
            if isinstance(outcome, Accept):
                return Decision(outcome, stage.name, tuple(rewrites))
            if isinstance(outcome, Alert):
                self._emit(stage, msg, outcome.action, outcome.reason, stage.mode)
                continue
            if stage.mode == "monitor":
                self._emit(stage, msg, outcome.action, outcome.reason, "monitor")
                continue
            if isinstance(outcome, Rewrite):
                if any(_overlap(outcome, earlier) for earlier in rewrites):
                    # Kamailio applies each to the body as received: two edits of
                    # the same bytes would make a body nobody meant.
                    return self._stop(
                        stage, msg, Reject(f"{outcome.reason}; overlaps an earlier rewrite", 488)
                    )
                # Carried out with the decision; the next stages still judge.
                self._emit(stage, msg, outcome.action, outcome.reason, "enforce")
                rewrites.append(outcome)
                continue
            return self._stop(stage, msg, outcome)
        return Decision(rewrites=tuple(rewrites)) if rewrites else PASS

    def _stop(self, stage: Stage, msg: SipRequest, verdict: Verdict) -> Decision:
        reason = verdict.reason
        if isinstance(verdict, Ban):
            reason = self._decide_ban(stage, msg, verdict)
        self._emit(stage, msg, verdict.action, reason, "enforce")
        return Decision(verdict, stage.name)

    def _decide_ban(self, stage: Stage, subject: SipRequest | ReplyFacts, ban: Ban) -> str:
        """The decision step: store the ban with its TTL; return the reason for the event."""
        user = ban.user if ban.scope == "user" else ""
        account = ban.user if ban.scope == "account" else ""
        if self.state.decisions is None:
            return f"{ban.reason}; ban not stored (no decision store)"
        try:
            record = self.state.decisions.add(
                subject.src_ip, ban.reason, stage.name, user, ban.ttl_s, account=account
            )
        except StateUnavailable:
            return f"{ban.reason}; ban not stored (redis unavailable)"
        if record is None:
            return f"{ban.reason}; not banned (allowlisted source)"
        if not record.stored:
            return (
                f"{ban.reason}; banned {record.scope} for {record.ttl_s}s in this worker "
                "(redis unavailable: stored when it answers again)"
            )
        return f"{ban.reason}; banned {record.scope} for {record.ttl_s}s (offence {record.offense})"

    def observe(self, reply: ReplyFacts) -> None:
        """Show a final reply to the modules that observe replies; store the bans they ask for."""
        try:
            self._observe(reply)
        finally:
            # The observers' counter resets, in one round trip.
            self.state.flush_deferred()

    def _observe(self, reply: ReplyFacts) -> None:
        for stage in self.stages:
            if not stage.module.observes_replies:
                continue
            try:
                ban = stage.module.observe_reply(reply, self.state)
            except StateUnavailable:
                continue
            except Exception as exc:
                log.error(
                    "module %s failed on a %d reply to %s from %s:%s: %s",
                    stage.name,
                    reply.status,
                    reply.method,
                    reply.src_ip,
                    reply.src_port,
                    exc,
                    exc_info=exc,
                )
                self._emit(stage, reply, "error", f"{type(exc).__name__}: {exc}", "enforce")
                continue
            if ban is None:
                continue
            if stage.mode == "monitor":
                self._emit(stage, reply, ban.action, ban.reason, "monitor")
                continue
            self._emit(stage, reply, ban.action, self._decide_ban(stage, reply, ban), "enforce")

    @property
    def observes_calls(self) -> bool:
        return any(stage.module.observes_calls for stage in self.stages)

    def call_event(self, event: CallEvent) -> None:
        """Tell the modules that follow calls that one was answered or is over."""
        for stage in self.stages:
            if not stage.module.observes_calls:
                continue
            try:
                verdict = stage.module.on_call(event, self.state)
            except StateUnavailable:
                continue
            except Exception as exc:
                log.error(
                    "module %s failed on the %s call %s: %s",
                    stage.name,
                    event.kind,
                    event.call_id,
                    exc,
                    exc_info=exc,
                )
                verdict = Alert(f"{type(exc).__name__}: {exc}")
                self._emit_call(stage, event, "error", verdict.reason, "enforce")
                continue
            if verdict is not None:
                self._emit_call(stage, event, verdict.action, verdict.reason, stage.mode)

    def _emit_call(
        self, stage: Stage, event: CallEvent, action: str, reason: str, mode: str
    ) -> None:
        try:
            self.events.emit(
                Event(
                    module=stage.name,
                    action=action,
                    src=f"{event.src_ip}:{event.src_port}",
                    reason=reason,
                    call_id=event.call_id,
                    mode=mode,
                )
            )
        except Exception:
            log.exception("could not write the event of module %s", stage.name)

    def _crashed(
        self, stage: Stage, msg: SipRequest, problem: str, exc: BaseException | None
    ) -> Decision | None:
        """Log a module failure; None means fail open (go on with the next module)."""
        log.error(
            "module %s failed on %s from %s:%s (failing %s): %s",
            stage.name,
            msg.method,
            msg.src_ip,
            msg.src_port,
            stage.on_error,
            problem,
            exc_info=exc,
        )
        self._emit(stage, msg, "error", problem, "enforce")
        if stage.on_error == "open":
            return None
        return Decision(Reject(f"module {stage.name} failed", code=500), stage.name)

    def _emit(
        self, stage: Stage, msg: SipRequest | ReplyFacts, action: str, reason: str, mode: str
    ) -> None:
        try:
            self._send_event(stage, msg, action, reason, mode)
        except Exception:
            # A full disk must not turn into a failed call; the log still says it.
            log.exception("could not write the event of module %s", stage.name)

    def _send_event(
        self, stage: Stage, msg: SipRequest | ReplyFacts, action: str, reason: str, mode: str
    ) -> None:
        self.events.emit(Event.of_request(msg, stage.name, action, reason, mode))


def _overlap(one: Rewrite, other: Rewrite) -> bool:
    """Whether two rewrites touch the same bytes of the body (a whole-body one touches all)."""
    a, b = one.part, other.part
    if a is None or b is None or not a.multipart or not b.multipart:
        return True
    return a.start < b.end and b.start < a.end
