"""The judge: checks observations against the independent model (``conformance.model``).

``Judge.observe(obs)`` asks the model for every answer a correct implementation may give to
``obs.step`` now (one candidate per view of the events in flight, see the model's docstring),
takes the candidate the observation matches -- advancing the model with the observed outcome
-- and reports the rules that held and the ones that did not.  Each judged part of an answer
belongs to exactly one rule, so a trace that breaks one rule is flagged under that rule alone.

Symbolic indices (the executor's, ``conformance.executor``): a client ``device`` is the n-th
device that actor's OpenDevice returned, ``command`` the n-th command its GetCommand returned;
``handle`` the n-th handle any GetBufferHandle returned; a server ``device`` / ``buffer`` /
``command`` the n-th server device opened / buffer allocated / command sent -- all 0-based over
the whole trace.  The judge reads them from ``out`` and never needs backend handles.

Without a scripted server (a client driven by real T-SQL statements, or a live SQL Server)
``Judge(opaque_server=True)`` accepts whatever a documented server may have done meanwhile and
judges the server's side from what reaches the client (transfer sizes, VDC_Complete).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from conformance.model import (
    R_CALL_RETURNS,
    R_WAIT_CLOSE,
    Candidate,
    Check,
    World,
    get_out,
    hr_name,
    opaque_hypotheses,
)
from conformance.report import Violation
from conformance.trace import Obs, Step

__all__ = ["CLIENT_RULES", "Judge", "Judgement", "expected_trace", "judge"]

#: Rules of the model that bind the client application, not the library or the server.
CLIENT_RULES = frozenset({R_WAIT_CLOSE})


@attrs.define
class Judgement:
    """What one observation (or a whole trace) showed."""

    held: list[str] = attrs.field(factory=list)
    violations: list[Violation] = attrs.field(factory=list)
    #: (rule, check key) of every part judged, in order (used to build negative examples)
    judged: list[tuple[str, str]] = attrs.field(factory=list)
    #: the model's checks behind ``judged`` (same order; "hang" entries have none)
    checks: list[Check] = attrs.field(factory=list)


def _fmt(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and v > 0xFFFF:
        return hr_name(v)
    return repr(v)


def _value(check: Check, obs: Obs) -> tuple[bool, Any]:
    if check.key == "hr":  # the Linux view (signed int) is the same 32 bits (§10, §11.25)
        return True, None if obs.hr is None else obs.hr & 0xFFFFFFFF
    if check.key == "step":
        return True, check.expected
    present, value = get_out(obs.out, check.key)
    if isinstance(value, list):
        value = tuple(value)
    return present, value


def _describe(check: Check) -> str:
    if check.pred is not None:
        return f"a value satisfying {check.what}"
    vals = sorted(check.allowed, key=repr)
    if check.key == "hr":
        return " or ".join(hr_name(int(v)) for v in vals)
    return " or ".join(_fmt(v) for v in vals)


class Judge:
    """Judges one conversation, one observation at a time."""

    def __init__(self, *, opaque_server: bool = False, client_rules: bool = False) -> None:
        self.world = World(opaque_server=opaque_server)
        self.index = 0
        #: Judge rules that bind the VDI *client* (binds=client, e.g. waiting for VD_E_CLOSE
        #: before Close).  Off by default: a conformance run's client is the harness, which
        #: breaks them on purpose; ``judge(trace)`` of a recorded client trace turns them on.
        self.client_rules = client_rules

    # -- the contract ------------------------------------------------------------------------
    def expect(self, step: Step) -> frozenset[int] | None:
        """The HRESULTs the model allows for ``step`` now; None when the step has no return
        code or the model cannot predict it."""
        cands = self._valid(self.world.candidates(step))
        if not cands:
            return None
        out: set[int] = set()
        for c in cands:
            hrs = c.hrs
            if hrs is None:
                return None
            out |= hrs
        return frozenset(out)

    def observe(self, obs: Obs) -> Judgement:
        i = self.index
        self.index += 1
        if obs.out.get("hang"):
            return Judgement([], [Violation(R_CALL_RETURNS, f"{obs.step} did not return within "
                                            f"{obs.out.get('deadline_ms')} ms", i)],
                             [(R_CALL_RETURNS, "hang")])
        returned = _waited(obs.step)
        cands = self.world.candidates(obs.step)
        if self.world.opaque and obs.step.actor in ("client", "secondary"):
            for hw in opaque_hypotheses(self.world, obs):
                cands.extend(hw.candidates(obs.step))
        cands = self._valid(cands)
        if not cands:
            return Judgement([R_CALL_RETURNS] if returned else [],
                             judged=[(R_CALL_RETURNS, "hang")] if returned else [])
        scored = [(c, self._failures(c, obs)) for c in cands]
        perfect = [c for c, f in scored if not f]
        if perfect:
            # Least commitment: the first view (fewest events taken as arrived) that explains
            # the observation; what it leaves in flight may still arrive later.
            chosen = perfect[0]
            failures: list[Check] = []
        else:
            hr_ok = [(c, f) for c, f in scored if not any(x.key == "hr" for x in f)]
            if hr_ok:
                chosen, failures = min(hr_ok, key=lambda cf: (len(cf[1]), not cf[0].preferred))
            else:
                chosen = next((c for c in cands if c.preferred), cands[-1])
                failures = [x for x in chosen.checks if x.key == "hr"]
        result = Judgement()
        if returned:
            result.held.append(R_CALL_RETURNS)
            result.judged.append((R_CALL_RETURNS, "hang"))
        hr_failed = any(x.key == "hr" for x in failures)
        for check in chosen.checks:
            present, value = _value(check, obs)
            if not present or (hr_failed and check.key != "hr"):
                continue
            result.judged.append((check.rule, check.key))
            result.checks.append(check)
            if check in failures and check.rule in CLIENT_RULES and not self.client_rules:
                continue
            if check in failures:
                where = f" ({check.what})" if check.what else ""
                result.violations.append(Violation(
                    check.rule, f"{obs.step}{where}: expected {_describe(check)}, "
                                f"observed {_fmt(value)}", i,
                    {"key": check.key, "observed": _jsonable(value)}))
            elif check.rule not in result.held:
                result.held.append(check.rule)
        self.world = chosen.world
        if chosen.finish is not None:
            chosen.finish(self.world, obs)
        return result

    def state(self) -> dict[str, Any]:
        """A summary of the model's state (for notes and reports)."""
        w = self.world
        out: dict[str, Any] = {"server": {"state": w.srv.state, "agent": w.srv.agent,
                                          "devices": [("closed" if d.closed else "io-error"
                                                       if d.io_error else "open" if d.opened
                                                       else "unopened") for d in w.srv.devices],
                                          "pending": sorted(k for k, c in w.srv.cmds.items()
                                                            if not c.done)}}
        for name, a in w.actors.items():
            cs = w.cset(a)
            entry: dict[str, Any] = {"state": a.state, "role": a.role}
            if cs is not None:
                entry["devices"] = [{"name": d.name, "opened_by": d.opened_by,
                                     "closed": d.close_seen, "queued": len(d.queue),
                                     "outstanding": len(d.outstanding),
                                     "io_error": d.io_error} for d in cs.devs]
                entry["aborted"] = cs.aborted
                entry["in_flight"] = len(cs.down) - cs.seen
            out[name] = entry
        return out

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _valid(cands: list[Candidate]) -> list[Candidate]:
        ok = [c for c in cands if not c.blocked]
        return ok or cands

    @staticmethod
    def _failures(c: Candidate, obs: Obs) -> list[Check]:
        out = []
        for check in c.checks:
            present, value = _value(check, obs)
            if present and not check.ok(value):
                out.append(check)
        return out


def _waited(step: Step) -> bool:
    """A call that waits (its return is judged by TIMEOUT-CALL-RETURNS)."""
    if step.call not in ("get_command", "get_configuration", "wait_completion"):
        return False
    t = step.args.get("timeout_ms", 0)
    return isinstance(t, int) and t != 0


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return v


def judge(trace: Sequence[Obs], *, opaque_server: bool | None = None,
          client_rules: bool = True) -> Judgement:
    """Judge a whole trace with a fresh :class:`Judge`.  Without a server step in the trace
    (and unless told otherwise) the server is opaque; the client's own rules are judged."""
    if opaque_server is None:
        opaque_server = not any(o.step.actor == "server" for o in trace)
    j = Judge(opaque_server=opaque_server, client_rules=client_rules)
    total = Judgement()
    for obs in trace:
        r = j.observe(obs)
        total.violations.extend(r.violations)
        total.judged.extend(r.judged)
        for rule in r.held:
            if rule not in total.held:
                total.held.append(rule)
    return total


# ---------------------------------------------------------------------------------------------
# Expected traces: what a correct implementation answers to a step sequence (the model as an
# oracle).  Used to turn directed sequences into recorded traces (and negative examples).


class _Syms:
    def __init__(self) -> None:
        self.n: dict[str, int] = {}

    def next(self, key: str) -> int:
        v = self.n.get(key, 0)
        self.n[key] = v + 1
        return v


def _set_out(out: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")[1:]
    cur = out
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = list(value) if isinstance(value, tuple) else value


def expected_trace(steps: Sequence[Step], *, opaque_server: bool = False) -> list[Obs]:
    """The observations a correct implementation produces for ``steps`` (one of them, when
    several answers are allowed: the one where every event already sent has arrived)."""
    j = Judge(opaque_server=opaque_server)
    syms = _Syms()
    trace: list[Obs] = []
    for step in steps:
        cands = Judge._valid(j.world.candidates(step))
        if not cands:
            obs = Obs(step, None, {})
        else:
            c = next((x for x in cands if x.preferred and not x.blocked), None) or next(
                (x for x in cands if not x.blocked), cands[0])
            hr: int | None = None
            out: dict[str, Any] = {}
            for check in c.checks:
                if check.key == "hr":
                    hr = int(check.expected)
                elif check.key.startswith("out."):
                    _set_out(out, check.key, check.expected)
            ok = hr == 0
            a, call = step.actor, step.call
            if a in ("client", "secondary"):
                if call == "open_device":
                    out["device"] = syms.next(f"{a}.dev") if ok else None
                elif call == "get_command":
                    out["command"] = syms.next(f"{a}.cmd") if ok else None
                elif call == "get_buffer_handle":
                    out["handle"] = syms.next("handle") if ok else None
                elif call == "map_buffer_handle":
                    out["mapped"] = ok
            elif a == "server":
                if call == "open_device":
                    out["device"] = syms.next("srv.dev") if ok else None
                elif call == "allocate_buffer":
                    out["buffer"] = syms.next("srv.buf") if ok else None
                elif call == "send_command":
                    out["command"] = syms.next("srv.cmd")
                elif call == "state":
                    out.setdefault("violations", [])
            elif a == "harness" and call == "leak_check":
                out.setdefault("leaks", [])
            obs = Obs(step, hr, out)
        r = j.observe(obs)
        if r.violations:
            raise AssertionError(f"the model refuses its own expectation at {step}: "
                                 f"{r.violations[0].message}")
        trace.append(obs)
    return trace
