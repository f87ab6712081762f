"""A reference VDI client: backs up to files and restores from them, as a careful backup tool
would (spec §1.6).  The demo and the tests use it; read it as an example of the client API.

Each device is a file in ``media_dir``.  Device models (§5.1):

- ``pipe``: sequential file; Read at the end returns a short count with ERROR_HANDLE_EOF.
- ``disk``: random access by byte position; Flush sets end of file (§6.4).
- ``tape``: the file plus ``<file>.marks`` (JSON byte offsets of filemarks); positions are block
  addresses; a Read that reaches a filemark stops there with ERROR_FILEMARK_DETECTED.

Rules it follows: every command completed exactly once; unknown commands answered
ERROR_NOT_SUPPORTED; Write data durable (fsync) at Flush and at Complete; with
VDF_RequestComplete the backup is final only at VDC_Complete, never at a Flush; Close only after
VD_E_CLOSE on every device or after abort; the statement's outcome, not VD_E_CLOSE, decides
success (§1.6 step 10).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from typing import BinaryIO, Literal

import attrs

from vdisim.client import Command, VirtualDevice, VirtualDeviceSet
from vdisim.engine.connection import Connection, Result
from vdisim.protocol.codes import (
    CommandCode,
    Feature,
    HResult,
    VDF_LikeDisk,
    VDF_LikePipe,
    VDF_LikeTape,
    Win32,
    hresult_name,
)
from vdisim.protocol.records import VDConfig

Model = Literal["pipe", "tape", "disk"]
MODEL_FEATURES = {"pipe": VDF_LikePipe, "tape": VDF_LikeTape, "disk": VDF_LikeDisk}


@attrs.define
class DeviceStats:
    name: str
    commands: dict[str, int] = attrs.field(factory=dict)
    bytes: int = 0
    end: str = ""


@attrs.define
class ClientReport:
    """What happened, from the client's side."""

    set_name: str
    statement: str
    result: Result | None = None
    devices: list[DeviceStats] = attrs.field(factory=list)
    seconds: float = 0.0
    create_hr: int = 0
    config_hr: int = 0
    close_hr: int = 0
    aborted: bool = False
    log: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok and not self.aborted

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.devices)


class FileMedia:
    """One device's medium: a file, with the command semantics of the chosen model."""

    def __init__(self, path: str, model: Model, block_size: int, writing: bool,
                 durable: bool = True) -> None:
        self.path = path
        self.model = model
        self.block = max(1, block_size)
        self.durable = durable
        mode = "w+b" if writing else "rb"
        if writing and model == "disk" and os.path.exists(path):
            mode = "r+b"  # WITH INIT over an existing file: Flush truncates (§6.4)
        self.f: BinaryIO = open(path, mode)  # type: ignore[assignment]
        self.pos = 0
        self.high = 0
        self.marks: list[int] = []
        self.passed = -1  # byte offset of the last filemark read past
        if model == "tape" and not writing and os.path.exists(path + ".marks"):
            with open(path + ".marks") as mf:
                self.marks = [int(x) for x in json.load(mf)]

    def write(self, data: memoryview, position: int) -> tuple[int, int]:
        if self.model == "disk":
            self.pos = position
        self.f.seek(self.pos)
        n = self.f.write(data)
        self.pos += n
        self.high = max(self.high, self.pos)
        return Win32.ERROR_SUCCESS, n

    def read(self, out: memoryview, position: int) -> tuple[int, int]:
        if self.model == "disk":
            self.pos = position
        limit = len(out)
        code = Win32.ERROR_SUCCESS
        mark = None
        if self.model == "tape":
            mark = next((m for m in self.marks if m >= self.pos and m > self.passed), None)
            if mark is not None and mark < self.pos + limit:
                limit = mark - self.pos
                code = Win32.ERROR_FILEMARK_DETECTED
        self.f.seek(self.pos)
        n = self.f.readinto(out[:limit])  # type: ignore[attr-defined]
        self.pos += n
        if code == Win32.ERROR_FILEMARK_DETECTED and mark is not None:
            self.passed = mark  # the position is now past the filemark
        elif n < len(out):
            code = Win32.ERROR_HANDLE_EOF
        return code, n

    def rewind(self) -> None:
        self.pos = 0
        self.passed = -1

    def flush(self) -> int:
        self.f.flush()
        if self.model == "disk":
            self.f.truncate(self.high)  # Flush sets end of file (§6.4)
        if self.durable:
            os.fsync(self.f.fileno())
        if self.model == "tape":
            with open(self.path + ".marks", "w") as mf:
                json.dump(self.marks, mf)
        return Win32.ERROR_SUCCESS

    def write_mark(self) -> int:
        self.marks.append(self.pos)
        return Win32.ERROR_SUCCESS

    def skip_marks(self, count: int) -> int:
        """Move past the next ``count`` filemarks (forward only; reverse needs
        VDF_ReversePosition and is not modelled)."""
        ahead = [m for m in self.marks if m >= self.pos and m > self.passed]
        if count < 1 or len(ahead) < count:
            return Win32.ERROR_NO_DATA_DETECTED
        self.pos = self.passed = ahead[count - 1]
        return Win32.ERROR_SUCCESS

    def get_position(self) -> tuple[int, int]:
        return Win32.ERROR_SUCCESS, self.pos // self.block if self.model == "tape" else self.pos

    def set_position(self, position: int, whence: int) -> tuple[int, int]:
        if self.model == "tape":
            self.pos = position * self.block
            self.passed = self.pos - 1
        else:
            base = {0: 0, 1: self.pos, 2: os.fstat(self.f.fileno()).st_size}.get(whence, 0)
            self.pos = base + position
        return self.get_position()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.f.close()


def _serve_device(vds: VirtualDeviceSet, dev: VirtualDevice, media: FileMedia,
                  stats: DeviceStats, features: int, timeout_ms: int,
                  on_bytes: Callable[[int], None] | None, snapshot: SnapshotFiles | None,
                  log: list[str]) -> None:
    """The per-device command loop (§1.6 step 8)."""
    while True:
        hr, cmd = dev.get_command(timeout_ms)
        if hr == HResult.VD_E_TIMEOUT:
            continue  # the engine may be slow; the statement thread decides when to give up
        if cmd is None:
            stats.end = hresult_name(hr)
            return
        name = cmd.name
        stats.commands[name] = stats.commands.get(name, 0) + 1
        code, nbytes, pos = _perform(cmd, media, features, snapshot)
        if cmd.command_code in (CommandCode.VDC_Read, CommandCode.VDC_Write):
            stats.bytes += nbytes
            if on_bytes is not None:
                on_bytes(nbytes)
        rc = dev.complete_command(cmd, code, nbytes, pos)
        if rc != HResult.NOERROR:
            log.append(f"{dev.name}: CompleteCommand({name}) -> {hresult_name(rc)}")
            if rc == HResult.VD_E_ABORT:
                stats.end = "VD_E_ABORT"
                return


def _perform(cmd: Command, media: FileMedia, features: int,
             snapshot: SnapshotFiles | None) -> tuple[int, int, int]:
    code = cmd.command_code
    try:
        if code == CommandCode.VDC_Write and cmd.buffer is not None:
            rc, n = media.write(cmd.buffer, cmd.position)
            return rc, n, 0
        if code == CommandCode.VDC_Read and cmd.buffer is not None:
            rc, n = media.read(cmd.buffer, cmd.position)
            return rc, n, 0
        if code in (CommandCode.VDC_Flush, CommandCode.VDC_Complete):
            return media.flush(), 0, 0
        if code == CommandCode.VDC_ClearError:
            return Win32.ERROR_SUCCESS, 0, 0
        positional = features & (Feature.VDF_Position | Feature.VDF_RandomAccess)
        if code == CommandCode.VDC_GetPosition and positional:
            rc, p = media.get_position()
            return rc, 0, p
        if code == CommandCode.VDC_SetPosition and positional:
            rc, p = media.set_position(cmd.position, cmd.size)
            return rc, 0, p
        if code == CommandCode.VDC_Rewind and features & Feature.VDF_Rewind:
            media.rewind()
            return Win32.ERROR_SUCCESS, 0, 0
        if code == CommandCode.VDC_WriteMark and features & Feature.VDF_FileMarks:
            return media.write_mark(), 0, 0
        if code == CommandCode.VDC_SkipMarks and features & Feature.VDF_FileMarks:
            return media.skip_marks(cmd.size), 0, 0
        if code == CommandCode.VDC_PrepareToFreeze:
            return Win32.ERROR_SUCCESS, 0, 0
        if code == CommandCode.VDC_Snapshot and snapshot is not None:
            return snapshot.take(), 0, 0
        if code == CommandCode.VDC_MountSnapshot and snapshot is not None:
            return snapshot.mount(), 0, 0
    except OSError:
        return (Win32.ERROR_DISK_FULL if code == CommandCode.VDC_Write
                else Win32.ERROR_IO_DEVICE), 0, 0
    return Win32.ERROR_NOT_SUPPORTED, 0, 0  # §6.4: anything else


@attrs.define
class SnapshotFiles:
    """The snapshot contract (docs/snapshot.md): copy these files at VDC_Snapshot into
    ``store``, and put them back at VDC_MountSnapshot."""

    files: list[str]
    store: str

    def take(self) -> int:
        os.makedirs(self.store, exist_ok=True)
        for path in self.files:
            shutil.copy2(path, os.path.join(self.store, os.path.basename(path)))
        return Win32.ERROR_SUCCESS

    def mount(self) -> int:
        for path in self.files:
            src = os.path.join(self.store, os.path.basename(path))
            if not os.path.exists(src):
                return Win32.ERROR_IO_DEVICE
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copy2(src, path)
        return Win32.ERROR_SUCCESS


def device_names(set_name: str, count: int) -> list[str]:
    """The first device is named after the set (§1.3); the others <set>1, <set>2, ..."""
    return [set_name] + [f"{set_name}{i}" for i in range(1, count)]


def media_paths(media_dir: str, count: int) -> list[str]:
    return [os.path.join(media_dir, f"stripe{i}.vbak") for i in range(count)]


def run(conn: Connection, statement: str, *, media_dir: str, devices: int, writing: bool,
        model: Model = "pipe", request_complete: bool = True, set_name: str | None = None,
        timeout_ms: int = 1000, config_timeout_s: float = 30.0, block_size: int = 512,
        server_timeout_ms: int = 0, on_bytes: Callable[[int], None] | None = None,
        snapshot: SnapshotFiles | None = None, durable: bool = True,
        features: int = 0) -> ClientReport:
    """Run ``statement`` (with ``{devices}`` standing for the VIRTUAL_DEVICE clauses) with this
    client serving the devices.  Blocks until the statement ends and the set is closed."""
    name = set_name or "{" + str(uuid.uuid4()).upper() + "}"
    names = device_names(name, devices)
    clauses = ", ".join(f"VIRTUAL_DEVICE = '{n}'" for n in names)
    sql = statement.format(devices=clauses)
    report = ClientReport(name, sql)
    os.makedirs(media_dir, exist_ok=True)
    feats = MODEL_FEATURES[model] | features
    if request_complete and writing:
        feats |= Feature.VDF_RequestComplete
    cfg = VDConfig(device_count=devices, features=feats, server_timeout=server_timeout_ms)
    vds = VirtualDeviceSet()
    started = time.monotonic()
    report.create_hr = vds.create(name, cfg)
    if report.create_hr != HResult.NOERROR:
        report.log.append(f"Create -> {hresult_name(report.create_hr)}")
        return report
    outcome: dict[str, Result] = {}
    sql_thread = threading.Thread(target=lambda: outcome.setdefault("r", conn.execute(sql)),
                                  daemon=True)
    sql_thread.start()
    # §1.6 step 6: loop with a short timeout, checking whether the statement already ended.
    deadline = time.monotonic() + config_timeout_s
    while True:
        hr, final = vds.get_configuration(200)
        if hr != HResult.VD_E_TIMEOUT or not sql_thread.is_alive() or time.monotonic() > deadline:
            break
    report.config_hr = hr
    medias: list[FileMedia] = []
    if hr == HResult.NOERROR and final is not None:
        paths = media_paths(media_dir, devices)
        bs = final.block_size or block_size
        threads = []
        for n, path in zip(names, paths, strict=True):
            ohr, dev = vds.open_device(n)
            if dev is None:
                report.log.append(f"OpenDevice({n}) -> {hresult_name(ohr)}")
                break
            media = FileMedia(path, model, bs, writing, durable)
            medias.append(media)
            stats = DeviceStats(n)
            report.devices.append(stats)
            t = threading.Thread(target=_serve_device, args=(
                vds, dev, media, stats, final.features, timeout_ms, on_bytes, snapshot,
                report.log), daemon=True)
            threads.append(t)
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
                if not sql_thread.is_alive() and t.is_alive():
                    # Statement over but a device never saw VD_E_CLOSE: give it a moment,
                    # then abort so nothing hangs.
                    t.join(5.0)
                    if t.is_alive():
                        vds.signal_abort()
    else:
        report.log.append(f"GetConfiguration -> {hresult_name(hr)}")
        vds.signal_abort()
    report.aborted = any(d.end == "VD_E_ABORT" for d in report.devices)
    report.close_hr = vds.close()
    for m in medias:
        m.close()
    sql_thread.join(60)
    report.result = outcome.get("r")
    report.seconds = time.monotonic() - started
    return report


def backup(conn: Connection, database: str, media_dir: str, *, devices: int = 1,
           options: str = "", log: bool = False, **kw: object) -> ClientReport:
    """BACKUP DATABASE|LOG ``database`` to files in ``media_dir`` through VDI."""
    what = "LOG" if log else "DATABASE"
    with_clause = f" WITH {options}" if options else ""
    return run(conn, f"BACKUP {what} [{database}] TO {{devices}}{with_clause}",
               media_dir=media_dir, devices=devices, writing=True, **kw)  # type: ignore[arg-type]


def restore(conn: Connection, database: str | None, media_dir: str, *, devices: int = 1,
            options: str = "", kind: str = "DATABASE", **kw: object) -> ClientReport:
    """RESTORE ``kind`` (DATABASE, LOG, VERIFYONLY, HEADERONLY, ...) from files in
    ``media_dir`` through VDI."""
    target = f" [{database}]" if database and kind in ("DATABASE", "LOG") else ""
    with_clause = f" WITH {options}" if options else ""
    return run(conn, f"RESTORE {kind}{target} FROM {{devices}}{with_clause}",
               media_dir=media_dir, devices=devices, writing=False, **kw)  # type: ignore[arg-type]
