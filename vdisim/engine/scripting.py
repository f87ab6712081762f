"""Step-by-step driving of the engine's side of VDI (the scripting API).

Tests and later harnesses drive a server-side set one call at a time, in the engine process, over
an ordinary engine connection: ``conn.script()`` returns a :class:`ScriptSession` whose methods
mirror ``IServerVirtualDeviceSet2`` / ``IServerVirtualDevice`` and return HRESULTs.  The engine
process executes each call with :class:`ScriptHost`.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from vdisim import hooks
from vdisim.engine.server_vds import (
    ServerBuffer,
    ServerCommand,
    ServerVirtualDevice,
    ServerVirtualDeviceSet,
)
from vdisim.protocol.records import VDConfig

if TYPE_CHECKING:
    from vdisim.engine.connection import Connection


class ScriptError(Exception):
    pass


class ScriptHost:
    """Engine side: one server-side set per connection, driven by named operations."""

    def __init__(self) -> None:
        self.vds: ServerVirtualDeviceSet | None = None
        self.devices: dict[int, ServerVirtualDevice] = {}  # by the set's device index
        self.buffers: dict[int, ServerBuffer] = {}
        self.commands: dict[int, ServerCommand] = {}
        self.cond = threading.Condition()
        self.agent: threading.Thread | None = None
        self._next = 1

    def _routine(self, cmd: ServerCommand) -> None:
        with self.cond:
            self.cond.notify_all()

    def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if hooks.ACTIVE:  # the agent first handles all the client sent (docs/fuzz.md)
            hooks.point("engine.script.op", host=self, op=op)
        fn = getattr(self, f"op_{op}", None)
        if fn is None:
            raise ScriptError(f"unknown script operation {op!r}")
        try:
            result: dict[str, Any] = fn(**args)
        except TypeError as exc:
            raise ScriptError(f"bad arguments for {op}: {exc}") from exc
        return result

    def _set(self) -> ServerVirtualDeviceSet:
        if self.vds is None:
            self.vds = ServerVirtualDeviceSet()
        return self.vds

    # -- set calls ------------------------------------------------------------------------
    def op_open(self, name: str, instance: str | None = None) -> dict[str, Any]:
        self.dispose()
        return {"hr": self._set().open(name, instance)}

    def op_get_configuration(self) -> dict[str, Any]:
        hr, cfg = self._set().get_configuration()
        return {"hr": hr, "config": cfg.pack().hex() if cfg else None}

    def op_begin_configuration(self, features: int, block_size: int, alignment: int,
                               max_transfer_size: int, timeout_ms: int = 0,
                               device_names: list[str] | None = None) -> dict[str, Any]:
        return {"hr": self._set().begin_configuration(features, block_size, alignment,
                                                      max_transfer_size, timeout_ms,
                                                      device_names)}

    def op_request_buffers(self, size: int, alignment: int, count: int) -> dict[str, Any]:
        return {"hr": self._set().request_buffers(size, alignment, count)}

    def op_end_configuration(self) -> dict[str, Any]:
        return {"hr": self._set().end_configuration()}

    def op_open_device(self, name: str | None = None) -> dict[str, Any]:
        hr, dev = self._set().open_device(name)
        if dev is not None:
            self.devices[dev.index] = dev
        return {"hr": hr, "device": dev.index if dev else None}

    def op_start_agent(self) -> dict[str, Any]:
        vds = self._set()
        self.agent = threading.Thread(target=vds.execute_completion_agent, daemon=True)
        self.agent.start()
        # Return once the agent reads the connection (or has already returned), so that the
        # next step's observations do not depend on how fast the thread got going.
        deadline = time.monotonic() + 5.0
        while (not vds.agent_running and self.agent.is_alive()
               and time.monotonic() < deadline):
            time.sleep(0.0005)
        return {"hr": 0}

    def op_allocate_buffer(self, size: int, alignment: int = 0,
                           fill: str | None = None) -> dict[str, Any]:
        hr, buf = self._set().allocate_buffer(size, alignment)
        if buf is None:
            return {"hr": hr, "buffer": None}
        if fill is not None:
            pattern = bytes.fromhex(fill) or b"\0"
            reps = -(-size // len(pattern))
            buf.data[:] = (pattern * reps)[:size]
        self.buffers[buf.id] = buf
        return {"hr": hr, "buffer": buf.id, "offset": buf.offset}

    def op_free_buffer(self, buffer: int) -> dict[str, Any]:
        buf = self.buffers.pop(buffer, None)
        if buf is None:
            return {"hr": self._set().free_buffer(None)}  # type: ignore[arg-type]
        return {"hr": self._set().free_buffer(buf)}

    def op_read_buffer(self, buffer: int, offset: int = 0,
                       length: int | None = None) -> dict[str, Any]:
        buf = self.buffers[buffer]
        end = buf.size if length is None else offset + length
        return {"hr": 0, "data": bytes(buf.data[offset:end]).hex()}

    def op_send_command(self, device: int, code: int, size: int = 0, position: int = 0,
                        buffer: int | None = None) -> dict[str, Any]:
        dev = self.devices[device]
        buf = self.buffers.get(buffer) if buffer is not None else None
        cmd = ServerCommand(code, size, position, buf, self._routine)
        hr = dev.send_command(cmd)
        handle = self._next
        self._next += 1
        self.commands[handle] = cmd
        return {"hr": hr, "command": handle, "completion_code": cmd.completion_code}

    def op_wait_completion(self, command: int, timeout_ms: int = 5000) -> dict[str, Any]:
        cmd = self.commands[command]
        deadline = time.monotonic() + timeout_ms / 1000.0
        with self.cond:
            while not cmd.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
        return {"hr": 0, "done": cmd.done, "completion_code": cmd.completion_code,
                "bytes_transferred": cmd.bytes_transferred, "position": cmd.out_position,
                "generated": cmd.generated}

    def op_close_device(self, device: int) -> dict[str, Any]:
        return {"hr": self.devices[device].close_device()}

    def op_signal_abort(self) -> dict[str, Any]:
        return {"hr": self._set().signal_abort()}

    def op_close(self) -> dict[str, Any]:
        hr = self._set().close()
        if self.agent is not None:
            self.agent.join(timeout=5)
            self.agent = None
        return {"hr": hr}

    def op_state(self) -> dict[str, Any]:
        vds = self._set()
        vds.settle()  # what the client sent before this call counts (see settle)
        return {"hr": 0, "state": vds.state.name, "abort_reason": vds.abort_reason,
                "violations": list(vds.violations),
                "events": [[e.call.name, e.device, e.hresult, e.a, e.b, e.c]
                           for e in vds.events]}

    def op_fuzz(self, action: str, ms: int = 0) -> dict[str, Any]:
        """Race fuzzing, in an engine started with ``VDISIM_HOOKS=engine`` (docs/fuzz.md):
        ``advance`` moves the virtual serverTimeOut clock by ``ms`` and runs the watchdog check;
        ``log`` returns (and clears) the log of completion routines the engine ran."""
        eng = hooks.ENGINE
        if eng is None:
            raise ScriptError("fuzz operations need an engine started with VDISIM_HOOKS=engine")
        if action == "advance":
            eng.advance(ms)
            if self.vds is not None:
                self.vds._check_watchdog()
            return {"hr": 0}
        if action == "log":
            log, eng.log = eng.log, []
            return {"hr": 0, "log": log}
        raise ScriptError(f"unknown fuzz action {action!r}")

    def op_die(self) -> dict[str, Any]:
        os._exit(137)

    def dispose(self) -> None:
        if self.vds is not None:
            self.vds.dispose()
            if self.agent is not None:
                self.agent.join(timeout=5)
        self.__init__()  # type: ignore[misc]


class ScriptSession:
    """Client side of the scripting API: each method runs one server call in the engine."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        return self._conn._script(op, args)

    def open(self, name: str, instance: str | None = None) -> int:
        return int(self.call("open", name=name, instance=instance)["hr"])

    def get_configuration(self) -> tuple[int, VDConfig | None]:
        r = self.call("get_configuration")
        return int(r["hr"]), VDConfig.unpack(bytes.fromhex(r["config"])) if r["config"] else None

    def begin_configuration(self, features: int, block_size: int, alignment: int,
                            max_transfer_size: int, timeout_ms: int = 0,
                            device_names: list[str] | None = None) -> int:
        return int(self.call("begin_configuration", features=features, block_size=block_size,
                             alignment=alignment, max_transfer_size=max_transfer_size,
                             timeout_ms=timeout_ms, device_names=device_names)["hr"])

    def request_buffers(self, size: int, alignment: int, count: int) -> int:
        return int(self.call("request_buffers", size=size, alignment=alignment, count=count)["hr"])

    def end_configuration(self) -> int:
        return int(self.call("end_configuration")["hr"])

    def open_device(self, name: str | None = None) -> tuple[int, int | None]:
        r = self.call("open_device", name=name)
        return int(r["hr"]), r["device"]

    def start_agent(self) -> None:
        self.call("start_agent")

    def allocate_buffer(self, size: int, alignment: int = 0,
                        fill: bytes | None = None) -> tuple[int, int | None]:
        r = self.call("allocate_buffer", size=size, alignment=alignment,
                      fill=fill.hex() if fill is not None else None)
        return int(r["hr"]), r["buffer"]

    def free_buffer(self, buffer: int) -> int:
        return int(self.call("free_buffer", buffer=buffer)["hr"])

    def read_buffer(self, buffer: int, offset: int = 0, length: int | None = None) -> bytes:
        return bytes.fromhex(self.call("read_buffer", buffer=buffer, offset=offset,
                                       length=length)["data"])

    def send_command(self, device: int, code: int, size: int = 0, position: int = 0,
                     buffer: int | None = None) -> tuple[int, int]:
        r = self.call("send_command", device=device, code=code, size=size, position=position,
                      buffer=buffer)
        return int(r["hr"]), int(r["command"])

    def wait_completion(self, command: int, timeout_ms: int = 5000) -> dict[str, Any]:
        return self.call("wait_completion", command=command, timeout_ms=timeout_ms)

    def close_device(self, device: int) -> int:
        return int(self.call("close_device", device=device)["hr"])

    def signal_abort(self) -> int:
        return int(self.call("signal_abort")["hr"])

    def close(self) -> int:
        return int(self.call("close")["hr"])

    def state(self) -> dict[str, Any]:
        return self.call("state")

    def die(self) -> None:
        try:
            self.call("die")
        except (EOFError, OSError, ConnectionError):
            pass
