"""The backend interface: how the conformance suite drives one VDI implementation.

A backend is a pair of tiers:

* the **client tier** (:class:`ClientSide`): the VDI client API, one call at a time, returning
  the implementation's HRESULT as an unsigned 32-bit int.  Devices, commands and secondaries are
  opaque integer handles the backend hands out.
* the **server tier** (:class:`ServerSide`): either scripted server steps one VDI server call at a
  time (capability ``scripted_server``; the vdisim engine's scripting API) or only whole T-SQL
  statements (capability ``statements``; the real SQL Server offers nothing finer).

Backends declare a closed set of :class:`Capability`.  The state machine and the directed
sequences exclude, by precondition, every step whose capability is missing; the report lists the
rules that were therefore not checked, with the capability as the reason.  Nothing is ever
failed for a missing capability.

The backends: ``sim`` (vdisim's client library in this process, the vdisim engine in its own
process), ``shim`` and ``live`` (issue 6: Microsoft's or vdisim's libsqlvdi.so through ctypes).
``open_backend(name)`` resolves a name through ``BACKENDS``.
"""

from __future__ import annotations

import abc
import enum
import importlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import attrs

from vdisim.protocol.records import VDConfig

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "Capability",
    "ClientSide",
    "CommandView",
    "NotCapable",
    "ScriptedServer",
    "ServerSide",
    "StatementOutcome",
    "StatementRun",
    "open_backend",
]


class Capability(enum.Enum):
    """The closed list of things a backend may or may not be able to do (docs/conformance.md)."""

    SCRIPTED_SERVER = "scripted_server"  # server steps one call at a time (ScriptedServer)
    STATEMENTS = "statements"  # the server runs whole T-SQL statements (BACKUP / RESTORE)
    KILL_SERVER = "kill_server"  # the engine process can be SIGKILLed mid-protocol
    KILL_CLIENT = "kill_client"  # the primary client runs in a process that can be SIGKILLed
    SECONDARY_PROCESS = "secondary_process"  # OpenInSecondary from another OS process
    BUFFER_HANDLES = "buffer_handles"  # GetBufferHandle / MapBufferHandle
    SAFE_AFTER_CLOSE = "safe_after_close"  # a device used after Close is defined, not a crash
    OBSERVE_SERVER = "observe_server"  # server-side state / events / completions are visible
    COMPLETE = "complete"  # VDF_RequestComplete / VDC_Complete
    SNAPSHOT = "snapshot"  # VDF_SnapshotPrepare and snapshot statements
    TAPE = "tape"  # tape-like device model (VDF_LikeTape)
    DISK = "disk"  # disk-like device model (VDF_LikeDisk, random access)
    MULTI_DEVICE = "multi_device"  # sets of more than one device


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (a missing library, server, credential...); the message
    names the missing piece.  Raised by ``Backend.open``."""


class NotCapable(Exception):
    """A step needs a capability this backend lacks (never a verdict: callers precheck)."""

    def __init__(self, capability: Capability) -> None:
        super().__init__(f"backend lacks capability {capability.value!r}")
        self.capability = capability


@attrs.frozen(slots=True)
class CommandView:
    """What GetCommand returned: the fields of ``VDC_Command`` (§6.1) and a handle."""

    handle: int
    code: int
    size: int
    position: int
    has_buffer: bool


class ClientSide(abc.ABC):
    """One client object (``IClientVirtualDeviceSet2``) and its devices.  Every method returns
    the implementation's HRESULT (unsigned); outputs ride along in a tuple, ``None`` on
    failure.  Timeouts are milliseconds (0 polls; negative or 0xFFFFFFFF waits forever)."""

    @abc.abstractmethod
    def create(self, name: str, config: VDConfig, instance: str | None = None) -> int: ...

    @abc.abstractmethod
    def get_configuration(self, timeout_ms: int) -> tuple[int, VDConfig | None]: ...

    @abc.abstractmethod
    def open_device(self, name: str) -> tuple[int, int | None]: ...

    @abc.abstractmethod
    def get_command(self, device: int, timeout_ms: int) -> tuple[int, CommandView | None]: ...

    @abc.abstractmethod
    def complete_command(self, device: int, command: int, completion_code: int,
                         bytes_transferred: int = 0, position: int = 0) -> int: ...

    @abc.abstractmethod
    def signal_abort(self) -> int: ...

    @abc.abstractmethod
    def close(self) -> int: ...

    @abc.abstractmethod
    def open_in_secondary(self, name: str, instance: str | None = None) -> int: ...

    # Data in a command's buffer (Read: the client fills it; Write: the client reads it).
    @abc.abstractmethod
    def read_buffer(self, command: int, offset: int = 0, length: int | None = None) -> bytes: ...

    @abc.abstractmethod
    def write_buffer(self, command: int, data: bytes, offset: int = 0) -> None: ...

    # Capability BUFFER_HANDLES.
    def get_buffer_handle(self, command: int) -> tuple[int, int | None]:
        raise NotCapable(Capability.BUFFER_HANDLES)

    def map_buffer_handle(self, handle: int) -> tuple[int, bool]:
        """Returns (hr, mapped): ``mapped`` tells the handle mapped to a buffer."""
        raise NotCapable(Capability.BUFFER_HANDLES)

    def release(self) -> None:  # noqa: B027 - optional hook
        """Free whatever the backend holds for this client object (not a VDI call)."""


class ScriptedServer(Protocol):
    """Capability SCRIPTED_SERVER: the server side one call at a time (the method set of
    ``vdisim.engine.scripting.ScriptSession``; HRESULTs unsigned)."""

    def open(self, name: str, instance: str | None = None) -> int: ...
    def get_configuration(self) -> tuple[int, VDConfig | None]: ...
    def begin_configuration(self, features: int, block_size: int, alignment: int,
                            max_transfer_size: int, timeout_ms: int = 0,
                            device_names: list[str] | None = None) -> int: ...
    def request_buffers(self, size: int, alignment: int, count: int) -> int: ...
    def end_configuration(self) -> int: ...
    def open_device(self, name: str | None = None) -> tuple[int, int | None]: ...
    def start_agent(self) -> None: ...
    def allocate_buffer(self, size: int, alignment: int = 0,
                        fill: bytes | None = None) -> tuple[int, int | None]: ...
    def free_buffer(self, buffer: int) -> int: ...
    def read_buffer(self, buffer: int, offset: int = 0, length: int | None = None) -> bytes: ...
    def send_command(self, device: int, code: int, size: int = 0, position: int = 0,
                     buffer: int | None = None) -> tuple[int, int]: ...
    def wait_completion(self, command: int, timeout_ms: int = 5000) -> dict[str, Any]: ...
    def close_device(self, device: int) -> int: ...
    def signal_abort(self) -> int: ...
    def close(self) -> int: ...
    def state(self) -> dict[str, Any]: ...


@attrs.frozen(slots=True)
class StatementOutcome:
    """How a T-SQL statement ended: ``errors`` are SQL Server error numbers in order."""

    ok: bool
    errors: tuple[int, ...] = ()
    text: str = ""


class StatementRun(abc.ABC):
    """A statement running on its own connection and thread."""

    @abc.abstractmethod
    def wait(self, timeout_s: float) -> StatementOutcome | None:
        """The outcome, or None if it is still running at the deadline."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """ATTENTION: cancel the statement (a running BACKUP then aborts the set)."""


class ServerSide(abc.ABC):  # noqa: B024 - every tier is optional
    """The server tier."""

    def script(self) -> ScriptedServer:
        """A fresh scripted server-side set (capability SCRIPTED_SERVER)."""
        raise NotCapable(Capability.SCRIPTED_SERVER)

    def start_statement(self, sql: str) -> StatementRun:
        """Run ``sql`` on its own connection (capability STATEMENTS)."""
        raise NotCapable(Capability.STATEMENTS)

    def scratch_database(self) -> str:
        """The name of a database the suite may back up (created on first use)."""
        raise NotCapable(Capability.STATEMENTS)

    def kill(self) -> None:
        """SIGKILL the engine (capability KILL_SERVER); the backend restarts it on demand."""
        raise NotCapable(Capability.KILL_SERVER)


class Backend(abc.ABC):
    """One implementation under test.  ``open()``/``close()`` bracket a session; within it,
    ``new_client()`` makes fresh client objects (a test may hold several: a primary, a
    re-created one, a secondary) and ``server`` is the server tier."""

    name: str = "?"
    capabilities: frozenset[Capability] = frozenset()

    def has(self, cap: Capability) -> bool:
        return cap in self.capabilities

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def new_client(self) -> ClientSide: ...

    @abc.abstractmethod
    def new_secondary(self) -> ClientSide:
        """A client object in another process (SECONDARY_PROCESS) or this one."""

    @property
    @abc.abstractmethod
    def server(self) -> ServerSide: ...

    def leaks(self) -> list[str]:
        """Objects (segments, sockets, files) this backend left behind; [] when clean."""
        return []

    def describe(self) -> Mapping[str, str]:
        """Free-form facts for reports (library path, engine version, ...)."""
        return {}

    def __enter__(self) -> Backend:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Capability]:
        return iter(sorted(self.capabilities, key=lambda c: c.value))


# name -> "module:factory"; the factory takes keyword options and returns an unopened Backend.
BACKENDS: dict[str, str] = {
    "sim": "conformance.backends.sim:SimBackend",
    "shim": "conformance.backends.live:shim_backend",
    "live": "conformance.backends.live:live_backend",
}


def open_backend(name: str, **options: Any) -> Backend:
    """Instantiate (not open) the backend called ``name``; ``module:factory`` also works."""
    spec = BACKENDS.get(name, name)
    module, sep, factory = spec.partition(":")
    if not sep:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    backend = getattr(importlib.import_module(module), factory)(**options)
    if not isinstance(backend, Backend):
        raise TypeError(f"{spec} did not return a Backend")
    return backend
