"""BACKUP and RESTORE streams through vdisim, measured from the client's side.

The measured path (BACKUP, engine -> client): the database pages are already in the engine's
memory with their checksums precomputed (they are computed when a page changes); the engine
copies them into the shared buffer (one memcpy per byte) and sends a Write; the client copies
the buffer into a private scratch buffer (it *reads* every byte) and discards it, then
completes the command.  No media I/O anywhere.

RESTORE (client -> engine): the client holds the backup's families in its memory (captured
from a BACKUP it did first, untimed) and copies them into each Read's buffer; the engine
copies the buffer into the backup set it reassembles.  The restore plan asks for Reads of
exactly MAXTRANSFERSIZE (``read_sizes="max"``) so the transfer size is the one named.

Timed from the moment the first data command reaches the client to the last data command's
completion (on any device), so statement set-up, the engine's backup preparation and the
restore's final page verification are outside the window.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs

from vdisim.client import Command, VirtualDevice, VirtualDeviceSet
from vdisim.engine import Connection, Engine
from vdisim.engine.plan import Plan, default_buffer_count
from vdisim.protocol import VDConfig
from vdisim.protocol.codes import CommandCode, HResult, Win32

GET_TIMEOUT_MS = 120_000


class BenchError(Exception):
    """A benchmark run failed (the statement failed or the client saw an error)."""


@attrs.define
class StreamRun:
    """One timed stream."""

    operation: str
    devices: int
    mts: int
    buffer_count: int
    bytes: int
    seconds: float
    commands: int
    engine_message: str = ""
    client_peak_rss: int = 0  # bytes, this process's VmHWM after the run
    area_size: int = 0  # the engine's buffer area (the configured data zone)

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


def large_buffer_count(devices: int) -> int:
    """The "large BUFFERCOUNT" of the matrix: 8 per device, at least 32."""
    return max(32, 8 * devices)


def _names(devices: int) -> list[str]:
    base = "bnch-" + uuid.uuid4().hex[:16]
    return [base] + [f"{base}-{i}" for i in range(1, devices)]


def peak_rss() -> int:
    """This process's peak resident set (VmHWM), bytes; 0 where /proc is missing."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _Timer:
    """First data command seen / last data completion, over every device thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.first: float | None = None
        self.last = 0.0
        self.bytes = 0
        self.commands = 0
        self.errors: list[str] = []

    def started(self, t: float) -> None:
        if self.first is None:
            with self.lock:
                if self.first is None or t < self.first:
                    self.first = t

    def add(self, nbytes: int, commands: int, last: float) -> None:
        with self.lock:
            self.bytes += nbytes
            self.commands += commands
            self.last = max(self.last, last)


DeviceLoop = Callable[[int, VirtualDevice, _Timer], None]


def _run_client(names: list[str], statement: Callable[[Connection], Any], conn: Connection,
                loop: DeviceLoop) -> tuple[_Timer, Any]:
    """Create the set, run ``statement`` on a thread, one client thread per device."""
    vds = VirtualDeviceSet()
    hr = vds.create(names[0], VDConfig(device_count=len(names)))
    if hr != HResult.NOERROR:
        raise BenchError(f"Create failed: 0x{hr:08x}")
    out: dict[str, Any] = {}

    def run_statement() -> None:
        try:
            out["result"] = statement(conn)
        except Exception as exc:  # reported below
            out["error"] = exc

    st = threading.Thread(target=run_statement, name="bench-statement", daemon=True)
    st.start()
    timer = _Timer()
    try:
        hr, _cfg = vds.get_configuration(GET_TIMEOUT_MS)
        if hr != HResult.NOERROR:
            raise BenchError(f"GetConfiguration failed: 0x{hr:08x} {out.get('result')}")
        devs: list[VirtualDevice] = []
        for n in names:
            hr, dev = vds.open_device(n)
            if dev is None:
                raise BenchError(f"OpenDevice({n}) failed: 0x{hr:08x}")
            devs.append(dev)

        def guarded(i: int, dev: VirtualDevice) -> None:
            try:
                loop(i, dev, timer)
            except Exception as exc:
                timer.errors.append(repr(exc))
                vds.signal_abort()

        threads = [threading.Thread(target=guarded, args=(i, d), daemon=True)
                   for i, d in enumerate(devs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        vds.close()
        st.join(timeout=GET_TIMEOUT_MS / 1000)
    if "error" in out:
        raise BenchError(f"statement failed: {out['error']!r}")
    if timer.errors:
        raise BenchError(f"client failed: {timer.errors}")
    return timer, out.get("result")


def _check(result: Any) -> str:
    if result is None or not result.ok:
        raise BenchError("statement failed: " + (result.text() if result is not None else "?"))
    texts = [m.text for m in result.messages if m.number == 3014]
    return texts[0] if texts else ""


# ----------------------------------------------------------------------------- BACKUP

def backup(conn: Connection, database: str, devices: int, mts: int,
           buffer_count: int | None = None, *,
           capture: list[bytearray] | None = None) -> StreamRun:
    """BACKUP ``database`` to ``devices`` virtual devices; the client reads and discards
    (or, with ``capture``, keeps each family's bytes for a later RESTORE, untimed)."""
    names = _names(devices)
    bc = buffer_count or default_buffer_count(devices)
    if capture is not None:
        capture[:] = [bytearray() for _ in names]
    targets = ", ".join(f"VIRTUAL_DEVICE = '{n}'" for n in names)
    sql = (f"BACKUP DATABASE [{database}] TO {targets} WITH MAXTRANSFERSIZE = {mts}, "
           f"BUFFERCOUNT = {bc}")

    def loop(i: int, dev: VirtualDevice, timer: _Timer) -> None:
        scratch = memoryview(bytearray(mts))
        keep = capture[i] if capture is not None else None
        nbytes = ncmd = 0
        last = 0.0
        while True:
            hr, cmd = dev.get_command(GET_TIMEOUT_MS)
            if cmd is None:
                if hr not in (HResult.VD_E_CLOSE,):
                    raise BenchError(f"GetCommand: 0x{hr:08x}")
                break
            if cmd.command_code == CommandCode.VDC_Write:
                if ncmd == 0:
                    timer.started(time.perf_counter())
                n = cmd.size
                assert cmd.buffer is not None
                if keep is not None:
                    keep += cmd.buffer
                else:
                    scratch[:n] = cmd.buffer  # read every byte, discard it
                dev.complete_command(cmd, Win32.ERROR_SUCCESS, n, 0)
                last = time.perf_counter()
                nbytes += n
                ncmd += 1
            else:
                dev.complete_command(cmd, Win32.ERROR_SUCCESS, 0, 0)
        timer.add(nbytes, ncmd, last)

    rss0 = peak_rss()
    timer, result = _run_client(names, lambda c: c.execute(sql), conn, loop)
    msg = _check(result)
    return StreamRun("backup", devices, mts, bc, timer.bytes,
                     timer.last - (timer.first or timer.last), timer.commands, msg,
                     max(0, peak_rss() - rss0), bc * mts)


# ----------------------------------------------------------------------------- RESTORE

def restore(conn: Connection, target: str, families: list[bytearray], mts: int,
            buffer_count: int | None = None) -> StreamRun:
    """RESTORE ``target`` from ``families`` (one per device) held in this process."""
    devices = len(families)
    names = _names(devices)
    bc = buffer_count or default_buffer_count(devices)
    plan = Plan("restore", target, tuple(names), max_transfer_size=mts, buffer_count=bc,
                read_sizes="max", replace=True)

    def loop(i: int, dev: VirtualDevice, timer: _Timer) -> None:
        src = memoryview(families[i])
        pos = 0
        nbytes = ncmd = 0
        last = 0.0
        while True:
            hr, cmd = dev.get_command(GET_TIMEOUT_MS)
            if cmd is None:
                if hr not in (HResult.VD_E_CLOSE,):
                    raise BenchError(f"GetCommand: 0x{hr:08x}")
                break
            if cmd.command_code == CommandCode.VDC_Read:
                if ncmd == 0:
                    timer.started(time.perf_counter())
                k = min(cmd.size, len(src) - pos)
                buf: Command = cmd
                assert buf.buffer is not None
                if k > 0:
                    buf.buffer[:k] = src[pos:pos + k]
                    pos += k
                    dev.complete_command(cmd, Win32.ERROR_SUCCESS, k, 0)
                    last = time.perf_counter()
                    nbytes += k
                    ncmd += 1
                else:
                    dev.complete_command(cmd, Win32.ERROR_HANDLE_EOF, 0, 0)
            else:
                dev.complete_command(cmd, Win32.ERROR_SUCCESS, 0, 0)
        timer.add(nbytes, ncmd, last)

    timer, result = _run_client(names, lambda c: c.run_plan(plan), conn, loop)
    msg = _check(result)
    return StreamRun("restore", devices, mts, bc, timer.bytes,
                     timer.last - (timer.first or timer.last), timer.commands, msg, 0, bc * mts)


# ----------------------------------------------------------------------------- engine

class EngineHost:
    """One engine process for the whole suite, with its synthetic databases."""

    def __init__(self) -> None:
        self.engine = Engine.start()
        self.conn = self.engine.connect()
        self._dbs: dict[int, str] = {}

    def database(self, mib: int) -> str:
        name = self._dbs.get(mib)
        if name is None:
            name = f"bench{mib}m"
            r = self.conn.execute(f"CREATE DATABASE {name} WITH SIZE_MB = {mib}")
            if not r.ok:
                raise BenchError(r.text())
            self._dbs[mib] = name
        return name

    def drop(self, mib: int) -> None:
        name = self._dbs.pop(mib, None)
        if name is not None:
            self.conn.execute(f"DROP DATABASE {name}")

    def engine_rss(self) -> int:
        pid = self.engine.pid
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            self.engine.stop()
