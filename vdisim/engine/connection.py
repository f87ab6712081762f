"""Connecting to an engine: the T-SQL side of a backup tool (like an ODBC connection).

>>> from vdisim.engine import Engine
>>> with Engine.start() as engine:            # a private engine process
...     conn = engine.connect()
...     result = conn.execute("CREATE DATABASE demo")
...     result.ok
True

``execute`` blocks until the statement ends and returns its messages, rowsets and error, as a
real connection does; run it on its own thread while the VDI client works on another.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from vdisim.engine import wire
from vdisim.engine.plan import Plan
from vdisim.engine.results import Rowset
from vdisim.engine.scripting import ScriptError, ScriptSession
from vdisim.engine.sqlerrors import SqlError, SqlMessage


@attrs.define
class Result:
    """What a statement returned."""

    messages: list[SqlMessage] = attrs.field(factory=list)
    rowsets: list[Rowset] = attrs.field(factory=list)
    error: SqlError | None = None
    attention: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.attention

    @property
    def error_numbers(self) -> list[int]:
        return self.error.numbers if self.error else []

    def raise_for_error(self) -> Result:
        if self.error is not None:
            raise self.error
        return self

    def text(self) -> str:
        return "\n".join(f"Msg {m.number}, Level {m.severity}, State {m.state}\n{m.text}"
                         if m.severity > 10 else m.text for m in self.messages)


class Connection:
    def __init__(self, address: str, timeout: float = 10.0) -> None:
        family, target = wire.parse_address(address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)
        self.address = address
        self._stream = wire.Stream(sock)
        self._lock = threading.Lock()

    def execute(self, sql: str, *, on_message: Callable[[SqlMessage], None] | None = None,
                check: bool = False) -> Result:
        """Run one statement; block until it ends."""
        return self._request(wire.Msg.EXECUTE, sql, on_message, check)

    def run_plan(self, plan: Plan, *, on_message: Callable[[SqlMessage], None] | None = None,
                 check: bool = False) -> Result:
        """Run a plan directly (docs/plan.md) instead of T-SQL."""
        return self._request(wire.Msg.RUN_PLAN, plan.to_json(), on_message, check)

    def cancel(self) -> None:
        """Send ATTENTION: the running statement is aborted (its VDI set sees abort)."""
        self._stream.send(wire.Msg.ATTENTION, b"")

    def script(self) -> ScriptSession:
        """Drive a server-side VDI set step by step in the engine (scripting API)."""
        return ScriptSession(self)

    def harness(self, op: str, **args: Any) -> dict[str, Any]:
        """A client-harness request (``arm`` / ``collect`` / ``disarm``; docs/client-harness.md)."""
        with self._lock:
            self._stream.send(wire.Msg.HARNESS, {"op": op, **args})
            kind, payload = self._stream.recv()
        if kind is not wire.Msg.HARNESS_RESULT:
            raise ScriptError(f"unexpected reply {kind.name}")
        result = wire.parse_json(payload)
        if "error" in result:
            raise ScriptError(str(result["error"]))
        return dict(result)

    def _script(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._stream.send(wire.Msg.SCRIPT, {"op": op, "args": args})
            kind, payload = self._stream.recv()
        if kind is not wire.Msg.SCRIPT_RESULT:
            raise ScriptError(f"unexpected reply {kind.name}")
        result = wire.parse_json(payload)
        if "error" in result:
            raise ScriptError(str(result["error"]))
        return dict(result)

    def _request(self, kind: wire.Msg, payload: str | dict[str, Any],
                 on_message: Callable[[SqlMessage], None] | None, check: bool) -> Result:
        result = Result()
        with self._lock:
            self._stream.send(kind, payload)
            while True:
                rkind, data = self._stream.recv()
                if rkind is wire.Msg.MESSAGE:
                    msg = SqlMessage.from_json(wire.parse_json(data))
                    result.messages.append(msg)
                    if on_message is not None:
                        on_message(msg)
                elif rkind is wire.Msg.ROWSET:
                    result.rowsets.append(Rowset.from_json(wire.parse_json(data)))
                elif rkind is wire.Msg.DONE:
                    done = wire.parse_json(data)
                    result.attention = bool(done.get("attention"))
                    errs = [m for m in result.messages if m.severity > 10]
                    if not done.get("ok") and errs:
                        result.error = SqlError(errs)
                    break
        if check:
            result.raise_for_error()
        return result

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _accepts(path: str) -> bool:
    """True once something listens at the AF_UNIX socket ``path``."""
    if not os.path.exists(path):
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


class _ConnectDescriptor:
    """``Engine.connect(address)`` on the class; ``engine.connect()`` on an instance."""

    def __get__(self, obj: Engine | None, objtype: type | None = None) -> Callable[..., Connection]:
        if obj is None:
            return lambda address: Connection(address)
        return lambda: Connection(obj.address)


class Engine:
    """An engine process.  ``Engine.start()`` spawns a private one (stopped on exit)."""

    def __init__(self, address: str, proc: subprocess.Popen[bytes] | None = None,
                 tmpdir: str | None = None) -> None:
        self.address = address
        self.proc = proc
        self._tmpdir = tmpdir
        self.tds_address: str | None = None  # HOST:PORT of the TDS endpoint (docs/tds.md)

    connect = _ConnectDescriptor()

    @classmethod
    def start(cls, *, data_dir: str | None = None, seed: int = 0,
              timeout: float = 30.0, env: dict[str, str] | None = None,
              tds: str | None = None, tds_args: tuple[str, ...] = ()) -> Engine:
        """``tds``: also listen for TDS clients at HOST:PORT ("127.0.0.1:0": a free port);
        the address is then ``engine.tds_address``.  ``tds_args``: more ``--tds-*`` options
        of ``vdisim engine serve`` (docs/tds.md)."""
        tmp = tempfile.mkdtemp(prefix="vdisim-engine-")
        address = os.path.join(tmp, "engine.sock")
        cmd = [sys.executable, "-m", "vdisim", "engine", "serve", "--address", address,
               "--data", data_dir or os.path.join(tmp, "data"), "--seed", str(seed),
               "--quiet"]
        tds_file = os.path.join(tmp, "tds-address")
        if tds is not None:
            cmd += ["--tds", tds, "--tds-address-file", tds_file, *tds_args]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while not _accepts(address):  # the file appears at bind(), before listen()
            if proc.poll() is not None:
                raise RuntimeError(f"engine exited with {proc.returncode} before listening")
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError("engine did not start")
            time.sleep(0.01)
        engine = cls(address, proc, tmp)
        if tds is not None:  # written before the engine socket is bound
            with open(tds_file, encoding="utf-8") as f:
                engine.tds_address = f.read().strip()
        return engine

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._tmpdir:
            import shutil

            with contextlib.suppress(OSError):
                shutil.rmtree(self._tmpdir)
        from vdisim.transport.segments import sweep_stale

        sweep_stale(min_age=0.2)  # a dead engine's areas; not a segment being created now

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
