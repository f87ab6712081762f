"""One fuzz run: build the world, drive it, tear it down, check it (docs/fuzz.md)."""

from __future__ import annotations

import contextlib
import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from conformance.fuzz.checks import check_world, leaks, summary
from conformance.fuzz.races import RACES, Env, Params, World, run_world
from conformance.fuzz.scheduler import Deadlock, Hang, Scheduler
from vdisim import deviations
from vdisim.transport import naming
from vdisim.transport.channel import socket_alive
from vdisim.transport.segments import remove_if_dead

__all__ = ["PLANTED", "Outcome", "params_for", "planted", "run_one"]

# Planted race bugs (vdisim.deviations names with the "race-" prefix): what each breaks and the
# race that should find it.
PLANTED: dict[str, tuple[str, str]] = {
    "race-abort-forgets-waiter": (
        "abort-vs-getcommand",
        "client abort does not wake a thread blocked in GetCommand / GetConfiguration (§2.6)"),
    "race-complete-after-abort": (
        "server-abort-vs-completions",
        "the engine accepts a completion for a command it already completed with 995 (§8.2)"),
    "race-closedevice-drops-queued": (
        "closedevice-vs-getcommand",
        "CloseDevice discards commands queued but not yet delivered: never completed (§2.4)"),
}


@attrs.define(slots=True)
class Outcome:
    race: str
    seed: int
    params: Params
    stress: bool
    failures: list[str]
    digest: str = ""
    steps: int = 0
    chosen: list[str] = attrs.field(factory=list)
    events: list[list[Any]] = attrs.field(factory=list)
    ops: list[list[Any]] = attrs.field(factory=list)
    summary: dict[str, int] = attrs.field(factory=dict)
    seconds: float = 0.0
    warnings: list[str] = attrs.field(factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failures)


def params_for(race: str, seed: int) -> Params:
    return RACES[race].gen(random.Random(f"{race}-{seed}"))


@contextlib.contextmanager
def planted(name: str | None, env: Env | None = None) -> Iterator[None]:
    """Switch a planted race bug on in this process and in the engine (restarted)."""
    if not name:
        yield
        return
    old_enabled, old_env = deviations.ENABLED, os.environ.get("VDISIM_DEVIATION")
    deviations.ENABLED = old_enabled | {name}
    os.environ["VDISIM_DEVIATION"] = ",".join(sorted(deviations.ENABLED))
    if env is not None:
        env.stop()
    try:
        yield
    finally:
        deviations.ENABLED = old_enabled
        if old_env is None:
            os.environ.pop("VDISIM_DEVIATION", None)
        else:
            os.environ["VDISIM_DEVIATION"] = old_env
        if env is not None:
            env.stop()


def _engine_watching_at_kill(w: World) -> bool:
    """Was the engine connected to the client when the client was killed?  (Only then can it
    notice the death and remove the dead client's objects, §8.1.)"""
    kill = next((op.ret for op in w.ops if op.call == "kill_client"), None)
    if kill is None:
        return True
    opened = any(op.actor == "server" and op.call == "open" and op.hr == 0 and op.ret < kill
                 for op in w.ops)
    closed = any(op.actor == "server" and op.call == "close" and op.ret < kill for op in w.ops)
    return opened and not closed


def _remove_stale(name: str) -> None:
    """What ``vdisim cleanup`` (or the next Create of the name) does for a dead client."""
    key = naming.set_key(None, name)
    remove_if_dead(naming.control_segment_name(key))
    path = naming.socket_path(key)
    if os.path.exists(path) and not socket_alive(path):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _all_stacks() -> str:
    out = []
    frames = sys._current_frames()
    for th in threading.enumerate():
        fr = frames.get(th.ident or -1)
        if fr is not None and th.name.startswith(("fuzz-", "vdisim-hub")):
            out.append(f"--- {th.name}\n" + "".join(traceback.format_stack(fr)[-8:]))
    return "\n".join(out)


def _teardown(w: World, failures: list[str]) -> None:
    """Close what the run left open (after a deadlock too), then fetch the engine's log."""
    for vds in (w.sec, w.vds):
        if vds is not None and vds._core is not None:
            with contextlib.suppress(Exception):
                vds.close()
    if w.sec_child is not None and w.sec_child.poll() is None:  # after a deadlock / hang
        with contextlib.suppress(Exception):
            w._kill_secondary()
    for th in w.threads:
        th.join(5.0)
        if th.is_alive():
            failures.append(f"thread {th.name} still running after teardown\n" + _all_stacks())
            break
    s = w.script
    try:
        if s is not None and not w.engine_killed:
            if not w.server_closed:
                s.close()
            log = s.call("fuzz", action="log")["log"]
            w.log = [e for e in log if e[1] == w.name]
            if any(e[0] == "engine.settle.timeout" for e in w.log):
                w.warnings.append("the engine did not settle within 10 s (machine overloaded?):"
                                  " this run's schedule may not replay exactly")
    except Exception as exc:
        failures.append(f"engine unusable after the run: {type(exc).__name__}: {exc}")
    finally:
        if w.victim_conn is not None:
            with contextlib.suppress(OSError):
                w.victim_conn.close()


def run_one(env: Env, race: str, seed: int, *, params: Params | None = None,
            choices: Sequence[str | None] | None = None, stress: bool = False,
            keep_trace: bool = False) -> Outcome:
    """Run ``race`` with ``seed`` (scheduled unless ``stress``) and check it."""
    t0 = time.monotonic()
    p = params if params is not None else params_for(race, seed)
    sched = None if stress else Scheduler(seed, choices=choices)
    w = World(env, RACES[race], p, seed, sched)
    failures: list[str] = []
    if sched is not None:
        sched.install()
    try:
        run_world(w)
        if sched is None and any(th.is_alive() for th in w.threads):
            failures.append("Hang: actors still running after 60 s\n" + _all_stacks())
    except (Deadlock, Hang) as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        if sched is not None:
            sched.release()
    _teardown(w, failures)
    failures += check_world(w, stress=stress)
    if w.client_killed and not _engine_watching_at_kill(w):
        _remove_stale(w.name)  # no engine connected to the dead client: `vdisim cleanup`'s job
    deadline = time.monotonic() + 5.0
    while leaks(w.name) and time.monotonic() < deadline:
        time.sleep(0.01)
    left = leaks(w.name)
    if left:
        failures.append(f"left behind: {left}")
    ops = [op.to_json() for op in w.ops]
    out = Outcome(race, seed, p, stress, failures, steps=sched.steps if sched else len(ops),
                  summary=summary(w), seconds=time.monotonic() - t0, warnings=w.warnings)
    if sched is not None:
        out.digest = sched.digest(ops)
        out.chosen = list(sched.chosen)
        if keep_trace or failures:
            out.events = sched.events
    if keep_trace or failures:
        out.ops = ops
    return out
