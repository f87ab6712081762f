"""Negative examples: for every rule, a recorded trace that breaks exactly that rule.

Most are derived mechanically from the rule's directed sequence: the observations a correct
implementation gives (``judge.expected_trace``), cut after the last observation the rule
judged, with that one part of the answer altered (another HRESULT, another completion code,
a leaked object, ...).  ``judge(negative(rule))`` must flag that rule and no other -- which
``tests/test_catalogue.py`` checks for every rule.  The rest are written by hand below: rules
about a client's conduct (the call itself is the breach) and rules about what a real server
sends (judged without a scripted server).

``NEGATIVE`` maps every rule ID to its trace (computed on first use); ``negative(rule_id)``
builds one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

from conformance import model as m
from conformance.directed import DIRECTED
from conformance.judge import Judge, _set_out, expected_trace, judge
from conformance.rules import all_rules
from conformance.trace import Obs, Step

__all__ = ["NEGATIVE", "NegativeError", "expected_for", "negative"]


class NegativeError(Exception):
    """No trace could be built that breaks exactly this rule."""


# Realistic wrong answers first: the mistakes an implementation would plausibly make.
_HR_POOL = (m.NOERROR, m.VD_E_PROTOCOL, m.VD_E_ABORT, m.VD_E_INVALID, m.VD_E_TIMEOUT,
            m.VD_E_CLOSE, m.VD_E_OPEN, m.VD_E_NOTSUPPORTED, m.VD_E_UNEXPECTED)
_WIN32_POOL = (m.ERROR_SUCCESS, m.ERROR_OPERATION_ABORTED, m.ERROR_IO_DEVICE,
               m.ERROR_INVALID_HANDLE)


def _mutants(check: m.Check, value: Any, allowed_hrs: frozenset[int] | None) -> list[Any]:
    if check.key == "hr":
        banned = allowed_hrs if allowed_hrs is not None else check.allowed
        return [h for h in _HR_POOL if h not in banned]
    if check.pred is not None:
        return [check.bad]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        pool = _WIN32_POOL if check.key == "out.completion_code" else ()
        return [v for v in (*pool, value + 1, value + 7, 0) if not check.ok(v)]
    if value is None:
        return [0, 1]
    if isinstance(value, str):
        states = ("ACTIVE", "ABORT", "NORMALLY_TERMINATED", *m.SERVER_STATES)
        return [v for v in (*states, "BOGUS") if not check.ok(v)]
    if isinstance(value, list | tuple):
        return [["/dev/shm/leaked-object"]]
    return []


def _mutate(obs: Obs, key: str, value: Any) -> Obs:
    if key == "hr":
        return Obs(obs.step, int(value), dict(obs.out))
    out = _deep_copy(obs.out)
    _set_out(out, key, value)
    return Obs(obs.step, obs.hr, out)


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v
            for k, v in d.items()}


@functools.cache
def _expected(rule_id: str) -> tuple[Obs, ...]:
    return tuple(expected_trace(DIRECTED[rule_id]))


def expected_for(rule_id: str) -> list[Obs]:
    """The observations a correct implementation gives to the rule's directed sequence."""
    return list(_expected(rule_id))


def _from_directed(rule_id: str) -> list[Obs]:
    trace = expected_for(rule_id)
    j = Judge()
    spots: list[tuple[int, m.Check, frozenset[int] | None]] = []
    for i, obs in enumerate(trace):
        allowed = j.expect(obs.step)
        r = j.observe(obs)
        for check in r.checks:
            if check.rule == rule_id and check.key != "step":
                spots.append((i, check, allowed))
    for i, check, allowed in reversed(spots):
        obs = trace[i]
        if check.key == "hr":
            value: Any = obs.hr
        else:
            value = m.get_out(obs.out, check.key)[1]
        for bad in _mutants(check, value, allowed):
            cand = [*trace[:i], _mutate(obs, check.key, bad)]
            flagged = {v.rule_id for v in judge(cand, opaque_server=False).violations}
            if flagged == {rule_id}:
                return cand
    raise NegativeError(f"no single altered observation breaks exactly {rule_id}")


# -- hand-written negatives ---------------------------------------------------------------------

def _c(call: str, hr: int | None, actor: str = "client", out: dict[str, Any] | None = None,
       **args: Any) -> Obs:
    return Obs(Step(actor, call, args), hr, out or {})


def _opaque_prefix(block: int = 512, mts: int = 65536, features: int = m.VDF_WRITE_MEDIA,
                   requested: int = 0) -> list[Obs]:
    cfg = {"device_count": 1, "features": features, "block_size": block,
           "max_transfer_size": mts, "max_io_depth": 4}
    return [
        _c("create", m.NOERROR, name="{set}", config={"device_count": 1, "features": requested}),
        _c("get_configuration", m.NOERROR, out={"config": cfg}, timeout_ms=5000),
        _c("open_device", m.NOERROR, out={"device": 0}, name="{set}"),
    ]


def _opaque_command(code: int, size: int) -> Obs:
    return _c("get_command", m.NOERROR, out={"command": 0, "code": code, "size": size,
                                               "position": 0}, device=0, timeout_ms=5000)


def _wait_close() -> list[Obs]:
    """The server closed every device; the client closes without collecting VD_E_CLOSE."""
    steps = DIRECTED[m.R_WAIT_CLOSE]
    trace = expected_trace(steps)
    cut = next(i for i, o in enumerate(trace)
               if o.step.actor == "client" and o.step.call == "get_command"
               and o.hr == m.VD_E_CLOSE)
    # The library answers correctly (VD_E_OPEN: devices are still open); the client broke the
    # rule by calling Close at all.
    return [*trace[:cut], Obs(Step("client", "close", {}), m.VD_E_OPEN, {})]


HAND: dict[str, Any] = {
    m.R_TRANSFER_BLOCK: lambda: [*_opaque_prefix(), _opaque_command(m.VDC_WRITE, 1000)],
    m.R_TRANSFER_MAX: lambda: [*_opaque_prefix(), _opaque_command(m.VDC_WRITE, 131072)],
    m.R_CONFIG_BLOCK: lambda: _opaque_prefix(block=1000)[:2],
    m.R_CONFIG_MTS: lambda: _opaque_prefix(mts=100000)[:2],
    m.R_COMPLETE_ONLY_IF: lambda: [*_opaque_prefix(), _opaque_command(m.VDC_COMPLETE, 0)],
    m.R_WAIT_CLOSE: _wait_close,
    m.R_CALL_RETURNS: lambda: [
        *expected_trace(DIRECTED[m.R_CALL_RETURNS])[:12],
        Obs(Step("client", "get_command", {"device": 0, "timeout_ms": 5000}), None,
            {"hang": True, "deadline_ms": 15000})],
}


@functools.cache
def _negative(rule_id: str) -> tuple[Obs, ...]:
    if rule_id in HAND:
        return tuple(HAND[rule_id]())
    if rule_id in DIRECTED:
        return tuple(_from_directed(rule_id))
    raise NegativeError(f"no negative example for {rule_id}")


def negative(rule_id: str) -> list[Obs]:
    """A trace in which exactly ``rule_id`` is broken."""
    return list(_negative(rule_id))


class _Negatives(Mapping[str, list[Obs]]):
    """Every catalogue rule's negative example (the library rules), built on first access."""

    def _ids(self) -> list[str]:
        return [r.negative or r.id for r in all_rules()
                if r.id in DIRECTED or r.id in HAND]

    def __getitem__(self, key: str) -> list[Obs]:
        return negative(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids())

    def __len__(self) -> int:
        return len(self._ids())


NEGATIVE: Mapping[str, list[Obs]] = _Negatives()
