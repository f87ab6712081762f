"""Hook points for controlled scheduling (race fuzzing, ``vdisim fuzz``, docs/fuzz.md).

Call sites in the client library, the transport and the engine are written as::

    if hooks.ACTIVE:
        hooks.point("client.complete_command.send", device=index)

so with nothing installed a hook costs one module-global lookup and a branch.  ``monotonic`` is
the clock of every timeout that a scheduler may want to own; uninstalled it *is*
``time.monotonic``.

The whole API (a call site uses nothing else):

``ACTIVE``
    True while an implementation is installed.
``point(name, **info)``
    A yield point.  The calling thread holds **no lock**; under the fuzz scheduler it stops here
    until it is granted a turn.  ``info`` values are small JSON-able facts for the trace.
``wait(cond, deadline, name)``
    Replaces ``cond.wait(...)`` inside ``with cond:``: sleep until *something may have changed*
    or ``deadline`` (a ``monotonic()`` value, None = none) passes.  Spurious returns are allowed;
    callers loop on their predicate.
``wait_io(name, fds, deadline)``
    The thread is about to wait for one of ``fds`` to become readable (a ``select`` with timeout
    0 follows); returns once one may be readable or ``deadline`` passed.
``join(thread, timeout)``
    The caller is about to ``thread.join(timeout)``; returns when the thread has ended.
``adopt(thread, kind)``
    A library thread about to be started (the client's hub) becomes a scheduled thread.
``exit()``
    An adopted thread is about to end.
``install(impl)`` / ``uninstall()``
    Switch an implementation (an object with the methods above) in or out.

Two implementations exist: the fuzz scheduler (``conformance.fuzz.scheduler``, installed in the
fuzzing process) and :class:`EngineSettle`, installed at import in an engine process started
with ``VDISIM_HOOKS=engine``: every script operation first waits until the completion agent has
processed everything the client sent (so server steps see a deterministic state), the
serverTimeOut clock is virtual (advanced only by the ``fuzz`` script operation), and every
completion routine the engine runs is logged for the exactly-once check.  ``VDISIM_HOOKS=
engine-log`` (the free-running stress mode) keeps only the log: real clock, no settling.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = ["ACTIVE", "EngineSettle", "Impl", "adopt", "exit", "install", "join", "monotonic",
           "point", "uninstall", "wait", "wait_io"]

ACTIVE = False
monotonic: Callable[[], float] = time.monotonic


class Impl(Protocol):
    def point(self, name: str, info: dict[str, Any]) -> None: ...
    def wait(self, cond: threading.Condition, deadline: float | None, name: str) -> None: ...
    def wait_io(self, name: str, fds: Sequence[int], deadline: float | None) -> None: ...
    def join(self, thread: threading.Thread, timeout: float | None) -> None: ...
    def adopt(self, thread: threading.Thread, kind: str) -> None: ...
    def exit(self) -> None: ...
    def monotonic(self) -> float: ...


_impl: Impl | None = None


def install(impl: Impl) -> None:
    global ACTIVE, _impl, monotonic
    _impl = impl
    monotonic = impl.monotonic
    ACTIVE = True


def uninstall() -> None:
    global ACTIVE, _impl, monotonic
    ACTIVE = False
    monotonic = time.monotonic
    _impl = None


def point(name: str, **info: Any) -> None:
    impl = _impl
    if impl is not None:
        impl.point(name, info)


def wait(cond: threading.Condition, deadline: float | None, name: str = "wait") -> None:
    impl = _impl
    if impl is not None:
        impl.wait(cond, deadline, name)
    elif deadline is None:
        cond.wait()
    else:
        cond.wait(max(0.0, deadline - time.monotonic()))


def wait_io(name: str, fds: Sequence[int], deadline: float | None = None) -> None:
    impl = _impl
    if impl is not None:
        impl.wait_io(name, fds, deadline)


def join(thread: threading.Thread, timeout: float | None = None) -> None:
    impl = _impl
    if impl is not None:
        impl.join(thread, timeout)


def adopt(thread: threading.Thread, kind: str) -> None:
    impl = _impl
    if impl is not None:
        impl.adopt(thread, kind)


def exit() -> None:
    impl = _impl
    if impl is not None:
        impl.exit()


# ---------------------------------------------------------------------------- engine side


class EngineSettle:
    """The engine-process implementation (``VDISIM_HOOKS=engine``).

    Points it understands: ``engine.agent.idle`` / ``engine.agent.busy`` / ``engine.agent.exit``
    (``owner=`` the server set), ``engine.script.op`` (``host=`` the ScriptHost: settle first),
    ``engine.completion`` and ``engine.completion.late`` (logged).  Every other point, and every
    wait, behaves as if nothing were installed (real waits, real time).
    """

    SETTLE_S = 10.0

    def __init__(self, *, settle: bool = True) -> None:
        self.settle = settle  # False (``VDISIM_HOOKS=engine-log``): log only, real clock
        self._lock = threading.Lock()
        self._busy: dict[int, bool] = {}  # id(server set) -> agent between select and select
        self.offset = 0.0  # virtual time added to the real clock, per the fuzz operation
        self._frozen = time.monotonic()
        self.log: list[list[Any]] = []

    def monotonic(self) -> float:
        return self._frozen + self.offset if self.settle else time.monotonic()

    def advance(self, ms: int) -> None:
        self.offset += ms / 1000.0

    def point(self, name: str, info: dict[str, Any]) -> None:
        if name == "engine.agent.idle":
            self._busy[id(info["owner"])] = False
        elif name == "engine.agent.busy":
            self._busy[id(info["owner"])] = True
        elif name == "engine.agent.exit":
            self._busy.pop(id(info["owner"]), None)
        elif name == "engine.script.op":
            if self.settle:
                self._settle(info["host"])
        elif name.startswith("engine.completion"):
            with self._lock:
                self.log.append([name, *(info.get(k) for k in ("set", "device", "cmd", "code",
                                                                "generated"))])

    def _settle(self, host: Any) -> None:
        """Wait until the agent of ``host``'s set has read and handled all the client sent."""
        vds = getattr(host, "vds", None)
        if vds is None:
            return
        deadline = time.monotonic() + self.SETTLE_S
        while time.monotonic() < deadline:
            busy = self._busy.get(id(vds))
            if busy is None:  # no agent running: operations drain by themselves
                return
            ch = vds._ch
            fds = [vds._wake_r] + ([ch.sock.fileno()] if ch is not None and not ch.closed
                                   else [])
            try:
                readable = select.select([f for f in fds if f >= 0], [], [], 0)[0]
            except (OSError, ValueError):
                return
            if not busy and not readable:
                return
            time.sleep(0.0002)
        with self._lock:  # the determinism argument no longer holds for this run: say so
            self.log.append(["engine.settle.timeout", getattr(vds, "name", None), None, None,
                             None, None])

    def wait(self, cond: threading.Condition, deadline: float | None, name: str) -> None:
        if deadline is None:
            cond.wait()
        else:
            cond.wait(max(0.0, deadline - self.monotonic()))

    def wait_io(self, name: str, fds: Sequence[int], deadline: float | None) -> None:
        remaining = None if deadline is None else max(0.0, deadline - self.monotonic())
        try:
            select.select(list(fds), [], [], remaining)
        except (OSError, ValueError):
            pass

    def join(self, thread: threading.Thread, timeout: float | None) -> None:
        return None

    def adopt(self, thread: threading.Thread, kind: str) -> None:
        return None

    def exit(self) -> None:
        return None


ENGINE: EngineSettle | None = None

if os.environ.get("VDISIM_HOOKS") in ("engine", "engine-log"):
    ENGINE = EngineSettle(settle=os.environ["VDISIM_HOOKS"] == "engine")
    install(ENGINE)
