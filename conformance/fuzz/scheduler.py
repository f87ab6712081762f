"""A turn-based scheduler over the threads of the fuzzing process (docs/fuzz.md).

Installed as the :mod:`vdisim.hooks` implementation, it owns every *scheduled* thread: the
actor threads a race spawns (:meth:`Scheduler.spawn`) and the client library's hub threads
(adopted by the hook in ``SetCore.start_hub``).  At most one scheduled thread runs at a time;
every other one is

* ``ready`` -- stopped at a hook point, holding no lock;
* ``wait`` -- in a replaced condition wait (``hooks.wait``): eligible again once that condition
  was notified (notifications are counted by wrapping the condition's ``notify*``) or its
  virtual deadline passed;
* ``io`` -- about to wait for file descriptors (``hooks.wait_io``): eligible when one is
  readable (checked with a zero-timeout ``select``) or the deadline passed;
* ``join`` -- joining another scheduled thread: eligible when that one ended;
* ``external`` -- inside a call into another process that needs this process's hub threads to
  answer (the engine's ``Open`` handshake): while one exists only I/O-ready threads are granted
  ("assist" steps, logged but not hashed);
* ``starting`` / ``done``.

Before each decision the scheduler waits (real time, bounded) until nothing runs and every new
thread has reached its first hook.  It then picks one eligible thread with a seeded RNG (or the
next recorded choice, when replaying / shrinking), or advances the virtual clock to the earliest
deadline ("tick"): the clock moves only then, so timeouts are decisions too.  Nothing eligible
and no deadline pending is a deadlock, reported with every scheduled thread's stack.

Determinism rests on three facts: AF_UNIX sends are synchronous (data is readable by the peer
when ``send`` returns), the engine settles before each scripted step (``VDISIM_HOOKS=engine``),
and no scheduled thread ever waits for something the scheduler does not see.
"""

from __future__ import annotations

import hashlib
import json
import random
import select
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from vdisim import hooks

__all__ = ["Deadlock", "Hang", "Scheduler"]

VIRTUAL_START = 1000.0
TICK = "tick"


class Deadlock(Exception):
    """Every scheduled thread waits and no timeout is pending."""


class Hang(Exception):
    """A scheduled thread ran too long without reaching a hook (a real wait the scheduler
    does not see), or the run exceeded its real-time budget."""


class _T:
    __slots__ = ("cond", "deadline", "error", "fds", "granted", "info", "kind", "name", "point",
                 "seen", "status", "target", "thread")

    def __init__(self, name: str, thread: threading.Thread, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.thread = thread
        self.status = "starting"
        self.point = ""
        self.info: dict[str, Any] = {}
        self.deadline: float | None = None
        self.cond = 0
        self.seen = 0
        self.fds: list[int] = []
        self.target: _T | None = None
        self.granted = False
        self.error: BaseException | None = None


def _readable(fds: Sequence[int]) -> bool:
    if not fds:
        return False
    try:
        return bool(select.select(list(fds), [], [], 0)[0])
    except (OSError, ValueError):
        return True  # a closed descriptor: the waiter will find out


class Scheduler:
    """One controlled run.  ``seed`` drives every choice; ``choices`` (thread names or
    ``"tick"``, None = default) replays a recorded or shrunk schedule instead: a choice that is
    not eligible, and every choice past the end, falls back to the default policy (keep running
    the thread that ran last, else the first eligible thread in creation order)."""

    def __init__(self, seed: int, *, choices: Sequence[str | None] | None = None,
                 tick_weight: float = 0.15, max_steps: int = 20000,
                 real_timeout: float = 30.0, step_timeout: float = 10.0) -> None:
        self.rng = random.Random(seed)
        self.forced = list(choices) if choices is not None else None
        self.tick_weight = tick_weight
        self.max_steps = max_steps
        self.real_timeout = real_timeout
        self.step_timeout = step_timeout
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        self.threads: list[_T] = []
        self.by_thread: dict[threading.Thread, _T] = {}
        self.running: _T | None = None
        self.now = VIRTUAL_START
        self.steps = 0  # grants so far (the logical clock of the trace)
        self.events: list[list[Any]] = []  # hashed trace
        self.assists: list[list[Any]] = []  # assist grants (not hashed)
        self.chosen: list[str] = []  # the name picked at each decision (or "tick")
        self.notifies: dict[int, int] = {}
        self._conds: dict[int, threading.Condition] = {}
        self._kinds: dict[str, int] = {}
        self._free = False
        self._last: _T | None = None

    # ---------------------------------------------------------------- hook implementation
    def _me(self) -> _T | None:
        if self._free:
            return None
        return self.by_thread.get(threading.current_thread())

    def _yield(self, t: _T) -> None:
        """Caller holds ``self.cv``: give up the turn and wait for the next grant."""
        if self.running is t:
            self.running = None
        self.cv.notify_all()
        while not t.granted and not self._free:
            self.cv.wait(1.0)
        t.granted = False
        t.status = "running"

    def point(self, name: str, info: dict[str, Any]) -> None:
        t = self._me()
        if t is None:
            return
        with self.cv:
            t.status, t.point, t.info = "ready", name, info
            self._yield(t)

    def _notified(self, key: int) -> None:
        with self.lock:
            self.notifies[key] = self.notifies.get(key, 0) + 1

    def _track(self, cond: threading.Condition) -> int:
        key = id(cond)
        if key not in self._conds:
            self._conds[key] = cond
            orig_all, orig_one = cond.notify_all, cond.notify

            def notify_all() -> None:
                self._notified(key)
                orig_all()

            def notify(n: int = 1) -> None:
                self._notified(key)
                orig_one(n)

            cond.notify_all = notify_all  # type: ignore[method-assign]
            cond.notify = notify  # type: ignore[method-assign]
        return key

    def wait(self, cond: threading.Condition, deadline: float | None, name: str) -> None:
        t = self._me()
        if t is None:
            cond.wait(0.05)
            return
        with self.lock:
            key = self._track(cond)
            seen = self.notifies.get(key, 0)
        cond.release()
        try:
            with self.cv:
                t.status, t.point, t.info = "wait", name, {}
                t.cond, t.seen, t.deadline = key, seen, deadline
                self._yield(t)
        finally:
            cond.acquire()

    def wait_io(self, name: str, fds: Sequence[int], deadline: float | None) -> None:
        t = self._me()
        if t is None:
            try:
                select.select(list(fds), [], [], 0.2)
            except (OSError, ValueError):
                pass
            return
        with self.cv:
            t.status, t.point, t.info = "io", name, {}
            t.fds, t.deadline = list(fds), deadline
            self._yield(t)

    def join(self, thread: threading.Thread, timeout: float | None) -> None:
        t = self._me()
        target = self.by_thread.get(thread)
        if t is None or target is None:
            return
        with self.cv:
            t.status, t.point, t.info, t.target = "join", "join", {"thread": target.name}, target
            self._yield(t)

    def adopt(self, thread: threading.Thread, kind: str) -> None:
        with self.cv:
            self._register(thread, kind)

    def exit(self) -> None:
        t = self._me()
        if t is None:
            return
        with self.cv:
            t.status = "done"
            if self.running is t:
                self.running = None
            self.cv.notify_all()

    def monotonic(self) -> float:
        return self.now

    # ---------------------------------------------------------------- API for races
    def _register(self, thread: threading.Thread, kind: str) -> _T:
        n = self._kinds.get(kind, 0)
        self._kinds[kind] = n + 1
        t = _T(f"{kind}{n}" if n or kind == "hub" else kind, thread, kind)
        self.threads.append(t)
        self.by_thread[thread] = t
        return t

    def spawn(self, name: str, fn: Callable[[], None]) -> threading.Thread:
        """Start an actor thread; it first waits for a turn."""
        holder: list[_T] = []

        def main() -> None:
            self.point("actor.start", {})
            try:
                fn()
            except BaseException as exc:  # reported by the checks
                holder[0].error = exc
                holder[0].info = {"traceback": traceback.format_exc()}
            finally:
                self.exit()

        th = threading.Thread(target=main, name=f"fuzz-{name}", daemon=True)
        with self.cv:
            holder.append(self._register(th, name))
        th.start()
        return th

    def pause(self, ms: float = 0.0) -> None:
        """Inside an actor: a yield point (``ms`` = 0) or a virtual sleep of ``ms``."""
        t = self._me()
        if t is None:
            if ms:
                time.sleep(ms / 1000.0)
            return
        if not ms:
            self.point("actor.pause", {})
            return
        with self.cv:
            t.status, t.point, t.info = "wait", "actor.sleep", {}
            t.cond, t.seen, t.deadline = -1, 1 << 62, self.now + ms / 1000.0
            self._yield(t)

    def external(self, fn: Callable[[], Any], *, drain: bool = False) -> Any:
        """Run ``fn`` (a call into another process that needs this process's hubs).  With
        ``drain``, the hubs keep assisting after ``fn`` returned until none has anything to
        read (the other process sent everything before answering: the hubs' state after the
        call is then a function of the schedule)."""
        t = self._me()
        if t is None:
            return fn()
        with self.cv:
            t.status, t.point = "external", "external"
            if self.running is t:
                self.running = None
            self.cv.notify_all()
        try:
            return fn()
        finally:
            with self.cv:
                deadline = time.monotonic() + self.step_timeout
                while drain and time.monotonic() < deadline and not self._hubs_quiet():
                    self.cv.wait(0.0005)
                t.status, t.point, t.info = "ready", "external.done", {}
                self._yield(t)

    def _hubs_quiet(self) -> bool:
        """Caller holds cv: no hub thread runs or is eligible."""
        return all(t.kind != "hub" or t.status == "done"
                   or (self.running is not t and t.status != "starting" and not self._eligible(t))
                   for t in self.threads)

    def errors(self) -> dict[str, BaseException]:
        return {t.name: t.error for t in self.threads if t.error is not None}

    def tracebacks(self) -> dict[str, str]:
        return {t.name: str(t.info.get("traceback", "")) for t in self.threads
                if t.error is not None}

    # ---------------------------------------------------------------- the loop
    def _eligible(self, t: _T) -> bool:
        st = t.status
        if st == "ready":
            return True
        timed_out = t.deadline is not None and t.deadline <= self.now
        if st == "wait":
            return self.notifies.get(t.cond, 0) > t.seen or timed_out
        if st == "io":
            return timed_out or _readable(t.fds)
        if st == "join":
            return t.target is None or t.target.status == "done" or not t.target.thread.is_alive()
        return False

    def _settle(self, deadline: float) -> None:
        """Caller holds cv: wait until no thread runs and none is starting."""
        while True:
            r = self.running
            if r is not None and not r.thread.is_alive():
                r.status = "done"
                self.running = r = None
            starting = [t for t in self.threads if t.status == "starting"]
            for t in starting:
                if not t.thread.is_alive() and t.thread.ident is not None:
                    t.status = "done"
            if r is None and not any(t.status == "starting" for t in self.threads):
                return
            if time.monotonic() > deadline:
                who = r.name if r is not None else ",".join(t.name for t in starting)
                raise Hang(f"thread {who} did not reach a hook within {self.step_timeout}s\n"
                           + self.stacks())
            self.cv.wait(0.05)

    def _grant(self, t: _T, *, assist: bool = False) -> None:
        entry = [self.steps, t.name, t.point, t.status]
        if t.info and "traceback" not in t.info:
            entry.append(t.info)
        (self.assists if assist else self.events).append(entry)
        if not assist:  # how many assist rounds an external call takes is real-time: not a step
            self.steps += 1
        self._last = t
        t.granted = True
        self.running = t
        t.status = "running"
        self.cv.notify_all()

    def _pick(self, cands: list[_T], timed: bool) -> _T | None:
        """None = tick."""
        names = [t.name for t in cands]
        i = len(self.chosen)
        if self.forced is not None:
            want = self.forced[i] if i < len(self.forced) else None
            if want == TICK and timed:
                return None
            if want in names:
                return cands[names.index(want)]
            if self._last is not None and self._last in cands:
                return self._last
            return cands[0] if cands else None
        if timed and (not cands or self.rng.random() < self.tick_weight):
            return None
        return cands[self.rng.randrange(len(cands))]

    def run(self) -> None:
        """Drive the run until every scheduled thread ended."""
        start = time.monotonic()
        with self.cv:
            while True:
                self._settle(time.monotonic() + self.step_timeout)
                if time.monotonic() - start > self.real_timeout:
                    raise Hang(f"run exceeded {self.real_timeout}s\n" + self.stacks())
                if self.steps >= self.max_steps:
                    raise Hang(f"run exceeded {self.max_steps} steps\n" + self.stacks())
                live = [t for t in self.threads if t.status != "done"]
                if not live:
                    return
                cands = [t for t in live if self._eligible(t)]
                if any(t.status == "external" for t in live):
                    io = [t for t in cands if t.kind == "hub"]
                    if io:
                        self._grant(io[0], assist=True)
                    else:
                        self.cv.wait(0.0005)
                    continue
                deadlines = [t.deadline for t in live if t.status in ("wait", "io")
                             and t.deadline is not None and t.deadline > self.now]
                if not cands and not deadlines:
                    raise Deadlock("every scheduled thread waits and no timeout is pending\n"
                                   + self.stacks())
                pick = self._pick(cands, bool(deadlines))
                if pick is None:
                    self.now = min(deadlines)
                    self.chosen.append(TICK)
                    self.events.append([self.steps, TICK, round(self.now - VIRTUAL_START, 6)])
                    self.steps += 1
                    continue
                self.chosen.append(pick.name)
                self._grant(pick)

    # ---------------------------------------------------------------- install / report
    def install(self) -> None:
        hooks.install(self)

    def release(self) -> None:
        """Uninstall: every thread still stopped in a hook continues unscheduled."""
        hooks.uninstall()
        with self.cv:
            self._free = True
            self.cv.notify_all()
        for cond in self._conds.values():
            for attr in ("notify_all", "notify"):
                try:
                    delattr(cond, attr)
                except AttributeError:
                    pass

    def stacks(self) -> str:
        frames = sys._current_frames()
        out = []
        for t in self.threads:
            out.append(f"--- {t.name} [{t.status}] at {t.point} deadline={t.deadline}")
            fr = frames.get(t.thread.ident or -1)
            if fr is not None:
                out.append("".join(traceback.format_stack(fr)[-8:]))
        return "\n".join(out)

    def digest(self, extra: Any = None) -> str:
        blob = json.dumps([self.events, extra], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()
