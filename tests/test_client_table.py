"""Every cell of the amended client state table, against the real cross-process implementation.

The table is ``CLIENT_TABLE`` in vdisim/protocol/states.py (spec §2.11 amended per §11.2-§11.4;
rendered in docs/states.md).  The client API runs in this process; the server side is driven one
call at a time inside the engine process through the scripting API (``conn.script()``); they talk
through real shared memory and AF_UNIX sockets.  Each scenario drives a set into a state, makes a
call there and asserts the exact HRESULT and the resulting ``vds.state`` (``Harness.expect``).

``SCENARIOS`` maps every (state, call, condition) of the table to the scenarios exercising it;
``test_cell`` is parametrized over that registry and ``test_every_table_cell_is_covered`` checks
that the registry covers the table exactly, so a new cell without a scenario fails the suite.
The other tests cover the HRESULT paths of spec §2 that need more than one cell: timeouts,
aborts waking blocked calls, the IO-ERROR protocol (§6.6), buffer handles (§2.9) and a secondary
process (§1.9, §2.8).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from vdisim.client import VirtualDeviceSet
from vdisim.client.api import Command, VirtualDevice
from vdisim.client.core import SetCore
from vdisim.engine import Connection
from vdisim.protocol.codes import INFINITE, CommandCode, Feature, HResult, Win32, hresult_name
from vdisim.protocol.records import VDConfig
from vdisim.protocol.states import CLIENT_TABLE, ClientCall, ClientState, Cond
from vdisim.transport import frames, naming
from vdisim.transport.frames import AbortReason
from vdisim.transport.segments import SHM_DIR

from .conftest import wait_until

S, C = ClientState, ClientCall
OK = HResult.NOERROR
BLOCK = 512
MTS = 65536
WRITE, READ = CommandCode.VDC_Write, CommandCode.VDC_Read
Cell = tuple[ClientState, ClientCall, Cond]


# ---------------------------------------------------------------------------------------------
# The amended client table, transcribed by hand from spec §2.11 (+ §11.2 OpenDevice in Active,
# §1.8 per-device VD_E_CLOSE, §11.4 Close with devices open), the method pages §2.1-§2.9 and §8.2.
# The scenarios assert against this transcription, not against the code's CLIENT_TABLE, and the
# meta-test checks that CLIENT_TABLE says the same: a wrong cell in either one fails the suite.
# Columns: state, call, condition, HRESULT, next state ("-" = unchanged).

SPEC_TABLE = """
DNE                 CREATE              OK                  NOERROR             CONFIGURABLE
DNE                 CREATE              BAD_CONFIG          VD_E_NOTSUPPORTED   -
DNE                 CREATE              BAD_NAME            VD_E_INVALID        -
DNE                 CREATE              NAME_IN_USE         0x800700B7          -
DNE                 CREATE              NO_MEMORY           VD_E_MEMORY         -
DNE                 CREATE              BAD_INSTANCE        VD_E_INSTANCE_NAME  -
DNE                 GET_CONFIGURATION   ANY                 VD_E_PROTOCOL       -
DNE                 OPEN_DEVICE         ANY                 VD_E_PROTOCOL       -
DNE                 GET_COMMAND         ANY                 VD_E_PROTOCOL       -
DNE                 COMPLETE_COMMAND    ANY                 VD_E_PROTOCOL       -
DNE                 SIGNAL_ABORT        ANY                 VD_E_PROTOCOL       -
DNE                 CLOSE               ANY                 VD_E_PROTOCOL       -
DNE                 OPEN_IN_SECONDARY   OK                  NOERROR             INITIALIZING
DNE                 OPEN_IN_SECONDARY   ABORTED             VD_E_ABORT          -
DNE                 OPEN_IN_SECONDARY   NOT_READY           VD_E_PROTOCOL       -
DNE                 GET_BUFFER_HANDLE   ANY                 VD_E_PROTOCOL       -
DNE                 MAP_BUFFER_HANDLE   ANY                 VD_E_PROTOCOL       -
CONFIGURABLE        CREATE              ANY                 VD_E_PROTOCOL       -
CONFIGURABLE        GET_CONFIGURATION   OK                  NOERROR             INITIALIZING
CONFIGURABLE        GET_CONFIGURATION   TIMEOUT             VD_E_TIMEOUT        -
CONFIGURABLE        GET_CONFIGURATION   ABORTED             VD_E_ABORT          ABORT
CONFIGURABLE        OPEN_DEVICE         ANY                 VD_E_PROTOCOL       -
CONFIGURABLE        GET_COMMAND         ANY                 VD_E_PROTOCOL       -
CONFIGURABLE        COMPLETE_COMMAND    ANY                 VD_E_PROTOCOL       -
CONFIGURABLE        SIGNAL_ABORT        ANY                 NOERROR             ABORT
CONFIGURABLE        CLOSE               ANY                 NOERROR             DNE
CONFIGURABLE        OPEN_IN_SECONDARY   ANY                 VD_E_PROTOCOL       -
CONFIGURABLE        GET_BUFFER_HANDLE   ANY                 VD_E_INVALID        -
CONFIGURABLE        MAP_BUFFER_HANDLE   ANY                 VD_E_INVALID        -
INITIALIZING        CREATE              ANY                 VD_E_PROTOCOL       -
INITIALIZING        GET_CONFIGURATION   ANY                 NOERROR             -
INITIALIZING        OPEN_DEVICE         OK                  NOERROR             ACTIVE
INITIALIZING        OPEN_DEVICE         ALREADY_OPEN        VD_E_PROTOCOL       -
INITIALIZING        OPEN_DEVICE         ALL_OPEN            VD_E_OPEN           -
INITIALIZING        OPEN_DEVICE         BAD_NAME            VD_E_INVALID        -
INITIALIZING        GET_COMMAND         ANY                 VD_E_PROTOCOL       -
INITIALIZING        COMPLETE_COMMAND    ANY                 VD_E_PROTOCOL       -
INITIALIZING        SIGNAL_ABORT        ANY                 NOERROR             ABORT
INITIALIZING        CLOSE               ANY                 NOERROR             DNE
INITIALIZING        OPEN_IN_SECONDARY   ANY                 VD_E_PROTOCOL       -
INITIALIZING        GET_BUFFER_HANDLE   OK                  NOERROR             -
INITIALIZING        GET_BUFFER_HANDLE   INVALID_ARG         VD_E_INVALID        -
INITIALIZING        MAP_BUFFER_HANDLE   OK                  NOERROR             -
INITIALIZING        MAP_BUFFER_HANDLE   INVALID_ARG         VD_E_INVALID        -
ACTIVE              CREATE              ANY                 VD_E_PROTOCOL       -
ACTIVE              GET_CONFIGURATION   ANY                 NOERROR             -
ACTIVE              OPEN_DEVICE         OK                  NOERROR             -
ACTIVE              OPEN_DEVICE         ALREADY_OPEN        VD_E_PROTOCOL       -
ACTIVE              OPEN_DEVICE         ALL_OPEN            VD_E_OPEN           -
ACTIVE              OPEN_DEVICE         BAD_NAME            VD_E_INVALID        -
ACTIVE              GET_COMMAND         OK                  NOERROR             -
ACTIVE              GET_COMMAND         TIMEOUT             VD_E_TIMEOUT        -
ACTIVE              GET_COMMAND         DEVICE_CLOSED       VD_E_CLOSE          -
ACTIVE              GET_COMMAND         LAST_DEVICE_CLOSED  VD_E_CLOSE          NORMALLY_TERMINATED
ACTIVE              GET_COMMAND         ABORTED             VD_E_ABORT          ABORT
ACTIVE              COMPLETE_COMMAND    OK                  NOERROR             -
ACTIVE              COMPLETE_COMMAND    NOT_OUTSTANDING     VD_E_INVALID        -
ACTIVE              COMPLETE_COMMAND    DEVICE_CLOSED       VD_E_PROTOCOL       -
ACTIVE              SIGNAL_ABORT        ANY                 NOERROR             ABORT
ACTIVE              CLOSE               OK                  NOERROR             DNE
ACTIVE              CLOSE               DEVICES_OPEN        VD_E_OPEN           DNE
ACTIVE              OPEN_IN_SECONDARY   ANY                 VD_E_PROTOCOL       -
ACTIVE              GET_BUFFER_HANDLE   OK                  NOERROR             -
ACTIVE              GET_BUFFER_HANDLE   INVALID_ARG         VD_E_INVALID        -
ACTIVE              MAP_BUFFER_HANDLE   OK                  NOERROR             -
ACTIVE              MAP_BUFFER_HANDLE   INVALID_ARG         VD_E_INVALID        -
NORMALLY_TERMINATED CREATE              ANY                 VD_E_PROTOCOL       -
NORMALLY_TERMINATED GET_CONFIGURATION   ANY                 NOERROR             -
NORMALLY_TERMINATED OPEN_DEVICE         ANY                 VD_E_PROTOCOL       -
NORMALLY_TERMINATED GET_COMMAND         ANY                 VD_E_PROTOCOL       -
NORMALLY_TERMINATED COMPLETE_COMMAND    ANY                 VD_E_PROTOCOL       -
NORMALLY_TERMINATED SIGNAL_ABORT        ANY                 NOERROR             ABORT
NORMALLY_TERMINATED CLOSE               ANY                 NOERROR             DNE
NORMALLY_TERMINATED OPEN_IN_SECONDARY   ANY                 VD_E_PROTOCOL       -
NORMALLY_TERMINATED GET_BUFFER_HANDLE   OK                  NOERROR             -
NORMALLY_TERMINATED GET_BUFFER_HANDLE   INVALID_ARG         VD_E_INVALID        -
NORMALLY_TERMINATED MAP_BUFFER_HANDLE   OK                  NOERROR             -
NORMALLY_TERMINATED MAP_BUFFER_HANDLE   INVALID_ARG         VD_E_INVALID        -
ABORT               CREATE              ANY                 VD_E_PROTOCOL       -
ABORT               GET_CONFIGURATION   ANY                 VD_E_ABORT          -
ABORT               OPEN_DEVICE         ANY                 VD_E_ABORT          -
ABORT               GET_COMMAND         ANY                 VD_E_ABORT          -
ABORT               COMPLETE_COMMAND    ANY                 VD_E_ABORT          -
ABORT               SIGNAL_ABORT        ANY                 NOERROR             -
ABORT               CLOSE               ANY                 NOERROR             DNE
ABORT               OPEN_IN_SECONDARY   ANY                 VD_E_PROTOCOL       -
ABORT               GET_BUFFER_HANDLE   OK                  NOERROR             -
ABORT               GET_BUFFER_HANDLE   INVALID_ARG         VD_E_INVALID        -
ABORT               MAP_BUFFER_HANDLE   OK                  NOERROR             -
ABORT               MAP_BUFFER_HANDLE   INVALID_ARG         VD_E_INVALID        -
"""


def _hr(text: str) -> int:
    return int(text, 16) if text.startswith("0x") else int(HResult[text])


#: (state, call, condition) -> (HRESULT, next state or None)
SPEC: dict[tuple[ClientState, ClientCall, Cond], tuple[int, ClientState | None]] = {
    (ClientState[st], ClientCall[call], Cond[cond]): (_hr(hr), None if nxt == "-" else
                                                      ClientState[nxt])
    for st, call, cond, hr, nxt in (line.split() for line in SPEC_TABLE.strip().splitlines())
}


# ---------------------------------------------------------------------------------------------
# helpers


def set_objects(name: str) -> list[str]:
    """Shared-memory segments and the control socket of set ``name`` that still exist."""
    key = naming.set_key(None, name)
    found = [e for e in os.listdir(SHM_DIR) if e.startswith(f"{naming.PREFIX}{key}")]
    if os.path.exists(naming.socket_path(key)):
        found.append("socket")
    return found


def _blocked_in_library_wait(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code is SetCore.wait.__code__:
            return True
        frame = frame.f_back
    return False


class Blocked:
    """A blocking client call on its own thread, parked in the library's wait before we go on
    (so the abort we trigger next is seen *while waiting*, not before the call)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert wait_until(lambda: _blocked_in_library_wait(self.thread)
                          or not self.thread.is_alive()), "call never blocked"
        assert self.thread.is_alive(), f"call returned at once: {self.result!r}"

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # handed to the test thread by join()
            self.error = exc

    def join(self) -> Any:
        """The call's result; it must return within 1 s of the abort (liveness, §8.2)."""
        t0 = time.monotonic()
        self.thread.join(5.0)
        assert not self.thread.is_alive(), "blocked call did not return after abort"
        assert time.monotonic() - t0 < 1.0
        if self.error is not None:
            raise self.error
        return self.result


class Harness:
    """One client set (plus any extra client objects) and the engine-side script session."""

    def __init__(self, conn: Connection, name: str) -> None:
        self.s = conn.script()
        self.name = name
        self.vds = VirtualDeviceSet()
        self.sets: list[VirtualDeviceSet] = [self.vds]
        self.devs: list[VirtualDevice] = []
        self.config: VDConfig | None = None
        self.checked: set[Cell] = set()

    # -- the table assertion ---------------------------------------------------------------
    def expect(self, vds: VirtualDeviceSet, call: ClientCall, cond: Cond,
               fn: Callable[[], Any]) -> Any:
        """Make a call and assert the HRESULT and next state the table gives for ``cond``."""
        return self.check(vds, vds.state, call, cond, fn())

    def check(self, vds: VirtualDeviceSet, before: ClientState, call: ClientCall, cond: Cond,
              out: Any) -> Any:
        key = (before, call, cond)
        assert key in SPEC, f"{cond} is not a condition of {call.value} in {before.value}"
        want_hr, want_next = SPEC[key]
        hr = out[0] if isinstance(out, tuple) else out
        where = f"{call.value} in {before.value} ({cond.value})"
        assert isinstance(hr, int) and 0 <= hr <= 0xFFFFFFFF, f"{where}: not an HRESULT {hr!r}"
        assert hr == want_hr, f"{where}: got {hresult_name(hr)}, spec says {hresult_name(want_hr)}"
        after = want_next if want_next is not None else before
        assert vds.state is after, f"{where}: state {vds.state.value}, table says {after.value}"
        if isinstance(out, tuple) and hr != OK:
            assert out[1] is None, f"{where}: a failed call must return no value"
        self.checked.add((before, call, cond))
        return out

    # -- reaching states ---------------------------------------------------------------------
    def new_set(self) -> VirtualDeviceSet:
        v = VirtualDeviceSet()
        self.sets.append(v)
        return v

    def dev_name(self, i: int) -> str:
        return self.name if i == 0 else f"{self.name}{i}"

    def create(self, n: int = 1, features: int = 0) -> None:
        assert self.vds.create(self.name, VDConfig(device_count=n, features=features)) == OK
        assert self.vds.state is S.CONFIGURABLE

    def server_configure(self) -> None:
        s = self.s
        assert s.open(self.name) == OK
        hr, requested = s.get_configuration()
        assert hr == OK and requested is not None
        # The server returns the client's mask with the direction bit added (§4.1, §5).
        features = requested.features | Feature.VDF_WriteMedia
        assert s.begin_configuration(features, BLOCK, 0, MTS) == OK
        assert s.request_buffers(MTS, 0, 4) == OK
        assert s.end_configuration() == OK

    def server_devices(self, n: int) -> None:
        for i in range(n):
            assert self.s.open_device() == (OK, i)
        assert self.s.open_device() == (HResult.VD_E_OPEN, None)
        self.s.start_agent()

    def primary_config(self) -> VDConfig:
        hr, cfg = self.vds.get_configuration(10_000)
        assert hr == OK and cfg is not None
        assert self.vds.state is S.INITIALIZING
        self.config = cfg
        return cfg

    def initializing(self, n: int = 1) -> None:
        """Primary in Initializing; the server has opened every device and runs its agent."""
        self.create(n)
        self.server_configure()
        self.primary_config()
        self.server_devices(n)

    def open(self, i: int, vds: VirtualDeviceSet | None = None) -> VirtualDevice:
        hr, dev = (vds or self.vds).open_device(self.dev_name(i))
        assert hr == OK and dev is not None, hresult_name(hr)
        self.devs.append(dev)
        return dev

    def active(self, n: int = 1, opened: int = 1) -> list[VirtualDevice]:
        self.initializing(n)
        devs = [self.open(i) for i in range(opened)]
        assert self.vds.state is S.ACTIVE
        return devs

    def secondary(self) -> VirtualDeviceSet:
        sec = self.new_set()
        assert sec.open_in_secondary(self.name) == OK
        assert sec.state is S.INITIALIZING
        return sec

    def send(self, device: int, code: int = WRITE, size: int = 4096,
             fill: bytes = b"\x5a") -> int:
        """Server SendCommand; returns the script's command handle."""
        buf = None
        if code in (READ, WRITE):
            hr, buf = self.s.allocate_buffer(size, fill=fill)
            assert hr == OK
        hr, handle = self.s.send_command(device, code, size if buf else 0, 0, buf)
        assert hr == OK, hresult_name(hr)
        return handle

    def command(self, dev: VirtualDevice, code: int = WRITE, size: int = 4096,
                fill: bytes = b"\x5a") -> tuple[int, Command]:
        handle = self.send(dev.index, code, size, fill)
        hr, cmd = dev.get_command(10_000)
        assert hr == OK and cmd is not None, hresult_name(hr)
        assert cmd.command_code == code
        return handle, cmd

    def normally_terminated(self, keep_outstanding: bool = True) -> tuple[VirtualDevice, Command]:
        """1-device set in Normally Terminated, with a Write command still outstanding."""
        (dev,) = self.active(1)
        _handle, cmd = self.command(dev)
        if not keep_outstanding:
            assert dev.complete_command(cmd, 0, cmd.size, 0) == OK
        assert self.s.close_device(0) == OK
        assert dev.get_command(10_000)[0] == HResult.VD_E_CLOSE
        assert self.vds.state is S.NORMALLY_TERMINATED
        return dev, cmd

    def aborted(self) -> tuple[VirtualDevice, Command, int]:
        """1-device set in Abort (client SignalAbort) with a Write command outstanding."""
        (dev,) = self.active(1)
        handle, cmd = self.command(dev)
        assert self.vds.signal_abort() == OK
        assert self.vds.state is S.ABORT
        return dev, cmd, handle

    def stale(self) -> tuple[VirtualDevice, Command]:
        """A device interface and a command from a finished earlier Create/Close of this same
        object: the only device interfaces a program can hold before OpenDevice succeeds."""
        (dev,) = self.active(1)
        _, cmd = self.command(dev)
        assert self.s.close_device(0) == OK
        assert dev.get_command(10_000)[0] == HResult.VD_E_CLOSE
        assert self.vds.close() == OK
        assert self.s.close() == OK
        self.devs.clear()
        return dev, cmd

    def server_state(self) -> str:
        return str(self.s.state()["state"])

    def wait_server_abort(self, reason: int | None = None) -> None:
        assert wait_until(lambda: self.server_state() == "ABORT"), self.s.state()
        if reason is not None:
            assert self.s.state()["abort_reason"] == reason

    def completion(self, handle: int, timeout_ms: int = 10_000) -> dict[str, Any]:
        r = self.s.wait_completion(handle, timeout_ms)
        assert r["done"], f"command {handle} never completed"
        return r

    # -- teardown ----------------------------------------------------------------------------
    def cleanup(self) -> None:
        for v in reversed(self.sets):
            if v.state is not S.DNE:
                v.close()
        self.s.close()


@pytest.fixture
def h(conn: Connection, set_name: str) -> Any:
    harness = Harness(conn, set_name)
    try:
        yield harness
    finally:
        harness.cleanup()
    assert set_objects(set_name) == []


# ---------------------------------------------------------------------------------------------
# The scenario registry.

SCENARIOS: dict[Cell, list[Callable[[Harness], None]]] = {}

#: Cells no program can reach, with the reason.  The meta-test requires this to stay tiny.
UNREACHABLE: dict[Cell, str] = {
    (S.INITIALIZING, C.GET_BUFFER_HANDLE, Cond.OK):
        "GetBufferHandle takes a Read/Write command outstanding on this set (§2.9); commands "
        "come only from GetCommand on an open device, and the first OpenDevice of an object "
        "moves it to Active, so no such command exists while the object is Initializing",
}


def cells(*keys: Cell) -> Callable[[Callable[[Harness], None]], Callable[[Harness], None]]:
    def register(fn: Callable[[Harness], None]) -> Callable[[Harness], None]:
        for key in keys:
            SCENARIOS.setdefault(key, []).append(fn)
        return fn
    return register


ANY = Cond.ANY

# -- DNE --------------------------------------------------------------------------------------


@cells((S.DNE, C.CREATE, Cond.OK))
def dne_create(h: Harness) -> None:
    """§2.1: Create → NOERROR, DNE → Configurable; the set's objects exist."""
    h.expect(h.vds, C.CREATE, Cond.OK,
             lambda: h.vds.create(h.name, VDConfig(device_count=2, features=Feature.VDF_Removable)))
    assert h.vds.name == h.name
    assert len(set_objects(h.name)) == 2  # control segment + control socket


@cells((S.DNE, C.CREATE, Cond.BAD_CONFIG))
def dne_create_bad_config(h: Harness) -> None:
    """§2.1 / §12 item 19: deviceCount 0 or >64, server bits, undocumented model combination."""
    for cfg in (VDConfig(device_count=0), VDConfig(device_count=65),
                VDConfig(device_count=1, features=Feature.VDF_WriteMedia),
                VDConfig(device_count=1, features=Feature.VDF_FileMarks),
                None):
        h.expect(h.vds, C.CREATE, Cond.BAD_CONFIG, lambda c=cfg: h.vds.create(h.name, c))
    assert set_objects(h.name) == []


@cells((S.DNE, C.CREATE, Cond.BAD_NAME))
def dne_create_bad_name(h: Harness) -> None:
    """§1.3: any character but backslash; vdisim also refuses empty, NUL, > 255 bytes."""
    cfg = VDConfig(device_count=1)
    for name in ("", "a\\b", "a\0b", "x" * 256, None, 42):
        h.expect(h.vds, C.CREATE, Cond.BAD_NAME, lambda n=name: h.vds.create(n, cfg))


@cells((S.DNE, C.CREATE, Cond.BAD_INSTANCE))
def dne_create_bad_instance(h: Harness) -> None:
    """§1.4: CreateEx takes no ``machine\\`` prefix -> VD_E_INSTANCE_NAME (§2.1, §7)."""
    cfg = VDConfig(device_count=1)
    for instance in ("MACHINE\\INSTANCE", "i" * 129, 42):
        h.expect(h.vds, C.CREATE, Cond.BAD_INSTANCE,
                 lambda i=instance: h.vds.create(h.name, cfg, instance=i))
    assert set_objects(h.name) == []


@cells((S.DNE, C.CREATE, Cond.NAME_IN_USE))
def dne_create_name_in_use(h: Harness) -> None:
    """A live set of another VirtualDeviceSet has this name → HRESULT_FROM_WIN32(183)."""
    other = h.new_set()
    assert other.create(h.name, VDConfig(device_count=1)) == OK
    hr = h.expect(h.vds, C.CREATE, Cond.NAME_IN_USE,
                  lambda: h.vds.create(h.name, VDConfig(device_count=1)))
    assert hr == 0x800700B7
    assert other.state is S.CONFIGURABLE
    # Names match case-sensitively (§1.3): another case is another set.
    third = h.new_set()
    assert third.create(h.name.lower(), VDConfig(device_count=1)) == OK
    assert third.close() == OK
    # Once the owner closes, the name is free again.
    assert other.close() == OK
    assert h.vds.create(h.name, VDConfig(device_count=1)) == OK


@cells((S.DNE, C.CREATE, Cond.NO_MEMORY))
def dne_create_no_memory(h: Harness) -> None:
    """Create cannot obtain its objects → VD_E_MEMORY.  Made real by a runtime directory whose
    path is too long for an AF_UNIX socket address (bind fails)."""
    base = tempfile.mkdtemp(prefix="vdisim-long-")
    old = os.environ.get("VDISIM_RUNTIME_DIR")
    os.environ["VDISIM_RUNTIME_DIR"] = os.path.join(base, "d" * 120)
    try:
        h.expect(h.vds, C.CREATE, Cond.NO_MEMORY,
                 lambda: h.vds.create(h.name, VDConfig(device_count=1)))
    finally:
        if old is None:
            del os.environ["VDISIM_RUNTIME_DIR"]
        else:
            os.environ["VDISIM_RUNTIME_DIR"] = old
        shutil.rmtree(base, ignore_errors=True)
    assert set_objects(h.name) == []  # the half-made control segment is gone


def _static(state_setup: Callable[[Harness], Any], call: ClientCall,
            make: Callable[[Harness, Any], Any]) -> Callable[[Harness], None]:
    def scenario(h: Harness) -> None:
        ctx = state_setup(h)
        h.expect(h.vds, call, ANY, lambda: make(h, ctx))
    scenario.__name__ = f"{call.name.lower()}_in_{state_setup.__name__}"
    scenario.__doc__ = f"{call.value}: a call whose answer does not depend on its arguments."
    return scenario


def fresh(h: Harness) -> None:
    assert h.vds.state is S.DNE


for _call, _make in [
    (C.GET_CONFIGURATION, lambda h, _: h.vds.get_configuration(0)),
    (C.OPEN_DEVICE, lambda h, _: h.vds.open_device(h.name)),
    (C.SIGNAL_ABORT, lambda h, _: h.vds.signal_abort()),
    (C.CLOSE, lambda h, _: h.vds.close()),
    (C.GET_BUFFER_HANDLE, lambda h, _: h.vds.get_buffer_handle(None)),  # type: ignore[arg-type]
    (C.MAP_BUFFER_HANDLE, lambda h, _: h.vds.map_buffer_handle(1)),
]:
    cells((S.DNE, _call, ANY))(_static(fresh, _call, _make))


@cells((S.DNE, C.GET_COMMAND, ANY), (S.DNE, C.COMPLETE_COMMAND, ANY))
def dne_device_interfaces_invalid_after_close(h: Harness) -> None:
    """§2.7: Close invalidates every device interface (also with a command outstanding)."""
    (dev,) = h.active(1)
    handle, cmd = h.command(dev)
    assert h.vds.close() == HResult.VD_E_OPEN
    h.expect(h.vds, C.GET_COMMAND, ANY, lambda: dev.get_command(0))
    h.expect(h.vds, C.GET_COMMAND, ANY, lambda: dev.get_command(INFINITE))
    h.expect(h.vds, C.COMPLETE_COMMAND, ANY, lambda: dev.complete_command(cmd, 0, cmd.size, 0))
    assert h.completion(handle)["completion_code"] == Win32.ERROR_OPERATION_ABORTED


@cells((S.DNE, C.OPEN_IN_SECONDARY, Cond.OK))
def dne_open_in_secondary(h: Harness) -> None:
    """§1.9: after the primary's Create and GetConfiguration a secondary attaches."""
    h.initializing(2)
    sec = h.new_set()
    h.expect(sec, C.OPEN_IN_SECONDARY, Cond.OK, lambda: sec.open_in_secondary(h.name))
    hr, cfg = sec.get_configuration(0)
    assert hr == OK and cfg == h.config


@cells((S.DNE, C.OPEN_IN_SECONDARY, Cond.ABORTED))
def dne_open_in_secondary_aborted(h: Harness) -> None:
    """§2.8: VD_E_ABORT while the set is being aborted."""
    h.initializing(1)
    assert h.vds.signal_abort() == OK
    sec = h.new_set()
    h.expect(sec, C.OPEN_IN_SECONDARY, Cond.ABORTED, lambda: sec.open_in_secondary(h.name))


@cells((S.DNE, C.OPEN_IN_SECONDARY, Cond.NOT_READY))
def dne_open_in_secondary_not_ready(h: Harness) -> None:
    """§2.8 / §12 item 16: before the primary's GetConfiguration, or no such set → PROTOCOL.
    A refused attach must not disturb the primary: the retry after GetConfiguration works."""
    h.create(2)
    h.server_configure()  # the server is done; only the primary's GetConfiguration is missing
    sec = h.new_set()
    h.expect(sec, C.OPEN_IN_SECONDARY, Cond.NOT_READY, lambda: sec.open_in_secondary(h.name))
    h.expect(sec, C.OPEN_IN_SECONDARY, Cond.NOT_READY,
             lambda: sec.open_in_secondary(h.name + "-missing"))
    h.expect(sec, C.OPEN_IN_SECONDARY, Cond.NOT_READY,
             lambda: sec.open_in_secondary(h.name.lower()))  # case-sensitive (§2.8)
    h.expect(sec, C.OPEN_IN_SECONDARY, Cond.NOT_READY, lambda: sec.open_in_secondary(""))
    h.primary_config()
    assert sec.open_in_secondary(h.name) == OK
    assert h.vds.state is S.INITIALIZING


# -- Configurable -----------------------------------------------------------------------------


def configurable(h: Harness) -> None:
    h.create(1)


def configurable_after_stale(h: Harness) -> tuple[VirtualDevice, Command]:
    ctx = h.stale()
    h.create(1)
    return ctx


for _call, _make in [
    (C.CREATE, lambda h, _: h.vds.create(h.name, VDConfig(device_count=1))),
    (C.OPEN_DEVICE, lambda h, _: h.vds.open_device(h.name)),
    (C.OPEN_IN_SECONDARY, lambda h, _: h.vds.open_in_secondary(h.name)),
    (C.MAP_BUFFER_HANDLE, lambda h, _: h.vds.map_buffer_handle(1)),
]:
    cells((S.CONFIGURABLE, _call, ANY))(_static(configurable, _call, _make))

for _call, _make in [
    (C.GET_COMMAND, lambda h, ctx: ctx[0].get_command(0)),
    (C.COMPLETE_COMMAND, lambda h, ctx: ctx[0].complete_command(ctx[1], 0, 4096, 0)),
    (C.GET_BUFFER_HANDLE, lambda h, ctx: h.vds.get_buffer_handle(ctx[1])),
]:
    cells((S.CONFIGURABLE, _call, ANY))(_static(configurable_after_stale, _call, _make))


@cells((S.CONFIGURABLE, C.GET_CONFIGURATION, Cond.OK))
def configurable_get_configuration(h: Harness) -> None:
    """§2.2 / §4.1: the server's EndConfiguration releases GetConfiguration with the final
    configuration: direction bit added, maxIODepth 4, block and transfer sizes."""
    h.create(1, features=Feature.VDF_Removable)
    h.server_configure()
    _hr, cfg = h.expect(h.vds, C.GET_CONFIGURATION, Cond.OK, lambda: h.vds.get_configuration(5000))
    assert cfg.device_count == 1
    assert cfg.features == Feature.VDF_WriteMedia | Feature.VDF_Removable
    assert (cfg.block_size, cfg.max_io_depth, cfg.max_transfer_size) == (BLOCK, 4, MTS)
    assert cfg.buffer_area_size >= 4 * MTS


@cells((S.CONFIGURABLE, C.GET_CONFIGURATION, Cond.TIMEOUT))
def configurable_get_configuration_timeout(h: Harness) -> None:
    """§2.2: 0 polls (immediate VD_E_TIMEOUT); 200 ms waits at least 200 ms; the state stays
    Configurable, also while the server is connected but has not ended configuration."""
    h.create(1)
    t0 = time.monotonic()
    h.expect(h.vds, C.GET_CONFIGURATION, Cond.TIMEOUT, lambda: h.vds.get_configuration(0))
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    h.expect(h.vds, C.GET_CONFIGURATION, Cond.TIMEOUT, lambda: h.vds.get_configuration(200))
    assert time.monotonic() - t0 >= 0.199
    assert h.s.open(h.name) == OK
    assert h.s.begin_configuration(Feature.VDF_WriteMedia, BLOCK, 0, MTS) == OK
    h.expect(h.vds, C.GET_CONFIGURATION, Cond.TIMEOUT, lambda: h.vds.get_configuration(50))


@cells((S.CONFIGURABLE, C.GET_CONFIGURATION, Cond.ABORTED))
def configurable_get_configuration_server_abort(h: Harness) -> None:
    """§2.2: an INFINITE GetConfiguration returns VD_E_ABORT when the server signals abort."""
    h.create(1)
    before = h.vds.state
    blocked = Blocked(lambda: h.vds.get_configuration(INFINITE))
    assert h.s.open(h.name) == OK
    assert h.s.signal_abort() == OK
    h.check(h.vds, before, C.GET_CONFIGURATION, Cond.ABORTED, blocked.join())


@cells((S.CONFIGURABLE, C.GET_CONFIGURATION, Cond.ABORTED),
       (S.CONFIGURABLE, C.SIGNAL_ABORT, ANY))
def configurable_get_configuration_client_abort(h: Harness) -> None:
    """§2.6: another thread's SignalAbort wakes a blocked GetConfiguration (negative timeout
    = infinite, the Linux convention)."""
    h.create(1)
    before = h.vds.state
    blocked = Blocked(lambda: h.vds.get_configuration(-1))
    h.expect(h.vds, C.SIGNAL_ABORT, ANY, h.vds.signal_abort)
    h.check(h.vds, before, C.GET_CONFIGURATION, Cond.ABORTED, blocked.join())


@cells((S.CONFIGURABLE, C.CLOSE, ANY))
def configurable_close(h: Harness) -> None:
    """§2.7 / §8.4: Close after a GetConfiguration timeout → DNE; the set is gone, so a late
    server Open fails (VD_E_INVALID, §3)."""
    h.create(1)
    assert h.vds.get_configuration(0)[0] == HResult.VD_E_TIMEOUT
    h.expect(h.vds, C.CLOSE, ANY, h.vds.close)
    assert set_objects(h.name) == []
    assert h.s.open(h.name) == HResult.VD_E_INVALID


# -- Initializing -----------------------------------------------------------------------------


def initializing(h: Harness) -> None:
    h.initializing(1)


def initializing_after_stale(h: Harness) -> tuple[VirtualDevice, Command]:
    ctx = h.stale()
    h.initializing(1)
    return ctx


for _call, _make in [
    (C.CREATE, lambda h, _: h.vds.create(h.name, VDConfig(device_count=1))),
    (C.GET_CONFIGURATION, lambda h, _: h.vds.get_configuration(0)),
    (C.OPEN_IN_SECONDARY, lambda h, _: h.vds.open_in_secondary(h.name)),
]:
    cells((S.INITIALIZING, _call, ANY))(_static(initializing, _call, _make))

for _call, _make in [
    (C.GET_COMMAND, lambda h, ctx: ctx[0].get_command(0)),
    (C.COMPLETE_COMMAND, lambda h, ctx: ctx[0].complete_command(ctx[1], 0, 4096, 0)),
]:
    cells((S.INITIALIZING, _call, ANY))(_static(initializing_after_stale, _call, _make))


@cells((S.INITIALIZING, C.OPEN_DEVICE, Cond.OK))
def initializing_open_device(h: Harness) -> None:
    """§2.3: OpenDevice → NOERROR, Initializing → Active; the first device has the set name."""
    h.initializing(2)
    _hr, dev = h.expect(h.vds, C.OPEN_DEVICE, Cond.OK, lambda: h.vds.open_device(h.name))
    assert isinstance(dev, VirtualDevice) and (dev.name, dev.index) == (h.name, 0)
    h.devs.append(dev)


@cells((S.INITIALIZING, C.OPEN_DEVICE, Cond.BAD_NAME))
def initializing_open_device_unknown(h: Harness) -> None:
    """§2.3: a name that is not one of the set's devices → VD_E_INVALID, no interface."""
    h.initializing(2)
    for name in ("nope", h.name.lower(), h.name + "2", ""):
        h.expect(h.vds, C.OPEN_DEVICE, Cond.BAD_NAME, lambda n=name: h.vds.open_device(n))


@cells((S.INITIALIZING, C.OPEN_DEVICE, Cond.ALREADY_OPEN))
def initializing_open_device_opened_by_secondary(h: Harness) -> None:
    """§2.3: the device is already open (here: by a secondary) → VD_E_PROTOCOL."""
    h.initializing(2)
    sec = h.secondary()
    h.open(1, sec)
    h.expect(h.vds, C.OPEN_DEVICE, Cond.ALREADY_OPEN, lambda: h.vds.open_device(h.dev_name(1)))


@cells((S.INITIALIZING, C.OPEN_DEVICE, Cond.ALL_OPEN))
def initializing_open_device_all_open(h: Harness) -> None:
    """§2.3: every device already open (by a secondary) → VD_E_OPEN."""
    h.initializing(1)
    sec = h.secondary()
    h.open(0, sec)
    h.expect(h.vds, C.OPEN_DEVICE, Cond.ALL_OPEN, lambda: h.vds.open_device(h.name))


@cells((S.INITIALIZING, C.SIGNAL_ABORT, ANY))
def initializing_signal_abort(h: Harness) -> None:
    """§2.6: SignalAbort → Abort; the server side sees the abort (reason: client)."""
    h.initializing(1)
    h.expect(h.vds, C.SIGNAL_ABORT, ANY, h.vds.signal_abort)
    h.wait_server_abort(reason=1)


@cells((S.INITIALIZING, C.CLOSE, ANY))
def initializing_close(h: Harness) -> None:
    h.initializing(1)
    h.expect(h.vds, C.CLOSE, ANY, h.vds.close)
    assert [o for o in set_objects(h.name) if o.endswith("-c") or o == "socket"] == []


@cells((S.INITIALIZING, C.OPEN_IN_SECONDARY, ANY))
def initializing_open_in_secondary_twice(h: Harness) -> None:
    """§2.8: OpenInSecondary twice on the same object → VD_E_PROTOCOL."""
    h.initializing(2)
    sec = h.secondary()
    h.expect(sec, C.OPEN_IN_SECONDARY, ANY, lambda: sec.open_in_secondary(h.name))


@cells((S.INITIALIZING, C.GET_BUFFER_HANDLE, Cond.INVALID_ARG))
def initializing_get_buffer_handle_invalid(h: Harness) -> None:
    """§2.9: not a buffer of an outstanding Read/Write of this set → VD_E_INVALID."""
    _dev, stale_cmd = h.stale()
    h.initializing(1)
    for arg in (stale_cmd, None, b"\0" * 16):
        h.expect(h.vds, C.GET_BUFFER_HANDLE, Cond.INVALID_ARG,
                 lambda a=arg: h.vds.get_buffer_handle(a))


def _handle_from_secondary(h: Harness, fill: bytes) -> tuple[VirtualDeviceSet, Command, int]:
    """A secondary gets a Write on device 1 and turns its buffer into a handle."""
    h.initializing(2)
    sec = h.secondary()
    dev1 = h.open(1, sec)
    _, cmd = h.command(dev1, WRITE, 4096, fill)
    hr, handle = sec.get_buffer_handle(cmd)
    assert hr == OK and isinstance(handle, int)
    return sec, cmd, handle


@cells((S.INITIALIZING, C.MAP_BUFFER_HANDLE, Cond.OK))
def initializing_map_buffer_handle(h: Harness) -> None:
    """§1.9 / §2.9: a handle made by a secondary maps to the same bytes in the primary, which
    is still Initializing (it has opened no device itself)."""
    _sec, cmd, handle = _handle_from_secondary(h, b"\x13\x37")
    _hr, view = h.expect(h.vds, C.MAP_BUFFER_HANDLE, Cond.OK,
                        lambda: h.vds.map_buffer_handle(handle))
    assert bytes(view) == bytes(cmd.buffer) == b"\x13\x37" * 2048


@cells((S.INITIALIZING, C.MAP_BUFFER_HANDLE, Cond.INVALID_ARG))
def initializing_map_buffer_handle_invalid(h: Harness) -> None:
    h.initializing(1)
    for bogus in (0, 1, 12345, 0xFFFFFFFF, -1, "1", None):
        h.expect(h.vds, C.MAP_BUFFER_HANDLE, Cond.INVALID_ARG,
                 lambda b=bogus: h.vds.map_buffer_handle(b))


# -- Active -----------------------------------------------------------------------------------


def active(h: Harness) -> list[VirtualDevice]:
    return h.active(1)


for _call, _make in [
    (C.CREATE, lambda h, _: h.vds.create(h.name, VDConfig(device_count=1))),
    (C.OPEN_IN_SECONDARY, lambda h, _: h.vds.open_in_secondary(h.name)),
]:
    cells((S.ACTIVE, _call, ANY))(_static(active, _call, _make))


@cells((S.ACTIVE, C.GET_CONFIGURATION, ANY))
def active_get_configuration(h: Harness) -> None:
    """§2.2: later calls return the same configuration (workers read the direction bit)."""
    h.active(1)
    _hr, cfg = h.expect(h.vds, C.GET_CONFIGURATION, ANY, lambda: h.vds.get_configuration(0))
    assert cfg == h.config and cfg.features & Feature.VDF_WriteMedia


@cells((S.ACTIVE, C.OPEN_DEVICE, Cond.OK))
def active_open_second_device(h: Harness) -> None:
    """§11.2 (amended): n devices need n OpenDevice calls; the second works in Active."""
    h.active(2, opened=1)
    _hr, dev = h.expect(h.vds, C.OPEN_DEVICE, Cond.OK, lambda: h.vds.open_device(h.dev_name(1)))
    assert (dev.name, dev.index) == (h.dev_name(1), 1)


@cells((S.ACTIVE, C.OPEN_DEVICE, Cond.ALREADY_OPEN))
def active_open_device_twice(h: Harness) -> None:
    """§2.3: the same device twice → VD_E_PROTOCOL."""
    h.active(2, opened=1)
    h.expect(h.vds, C.OPEN_DEVICE, Cond.ALREADY_OPEN, lambda: h.vds.open_device(h.name))


@cells((S.ACTIVE, C.OPEN_DEVICE, Cond.ALL_OPEN))
def active_open_device_after_all(h: Harness) -> None:
    """§2.3 (amended): once every device is open, OpenDevice → VD_E_OPEN (end of the loop)."""
    h.active(2, opened=2)
    for i in (0, 1):
        h.expect(h.vds, C.OPEN_DEVICE, Cond.ALL_OPEN, lambda i=i: h.vds.open_device(h.dev_name(i)))


@cells((S.ACTIVE, C.OPEN_DEVICE, Cond.BAD_NAME))
def active_open_device_unknown(h: Harness) -> None:
    h.active(2, opened=1)
    h.expect(h.vds, C.OPEN_DEVICE, Cond.BAD_NAME, lambda: h.vds.open_device("nope"))


@cells((S.ACTIVE, C.GET_COMMAND, Cond.OK), (S.ACTIVE, C.COMPLETE_COMMAND, Cond.OK))
def active_command_round_trip(h: Harness) -> None:
    """§2.4 / §2.5: the command carries the server's inputs and the buffer bytes; the server
    gets the completion code, byte count and position."""
    (dev,) = h.active(1)
    hr, buf = h.s.allocate_buffer(8192, fill=bytes(range(256)))
    assert hr == OK
    hr, handle = h.s.send_command(0, WRITE, 8192, 4096, buf)
    assert hr == OK
    hr, cmd = h.expect(h.vds, C.GET_COMMAND, Cond.OK, lambda: dev.get_command(5000))
    assert (cmd.command_code, cmd.size, cmd.position) == (WRITE, 8192, 4096)
    assert bytes(cmd.buffer) == bytes(range(256)) * 32
    h.expect(h.vds, C.COMPLETE_COMMAND, Cond.OK, lambda: dev.complete_command(cmd, 0, 8192, 77))
    r = h.completion(handle)
    assert (r["completion_code"], r["bytes_transferred"], r["position"], r["generated"]) == \
        (0, 8192, 77, False)


@cells((S.ACTIVE, C.GET_COMMAND, Cond.TIMEOUT))
def active_get_command_timeout(h: Harness) -> None:
    """§2.4: 0 polls; a timeout waits at least that long; the device stays usable."""
    (dev,) = h.active(1)
    t0 = time.monotonic()
    h.expect(h.vds, C.GET_COMMAND, Cond.TIMEOUT, lambda: dev.get_command(0))
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    h.expect(h.vds, C.GET_COMMAND, Cond.TIMEOUT, lambda: dev.get_command(100))
    assert time.monotonic() - t0 >= 0.099
    _, cmd = h.command(dev, CommandCode.VDC_Flush)
    assert dev.complete_command(cmd, 0) == OK


@cells((S.ACTIVE, C.GET_COMMAND, Cond.DEVICE_CLOSED),
       (S.ACTIVE, C.GET_COMMAND, Cond.LAST_DEVICE_CLOSED))
def active_close_devices_one_by_one(h: Harness) -> None:
    """§1.8 (amended): VD_E_CLOSE is per device; Normally Terminated after the last one."""
    dev0, dev1 = h.active(2, opened=2)
    assert h.s.close_device(0) == OK
    h.expect(h.vds, C.GET_COMMAND, Cond.DEVICE_CLOSED, lambda: dev0.get_command(5000))
    assert dev1.get_command(0)[0] == HResult.VD_E_TIMEOUT  # the other device is still alive
    assert h.s.close_device(1) == OK
    h.expect(h.vds, C.GET_COMMAND, Cond.LAST_DEVICE_CLOSED, lambda: dev1.get_command(5000))
    assert h.vds.close() == OK


@cells((S.ACTIVE, C.GET_COMMAND, Cond.LAST_DEVICE_CLOSED))
def active_close_single_device(h: Harness) -> None:
    """§6.7: Write → CloseDevice; GetCommand → VD_E_CLOSE; Close → NOERROR."""
    (dev,) = h.active(1)
    _handle, cmd = h.command(dev)
    assert dev.complete_command(cmd, 0, cmd.size) == OK
    assert h.s.close_device(0) == OK
    h.expect(h.vds, C.GET_COMMAND, Cond.LAST_DEVICE_CLOSED, lambda: dev.get_command(INFINITE))
    assert h.s.state()["state"] == "NORMALLY_TERMINATED"
    assert h.vds.close() == OK


@cells((S.ACTIVE, C.GET_COMMAND, Cond.ABORTED), (S.ACTIVE, C.SIGNAL_ABORT, ANY))
def active_blocked_get_command_client_abort(h: Harness) -> None:
    """§2.6: an INFINITE GetCommand blocked on one thread returns VD_E_ABORT when another
    thread calls SignalAbort; the server's outstanding command completes with 995."""
    (dev,) = h.active(1)
    handle = h.send(0)
    _, cmd = dev.get_command(5000)
    assert cmd is not None
    before = h.vds.state
    blocked = Blocked(lambda: dev.get_command(INFINITE))
    h.expect(h.vds, C.SIGNAL_ABORT, ANY, h.vds.signal_abort)
    h.check(h.vds, before, C.GET_COMMAND, Cond.ABORTED, blocked.join())
    h.wait_server_abort(reason=1)
    assert h.completion(handle)["completion_code"] == Win32.ERROR_OPERATION_ABORTED


@cells((S.ACTIVE, C.GET_COMMAND, Cond.ABORTED))
def active_blocked_get_command_server_abort(h: Harness) -> None:
    """§8.1 / §12 item 12: the server's SignalAbort wakes a blocked GetCommand (negative
    timeout); the server's outstanding command completes with 995 on its side."""
    (dev,) = h.active(1)
    handle, _cmd = h.command(dev)
    before = h.vds.state
    blocked = Blocked(lambda: dev.get_command(-1))
    assert h.s.signal_abort() == OK
    h.check(h.vds, before, C.GET_COMMAND, Cond.ABORTED, blocked.join())
    assert h.completion(handle)["completion_code"] == Win32.ERROR_OPERATION_ABORTED
    assert h.s.close_device(0) == HResult.VD_E_ABORT  # §3: CloseDevice after abort


@cells((S.ACTIVE, C.COMPLETE_COMMAND, Cond.NOT_OUTSTANDING))
def active_complete_command_not_outstanding(h: Harness) -> None:
    """§2.5: twice, another device's command, garbage → VD_E_INVALID; nothing reaches the
    server, and the right completion still works afterwards."""
    dev0, dev1 = h.active(2, opened=2)
    h0, cmd0 = h.command(dev0, fill=b"\x01")
    h1, cmd1 = h.command(dev1, fill=b"\x02")
    h.expect(h.vds, C.COMPLETE_COMMAND, Cond.NOT_OUTSTANDING,
             lambda: dev1.complete_command(cmd0, 0, 4096, 0))
    for bad in (None, "cmd", 7):
        h.expect(h.vds, C.COMPLETE_COMMAND, Cond.NOT_OUTSTANDING,
                 lambda b=bad: dev0.complete_command(b, 0, 0, 0))  # type: ignore[arg-type]
    h.expect(h.vds, C.COMPLETE_COMMAND, Cond.NOT_OUTSTANDING,
             lambda: dev0.complete_command(cmd0, -1, 0, 0))
    assert h.s.wait_completion(h0, 0)["done"] is False
    assert dev0.complete_command(cmd0, 0, 4096, 0) == OK
    h.expect(h.vds, C.COMPLETE_COMMAND, Cond.NOT_OUTSTANDING,
             lambda: dev0.complete_command(cmd0, 0, 4096, 0))
    assert dev1.complete_command(cmd1, 0, 4096, 0) == OK
    assert h.completion(h0)["completion_code"] == 0
    assert h.completion(h1)["completion_code"] == 0
    assert h.s.state()["violations"] == []


@cells((S.ACTIVE, C.COMPLETE_COMMAND, Cond.DEVICE_CLOSED))
def active_complete_command_after_close(h: Harness) -> None:
    """§2.5: CompleteCommand after that device returned VD_E_CLOSE → VD_E_PROTOCOL."""
    dev0, _dev1 = h.active(2, opened=2)
    _, cmd = h.command(dev0)
    assert h.s.close_device(0) == OK
    assert dev0.get_command(5000)[0] == HResult.VD_E_CLOSE
    h.expect(h.vds, C.COMPLETE_COMMAND, Cond.DEVICE_CLOSED,
             lambda: dev0.complete_command(cmd, 0, 4096, 0))


@cells((S.ACTIVE, C.CLOSE, Cond.DEVICES_OPEN))
def active_close_with_devices_open(h: Harness) -> None:
    """§2.7 / §12 item 13: Close with devices open → VD_E_OPEN, DNE; the server side sees the
    abort and its pending command completes with 995; nothing of the set survives."""
    (dev,) = h.active(1)
    handle, _cmd = h.command(dev)
    h.expect(h.vds, C.CLOSE, Cond.DEVICES_OPEN, h.vds.close)
    h.wait_server_abort(reason=3)  # AbortReason.CLIENT_CLOSE_WITH_DEVICES_OPEN
    r = h.completion(handle)
    assert (r["completion_code"], r["bytes_transferred"]) == (Win32.ERROR_OPERATION_ABORTED, 0)
    assert h.s.close() == OK  # Close in Abort
    assert set_objects(h.name) == []


SECONDARY_THAT_DIES = r"""
import json, os, sys
from vdisim.client import VirtualDeviceSet
v = VirtualDeviceSet()
attach = v.open_in_secondary(sys.argv[1])
hr, dev = v.open_device(sys.argv[1] + "1")
print(json.dumps({"attach": attach, "open": hr, "state": v.state.value}), flush=True)
os._exit(0)  # dies without Close
"""


@cells((S.ACTIVE, C.CLOSE, Cond.OK), (S.ACTIVE, C.GET_COMMAND, Cond.DEVICE_CLOSED))
def active_close_after_secondary_died(h: Harness) -> None:
    """§1.9: VDI does not notice a secondary's death; the primary, whose own device saw
    VD_E_CLOSE, is still Active (the dead secondary's device never closed) and its Close has
    no open device left → NOERROR."""
    (dev0,) = h.active(2, opened=1)
    r = subprocess.run([sys.executable, "-c", SECONDARY_THAT_DIES, h.name], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"attach": 0, "open": 0, "state": "Active"}
    core = h.vds._core
    assert core is not None
    assert wait_until(lambda: not core.secondaries), "primary never noticed the dead secondary"
    assert h.vds.state is S.ACTIVE and h.server_state() == "ACTIVE"  # no abort
    assert h.s.close_device(0) == OK
    h.expect(h.vds, C.GET_COMMAND, Cond.DEVICE_CLOSED, lambda: dev0.get_command(5000))
    h.expect(h.vds, C.CLOSE, Cond.OK, h.vds.close)


@cells((S.ACTIVE, C.GET_BUFFER_HANDLE, Cond.OK), (S.ACTIVE, C.MAP_BUFFER_HANDLE, Cond.OK))
def active_buffer_handle_round_trip(h: Harness) -> None:
    """§2.9 / §12 item 17: GetBufferHandle of a Write's buffer; MapBufferHandle gives a view
    of the same bytes (the same memory: a change through one shows through the other)."""
    (dev,) = h.active(1)
    pattern = bytes(range(256)) * 32
    _, cmd = h.command(dev, WRITE, len(pattern), pattern)
    _, handle = h.expect(h.vds, C.GET_BUFFER_HANDLE, Cond.OK,
                          lambda: h.vds.get_buffer_handle(cmd))
    assert isinstance(handle, int) and 0 < handle <= 0xFFFFFFFF
    _hr, view = h.expect(h.vds, C.MAP_BUFFER_HANDLE, Cond.OK,
                        lambda: h.vds.map_buffer_handle(handle))
    assert len(view) == len(pattern) and bytes(view) == bytes(cmd.buffer) == pattern
    view[0] ^= 0xFF
    assert cmd.buffer[0] == pattern[0] ^ 0xFF
    view[0] ^= 0xFF
    assert dev.complete_command(cmd, 0, cmd.size) == OK


@cells((S.ACTIVE, C.GET_BUFFER_HANDLE, Cond.INVALID_ARG))
def active_get_buffer_handle_invalid(h: Harness) -> None:
    """§2.9: a command without a buffer (Flush), a completed command, not a command."""
    (dev,) = h.active(1)
    _, flush = h.command(dev, CommandCode.VDC_Flush)
    h.expect(h.vds, C.GET_BUFFER_HANDLE, Cond.INVALID_ARG, lambda: h.vds.get_buffer_handle(flush))
    assert dev.complete_command(flush, 0) == OK
    _, write = h.command(dev)
    assert dev.complete_command(write, 0, write.size) == OK
    for arg in (write, None, memoryview(b"x")):
        h.expect(h.vds, C.GET_BUFFER_HANDLE, Cond.INVALID_ARG,
                 lambda a=arg: h.vds.get_buffer_handle(a))


@cells((S.ACTIVE, C.MAP_BUFFER_HANDLE, Cond.INVALID_ARG))
def active_map_buffer_handle_invalid(h: Harness) -> None:
    """§2.9: a bogus handle → VD_E_INVALID, no view."""
    (dev,) = h.active(1)
    _, cmd = h.command(dev)
    hr, handle = h.vds.get_buffer_handle(cmd)
    assert hr == OK and handle is not None
    for bogus in (0, handle + 1, handle + 1000, 0xFFFFFFFF, -1, True, 1.0):
        h.expect(h.vds, C.MAP_BUFFER_HANDLE, Cond.INVALID_ARG,
                 lambda b=bogus: h.vds.map_buffer_handle(b))


# -- Normally Terminated ----------------------------------------------------------------------


def normally_terminated(h: Harness) -> tuple[VirtualDevice, Command]:
    return h.normally_terminated()


for _call, _make in [
    (C.CREATE, lambda h, _: h.vds.create(h.name, VDConfig(device_count=1))),
    (C.OPEN_DEVICE, lambda h, _: h.vds.open_device(h.name)),
    (C.GET_COMMAND, lambda h, ctx: ctx[0].get_command(0)),
    (C.COMPLETE_COMMAND, lambda h, ctx: ctx[0].complete_command(ctx[1], 0, 4096, 0)),
    (C.OPEN_IN_SECONDARY, lambda h, _: h.vds.open_in_secondary(h.name)),
]:
    cells((S.NORMALLY_TERMINATED, _call, ANY))(_static(normally_terminated, _call, _make))


@cells((S.NORMALLY_TERMINATED, C.GET_CONFIGURATION, ANY))
def nt_get_configuration(h: Harness) -> None:
    h.normally_terminated()
    _hr, cfg = h.expect(h.vds, C.GET_CONFIGURATION, ANY, lambda: h.vds.get_configuration(0))
    assert cfg == h.config


@cells((S.NORMALLY_TERMINATED, C.SIGNAL_ABORT, ANY))
def nt_signal_abort(h: Harness) -> None:
    h.normally_terminated()
    h.expect(h.vds, C.SIGNAL_ABORT, ANY, h.vds.signal_abort)
    h.wait_server_abort(reason=1)


@cells((S.NORMALLY_TERMINATED, C.CLOSE, ANY))
def nt_close(h: Harness) -> None:
    """§1.8: Close after VD_E_CLOSE on every device → NOERROR; the server closes cleanly."""
    h.normally_terminated(keep_outstanding=False)
    h.expect(h.vds, C.CLOSE, ANY, h.vds.close)
    assert h.s.close() == OK
    assert h.s.state()["abort_reason"] is None


@cells((S.NORMALLY_TERMINATED, C.GET_BUFFER_HANDLE, Cond.OK),
       (S.NORMALLY_TERMINATED, C.MAP_BUFFER_HANDLE, Cond.OK))
def nt_buffer_handles(h: Harness) -> None:
    """Buffers stay valid until Close: a command left outstanding keeps its buffer."""
    _dev, cmd = h.normally_terminated()
    _, handle = h.expect(h.vds, C.GET_BUFFER_HANDLE, Cond.OK,
                          lambda: h.vds.get_buffer_handle(cmd))
    _hr, view = h.expect(h.vds, C.MAP_BUFFER_HANDLE, Cond.OK,
                        lambda: h.vds.map_buffer_handle(handle))
    assert bytes(view) == b"\x5a" * 4096


@cells((S.NORMALLY_TERMINATED, C.GET_BUFFER_HANDLE, Cond.INVALID_ARG),
       (S.NORMALLY_TERMINATED, C.MAP_BUFFER_HANDLE, Cond.INVALID_ARG))
def nt_buffer_handles_invalid(h: Harness) -> None:
    h.normally_terminated()
    h.expect(h.vds, C.GET_BUFFER_HANDLE, Cond.INVALID_ARG,
             lambda: h.vds.get_buffer_handle(None))  # type: ignore[arg-type]
    h.expect(h.vds, C.MAP_BUFFER_HANDLE, Cond.INVALID_ARG, lambda: h.vds.map_buffer_handle(0))


# -- Abort ------------------------------------------------------------------------------------


def aborted(h: Harness) -> tuple[VirtualDevice, Command, int]:
    return h.aborted()


for _call, _make in [
    (C.CREATE, lambda h, _: h.vds.create(h.name, VDConfig(device_count=1))),
    (C.GET_CONFIGURATION, lambda h, _: h.vds.get_configuration(INFINITE)),
    (C.OPEN_DEVICE, lambda h, _: h.vds.open_device(h.name)),
    (C.GET_COMMAND, lambda h, ctx: ctx[0].get_command(INFINITE)),
    (C.OPEN_IN_SECONDARY, lambda h, _: h.vds.open_in_secondary(h.name)),
]:
    cells((S.ABORT, _call, ANY))(_static(aborted, _call, _make))


@cells((S.ABORT, C.OPEN_DEVICE, ANY))
def abort_open_unopened_device(h: Harness) -> None:
    """§8.2: OpenDevice of a device never opened → VD_E_ABORT (server-side abort)."""
    h.active(2, opened=1)
    assert h.s.signal_abort() == OK
    assert wait_until(lambda: h.vds.state is S.ABORT)
    h.expect(h.vds, C.OPEN_DEVICE, ANY, lambda: h.vds.open_device(h.dev_name(1)))


@cells((S.ABORT, C.COMPLETE_COMMAND, ANY))
def abort_complete_command_ignored(h: Harness) -> None:
    """§8.2: CompleteCommand after abort → VD_E_ABORT; the server keeps its 995."""
    dev, cmd, handle = h.aborted()
    h.expect(h.vds, C.COMPLETE_COMMAND, ANY, lambda: dev.complete_command(cmd, 0, 4096, 0))
    r = h.completion(handle)
    assert r["completion_code"] == Win32.ERROR_OPERATION_ABORTED
    assert r["bytes_transferred"] == 0


@cells((S.ABORT, C.SIGNAL_ABORT, ANY), (S.DNE, C.SIGNAL_ABORT, ANY))
def abort_signal_abort_twice(h: Harness) -> None:
    """§2.6: SignalAbort is idempotent in Abort (NOERROR); in DNE it is VD_E_PROTOCOL."""
    h.expect(h.vds, C.SIGNAL_ABORT, ANY, h.vds.signal_abort)
    h.aborted()
    h.expect(h.vds, C.SIGNAL_ABORT, ANY, h.vds.signal_abort)
    h.expect(h.vds, C.SIGNAL_ABORT, ANY, h.vds.signal_abort)


@cells((S.ABORT, C.CLOSE, ANY))
def abort_close(h: Harness) -> None:
    """§8.2 / §8.4: in Abort, Close at once (no VD_E_CLOSE will come) → NOERROR."""
    h.aborted()
    h.wait_server_abort(reason=1)
    h.expect(h.vds, C.CLOSE, ANY, h.vds.close)
    assert h.s.close() == OK


@cells((S.ABORT, C.GET_BUFFER_HANDLE, Cond.OK), (S.ABORT, C.MAP_BUFFER_HANDLE, Cond.OK))
def abort_buffer_handles(h: Harness) -> None:
    """§8.2: buffers already held stay valid until Close."""
    _dev, cmd, _handle = h.aborted()
    _, handle = h.expect(h.vds, C.GET_BUFFER_HANDLE, Cond.OK,
                          lambda: h.vds.get_buffer_handle(cmd))
    _hr, view = h.expect(h.vds, C.MAP_BUFFER_HANDLE, Cond.OK,
                        lambda: h.vds.map_buffer_handle(handle))
    assert bytes(view) == b"\x5a" * 4096


@cells((S.ABORT, C.GET_BUFFER_HANDLE, Cond.INVALID_ARG),
       (S.ABORT, C.MAP_BUFFER_HANDLE, Cond.INVALID_ARG))
def abort_buffer_handles_invalid(h: Harness) -> None:
    h.aborted()
    h.expect(h.vds, C.GET_BUFFER_HANDLE, Cond.INVALID_ARG,
             lambda: h.vds.get_buffer_handle(None))  # type: ignore[arg-type]
    h.expect(h.vds, C.MAP_BUFFER_HANDLE, Cond.INVALID_ARG, lambda: h.vds.map_buffer_handle(999))


# ---------------------------------------------------------------------------------------------
# The table tests.

CASES = [(cell, fn) for cell, fns in sorted(SCENARIOS.items(), key=lambda kv: (
    list(S).index(kv[0][0]), list(C).index(kv[0][1]), list(Cond).index(kv[0][2]))) for fn in fns]


def _case_id(case: tuple[Cell, Callable[[Harness], None]]) -> str:
    (state, call, cond), fn = case
    return f"{state.name}-{call.name}-{cond.name}-{fn.__name__}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_cell(case: tuple[Cell, Callable[[Harness], None]], h: Harness) -> None:
    """One cell of CLIENT_TABLE (docs/states.md), end to end against the engine."""
    cell, scenario = case
    scenario(h)
    assert cell in h.checked, f"{scenario.__name__} never exercised {cell}"


def test_every_table_cell_is_covered() -> None:
    """Meta-test: every (state, call, condition) of CLIENT_TABLE has a scenario (or is listed
    as unreachable with its reason), and no scenario names a cell the table lacks."""
    table = {(state, call, cond) for state, row in CLIENT_TABLE.items()
             for call, cell in row.items() for cond in cell}
    covered = set(SCENARIOS)
    assert covered.isdisjoint(UNREACHABLE)
    missing = sorted(f"{s.value} / {c.value} / {d.value}" for s, c, d in
                     table - covered - set(UNREACHABLE))
    assert not missing, f"cells without a scenario: {missing}"
    assert covered | set(UNREACHABLE) == table, f"not in the table: {covered - table}"
    assert len(UNREACHABLE) <= 1
    assert all(len(fns) >= 1 for fns in SCENARIOS.values())


def test_client_table_matches_the_spec_transcription() -> None:
    """CLIENT_TABLE (what the library looks up, and docs/states.md) says exactly what the spec
    transcription above says, cell by cell."""
    table = {(state, call, cond): (int(tr.hr), tr.next) for state, row in CLIENT_TABLE.items()
             for call, cell in row.items() for cond, tr in cell.items()}
    assert set(table) == set(SPEC)
    wrong = {f"{s.value} / {c.value} / {d.value}": (hresult_name(table[k][0]), table[k][1])
             for k in SPEC for s, c, d in [k] if table[k] != SPEC[k]}
    assert not wrong, f"cells differing from the spec: {wrong}"


# ---------------------------------------------------------------------------------------------
# Spec §2 HRESULT paths that span several cells.


def test_create_close_create_again(h: Harness) -> None:
    """§2.1 / §2.7 / §12 item 1: Create twice → VD_E_PROTOCOL; Close → Create again (same
    object, same name) → NOERROR, also after a complete operation."""
    h.create(1)
    assert h.vds.create(h.name, VDConfig(device_count=1)) == HResult.VD_E_PROTOCOL
    assert h.vds.close() == OK and h.vds.state is S.DNE
    assert h.vds.close() == HResult.VD_E_PROTOCOL  # §12 item 2
    h.normally_terminated(keep_outstanding=False)
    assert h.vds.close() == OK
    assert h.s.close() == OK
    h.create(3)
    assert h.vds.close() == OK


def test_io_error_protocol(h: Harness) -> None:
    """§6.6 / §12 item 10: an error completion puts the device in IO-ERROR.  The queued,
    undelivered Write completes on the server with 1117 (generated by the library); the server
    cannot send a Write (VD_E_IO_ERROR 0x80770011, completion 1117) but can send ClearError,
    which the client receives only after completing its outstanding commands; after ClearError
    succeeds the device accepts commands again."""
    dev0, dev1 = h.active(2, opened=2)
    h_a = h.send(0, fill=b"A")
    h_b = h.send(0, fill=b"B")
    h_c = h.send(0, fill=b"C")
    marker = h.send(1, CommandCode.VDC_Flush)  # frames arrive in order: C is queued once the
    _, m = dev1.get_command(5000)               # client has the marker of device 1
    assert m is not None and dev1.complete_command(m, 0) == OK
    _, a = dev0.get_command(5000)
    _, b = dev0.get_command(5000)
    assert a is not None and b is not None
    assert bytes(a.buffer[:1]) == b"A" and bytes(b.buffer[:1]) == b"B"
    assert dev0.complete_command(a, Win32.ERROR_DISK_FULL, 0, 0) == OK
    ra = h.completion(h_a)
    assert (ra["completion_code"], ra["generated"]) == (Win32.ERROR_DISK_FULL, False)
    rc = h.completion(h_c)
    assert (rc["completion_code"], rc["generated"]) == (Win32.ERROR_IO_DEVICE, True)
    assert h.completion(marker)["completion_code"] == 0

    hr, buf = h.s.allocate_buffer(4096, fill=b"D")
    assert hr == OK
    hr, h_d = h.s.send_command(0, WRITE, 4096, 0, buf)
    assert hr == HResult.VD_E_IO_ERROR == 0x80770011
    assert h.completion(h_d, 0)["completion_code"] == Win32.ERROR_IO_DEVICE

    hr, h_clear = h.s.send_command(0, CommandCode.VDC_ClearError)
    assert hr == OK
    marker2 = h.send(1, CommandCode.VDC_Flush)  # ClearError is at the client once this is
    _, m2 = dev1.get_command(5000)
    assert m2 is not None and dev1.complete_command(m2, 0) == OK
    assert dev0.get_command(0)[0] == HResult.VD_E_TIMEOUT  # held: B is still outstanding
    assert dev0.complete_command(b, 0, 4096, 0) == OK
    hr, clear = dev0.get_command(5000)
    assert hr == OK and clear is not None and clear.command_code == CommandCode.VDC_ClearError
    assert dev0.complete_command(clear, 0) == OK
    assert h.completion(h_clear)["completion_code"] == 0
    assert h.completion(h_b)["completion_code"] == 0
    assert h.completion(marker2)["completion_code"] == 0

    h_e = h.send(0, fill=b"E")  # Active again: accepted and delivered
    hr, e = dev0.get_command(5000)
    assert hr == OK and e is not None and bytes(e.buffer[:1]) == b"E"
    assert dev0.complete_command(e, 0, 4096, 0) == OK
    assert h.completion(h_e)["completion_code"] == 0
    for i, dev in enumerate((dev0, dev1)):
        assert h.s.close_device(i) == OK
        assert dev.get_command(5000)[0] == HResult.VD_E_CLOSE
    assert h.vds.state is S.NORMALLY_TERMINATED
    assert h.s.state()["violations"] == []


def test_read_buffer_through_a_mapped_handle(h: Harness) -> None:
    """§1.9 / §2.9: data written through MapBufferHandle's view of a Read command's buffer
    is what the server reads."""
    (dev,) = h.active(1)
    hr, buf = h.s.allocate_buffer(4096, fill=b"\0")
    assert hr == OK
    hr, handle = h.s.send_command(0, READ, 4096, 0, buf)
    assert hr == OK
    _, cmd = dev.get_command(5000)
    assert cmd is not None and cmd.command_code == READ
    hr, bh = h.vds.get_buffer_handle(cmd)
    assert hr == OK and bh is not None
    hr, view = h.vds.map_buffer_handle(bh)
    assert hr == OK and view is not None
    data = bytes(range(256)) * 16
    view[:] = data
    assert dev.complete_command(cmd, 0, 4096, 0) == OK
    assert h.completion(handle)["bytes_transferred"] == 4096
    assert h.s.read_buffer(buf) == data


SECONDARY = r"""
import json, sys
from vdisim.client import VirtualDeviceSet
from vdisim.protocol.codes import CommandCode
name, expected = sys.argv[1], bytes.fromhex(sys.argv[2])
out = {}
v = VirtualDeviceSet()
out["attach"] = v.open_in_secondary(name)
out["state"] = v.state.value
out["attach_again"] = v.open_in_secondary(name)
hr, cfg = v.get_configuration(10000)
out["config"] = [hr, cfg.features if cfg else None]
hr, dev = v.open_device(name + "1")
out["open"] = hr
hr, cmd = dev.get_command(10000)
out["get"] = [hr, cmd.command_code, cmd.size]
out["bytes_ok"] = bytes(cmd.buffer) == expected
hr, handle = v.get_buffer_handle(cmd)
hr2, view = v.map_buffer_handle(handle)
out["handle"] = [hr, hr2, bytes(view) == expected]
out["complete"] = dev.complete_command(cmd, 0, cmd.size, 0)
out["close_get"] = dev.get_command(10000)[0]
out["state_after"] = v.state.value
out["close"] = v.close()
print(json.dumps(out), flush=True)
"""


def test_open_in_secondary_process(h: Harness) -> None:
    """§1.9 / §2.8 / §12 item 16: OpenInSecondary before the primary's GetConfiguration →
    VD_E_PROTOCOL; after it a secondary *process* attaches, opens `<set>1`, gets a Write with
    the right bytes, completes it, sees VD_E_CLOSE and closes; the primary then ends normally."""
    h.create(2)
    h.server_configure()
    early = h.new_set()
    assert early.open_in_secondary(h.name) == HResult.VD_E_PROTOCOL
    assert early.state is S.DNE
    h.primary_config()
    h.server_devices(2)
    dev0 = h.open(0)
    pattern = bytes(range(256)) * 16
    h_w = h.send(1, WRITE, len(pattern), pattern)  # queued for device 1 until it is opened
    proc = subprocess.Popen([sys.executable, "-c", SECONDARY, h.name, pattern.hex()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = h.completion(h_w, 30_000)
        assert (r["completion_code"], r["bytes_transferred"]) == (0, len(pattern))
        assert h.s.close_device(1) == OK
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out) == {
        "attach": OK, "state": "Initializing", "attach_again": HResult.VD_E_PROTOCOL,
        "config": [OK, int(Feature.VDF_WriteMedia)], "open": OK, "get": [OK, WRITE, 4096],
        "bytes_ok": True, "handle": [OK, OK, True], "complete": OK,
        "close_get": HResult.VD_E_CLOSE, "state_after": "Normally Terminated", "close": OK,
    }
    assert h.s.close_device(0) == OK
    assert dev0.get_command(5000)[0] == HResult.VD_E_CLOSE
    assert wait_until(lambda: h.vds.state is S.NORMALLY_TERMINATED)
    assert h.vds.close() == OK
    assert h.s.close() == OK
    assert h.s.state()["abort_reason"] is None


SECONDARY_COMPLETES = """
import json, sys
from vdisim.client import VirtualDeviceSet
name = sys.argv[1]
v = VirtualDeviceSet()
assert v.open_in_secondary(name) == 0
assert v.get_configuration(10000)[0] == 0
hr, dev = v.open_device(name + "1")
hr, cmd = dev.get_command(10000)
print(json.dumps({"get": hr, "complete": dev.complete_command(cmd, 0, cmd.size, 0)}), flush=True)
sys.stdin.readline()  # the primary aborts meanwhile
print(json.dumps({"close": v.close()}), flush=True)
"""


@pytest.mark.parametrize("relay", ["held", "free"])
def test_secondary_completion_not_overtaken_by_primary_abort(h: Harness, relay: str) -> None:
    """§8.2: only completions made *after* an abort are ignored.  A secondary's CompleteCommand
    returned NOERROR (its completion is on its way through the primary's hub); the primary's
    SignalAbort right after must not overtake it: the engine records the secondary's code, not
    995 (found by the fuzzer, docs/fuzz.md).  ``held``: the hub has read the completion but
    is held just before relaying it (a gate on ``SetCore._from_secondary`` widens that window;
    nothing is replaced) while SignalAbort runs -- without the fix the ABORT went out first
    every time (3 of 3 runs).
    ``free``: nothing held, the natural timing.  Either way SignalAbort returns once the
    ABORT is on the wire."""
    h.create(2)
    h.server_configure()
    h.primary_config()
    h.server_devices(2)
    h.open(0)
    core = h.vds._core
    assert core is not None
    at_gate, gate = threading.Event(), threading.Event()
    if relay == "held":
        relay_frame = core._from_secondary

        def gated(ch: Any, frame: frames.Frame) -> None:
            if isinstance(frame, frames.Completion) and not gate.is_set():
                at_gate.set()
                gate.wait(30)
            relay_frame(ch, frame)
        core._from_secondary = gated  # type: ignore[method-assign]
    h_w = h.send(1, WRITE, 4096)
    proc = subprocess.Popen([sys.executable, "-c", SECONDARY_COMPLETES, h.name],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the secondary never completed its command"
        assert json.loads(proc.stdout.readline()) == {"get": OK, "complete": OK}
        if relay == "held":
            assert at_gate.wait(30), "the hub never relayed the secondary's frames"
            # SignalAbort on another thread: it waits for the hub to relay first (or, without
            # the fix, puts the ABORT on the wire at once); then the hub is let go.
            hrs: list[int] = []
            t = threading.Thread(target=lambda: hrs.append(h.vds.signal_abort()))
            t.start()
            assert wait_until(lambda: core._abort_up is not None or not t.is_alive(), 10)
            gate.set()
            t.join(30)
            assert hrs == [OK]
        else:
            assert h.vds.signal_abort() == OK
        gate.set()
        r = h.completion(h_w, 30_000)
        assert (r["completion_code"], r["bytes_transferred"]) == (0, 4096), r
        h.wait_server_abort(int(AbortReason.CLIENT_SIGNAL_ABORT))
        proc.stdin.write("\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=30)
        assert out.strip() and json.loads(out) == {"close": OK}, err
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_user_slice_of_buffer_does_not_break_close(h: Harness) -> None:
    """A slice of cmd.buffer kept alive by the user does not make Close fail or leak: Close →
    NOERROR, and once the server closes no segment or socket of the set exists."""
    (dev,) = h.active(1)
    handle, cmd = h.command(dev, fill=b"\x42")
    keep = cmd.buffer[100:200]
    assert dev.complete_command(cmd, 0, cmd.size, 0) == OK
    assert h.completion(handle)["completion_code"] == 0
    assert h.s.close_device(0) == OK
    assert dev.get_command(5000)[0] == HResult.VD_E_CLOSE
    assert h.vds.close() == OK
    assert h.vds.state is S.DNE
    assert h.s.close() == OK
    assert set_objects(h.name) == []
    assert bytes(keep) == b"\x42" * 100  # still mapped for the holder; the name is gone
    keep.release()
