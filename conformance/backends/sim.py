"""The ``sim`` backend: vdisim's own client library and engine under the conformance suite.

* client tier: :class:`vdisim.client.VirtualDeviceSet` in this process (:class:`SimClient`);
* secondaries: the same client library in *another OS process*, a small agent
  (``python -m conformance.backends.sim --agent``) that performs client calls it reads as JSON
  lines on stdin and answers on stdout (:class:`AgentClient`; capability SECONDARY_PROCESS);
* server tier: a private engine process (``Engine.start()``), scripted one VDI server call at a
  time through ``conn.script()`` sessions, whole T-SQL statements on their own connections,
  and SIGKILL of the engine (restarted on demand).

Both client flavours run their calls through one :class:`ClientOps` table, so a secondary
behaves exactly as the in-process client would.  Handles (devices, commands) are small ints
this module hands out; nothing but JSON crosses the agent's pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import attrs

from conformance.backend import (
    Backend,
    Capability,
    ClientSide,
    CommandView,
    ScriptedServer,
    ServerSide,
    StatementOutcome,
    StatementRun,
)
from vdisim.client.api import Command, VirtualDevice, VirtualDeviceSet
from vdisim.engine import Connection, Engine
from vdisim.engine.scripting import ScriptSession
from vdisim.protocol.records import VDConfig
from vdisim.transport import naming
from vdisim.transport.segments import SHM_DIR, sweep_stale

__all__ = ["AgentClient", "AgentError", "ClientOps", "SimBackend", "SimClient", "config_from",
           "config_to"]

SIM_CAPABILITIES = frozenset({
    Capability.SCRIPTED_SERVER, Capability.STATEMENTS, Capability.KILL_SERVER,
    Capability.SECONDARY_PROCESS, Capability.BUFFER_HANDLES, Capability.SAFE_AFTER_CLOSE,
    Capability.OBSERVE_SERVER, Capability.COMPLETE, Capability.SNAPSHOT, Capability.TAPE,
    Capability.DISK, Capability.MULTI_DEVICE,
})

AGENT_REPLY_TIMEOUT_S = 30.0  # a client call in the agent never takes this long (waits are capped)


def config_to(cfg: VDConfig | None) -> dict[str, int] | None:
    return None if cfg is None else attrs.asdict(cfg)


def config_from(d: Mapping[str, Any] | VDConfig | None) -> VDConfig | None:
    if d is None or isinstance(d, VDConfig):
        return d
    return VDConfig(**{k: int(v) for k, v in d.items()})


class _Garbage:
    """What the backend passes for a command handle it never handed out (a garbage pointer)."""

    def __repr__(self) -> str:
        return "<garbage command>"


# ---------------------------------------------------------------------------------------------
# The client calls, by name (shared by the in-process client and the secondary agent)


class ClientOps:
    """One ``VirtualDeviceSet`` and the handles of its devices and commands.

    ``call(op, args)`` returns a JSON-able dict with ``hr`` (unsigned) and the outputs.  Device
    handles stay valid after Close (using one then is the "device after Close" case)."""

    def __init__(self, on_name: Callable[[str, str | None], None] | None = None) -> None:
        self.vds = VirtualDeviceSet()
        self.devices: dict[int, VirtualDevice] = {}
        self.commands: dict[int, Command] = {}
        self.views: dict[int, memoryview] = {}
        self._next = 1
        self._on_name = on_name

    def _handle(self) -> int:
        h = self._next
        self._next += 1
        return h

    def call(self, op: str, args: Mapping[str, Any]) -> dict[str, Any]:
        fn = getattr(self, f"op_{op}", None)
        if fn is None:
            raise ValueError(f"unknown client operation {op!r}")
        result: dict[str, Any] = fn(**args)
        return result

    def _command(self, handle: int | None) -> Any:
        return self.commands.get(handle, _Garbage()) if handle is not None else _Garbage()

    def op_create(self, name: str, config: Mapping[str, Any] | None,
                  instance: str | None = None) -> dict[str, Any]:
        if self._on_name is not None and isinstance(name, str):
            self._on_name(name, instance)
        return {"hr": self.vds.create(name, config_from(config), instance)}  # type: ignore[arg-type]

    def op_get_configuration(self, timeout_ms: int) -> dict[str, Any]:
        hr, cfg = self.vds.get_configuration(timeout_ms)
        return {"hr": hr, "config": config_to(cfg)}

    def op_open_device(self, name: str) -> dict[str, Any]:
        hr, dev = self.vds.open_device(name)
        if dev is None:
            return {"hr": hr, "device": None}
        h = self._handle()
        self.devices[h] = dev
        return {"hr": hr, "device": h}

    def op_get_command(self, device: int, timeout_ms: int) -> dict[str, Any]:
        hr, cmd = self.devices[device].get_command(timeout_ms)
        if cmd is None:
            return {"hr": hr, "command": None}
        h = self._handle()
        self.commands[h] = cmd
        return {"hr": hr, "command": {"handle": h, "code": cmd.command_code, "size": cmd.size,
                                      "position": cmd.position,
                                      "has_buffer": cmd.buffer is not None}}

    def op_complete_command(self, device: int, command: int | None, completion_code: int,
                            bytes_transferred: int = 0, position: int = 0) -> dict[str, Any]:
        dev = self.devices[device]
        return {"hr": dev.complete_command(self._command(command), completion_code,
                                           bytes_transferred, position)}

    def op_signal_abort(self) -> dict[str, Any]:
        return {"hr": self.vds.signal_abort()}

    def op_close(self) -> dict[str, Any]:
        hr = self.vds.close()
        for v in self.views.values():
            with contextlib.suppress(Exception):
                v.release()
        self.views.clear()
        return {"hr": hr}

    def op_open_in_secondary(self, name: str, instance: str | None = None) -> dict[str, Any]:
        if self._on_name is not None and isinstance(name, str):
            self._on_name(name, instance)
        return {"hr": self.vds.open_in_secondary(name, instance)}

    def op_read_buffer(self, command: int, offset: int = 0,
                       length: int | None = None) -> dict[str, Any]:
        buf = self.commands[command].buffer
        if buf is None:
            return {"hr": 0, "data": ""}
        end = len(buf) if length is None else offset + length
        try:
            return {"hr": 0, "data": bytes(buf[offset:end]).hex()}
        except ValueError:  # released at completion / Close
            return {"hr": 0, "data": None}

    def op_write_buffer(self, command: int, data: str, offset: int = 0) -> dict[str, Any]:
        buf = self.commands[command].buffer
        raw = bytes.fromhex(data)
        if buf is None:
            return {"hr": 0, "written": 0}
        try:
            buf[offset:offset + len(raw)] = raw
        except ValueError:
            return {"hr": 0, "written": 0}
        return {"hr": 0, "written": len(raw)}

    def op_get_buffer_handle(self, command: int | None) -> dict[str, Any]:
        hr, handle = self.vds.get_buffer_handle(self._command(command))
        return {"hr": hr, "handle": handle}

    def op_map_buffer_handle(self, handle: int) -> dict[str, Any]:
        hr, view = self.vds.map_buffer_handle(handle)
        if view is not None:
            self.views[self._handle()] = view
        return {"hr": hr, "mapped": view is not None}

    def op_state(self) -> dict[str, Any]:
        return {"hr": 0, "state": self.vds.state.name}

    def op_release(self) -> dict[str, Any]:
        """Not a VDI call: close whatever is still open and forget every handle."""
        with contextlib.suppress(Exception):
            if self.vds._core is not None:
                self.vds.close()
        for v in self.views.values():
            with contextlib.suppress(Exception):
                v.release()
        self.__init__(self._on_name)  # type: ignore[misc]
        return {"hr": 0}


class _OpsClient(ClientSide):
    """A :class:`ClientSide` over something that performs :class:`ClientOps` calls."""

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        raise NotImplementedError

    def create(self, name: str, config: VDConfig, instance: str | None = None) -> int:
        cfg = config_to(config) if isinstance(config, VDConfig) else config
        return int(self._call("create", name=name, config=cfg, instance=instance)["hr"])

    def get_configuration(self, timeout_ms: int) -> tuple[int, VDConfig | None]:
        r = self._call("get_configuration", timeout_ms=timeout_ms)
        return int(r["hr"]), config_from(r["config"])

    def open_device(self, name: str) -> tuple[int, int | None]:
        r = self._call("open_device", name=name)
        return int(r["hr"]), r["device"]

    def get_command(self, device: int, timeout_ms: int) -> tuple[int, CommandView | None]:
        r = self._call("get_command", device=device, timeout_ms=timeout_ms)
        c = r["command"]
        if c is None:
            return int(r["hr"]), None
        return int(r["hr"]), CommandView(int(c["handle"]), int(c["code"]), int(c["size"]),
                                         int(c["position"]), bool(c["has_buffer"]))

    def complete_command(self, device: int, command: int, completion_code: int,
                         bytes_transferred: int = 0, position: int = 0) -> int:
        return int(self._call("complete_command", device=device, command=command,
                              completion_code=completion_code,
                              bytes_transferred=bytes_transferred, position=position)["hr"])

    def signal_abort(self) -> int:
        return int(self._call("signal_abort")["hr"])

    def close(self) -> int:
        return int(self._call("close")["hr"])

    def open_in_secondary(self, name: str, instance: str | None = None) -> int:
        return int(self._call("open_in_secondary", name=name, instance=instance)["hr"])

    def read_buffer(self, command: int, offset: int = 0, length: int | None = None) -> bytes:
        data = self._call("read_buffer", command=command, offset=offset, length=length)["data"]
        return b"" if data is None else bytes.fromhex(data)

    def write_buffer(self, command: int, data: bytes, offset: int = 0) -> None:
        self._call("write_buffer", command=command, data=data.hex(), offset=offset)

    def get_buffer_handle(self, command: int) -> tuple[int, int | None]:
        r = self._call("get_buffer_handle", command=command)
        return int(r["hr"]), r["handle"]

    def map_buffer_handle(self, handle: int) -> tuple[int, bool]:
        r = self._call("map_buffer_handle", handle=handle)
        return int(r["hr"]), bool(r["mapped"])

    def state_name(self) -> str:
        """The library's own idea of its state (vdisim extra, for diagnostics)."""
        return str(self._call("state")["state"])


class SimClient(_OpsClient):
    """The vdisim client library in this process."""

    def __init__(self, on_name: Callable[[str, str | None], None] | None = None) -> None:
        self.ops = ClientOps(on_name)

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        return self.ops.call(op, args)

    def release(self) -> None:
        self.ops.call("release", {})


# ---------------------------------------------------------------------------------------------
# The secondary agent: another OS process


class AgentError(Exception):
    """The agent process died, answered garbage, or did not answer in time."""


class AgentClient(_OpsClient):
    """A client object living in a child process (JSON lines over a pipe)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conformance.backends.sim", "--agent"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(env or os.environ),
            bufsize=0)
        self._buf = b""
        self._lock = threading.Lock()
        self.names: list[tuple[str, str | None]] = []

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        if op in ("create", "open_in_secondary") and isinstance(args.get("name"), str):
            self.names.append((args["name"], args.get("instance")))
        with self._lock:
            stdin, stdout = self.proc.stdin, self.proc.stdout
            if stdin is None or stdout is None or not self.alive:
                raise AgentError("secondary agent is not running")
            try:
                stdin.write(json.dumps({"op": op, "args": args}).encode() + b"\n")
            except OSError as exc:
                raise AgentError(f"secondary agent: {exc}") from exc
            line = self._readline(stdout, AGENT_REPLY_TIMEOUT_S)
        try:
            reply = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AgentError(f"secondary agent answered {line[:80]!r}") from exc
        if "error" in reply:
            raise AgentError(f"secondary agent: {reply['error']}")
        return dict(reply["result"])

    def _readline(self, stream: IO[bytes], timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AgentError("secondary agent did not answer in time (killed)")
            r, _, _ = select.select([stream], [], [], left)
            if r:
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    raise AgentError("secondary agent exited")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def release(self) -> None:
        if self.alive:
            with contextlib.suppress(AgentError):
                self._call("release")

    def kill(self) -> None:
        """SIGKILL the agent (a dying secondary, §1.9)."""
        if self.alive:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive and self.proc.stdin is not None:
            with contextlib.suppress(AgentError):
                self._call("release")
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        else:
            self.kill()
        for s in (self.proc.stdin, self.proc.stdout):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()


def agent_main() -> int:
    """The agent's loop: one JSON request per line in, one reply per line out."""
    ops = ClientOps()
    out = sys.stdout.buffer
    for raw in sys.stdin.buffer:
        try:
            req = json.loads(raw)
            reply: dict[str, Any] = {"result": ops.call(str(req["op"]), dict(req["args"]))}
        except Exception as exc:  # every failure is an answer, never a dead agent
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
    ops.call("release", {})
    return 0


# ---------------------------------------------------------------------------------------------
# The server tier


class SimScript:
    """A scripted server-side set on its own engine connection (closing it disposes the set)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.session: ScriptSession = conn.script()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def dispose(self) -> None:
        with contextlib.suppress(Exception):
            self.session.close()
        with contextlib.suppress(Exception):
            self.conn.close()


class _SimStatement(StatementRun):
    def __init__(self, conn: Connection, sql: str) -> None:
        self._conn = conn
        self._outcome: StatementOutcome | None = None
        self._thread = threading.Thread(target=self._run, args=(sql,), daemon=True)
        self._thread.start()

    def _run(self, sql: str) -> None:
        try:
            r = self._conn.execute(sql)
            self._outcome = StatementOutcome(r.ok, tuple(r.error_numbers), r.text())
        except Exception as exc:  # the engine died under the statement
            self._outcome = StatementOutcome(False, (), f"connection failed: {exc}")
        finally:
            with contextlib.suppress(Exception):
                self._conn.close()

    def wait(self, timeout_s: float) -> StatementOutcome | None:
        self._thread.join(timeout_s)
        return None if self._thread.is_alive() else self._outcome

    def cancel(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.cancel()


class SimServer(ServerSide):
    def __init__(self, backend: SimBackend) -> None:
        self._b = backend

    def script(self) -> ScriptedServer:
        s = SimScript(self._b.engine().connect())
        self._b._scripts.append(s)
        return s

    def start_statement(self, sql: str) -> StatementRun:
        return _SimStatement(self._b.engine().connect(), sql)

    def scratch_database(self) -> str:
        name = "vdisim_conform"
        with self._b.engine().connect() as conn:
            r = conn.execute(f"CREATE DATABASE {name} WITH SIZE_MB = 1, SEED = 7")
            if not r.ok and 1801 not in r.error_numbers:  # 1801: it already exists
                raise RuntimeError(f"cannot create {name}: {r.text()}")
        return name

    def kill(self) -> None:
        self._b.kill_engine()


class SimBackend(Backend):
    """vdisim's client library (this process), secondaries in agent processes, and a private
    vdisim engine process.  ``engine_address`` uses an already running engine instead (then
    KILL_SERVER is not offered)."""

    name = "sim"
    capabilities = SIM_CAPABILITIES

    def __init__(self, *, engine_address: str | None = None, seed: int = 0) -> None:
        self._address = engine_address
        self._seed = seed
        self._engine: Engine | None = None
        self._server = SimServer(self)
        self._scripts: list[SimScript] = []
        self._clients: list[SimClient] = []
        self._agents: list[AgentClient] = []
        self._idle_agents: list[AgentClient] = []
        self._keys: set[str] = set()
        self._lock = threading.Lock()
        self.engine_starts = 0
        if engine_address is not None:
            self.capabilities = self.capabilities - {Capability.KILL_SERVER}

    # -- session ------------------------------------------------------------------------
    def open(self) -> None:
        if self._address is None:
            self.engine()

    def close(self) -> None:
        for c in self._clients:
            c.release()
        self._clients.clear()
        for a in self._agents:
            a.stop()
        self._agents.clear()
        self._idle_agents.clear()
        for s in self._scripts:
            s.dispose()
        self._scripts.clear()
        if self._engine is not None:
            self._engine.stop()
            self._engine = None

    def engine(self) -> Engine:
        """The engine, (re)started on demand after a kill."""
        with self._lock:
            if self._address is not None:
                return Engine(self._address)
            eng = self._engine
            if eng is None or (eng.proc is not None and eng.proc.poll() is not None):
                if eng is not None:
                    eng.stop()
                # A killed engine's resource tracker (multiprocessing) warns on stderr about
                # the segments it then removes: expected here, not worth a warning.
                env = dict(os.environ)
                env["PYTHONWARNINGS"] = ",".join(
                    w for w in (env.get("PYTHONWARNINGS"), "ignore:resource_tracker:UserWarning")
                    if w)
                self._engine = eng = Engine.start(seed=self._seed, env=env)
                self.engine_starts += 1
            return eng

    def kill_engine(self) -> None:
        if self._address is not None:
            raise RuntimeError("cannot kill an engine this backend did not start")
        with self._lock:
            eng = self._engine
        if eng is not None:
            eng.kill()

    def _remember(self, name: str, instance: str | None) -> None:
        if naming.valid_set_name(name) and naming.valid_instance(instance):
            self._keys.add(naming.set_key(instance, name))

    # -- clients --------------------------------------------------------------------------
    def new_client(self) -> ClientSide:
        c = SimClient(self._remember)
        self._clients.append(c)
        return c

    def new_secondary(self) -> ClientSide:
        """A client object in an agent process (a released one is reused)."""
        while self._idle_agents:
            a = self._idle_agents.pop()
            if a.alive:
                return a
        a = AgentClient()
        self._agents.append(a)
        return a

    def retire(self, client: ClientSide) -> None:
        """Release a client object; an agent goes back to the pool for the next secondary."""
        client.release()
        if isinstance(client, AgentClient):
            for name, inst in client.names:
                self._remember(name, inst)
            client.names.clear()
            if client.alive:
                self._idle_agents.append(client)
        elif isinstance(client, SimClient) and client in self._clients:
            self._clients.remove(client)

    def forget_script(self, script: object) -> None:
        if isinstance(script, SimScript):
            script.dispose()
            if script in self._scripts:
                self._scripts.remove(script)

    @property
    def server(self) -> ServerSide:
        return self._server

    # -- hygiene ----------------------------------------------------------------------------
    def leaks(self) -> list[str]:
        """Segments and socket files of the sets this backend's clients named that survive."""
        for a in self._agents:
            for name, inst in a.names:
                self._remember(name, inst)
        if not self._keys:
            return []
        out = []
        try:
            entries = os.listdir(SHM_DIR)
        except FileNotFoundError:
            entries = []
        for e in entries:
            if e.startswith(naming.PREFIX) and e[len(naming.PREFIX):][:16] in self._keys:
                out.append(os.path.join(SHM_DIR, e))
        rt = naming.runtime_dir()
        for key in self._keys:
            p = os.path.join(rt, f"{key}.sock")
            if os.path.exists(p):
                out.append(p)
        return sorted(out)

    def sweep_dead(self) -> list[str]:
        """Remove segments whose owner died (what the OS would reclaim after a crash)."""
        return sweep_stale(min_age=0.0)

    def describe(self) -> Mapping[str, str]:
        eng = self._engine
        return {"engine": self._address or (eng.address if eng else "not started"),
                "engine_starts": str(self.engine_starts),
                "namespace": naming.PREFIX}


if __name__ == "__main__":
    if sys.argv[1:] == ["--agent"]:
        raise SystemExit(agent_main())
    raise SystemExit("usage: python -m conformance.backends.sim --agent")
