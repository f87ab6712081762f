"""Liveness: abort from either side, peer death, serverTimeOut and stale objects.

Spec references: §1.9 (secondary death is not noticed by VDI), §2.6 (SignalAbort), §2.7 (Close),
§3 (server SignalAbort / SendCommand failures), §4.1 (serverTimeOut: abort after two intervals),
§8.1-§8.4 (abort triggers, what happens at abort, waiting rules).

Every blocked call here is released by the event under test, never by its own timeout: blocking
calls use INFINITE and run on helper threads that are joined with a deadline.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vdisim.client import VirtualDeviceSet
from vdisim.engine import Engine, Fault, Plan
from vdisim.engine.server_vds import ServerCommand, ServerVirtualDeviceSet
from vdisim.protocol.codes import (
    INFINITE,
    CommandCode,
    Feature,
    HResult,
    VDF_LikePipe,
    Win32,
)
from vdisim.protocol.records import VDConfig
from vdisim.protocol.states import ClientState
from vdisim.transport import naming
from vdisim.transport.frames import AbortReason

from .conftest import Blocked, shm_entries, wait_blocked, wait_until

OK = HResult.NOERROR
ABORT = HResult.VD_E_ABORT
MTS = 65536
WRITE_MEDIA = int(Feature.VDF_WriteMedia)


# ------------------------------------------------------------------------------ helpers


def objects_of(name: str) -> tuple[str, str, str]:
    """(control segment, buffer segment prefix, socket path) of a set."""
    key = naming.set_key(None, name)
    return (naming.control_segment_name(key), f"{naming.PREFIX}{key}-b",
            naming.socket_path(key))


def set_objects_exist(name: str) -> list[str]:
    ctl, buf_prefix, sock = objects_of(name)
    out = [e for e in shm_entries() if e == ctl or e.startswith(buf_prefix)]
    if os.path.exists(sock):
        out.append(sock)
    return out


def read_line(proc: subprocess.Popen[str], timeout: float = 15.0) -> str:
    """One line of a child's stdout, with a deadline."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("child printed nothing before the deadline")
        r, _, _ = select.select([proc.stdout], [], [], remaining)
        if r:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"child exited early (rc={proc.wait(5)})")
            return line.strip()


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    """A child process in its own session (so its resource tracker dies with it)."""
    return subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the child and everything in its session (its resource tracker too), so that
    only the survivors can clean up after it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    if proc.stdin:
        proc.stdin.close()
    if proc.stdout:
        proc.stdout.close()


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def unique_db() -> str:
    return "live_" + uuid.uuid4().hex[:12]


class ScriptedSet:
    """A client set plus the engine's side of it, driven step by step (scripting API)."""

    def __init__(self, conn: Any, name: str, devices: int = 1, server_timeout: int = 0) -> None:
        self.name = name
        self.devices = devices
        self.vds = VirtualDeviceSet()
        assert self.vds.create(name, VDConfig(device_count=devices, features=VDF_LikePipe,
                                              server_timeout=server_timeout)) == OK
        self.s = conn.script()
        self.devs: list[Any] = []
        self.buffers: list[int] = []

    def open(self) -> None:
        assert self.s.open(self.name) == OK

    def configure_server(self, buffers: int = 2) -> None:
        assert self.s.begin_configuration(WRITE_MEDIA, 512, 512, MTS) == OK
        assert self.s.request_buffers(MTS, 512, buffers) == OK
        assert self.s.end_configuration() == OK

    def configure_client(self) -> VDConfig:
        hr, cfg = self.vds.get_configuration(5000)
        assert hr == OK and cfg is not None
        return cfg

    def activate(self, buffers: int = 2, open_client: bool = True) -> None:
        """Open, configure, open every device on both sides, start the agent."""
        self.open()
        self.configure_server(buffers)
        self.configure_client()
        for i in range(self.devices):
            assert self.s.open_device() == (OK, i)
        self.s.start_agent()
        for _ in range(buffers):
            hr, b = self.s.allocate_buffer(MTS, fill=b"\xa5")
            assert hr == OK and b is not None
            self.buffers.append(b)
        if open_client:
            for n in self.device_names():
                hr, dev = self.vds.open_device(n)
                assert hr == OK and dev is not None
                self.devs.append(dev)

    def device_names(self) -> list[str]:
        return [self.name] + [f"{self.name}{i}" for i in range(1, self.devices)]

    def write(self, device: int, buffer: int) -> int:
        hr, handle = self.s.send_command(device, CommandCode.VDC_Write, MTS, 0,
                                         self.buffers[buffer])
        assert hr == OK
        return handle

    def finish(self) -> None:
        """Close both sides whatever happened (idempotent)."""
        if self.vds.state is not ClientState.DNE:
            self.vds.close()
        self.s.close()


@pytest.fixture
def scripted(conn: Any, set_name: str) -> Iterator[Callable[..., ScriptedSet]]:
    made: list[ScriptedSet] = []

    def make(devices: int = 1, server_timeout: int = 0, name: str | None = None) -> ScriptedSet:
        ss = ScriptedSet(conn, name or set_name, devices, server_timeout)
        made.append(ss)
        return ss

    yield make
    for ss in made:
        ss.finish()


# ------------------------------------------------------------------------------ SignalAbort

ABORT_POINTS = ["configurable", "initializing", "outstanding", "after_device_closed"]


@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("point", ABORT_POINTS)
def test_signal_abort(scripted: Callable[..., ScriptedSet], point: str, side: str) -> None:
    """§2.6 / §3 SignalAbort / §8.2: from either side and at any point, blocked calls return
    VD_E_ABORT, outstanding commands complete on the server with 995, CompleteCommand then
    returns VD_E_ABORT, later calls return VD_E_ABORT, and Close returns NOERROR (§8.4)."""
    ss = scripted(devices=2)
    vds, s = ss.vds, ss.s
    handles: list[int] = []
    delivered = None
    blocked: Blocked | None

    if point == "configurable":
        ss.open()
        blocked = Blocked(lambda: vds.get_configuration(INFINITE))
        wait_blocked(vds)
        assert vds.state is ClientState.CONFIGURABLE
    elif point == "initializing":
        ss.open()
        ss.configure_server()
        ss.configure_client()
        assert vds.state is ClientState.INITIALIZING
        blocked = None  # nothing blocks between GetConfiguration and OpenDevice
    elif point == "outstanding":
        ss.activate()
        handles = [ss.write(0, 0), ss.write(0, 1)]  # one delivered, one still queued
        hr, delivered = ss.devs[0].get_command(5000)
        assert hr == OK and delivered is not None
        assert delivered.command_code == CommandCode.VDC_Write
        blocked = Blocked(lambda: ss.devs[1].get_command(INFINITE))
        wait_blocked(vds)
    else:  # after_device_closed
        ss.activate()
        assert s.close_device(0) == OK
        assert ss.devs[0].get_command(5000) == (HResult.VD_E_CLOSE, None)
        handles = [ss.write(1, 0)]
        hr, delivered = ss.devs[1].get_command(5000)
        assert hr == OK and delivered is not None
        blocked = Blocked(lambda: ss.devs[1].get_command(INFINITE))
        wait_blocked(vds)

    if side == "client":
        assert vds.signal_abort() == OK
        assert vds.signal_abort() == OK  # idempotent in Abort (§2.6)
    else:
        assert s.signal_abort() == OK
    if blocked is not None:
        assert blocked.join() == (ABORT, None)
    assert wait_until(lambda: vds.state is ClientState.ABORT, 5.0)

    # Outstanding commands (delivered or not) complete toward the server with 995.
    for h in handles:
        done = s.wait_completion(h, 5000)
        assert done["done"] is True
        assert done["completion_code"] == Win32.ERROR_OPERATION_ABORTED
        assert done["bytes_transferred"] == 0
    if delivered is not None:
        dev = ss.devs[1] if point == "after_device_closed" else ss.devs[0]
        assert dev.complete_command(delivered, Win32.ERROR_SUCCESS, MTS, 0) == ABORT
        # The late completion was ignored: the 995 completion is the only one.
        for h in handles:
            again = s.wait_completion(h, 0)
            assert (again["completion_code"], again["bytes_transferred"]) == (995, 0)
    for dev in ss.devs:
        assert dev.get_command(0) == (ABORT, None)
    assert vds.get_configuration(0) == (ABORT, None)
    assert vds.open_device(ss.name) == (ABORT, None)

    # The server side (it learns of a client abort at its next call, or from its agent):
    # no new commands, no configuration, every call VD_E_ABORT.
    if point == "configurable":
        assert s.begin_configuration(WRITE_MEDIA, 512, 512, MTS) == ABORT
    elif point == "initializing":
        assert s.open_device() == (ABORT, None)
    else:
        hr, h = s.send_command(0, CommandCode.VDC_Flush)
        assert hr == ABORT
        assert s.wait_completion(h, 0)["completion_code"] == Win32.ERROR_OPERATION_ABORTED
        assert s.close_device(1) == ABORT

    # The engine's view: Abort, with the reason of the side that signalled.
    want_reason = (AbortReason.CLIENT_SIGNAL_ABORT if side == "client"
                   else AbortReason.SERVER_SIGNAL_ABORT)
    assert s.state()["state"] == "ABORT"
    assert s.state()["abort_reason"] == want_reason

    assert vds.close() == OK
    assert vds.state is ClientState.DNE
    assert s.close() == OK
    assert set_objects_exist(ss.name) == []


@pytest.mark.parametrize("side", ["client", "server"])
def test_abort_completes_each_command_exactly_once(set_name: str, side: str) -> None:
    """§2.6 / §3 SignalAbort: every uncompleted command's completion routine runs exactly once,
    with ERROR_OPERATION_ABORTED; the client's later CompleteCommand is ignored (VD_E_ABORT).
    The server library runs in this process so its completion routines can be counted."""
    calls: dict[int, list[int]] = {}
    lock = threading.Lock()

    def routine(cmd: ServerCommand) -> None:
        with lock:
            calls.setdefault(id(cmd), []).append(cmd.completion_code)

    vds = VirtualDeviceSet()
    assert vds.create(set_name, VDConfig(device_count=1)) == OK
    server = ServerVirtualDeviceSet()
    agent = None
    try:
        assert server.open(set_name) == OK
        assert server.get_configuration()[0] == OK
        assert server.begin_configuration(WRITE_MEDIA, 512, 512, MTS) == OK
        assert server.request_buffers(MTS, 512, 3) == OK
        assert server.end_configuration() == OK
        assert vds.get_configuration(5000)[0] == OK
        hr, sdev = server.open_device()
        assert hr == OK and sdev is not None
        agent = threading.Thread(target=server.execute_completion_agent, daemon=True)
        agent.start()
        hr, dev = vds.open_device(set_name)
        assert hr == OK and dev is not None
        cmds = []
        for _ in range(3):
            hr, buf = server.allocate_buffer(MTS)
            assert hr == OK
            cmd = ServerCommand(CommandCode.VDC_Write, MTS, 0, buf, routine)
            assert sdev.send_command(cmd) == OK
            cmds.append(cmd)
        # Complete the first normally, hold the second, leave the third queued.
        hr, c1 = dev.get_command(5000)
        assert hr == OK and c1 is not None
        assert dev.complete_command(c1, Win32.ERROR_SUCCESS, MTS, 0) == OK
        hr, c2 = dev.get_command(5000)
        assert hr == OK and c2 is not None
        assert wait_until(lambda: id(cmds[0]) in calls, 5.0)
        if side == "client":
            assert vds.signal_abort() == OK
            assert wait_until(lambda: len(calls) == 3, 5.0)
        else:
            assert server.signal_abort() == OK
            assert wait_until(lambda: vds.state is ClientState.ABORT, 5.0)
        assert dev.complete_command(c2, Win32.ERROR_SUCCESS, MTS, 0) == ABORT
        assert vds.close() == OK
        agent.join(5.0)
        assert not agent.is_alive()
        assert server.close() == OK
        with lock:
            assert calls == {id(cmds[0]): [Win32.ERROR_SUCCESS],
                             id(cmds[1]): [Win32.ERROR_OPERATION_ABORTED],
                             id(cmds[2]): [Win32.ERROR_OPERATION_ABORTED]}
    finally:
        vds.close()
        server.dispose()
        if agent is not None:
            agent.join(5.0)


# ------------------------------------------------------------------------------ plan fault


def test_plan_abort_fault_fails_statement(conn: Any, set_name: str) -> None:
    """§8.1 server SignalAbort during the data transfer (plan Fault kind='abort'): the
    statement fails with the 18210 ... 3013 family (§8.3), the client's GetCommand returns
    VD_E_ABORT and Close returns NOERROR."""
    db = unique_db()
    assert conn.execute(f"CREATE DATABASE {db} WITH SIZE_MB = 1").ok
    try:
        vds = VirtualDeviceSet()
        assert vds.create(set_name, VDConfig(device_count=1)) == OK
        plan = Plan("backup", db, (set_name,), max_transfer_size=MTS,
                    faults=(Fault(kind="abort", device=0, step=3),))
        stmt = Blocked(lambda: conn.run_plan(plan))
        hr, cfg = vds.get_configuration(10_000)
        assert hr == OK and cfg is not None
        hr, dev = vds.open_device(set_name)
        assert hr == OK and dev is not None
        writes = 0
        while True:
            hr, cmd = dev.get_command(10_000)
            if cmd is None:
                break
            if cmd.command_code == CommandCode.VDC_Write:
                writes += 1
            assert dev.complete_command(cmd, Win32.ERROR_SUCCESS, cmd.size, 0) == OK
        assert hr == ABORT
        assert writes <= 3  # the abort fired before the fourth Write was sent
        assert vds.close() == OK
        result = stmt.join(10.0)
        assert not result.ok
        assert 18210 in result.error_numbers
        assert result.error_numbers[-1] == 3013
    finally:
        conn.execute(f"DROP DATABASE {db}")


# ------------------------------------------------------------------------------ peer death

CLIENT_BACKUP = r"""
import sys
from vdisim.client import VirtualDeviceSet
from vdisim.protocol.codes import CommandCode
from vdisim.protocol.records import VDConfig
name = sys.argv[1]
vds = VirtualDeviceSet()
print("CREATED", vds.create(name, VDConfig(device_count=1)), flush=True)
hr, cfg = vds.get_configuration(30000)
hr, dev = vds.open_device(name)
while True:
    hr, cmd = dev.get_command(30000)
    if cmd is None:
        print("END", hr, flush=True)
        sys.exit(1)
    if cmd.command_code == CommandCode.VDC_Write:
        print("READY", flush=True)
        break
    dev.complete_command(cmd, 0, 0, 0)
sys.stdin.read()  # blocks until killed
"""


def test_client_sigkill_mid_backup(conn: Any, set_name: str) -> None:
    """§8.1: the death of the primary client is detected: the BACKUP fails (3013) within 1 s
    of the kill; the engine's buffer area and the dead client's control segment and socket are
    removed by the survivor (the client's resource tracker dies with it here)."""
    db = unique_db()
    assert conn.execute(f"CREATE DATABASE {db} WITH SIZE_MB = 1").ok
    proc = spawn(CLIENT_BACKUP, set_name)
    try:
        assert read_line(proc) == "CREATED 0"
        assert len(set_objects_exist(set_name)) == 2  # control segment + socket

        ended: dict[str, float] = {}

        def backup() -> Any:
            r = conn.execute(f"BACKUP DATABASE {db} TO VIRTUAL_DEVICE = '{set_name}' "
                             f"WITH MAXTRANSFERSIZE = {MTS}")
            ended["t"] = time.monotonic()
            return r

        stmt = Blocked(backup)
        assert read_line(proc) == "READY"
        _, buf_prefix, _ = objects_of(set_name)
        assert any(o.startswith(buf_prefix) for o in shm_entries())  # the engine's area
        killed_at = time.monotonic()
        kill_group(proc)
        result = stmt.join(10.0)
        took = ended["t"] - killed_at
        assert took < 1.0, f"statement ended {took:.3f}s after the kill"
        assert not result.ok
        assert 3013 in result.error_numbers
        assert wait_until(lambda: set_objects_exist(set_name) == [], 5.0), \
            f"left behind: {set_objects_exist(set_name)}"
    finally:
        kill_group(proc)
        conn.execute(f"DROP DATABASE {db}")


PRIMARY_WAITS = """
import sys
from vdisim.client import VirtualDeviceSet
from vdisim.protocol.codes import VDF_LikePipe
from vdisim.protocol.records import VDConfig
name = sys.argv[1]
v = VirtualDeviceSet()
print("CREATED", v.create(name, VDConfig(device_count=1, features=VDF_LikePipe)), flush=True)
hr, cfg = v.get_configuration(30000)
hr2, dev = v.open_device(name)
print("OPENED", hr, hr2, flush=True)
sys.stdin.read()  # blocks until killed
"""


def test_server_state_counts_a_client_death_that_already_happened(conn: Any,
                                                                 set_name: str) -> None:
    """The scripting API's ``state()`` is taken once the engine has processed what the client
    sent before the call, the end of its connection included (docs/engine.md): right after the
    primary client process is reaped, the very next ``state()`` -- no polling -- shows the
    set aborted for the client's death (§8.1).  On a quiet machine the engine usually gets
    there first anyway (5 of 5 runs passed with the wait removed); the wait matters under
    load, where a replayed witness read ACTIVE in 2 of 30 runs before it existed
    (see ``ServerVirtualDeviceSet.settle``)."""
    s = conn.script()
    proc = spawn(PRIMARY_WAITS, set_name)
    try:
        assert read_line(proc) == "CREATED 0"
        assert s.open(set_name) == OK
        assert s.begin_configuration(WRITE_MEDIA, 512, 512, MTS) == OK
        assert s.request_buffers(MTS, 512, 2) == OK
        assert s.end_configuration() == OK
        assert s.open_device() == (OK, 0)
        s.start_agent()
        assert read_line(proc) == "OPENED 0 0"
        kill_group(proc)  # returns once the process is gone: its socket is closed
        st = s.state()
        assert (st["state"], st["abort_reason"]) == ("ABORT", AbortReason.PEER_DIED), st
    finally:
        kill_group(proc)
        s.close()
        assert wait_until(lambda: set_objects_exist(set_name) == [], 5.0), \
            f"left behind: {set_objects_exist(set_name)}"


def test_engine_sigkill_releases_blocked_client(set_name: str) -> None:
    """§8.1 / §8.2: the death of the engine aborts the set: a GetCommand blocked with INFINITE
    returns VD_E_ABORT within 1 s of the kill, Close returns NOERROR, and the client removes the
    dead engine's buffer area (the engine's resource tracker is killed first, so nobody else
    would)."""
    eng = Engine.start()
    c = eng.connect()
    ss = ScriptedSet(c, set_name)
    vds = ss.vds
    try:
        ss.activate()
        handle = ss.write(0, 0)
        hr, cmd = ss.devs[0].get_command(5000)
        assert hr == OK and cmd is not None and handle
        blocked = Blocked(lambda: ss.devs[0].get_command(INFINITE))
        wait_blocked(vds)
        _, buf_prefix, _ = objects_of(set_name)
        assert [e for e in shm_entries() if e.startswith(buf_prefix)]
        assert eng.pid is not None
        trackers = children_of(eng.pid)  # the engine's resource tracker
        assert trackers
        for child in trackers:
            os.kill(child, signal.SIGKILL)
        killed_at = time.monotonic()
        eng.kill()
        hr, value = blocked.join(5.0)
        assert blocked.returned_at is not None
        assert blocked.returned_at - killed_at < 1.0
        assert (hr, value) == (ABORT, None)
        assert ss.devs[0].complete_command(cmd, Win32.ERROR_SUCCESS, MTS, 0) == ABORT
        assert vds.close() == OK
        assert wait_until(lambda: not [e for e in shm_entries() if e.startswith(buf_prefix)],
                          5.0), "the dead engine's buffer area was not removed"
        assert set_objects_exist(set_name) == []
    finally:
        vds.close()
        c.close()
        eng.stop()


SECONDARY = r"""
import sys
from vdisim.client import VirtualDeviceSet
name = sys.argv[1]
vds = VirtualDeviceSet()
print("ATTACHED", vds.open_in_secondary(name), flush=True)
hr, dev = vds.open_device(name + "1")
print("OPENED", hr, flush=True)
hr, cmd = dev.get_command(30000)
print("READY", hr, cmd.command_code if cmd else None, flush=True)
sys.stdin.read()  # blocks until killed
"""


def test_secondary_sigkill_does_not_abort(scripted: Callable[..., ScriptedSet]) -> None:
    """§1.9 / §8.4: VDI does not notice a secondary's death: the set stays Active and the
    primary's devices still get commands; the primary then SignalAborts, the command the
    secondary held completes with 995 and everything ends cleanly."""
    ss = scripted(devices=2)
    ss.activate(open_client=False)
    hr, dev0 = ss.vds.open_device(ss.name)
    assert hr == OK and dev0 is not None
    proc = spawn(SECONDARY, ss.name)
    try:
        assert read_line(proc) == "ATTACHED 0"
        assert read_line(proc) == "OPENED 0"
        held = ss.write(1, 0)
        assert read_line(proc) == f"READY 0 {int(CommandCode.VDC_Write)}"
        core = ss.vds._core
        assert core is not None and len(core.secondaries) == 1
        kill_group(proc)
        assert wait_until(lambda: not core.secondaries, 5.0)  # the primary saw it go

        assert ss.vds.state is ClientState.ACTIVE
        assert ss.s.state()["state"] == "ACTIVE"
        assert ss.s.wait_completion(held, 0)["done"] is False
        h = ss.write(0, 1)
        hr, cmd = dev0.get_command(5000)
        assert hr == OK and cmd is not None and cmd.command_code == CommandCode.VDC_Write
        assert bytes(cmd.buffer[:4]) == b"\xa5" * 4
        assert dev0.complete_command(cmd, Win32.ERROR_SUCCESS, MTS, 0) == OK
        done = ss.s.wait_completion(h, 5000)
        assert (done["completion_code"], done["bytes_transferred"]) == (0, MTS)

        assert ss.vds.signal_abort() == OK  # the primary's own decision (§1.9)
        done = ss.s.wait_completion(held, 5000)
        assert done["completion_code"] == Win32.ERROR_OPERATION_ABORTED
        state = ss.s.state()
        assert (state["state"], state["abort_reason"]) == ("ABORT",
                                                          AbortReason.CLIENT_SIGNAL_ABORT)
        assert dev0.get_command(0) == (ABORT, None)
        assert ss.vds.close() == OK
        assert ss.s.close() == OK
    finally:
        kill_group(proc)


# ------------------------------------------------------------------------------ serverTimeOut


def test_server_timeout_aborts_after_two_intervals(scripted: Callable[..., ScriptedSet]) -> None:
    """§4.1 serverTimeOut / §8.1: with serverTimeOut = 200 ms and a command the client never
    completes, the engine aborts (reason SERVER_TIMEOUT) after two intervals -- not before
    0.4 s -- and the client's GetCommand then returns VD_E_ABORT."""
    ss = scripted(server_timeout=200)
    ss.activate()
    assert ss.configure_client().server_timeout == 200
    started = time.monotonic()
    handle = ss.write(0, 0)
    hr, cmd = ss.devs[0].get_command(5000)
    assert hr == OK and cmd is not None  # taken, never completed
    hr, value = ss.devs[0].get_command(INFINITE)
    elapsed = time.monotonic() - started
    assert (hr, value) == (ABORT, None)
    assert elapsed >= 0.4, f"aborted after {elapsed:.3f}s, before two intervals"
    assert elapsed < 3.0
    state = ss.s.state()
    assert (state["state"], state["abort_reason"]) == ("ABORT", AbortReason.SERVER_TIMEOUT)
    assert ss.s.wait_completion(handle, 0)["completion_code"] == Win32.ERROR_OPERATION_ABORTED
    assert ss.devs[0].complete_command(cmd, Win32.ERROR_SUCCESS, MTS, 0) == ABORT
    assert ss.vds.close() == OK


def test_server_timeout_not_fired_while_completing(scripted: Callable[..., ScriptedSet]) -> None:
    """§4.1: the watchdog fires only with commands pending and none completing; a client that
    keeps completing within the interval, for longer than two intervals in total, is never
    aborted."""
    ss = scripted(server_timeout=200)
    ss.activate()
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 0.6:  # three intervals of steady progress
        h = ss.write(0, n % 2)
        hr, cmd = ss.devs[0].get_command(5000)
        assert hr == OK and cmd is not None
        assert ss.devs[0].complete_command(cmd, Win32.ERROR_SUCCESS, MTS, 0) == OK
        assert ss.s.wait_completion(h, 5000)["completion_code"] == 0
        n += 1
    assert ss.s.state()["state"] == "ACTIVE"
    assert ss.vds.state is ClientState.ACTIVE
    assert ss.s.close_device(0) == OK
    assert ss.devs[0].get_command(5000) == (HResult.VD_E_CLOSE, None)
    assert ss.vds.close() == OK


# ------------------------------------------------------------------------------ stale objects

STALE = r"""
import os, signal, sys
from vdisim.client import VirtualDeviceSet
from vdisim.protocol.records import VDConfig
vds = VirtualDeviceSet()
print(vds.create(sys.argv[1], VDConfig(device_count=1)), flush=True)
os.killpg(os.getpgid(0), signal.SIGKILL)  # dies with its resource tracker: nothing cleans up
"""


def make_stale(name: str) -> None:
    proc = spawn(STALE, name)
    assert read_line(proc) == "0"
    assert proc.wait(10) == -signal.SIGKILL
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.close()
    proc.stdin.close()
    ctl, _, sock = objects_of(name)
    assert ctl in shm_entries() and os.path.exists(sock)


def test_create_replaces_stale_objects(set_name: str) -> None:
    """§2.1 / §1.3: a set whose creator died is stale; Create with the same name replaces its
    control segment and socket and succeeds."""
    make_stale(set_name)
    vds = VirtualDeviceSet()
    assert vds.create(set_name, VDConfig(device_count=1)) == OK
    assert vds.state is ClientState.CONFIGURABLE
    assert len(set_objects_exist(set_name)) == 2
    other = VirtualDeviceSet()  # a live set of that name is not replaced
    assert other.create(set_name, VDConfig(device_count=1)) != OK
    assert vds.close() == OK
    assert set_objects_exist(set_name) == []


def test_cleanup_command_removes_stale_objects(set_name: str) -> None:
    """``vdisim cleanup`` removes the segments and sockets of dead owners (the shared objects
    of §1.2), and leaves a live set alone."""
    live_name = "{" + str(uuid.uuid4()).upper() + "}"
    live = VirtualDeviceSet()
    assert live.create(live_name, VDConfig(device_count=1)) == OK
    try:
        make_stale(set_name)
        out = subprocess.run([sys.executable, "-m", "vdisim", "cleanup"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
        ctl, _, _ = objects_of(set_name)
        assert f"removed /dev/shm/{ctl}" in out
        assert set_objects_exist(set_name) == []
        assert len(set_objects_exist(live_name)) == 2
        assert live.state is ClientState.CONFIGURABLE
    finally:
        assert live.close() == OK
    assert set_objects_exist(live_name) == []
