"""Perform a :class:`~conformance.trace.Step` on a :class:`~conformance.backend.Backend` and
return what came back as an :class:`~conformance.trace.Obs`.

The executor owns the mapping from a trace's *symbolic* indices to the backend's handles:

* ``device`` of a client / secondary step: the n-th device that actor's ``open_device``
  returned (0-based, over the whole trace: handles are never reused, so a device of an
  earlier Create/Close is still addressable -- that is the "device used after Close" case);
* ``command`` of a client / secondary step: the n-th command that actor's ``get_command``
  returned; an index that names no command (e.g. ``-1`` or ``999``) passes a garbage command;
* ``handle`` of ``map_buffer_handle``: the n-th handle any ``get_buffer_handle`` returned
  (handles are shared by every client object of the set); an unknown index passes a garbage
  handle;
* ``device`` / ``buffer`` / ``command`` of a server step: the n-th server device opened, buffer
  allocated, command sent (``open_device`` also reports ``index``, the device's position in the
  set); an unknown ``buffer`` passes a buffer the server never allocated.

Set names: every string argument has ``{set}`` replaced by this executor's unique set name and
``{other}`` by a second unique name that no set uses, so a trace is portable and runs never
collide (``create{name: "{set}"}``, ``open_device{name: "{set}1"}``).

Steps the backend lacks raise :class:`~conformance.backend.NotCapable` before anything is done.
Every call runs on a worker thread with a deadline (the call's own timeout plus
``margin_s``); a call that does not return in time yields an Obs with ``out["hang"]`` and the
executor refuses further steps (the backend's state is unknown): the caller reports it as a
breach of :data:`HANG_RULE`.  Misuse of the executor itself (an unknown call, a step on a
server that is not there) raises :class:`HarnessError`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs

from conformance.backend import (
    Backend,
    Capability,
    ClientSide,
    NotCapable,
    ScriptedServer,
    StatementRun,
)
from conformance.trace import Obs, Step
from vdisim.protocol.records import VDConfig

__all__ = ["HANG_RULE", "REQUIRES", "Executor", "HarnessError", "required_capability"]

#: The rule a call that never returns breaks: every VDI wait has a timeout, and an INFINITE
#: wait still ends on abort or the peer's death (§1.5, §8.2, §8.4).
HANG_RULE = "TIMEOUT-CALL-RETURNS"

INFINITE = 0xFFFFFFFF
GARBAGE_COMMAND = -1
GARBAGE_HANDLE = 0x7FFF_FFF0
GARBAGE_BUFFER = 0x7FFF_FFF0


class HarnessError(Exception):
    """The executor could not perform a step (never a verdict on the implementation)."""


# call -> capability it needs (besides the actor's own: secondary / server tiers)
REQUIRES: dict[tuple[str, str], Capability] = {
    ("client", "get_buffer_handle"): Capability.BUFFER_HANDLES,
    ("client", "map_buffer_handle"): Capability.BUFFER_HANDLES,
    ("secondary", "get_buffer_handle"): Capability.BUFFER_HANDLES,
    ("secondary", "map_buffer_handle"): Capability.BUFFER_HANDLES,
    ("client", "device_after_close"): Capability.SAFE_AFTER_CLOSE,
    ("secondary", "device_after_close"): Capability.SAFE_AFTER_CLOSE,
    ("server", "state"): Capability.OBSERVE_SERVER,
    ("server", "die"): Capability.KILL_SERVER,
    ("harness", "kill_server"): Capability.KILL_SERVER,
    ("harness", "kill_client"): Capability.KILL_CLIENT,
    ("harness", "kill_secondary"): Capability.SECONDARY_PROCESS,
    ("harness", "start_statement"): Capability.STATEMENTS,
    ("harness", "wait_statement"): Capability.STATEMENTS,
}

CLIENT_CALLS = frozenset({
    "create", "get_configuration", "open_device", "get_command", "complete_command",
    "signal_abort", "close", "open_in_secondary", "get_buffer_handle", "map_buffer_handle",
    "device_after_close", "read_buffer", "write_buffer",
})
SERVER_CALLS = frozenset({
    "open", "get_configuration", "begin_configuration", "request_buffers", "end_configuration",
    "open_device", "start_agent", "allocate_buffer", "free_buffer", "read_buffer",
    "send_command", "wait_completion", "close_device", "signal_abort", "close", "state", "die",
})
HARNESS_CALLS = frozenset({"kill_client", "kill_server", "kill_secondary", "sleep_virtual",
                           "leak_check", "start_statement", "wait_statement"})


def required_capability(step: Step) -> Capability | None:
    """The capability ``step`` needs beyond the client tier, or None."""
    cap = REQUIRES.get((step.actor, step.call))
    if cap is not None:
        return cap
    if step.actor == "secondary":
        return Capability.SECONDARY_PROCESS
    if step.actor == "server":
        return Capability.SCRIPTED_SERVER
    return None


def _wait_ms(value: Any) -> float | None:
    """Seconds a call with this timeout may wait, None for INFINITE."""
    if not isinstance(value, int) or isinstance(value, bool):
        return 0.0
    if value < 0 or value == INFINITE:
        return None
    return value / 1000.0


class _Worker:
    """One thread that performs calls; the caller waits with a deadline."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]
                                  | None] = queue.SimpleQueue()
        self._t = threading.Thread(target=self._run, name="conform-executor", daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, box, done = item
            try:
                box.append((True, fn()))
            except BaseException as exc:  # handed to the caller
                box.append((False, exc))
            done.set()

    def run(self, fn: Callable[[], Any], deadline_s: float) -> tuple[bool, Any]:
        """(True, result) or (False, exception); raises TimeoutError at the deadline."""
        box: list[Any] = []
        done = threading.Event()
        self._q.put((fn, box, done))
        if not done.wait(deadline_s):
            raise TimeoutError
        ok, value = box[0]
        return bool(ok), value

    def stop(self) -> None:
        self._q.put(None)


class Executor:
    """Performs steps on one backend for one trace (one set name, one client object per
    actor, one scripted server set at a time)."""

    def __init__(self, backend: Backend, *, margin_s: float = 10.0,
                 infinite_s: float = 20.0, set_name: str | None = None) -> None:
        self.backend = backend
        self.margin_s = margin_s
        self.infinite_s = infinite_s
        self.set_name = set_name or "{" + str(uuid.uuid4()).upper() + "}"
        self.other_name = "{" + str(uuid.uuid4()).upper() + "}"
        self.clients: dict[str, ClientSide] = {}
        self.devices: dict[str, list[int | None]] = {"client": [], "secondary": []}
        self.commands: dict[str, list[int | None]] = {"client": [], "secondary": []}
        self.handles: list[int | None] = []
        self.server: ScriptedServer | None = None
        self.server_gen = 0
        self.server_devices: list[tuple[int, int]] = []  # (generation, script device index)
        self.server_buffers: list[tuple[int, int]] = []
        self.server_commands: list[tuple[int, int]] = []
        self.trace: list[Obs] = []
        self.wedged: str | None = None  # set after a hang: no further steps
        self.server_dead = False
        self.statement: StatementRun | None = None
        self._worker = _Worker()

    # -- names ---------------------------------------------------------------------------
    def subst(self, value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{set}", self.set_name).replace("{other}", self.other_name)
        if isinstance(value, list):
            return [self.subst(v) for v in value]
        return value

    # -- the step ------------------------------------------------------------------------
    def can(self, step: Step) -> bool:
        cap = required_capability(step)
        return cap is None or self.backend.has(cap)

    def perform(self, step: Step) -> Obs:
        if self.wedged is not None:
            raise HarnessError(f"executor unusable after a hang in {self.wedged}")
        cap = required_capability(step)
        if cap is not None and not self.backend.has(cap):
            raise NotCapable(cap)
        calls = {"client": CLIENT_CALLS, "secondary": CLIENT_CALLS, "server": SERVER_CALLS,
                 "harness": HARNESS_CALLS}[step.actor]
        if step.call not in calls:
            raise HarnessError(f"unknown call {step.actor}.{step.call}")
        args = {k: self.subst(v) for k, v in step.args.items()}
        fn, wait_s = self._plan(step, args)
        deadline = self.infinite_s if wait_s is None else wait_s + self.margin_s
        t0 = time.monotonic()
        try:
            ok, value = self._worker.run(fn, deadline)
        except TimeoutError:
            self.wedged = str(step)
            obs = Obs(step, None, {"hang": True, "deadline_ms": int(deadline * 1000)})
            self.trace.append(obs)
            return obs
        if not ok:
            if isinstance(value, (HarnessError, NotCapable)):
                raise value
            raise HarnessError(f"{step}: {type(value).__name__}: {value}") from value
        hr, out = value
        if wait_s is not None and wait_s > 0 and step.call in ("get_command",
                                                               "get_configuration"):
            out["elapsed_ms"] = int((time.monotonic() - t0) * 1000)
        obs = Obs(step, hr, out)
        self.trace.append(obs)
        return obs

    def _plan(self, step: Step, a: dict[str, Any]) -> tuple[Callable[[], tuple[int | None,
                                                                               dict[str, Any]]],
                                                            float | None]:
        """The call to make and how long it may legitimately wait (seconds; None: forever)."""
        if step.actor in ("client", "secondary"):
            return self._client_plan(step.actor, step.call, a)
        if step.actor == "server":
            return self._server_plan(step.call, a)
        return self._harness_plan(step.call, a)

    # -- client tier -------------------------------------------------------------------------
    def client(self, actor: str) -> ClientSide:
        c = self.clients.get(actor)
        if c is None:
            c = self.backend.new_client() if actor == "client" else self.backend.new_secondary()
            self.clients[actor] = c
        return c

    def _device(self, actor: str, sym: Any) -> int:
        devs = self.devices[actor]
        if not isinstance(sym, int) or not 0 <= sym < len(devs) or devs[sym] is None:
            raise HarnessError(f"{actor} has no device #{sym!r}")
        h = devs[sym]
        assert h is not None
        return h

    def _command(self, actor: str, sym: Any) -> int:
        cmds = self.commands[actor]
        if isinstance(sym, int) and 0 <= sym < len(cmds) and cmds[sym] is not None:
            h = cmds[sym]
            assert h is not None
            return h
        return GARBAGE_COMMAND

    def _client_plan(self, actor: str, call: str, a: dict[str, Any]) -> tuple[
            Callable[[], tuple[int | None, dict[str, Any]]], float | None]:
        c = self.client(actor)
        if call == "create":
            cfg = a.get("config")
            config: Any = VDConfig(**cfg) if isinstance(cfg, dict) else cfg
            return (lambda: (c.create(a["name"], config, a.get("instance")), {})), 0.0
        if call == "get_configuration":
            def get_configuration() -> tuple[int, dict[str, Any]]:
                hr, got = c.get_configuration(a["timeout_ms"])
                return hr, {"config": attrs.asdict(got) if got is not None else None}
            return get_configuration, _wait_ms(a["timeout_ms"])
        if call == "open_device":
            def open_device() -> tuple[int, dict[str, Any]]:
                hr, h = c.open_device(a["name"])
                if h is None:
                    return hr, {"device": None}
                self.devices[actor].append(h)
                return hr, {"device": len(self.devices[actor]) - 1}
            return open_device, 0.0
        if call in ("get_command", "device_after_close") and (
                call == "get_command" or a.get("call", "get_command") == "get_command"):
            dev = self._device(actor, a["device"])
            timeout = a.get("timeout_ms", 0)

            def get_command() -> tuple[int, dict[str, Any]]:
                hr, cmd = c.get_command(dev, timeout)
                if cmd is None:
                    return hr, {"command": None}
                self.commands[actor].append(cmd.handle)
                return hr, {"command": len(self.commands[actor]) - 1, "code": cmd.code,
                            "size": cmd.size, "position": cmd.position,
                            "has_buffer": cmd.has_buffer}
            return get_command, _wait_ms(timeout)
        if call in ("complete_command", "device_after_close"):
            dev = self._device(actor, a["device"])
            cmd_h = self._command(actor, a.get("command"))
            code = a.get("code", a.get("completion_code", 0))
            nbytes, pos = a.get("bytes", a.get("bytes_transferred", 0)), a.get("position", 0)
            return (lambda: (c.complete_command(dev, cmd_h, code, nbytes, pos), {})), 0.0
        if call == "signal_abort":
            return (lambda: (c.signal_abort(), {})), 0.0
        if call == "close":
            return (lambda: (c.close(), {})), 0.0
        if call == "open_in_secondary":
            return (lambda: (c.open_in_secondary(a["name"], a.get("instance")), {})), 0.0
        if call == "get_buffer_handle":
            cmd_h = self._command(actor, a.get("command"))

            def get_buffer_handle() -> tuple[int, dict[str, Any]]:
                hr, handle = c.get_buffer_handle(cmd_h)
                if handle is None:
                    return hr, {"handle": None}
                self.handles.append(handle)
                return hr, {"handle": len(self.handles) - 1}
            return get_buffer_handle, 0.0
        if call == "map_buffer_handle":
            sym = a.get("handle")
            real = (self.handles[sym] if isinstance(sym, int) and 0 <= sym < len(self.handles)
                    else None)
            raw = real if real is not None else GARBAGE_HANDLE

            def map_buffer_handle() -> tuple[int, dict[str, Any]]:
                hr, mapped = c.map_buffer_handle(raw)
                return hr, {"mapped": mapped}
            return map_buffer_handle, 0.0
        if call == "read_buffer":
            cmd_h = self._command(actor, a["command"])
            return (lambda: (None, {"data": c.read_buffer(cmd_h, a.get("offset", 0),
                                                          a.get("length")).hex()})), 0.0
        if call == "write_buffer":
            cmd_h = self._command(actor, a["command"])
            data = bytes.fromhex(a["data"])
            def write_buffer() -> tuple[None, dict[str, Any]]:
                c.write_buffer(cmd_h, data, a.get("offset", 0))
                return None, {}
            return write_buffer, 0.0
        raise HarnessError(f"unknown call {actor}.{call}")

    # -- server tier -------------------------------------------------------------------------
    def _srv(self) -> ScriptedServer:
        if self.server is None or self.server_dead:
            raise HarnessError("no scripted server set is open (server.open first)")
        return self.server

    def _server_ref(self, table: list[tuple[int, int]], sym: Any, what: str,
                    garbage: int | None = None) -> int:
        if isinstance(sym, int) and 0 <= sym < len(table):
            gen, ref = table[sym]
            if gen == self.server_gen:
                return ref
            raise HarnessError(f"server {what} #{sym} belongs to an earlier server set")
        if garbage is not None:
            return garbage
        raise HarnessError(f"server has no {what} #{sym!r}")

    def _server_plan(self, call: str, a: dict[str, Any]) -> tuple[
            Callable[[], tuple[int | None, dict[str, Any]]], float | None]:
        if call == "open":
            def open_() -> tuple[int, dict[str, Any]]:
                if self.server is None or self.server_dead:
                    if self.server is not None:
                        self._forget_server()
                    self.server = self.backend.server.script()
                    self.server_dead = False
                self.server_gen += 1
                return self.server.open(a["name"], a.get("instance")), {}
            return open_, 0.0
        s = self._srv()
        if call == "get_configuration":
            def get_configuration() -> tuple[int, dict[str, Any]]:
                hr, cfg = s.get_configuration()
                return hr, {"config": attrs.asdict(cfg) if cfg is not None else None}
            return get_configuration, 0.0
        if call == "begin_configuration":
            return (lambda: (s.begin_configuration(
                a["features"], a["block_size"], a["alignment"], a["max_transfer_size"],
                a.get("timeout_ms", 0), a.get("device_names")), {})), _wait_ms(
                    a.get("timeout_ms", 0))
        if call == "request_buffers":
            return (lambda: (s.request_buffers(a["size"], a.get("alignment", 0),
                                               a["count"]), {})), 0.0
        if call == "end_configuration":
            return (lambda: (s.end_configuration(), {})), 0.0
        if call == "open_device":
            def open_device() -> tuple[int, dict[str, Any]]:
                hr, idx = s.open_device(a.get("name"))
                if idx is None:
                    return hr, {"device": None}
                self.server_devices.append((self.server_gen, idx))
                return hr, {"device": len(self.server_devices) - 1, "index": idx}
            return open_device, 0.0
        if call == "start_agent":
            def start_agent() -> tuple[None, dict[str, Any]]:
                s.start_agent()
                return None, {}
            return start_agent, 0.0
        if call == "allocate_buffer":
            fill = a.get("fill")

            def allocate_buffer() -> tuple[int, dict[str, Any]]:
                hr, buf = s.allocate_buffer(a["size"], a.get("alignment", 0),
                                            bytes.fromhex(fill) if isinstance(fill, str)
                                            else None)
                if buf is None:
                    return hr, {"buffer": None}
                self.server_buffers.append((self.server_gen, buf))
                return hr, {"buffer": len(self.server_buffers) - 1}
            return allocate_buffer, 0.0
        if call == "free_buffer":
            bid = self._server_ref(self.server_buffers, a["buffer"], "buffer", GARBAGE_BUFFER)
            return (lambda: (s.free_buffer(bid), {})), 0.0
        if call == "read_buffer":
            bid = self._server_ref(self.server_buffers, a["buffer"], "buffer")
            return (lambda: (None, {"data": s.read_buffer(bid, a.get("offset", 0),
                                                          a.get("length")).hex()})), 0.0
        if call == "send_command":
            dev = self._server_ref(self.server_devices, a["device"], "device")
            b = a.get("buffer")
            sbuf: int | None = None if b is None else self._server_ref(
                self.server_buffers, b, "buffer", GARBAGE_BUFFER)

            def send_command() -> tuple[int, dict[str, Any]]:
                hr, handle = s.send_command(dev, a["code"], a.get("size", 0),
                                            a.get("position", 0), sbuf)
                self.server_commands.append((self.server_gen, handle))
                out: dict[str, Any] = {"command": len(self.server_commands) - 1}
                if hr != 0:  # the completion routine ran synchronously (§3 SendCommand)
                    r = s.wait_completion(handle, 0)
                    out["completion_code"] = r.get("completion_code")
                return hr, out
            return send_command, 0.0
        if call == "wait_completion":
            cmd = self._server_ref(self.server_commands, a["command"], "command")
            timeout = a.get("timeout_ms", 0)

            def wait_completion() -> tuple[None, dict[str, Any]]:
                r = s.wait_completion(cmd, timeout)
                return None, {k: r.get(k) for k in ("done", "completion_code",
                                                    "bytes_transferred", "position",
                                                    "generated") if k in r}
            return wait_completion, _wait_ms(timeout)
        if call == "close_device":
            dev = self._server_ref(self.server_devices, a["device"], "device")
            return (lambda: (s.close_device(dev), {})), 0.0
        if call == "signal_abort":
            return (lambda: (s.signal_abort(), {})), 0.0
        if call == "close":
            return (lambda: (s.close(), {})), 0.0
        if call == "state":
            def state() -> tuple[None, dict[str, Any]]:
                r = s.state()
                return None, {"state": r.get("state"), "abort_reason": r.get("abort_reason"),
                              "violations": list(r.get("violations") or [])}
            return state, 0.0
        if call == "die":
            def die() -> tuple[None, dict[str, Any]]:
                fn = getattr(s, "die", None)
                if fn is not None:
                    fn()
                else:
                    self.backend.server.kill()
                self._server_died()
                return None, {}
            return die, 0.0
        raise HarnessError(f"unknown call server.{call}")

    def _server_died(self) -> None:
        self.server_dead = True
        self.server_gen += 1

    def _forget_server(self) -> None:
        s, self.server = self.server, None
        if s is None:
            return
        forget = getattr(self.backend, "forget_script", None)
        if forget is not None:
            forget(s)

    # -- harness -----------------------------------------------------------------------------
    def _harness_plan(self, call: str, a: dict[str, Any]) -> tuple[
            Callable[[], tuple[int | None, dict[str, Any]]], float | None]:
        if call == "kill_server":
            def kill_server() -> tuple[None, dict[str, Any]]:
                self.backend.server.kill()
                self._server_died()
                return None, {}
            return kill_server, 0.0
        if call == "kill_secondary":
            def kill_secondary() -> tuple[None, dict[str, Any]]:
                c = self.clients.get("secondary")
                kill = getattr(c, "kill", None)
                if kill is None:
                    raise NotCapable(Capability.SECONDARY_PROCESS)
                kill()
                return None, {}
            return kill_secondary, 0.0
        if call == "kill_client":
            def kill_client() -> tuple[None, dict[str, Any]]:
                kill = getattr(self.clients.get("client"), "kill", None)
                if kill is None:
                    raise NotCapable(Capability.KILL_CLIENT)
                kill()
                return None, {}
            return kill_client, 0.0
        if call == "sleep_virtual":
            ms = max(0, min(int(a.get("ms", 0)), 5000))
            def sleep_virtual() -> tuple[None, dict[str, Any]]:
                time.sleep(ms / 1000.0)
                return None, {}
            return sleep_virtual, ms / 1000.0
        if call == "start_statement":
            def start_statement() -> tuple[None, dict[str, Any]]:
                self.statement = self.backend.server.start_statement(a["sql"])
                return None, {}
            return start_statement, 0.0
        if call == "wait_statement":
            wait_s = _wait_ms(a.get("timeout_ms", 30_000))

            def wait_statement() -> tuple[None, dict[str, Any]]:
                run = self.statement
                if run is None:
                    raise HarnessError("no statement is running")
                got = run.wait(self.infinite_s if wait_s is None else wait_s)
                if got is None:
                    return None, {"done": False}
                return None, {"done": True, "ok": got.ok, "errors": list(got.errors)}
            return wait_statement, wait_s
        if call == "leak_check":
            def leak_check() -> tuple[None, dict[str, Any]]:
                deadline = time.monotonic() + float(a.get("grace_ms", 3000)) / 1000.0
                while True:
                    leaks = self.backend.leaks()
                    if not leaks or time.monotonic() > deadline:
                        return None, {"leaks": leaks}
                    time.sleep(0.01)
            return leak_check, float(a.get("grace_ms", 3000)) / 1000.0
        raise HarnessError(f"unknown call harness.{call}")

    # -- teardown ----------------------------------------------------------------------------
    def cleanup(self) -> list[str]:
        """Close every client object and the server set (ignoring answers); then give each
        client object back to the backend.  Returns problems met (empty when clean)."""
        problems: list[str] = []
        if self.wedged is None:
            for actor in ("secondary", "client"):
                c = self.clients.get(actor)
                if c is not None:
                    try:
                        self._worker.run(c.close, self.margin_s)
                    except TimeoutError:
                        problems.append(f"{actor}.close did not return")
                        self.wedged = f"{actor}.close"
                        break
            s = self.server
            if s is not None and not self.server_dead and self.wedged is None:
                try:
                    self._worker.run(s.close, self.margin_s)
                except TimeoutError:
                    problems.append("server.close did not return")
                    self.wedged = "server.close"
        run, self.statement = self.statement, None
        if run is not None and run.wait(0) is None:
            run.cancel()
            if run.wait(self.margin_s) is None:
                problems.append("the statement did not end after ATTENTION")
        retire = getattr(self.backend, "retire", None)
        for c in self.clients.values():
            with contextlib.suppress(Exception):
                if retire is not None:
                    retire(c)
                else:
                    c.release()
        self.clients.clear()
        self._forget_server()
        return problems

    def close(self) -> None:
        """Clean up (if not done) and stop the worker thread."""
        if self.clients or self.server is not None:
            self.cleanup()
        self._worker.stop()
