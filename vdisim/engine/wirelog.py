"""Per-statement wire log and harness support in the engine (docs/client-harness.md).

The client conformance harness (issue 4) judges a client from the wire: what the client's
library reported in EVENT frames, which commands the engine sent, and how the client completed
them.  When a statement runs under a :class:`WireLog` (set by the harness's "arm" request through
:func:`active`), the server-side set records every command, completion, EVENT frame, abort and
close, with timestamps, and the statement's buffer pool checks that the client left completed
buffers alone (:class:`PatternPool`).

Nothing here changes what the engine does; without an armed statement no log is kept.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from vdisim.protocol.codes import CommandCode, Win32

__all__ = ["PatternPool", "WireLog", "active", "current"]

_CURRENT: contextvars.ContextVar[WireLog | None] = contextvars.ContextVar("vdisim_wirelog",
                                                                          default=None)
PATTERN_BYTE = 0xDB  # what a buffer holds while the engine owns it and nobody should write it
MAX_ENTRIES = 200_000


def current() -> WireLog | None:
    """The wire log of the statement running on this thread, if the harness armed one."""
    return _CURRENT.get()


@contextlib.contextmanager
def active(log: WireLog | None) -> Iterator[None]:
    token = _CURRENT.set(log)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class WireLog:
    """What crossed the wire for one statement.

    Entries (JSON objects, in order; ``t`` is milliseconds since the log started):

    * ``{"k": "cmd", "dev", "id", "code", "size", "pos"}`` -- the engine sent a command;
    * ``{"k": "cmd_failed", "dev", "code", "result"}`` -- SendCommand failed synchronously;
    * ``{"k": "done", "dev", "id", "code", "result", "bytes", "pos", "gen"}`` -- a completion
      (``bytes`` as the client reported it, before the engine clamps it; ``gen``: made by the
      client library, not the client);
    * ``{"k": "aborted", "dev", "id", "code"}`` -- completed by abort processing (995);
    * ``{"k": "event", "call", "dev", "hr", "a", "b", "c"}`` -- a client API call (EVENT frame);
    * ``{"k": "abort", "reason"}``, ``{"k": "close_device", "dev"}``, ``{"k": "close"}``,
      ``{"k": "buffer", "msg"}`` (a buffer touched after completion), ``{"k": "note", "msg"}``.
    """

    def __init__(self, *, snapshot_media: tuple[str, str] | None = None) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.entries: list[dict[str, Any]] = []
        self.truncated = False
        self.written: dict[int, int] = {}  # bytes the engine sent in Writes, per device
        self.read: dict[int, int] = {}  # bytes the engine consumed from Reads, per device
        self._wdig: dict[int, Any] = {}
        self._rdig: dict[int, Any] = {}
        self.flush_offsets: dict[int, list[int]] = {}  # written bytes at each Flush sent
        self.buffer_violations: list[str] = []
        self.snapshot_media = snapshot_media  # (media_dir, copy_to): copied at Flush/Complete
        self.snapshots = 0
        self._commands: dict[int, tuple[int, int, int]] = {}  # id -> (dev, code, size)

    def _add(self, entry: dict[str, Any]) -> None:
        entry["t"] = round((time.monotonic() - self.t0) * 1000.0, 3)
        with self.lock:
            if len(self.entries) >= MAX_ENTRIES:
                self.truncated = True
                return
            self.entries.append(entry)

    # -- recorded by the server-side set -------------------------------------------------
    def command(self, dev: int, cmd_id: int, code: int, size: int, pos: int) -> None:
        with self.lock:
            self._commands[cmd_id] = (dev, code, size)
            if code == CommandCode.VDC_Flush:
                self.flush_offsets.setdefault(dev, []).append(self.written.get(dev, 0))
        self._add({"k": "cmd", "dev": dev, "id": cmd_id, "code": code, "size": size,
                   "pos": pos})

    def command_failed(self, dev: int, code: int, result: int) -> None:
        self._add({"k": "cmd_failed", "dev": dev, "code": code, "result": result})

    def completion(self, dev: int, cmd_id: int, result: int, nbytes: int, pos: int,
                   generated: bool) -> None:
        with self.lock:
            _dev, code, _size = self._commands.get(cmd_id, (dev, 0, 0))
        self._add({"k": "done", "dev": dev, "id": cmd_id, "code": code, "result": result,
                   "bytes": nbytes, "pos": pos, "gen": generated})
        if (self.snapshot_media is not None and dev == 0 and result == Win32.ERROR_SUCCESS
                and code in (CommandCode.VDC_Flush, CommandCode.VDC_Complete)):
            self._snapshot(code)

    def aborted_command(self, dev: int, cmd_id: int, code: int) -> None:
        self._add({"k": "aborted", "dev": dev, "id": cmd_id, "code": code})

    def event(self, call: int, dev: int, hr: int, a: int, b: int, c: int) -> None:
        self._add({"k": "event", "call": call, "dev": -1 if dev == 0xFFFF else dev, "hr": hr,
                   "a": a, "b": b, "c": c})

    def abort(self, reason: int) -> None:
        self._add({"k": "abort", "reason": reason})

    def close_device(self, dev: int) -> None:
        self._add({"k": "close_device", "dev": dev})

    def close(self) -> None:
        self._add({"k": "close"})

    def note(self, msg: str) -> None:
        self._add({"k": "note", "msg": msg})

    # -- data accounting (operations) ----------------------------------------------------
    def data_written(self, dev: int, data: memoryview | bytes) -> None:
        with self.lock:
            self.written[dev] = self.written.get(dev, 0) + len(data)
            self._wdig.setdefault(dev, hashlib.sha256()).update(data)

    def data_read(self, dev: int, data: memoryview | bytes) -> None:
        with self.lock:
            self.read[dev] = self.read.get(dev, 0) + len(data)
            self._rdig.setdefault(dev, hashlib.sha256()).update(data)

    def buffer_touched(self, msg: str) -> None:
        with self.lock:
            self.buffer_violations.append(msg)
        self._add({"k": "buffer", "msg": msg})

    def _snapshot(self, code: int) -> None:
        """Copy the client's media as another process sees it now (the client is waiting for
        its next command: the engine sends nothing until this returns)."""
        assert self.snapshot_media is not None
        src, dst = self.snapshot_media
        try:
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            shutil.copytree(src, dst)
            self.snapshots += 1
            self.note(f"media snapshot after {CommandCode(code).name} acknowledgement")
        except OSError as exc:
            self.note(f"media snapshot failed: {exc}")

    # -- result ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {"entries": list(self.entries), "truncated": self.truncated,
                    "written": {str(k): v for k, v in self.written.items()},
                    "read": {str(k): v for k, v in self.read.items()},
                    "written_sha256": {str(k): d.hexdigest() for k, d in self._wdig.items()},
                    "read_sha256": {str(k): d.hexdigest() for k, d in self._rdig.items()},
                    "flush_offsets": {str(k): v for k, v in self.flush_offsets.items()},
                    "buffer_violations": list(self.buffer_violations),
                    "snapshots": self.snapshots}


class PatternPool:
    """The statement's shared buffer pool (the interface of ``queue.SimpleQueue``) that fills
    every buffer it takes back with a pattern and checks the pattern when it hands the buffer
    out again: a client that wrote into a buffer after completing its command is caught."""

    def __init__(self, log: WireLog, aborted: Callable[[], bool] = lambda: False) -> None:
        self.log = log
        self.aborted = aborted
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._patterns: dict[int, bytes] = {}
        # Buffers given back once the set aborted: the client may legitimately still be using
        # them until its own Close (§8.2), so they are neither filled nor checked.
        self._exempt: set[int] = set()

    def _pattern(self, n: int) -> bytes:
        p = self._patterns.get(n)
        if p is None:
            p = self._patterns[n] = bytes([PATTERN_BYTE]) * n
        return p

    def put(self, buf: Any) -> None:
        if self.aborted():
            self._exempt.add(buf.id)
        else:
            self._exempt.discard(buf.id)
            data = buf.data
            with contextlib.suppress(ValueError, TypeError):
                data[:] = self._pattern(len(data))
        self._q.put(buf)

    def _check(self, buf: Any) -> Any:
        if buf.id in self._exempt:
            return buf
        try:
            ok = buf.data.tobytes() == self._pattern(len(buf.data))
        except ValueError:  # released: the set is closing
            return buf
        if not ok:
            first = next(i for i, b in enumerate(buf.data.tobytes()) if b != PATTERN_BYTE)
            self.log.buffer_touched(f"buffer {buf.id} changed at byte {first} while the engine "
                                    "owned it (written after its command was completed)")
        return buf

    def get_nowait(self) -> Any:
        return self._check(self._q.get_nowait())

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self._check(self._q.get(block, timeout))

    def check_all(self) -> None:
        """Check every buffer in the pool (at the end of the statement)."""
        held = []
        while True:
            try:
                held.append(self._q.get_nowait())
            except queue.Empty:
                break
        for b in held:
            self._check(b)
            self._q.put(b)


def _signature(plan: Any) -> dict[str, Any]:
    return {"operation": plan.operation, "database": (plan.database or "").lower(),
            "kind": plan.kind, "devices": list(plan.devices), "snapshot": plan.snapshot}


class Armed:
    """A plan armed for a set name: the next BACKUP/RESTORE naming that VIRTUAL_DEVICE first
    runs ``plan`` (when it is the expected statement) under a fresh :class:`WireLog`."""

    def __init__(self, set_name: str, plan: Any, expect: str,
                 snapshot_media: tuple[str, str] | None) -> None:
        self.set_name = set_name
        self.plan = plan
        self.expect = expect
        self.log = WireLog(snapshot_media=snapshot_media)
        self.statement: str | None = None
        self.mismatch = ""
        self.outcome: dict[str, Any] | None = None
        self.finished = threading.Event()

    def run(self, stmt: Any, text: str, run_plan: Any) -> None:
        """Run the client's statement ``stmt`` (its SQL ``text``): the armed plan if it is the
        expected statement, else the statement as written.  Records the outcome."""
        from vdisim.engine import operations, tsql
        from vdisim.engine.sqlerrors import SqlError

        self.statement = text
        self.log.t0 = time.monotonic()  # timestamps count from the statement's arrival
        self.log.note(f"statement issued: {text.strip()[:300]}")
        numbers: list[int] = []
        state = "ok"
        try:
            got = operations.compile_statement(stmt)
            try:
                want = operations.compile_statement(tsql.parse_batch(self.expect)[0])  # type: ignore[arg-type]
            except (SqlError, ValueError, IndexError) as exc:
                want = None
                self.mismatch = f"expected statement does not compile: {exc}"
            if want is not None and _signature(got) != _signature(want):
                self.mismatch = (f"statement {_signature(got)} is not the expected "
                                 f"{_signature(want)}")
            if self.mismatch:
                self.log.note(self.mismatch)
            with active(self.log):
                run_plan(got if self.mismatch else self.plan)
        except SqlError as err:
            numbers = list(err.numbers)
            state = "error"
            raise
        except operations.Cancelled:
            state = "cancelled"
            raise
        except Exception as exc:
            state = "error"
            self.log.note(f"engine failure: {exc!r}")
            raise
        finally:
            self.outcome = {"ok": state == "ok", "state": state, "errors": numbers}
            self.finished.set()

    def to_json(self) -> dict[str, Any]:
        return {"set_name": self.set_name, "issued": self.statement is not None,
                "statement": self.statement, "mismatch": self.mismatch,
                "finished": self.finished.is_set(), "outcome": self.outcome,
                "wire": self.log.to_json()}


class Armory:
    """The engine's armed plans, by set name (engine-wide: the client issues its statement on
    its own connection)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.armed: dict[str, Armed] = {}  # waiting for their statement
        self.taken: dict[str, Armed] = {}  # statement issued

    def take(self, stmt: Any) -> Armed | None:
        devices = getattr(stmt, "devices", ())
        if not devices:
            return None
        with self.lock:
            armed = self.armed.pop(devices[0].name, None)
            if armed is not None:
                self.taken[armed.set_name] = armed
            return armed

    def call(self, req: dict[str, Any]) -> dict[str, Any]:
        """The harness's requests: ``arm`` {set_name, plan, expect, snapshot_media?},
        ``collect`` {set_name, timeout_s, brief?, remove?} (waits up to ``timeout_s`` for the
        statement to end; a finished entry is removed unless ``remove`` is false; ``brief``
        leaves the wire log out), ``disarm`` {set_name}."""
        from vdisim.engine.plan import Plan

        op = req.get("op")
        name = str(req.get("set_name", ""))
        if op == "arm":
            snap = req.get("snapshot_media")
            new = Armed(name, Plan.from_json(req["plan"]), str(req["expect"]),
                        (str(snap[0]), str(snap[1])) if snap else None)
            with self.lock:
                self.armed[name] = new
                self.taken.pop(name, None)
            return {"ok": True}
        if op == "collect":
            with self.lock:
                armed = self.taken.get(name) or self.armed.get(name)
            if armed is None:
                return {"error": f"nothing armed for {name!r}"}
            if armed.statement is not None:
                armed.finished.wait(max(0.0, float(req.get("timeout_s", 0))))
            if req.get("brief"):  # no wire log, only how many entries it has (progress)
                out = {"set_name": name, "issued": armed.statement is not None,
                       "finished": armed.finished.is_set(), "outcome": armed.outcome,
                       "entries": len(armed.log.entries)}
            else:
                out = armed.to_json()
            if req.get("remove", True) and (armed.finished.is_set() or req.get("remove")):
                with self.lock:
                    self.taken.pop(name, None)
                    self.armed.pop(name, None)
            return out
        if op == "disarm":
            with self.lock:
                self.armed.pop(name, None)
                self.taken.pop(name, None)
            return {"ok": True}
        return {"error": f"unknown harness operation {op!r}"}
