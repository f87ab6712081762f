"""End-to-end BACKUP / RESTORE over VDI: the reference client (vdisim/refclient.py) and small
hand-written clients against a real engine process.

Covers byte-identical round trips over a pairwise covering set of transfer parameters, restore
Read sizes (§1.10), the full/differential/log chain, the metadata-only RESTOREs, T-SQL messages,
the error-completion protocol (§6.6, §8.1), several Flushes and unknown commands (§6.4), and
snapshot backup/restore (§6.4, §6.7, §9).
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from vdisim import refclient
from vdisim.client import Command, VirtualDevice, VirtualDeviceSet
from vdisim.engine import Connection, Engine, Plan
from vdisim.engine import operations
from vdisim.engine.connection import Result
from vdisim.protocol.codes import VDF_LikePipe, CommandCode, Feature, HResult, Win32
from vdisim.protocol.records import VDConfig

KIB = 1024
MIB = 1024 * 1024
C = CommandCode


# -- helpers ------------------------------------------------------------------------------


def new_db(conn: Connection, size_mb: int = 1, prefix: str = "br") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    r = conn.execute(f"CREATE DATABASE [{name}] WITH SIZE_MB = {size_mb}")
    assert r.ok, r.text()
    return name


def drop(conn: Connection, *names: str) -> None:
    for n in names:
        conn.execute(f"DROP DATABASE IF EXISTS [{n}]")


def checksum(conn: Connection, db: str) -> str:
    r = conn.execute(f"EXEC sp_vdisim_checksum '{db}'")
    assert r.ok, r.text()
    row = r.rowsets[0].rows[0]
    assert len(row[1]) == 64
    return str(row[1])


def new_set_name() -> str:
    return "{" + str(uuid.uuid4()).upper() + "}"


class RecordingDevice:
    """Wraps a real VirtualDevice; records every command delivered and how the loop ended."""

    def __init__(self, dev: VirtualDevice) -> None:
        self._dev = dev
        self.name = dev.name
        self.commands: list[tuple[int, int]] = []  # (command_code, size)
        self.end: int | None = None

    def get_command(self, timeout_ms: int) -> tuple[int, Command | None]:
        hr, cmd = self._dev.get_command(timeout_ms)
        if cmd is not None:
            self.commands.append((int(cmd.command_code), int(cmd.size)))
        elif hr != HResult.VD_E_TIMEOUT:
            self.end = hr
        return hr, cmd

    def complete_command(self, cmd: Command, code: int, nbytes: int, position: int) -> int:
        return self._dev.complete_command(cmd, code, nbytes, position)

    def codes(self) -> list[int]:
        return [c for c, _ in self.commands]

    def sizes(self, code: int) -> list[int]:
        return [s for c, s in self.commands if c == code]


class RecordingSet(VirtualDeviceSet):
    """The real client library, plus a record of the final configuration and the devices."""

    created: list[RecordingSet] = []

    def __init__(self) -> None:
        super().__init__()
        self.final_features: int | None = None
        self.devices: list[RecordingDevice] = []
        RecordingSet.created.append(self)

    def get_configuration(self, timeout_ms: int) -> tuple[int, VDConfig | None]:
        hr, cfg = super().get_configuration(timeout_ms)
        if cfg is not None:
            self.final_features = cfg.features
        return hr, cfg

    def open_device(self, name: str) -> tuple[int, Any]:
        hr, dev = super().open_device(name)
        if dev is None:
            return hr, dev
        rec = RecordingDevice(dev)
        self.devices.append(rec)
        return hr, rec


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RecordingSet]]:
    """Make refclient use RecordingSet; yields the sets it created, in order."""
    RecordingSet.created = []
    monkeypatch.setattr(refclient, "VirtualDeviceSet", RecordingSet)
    yield RecordingSet.created


def numbers(r: Result) -> list[int]:
    return [m.number for m in r.messages]


# -- a tiny hand-written client ------------------------------------------------------------

Handler = Callable[[int, Command], tuple[int, int]]  # (device, cmd) -> (code, bytes)


@attrs.define
class Served:
    result: Result | None
    features: int
    commands: list[list[tuple[int, int, int]]]  # per device: (code, size, completion code)
    ends: list[int]
    close_hr: int
    data: list[bytearray]


def serve(conn: Connection, name: str, devices: int, features: int,
          statement: Callable[[Connection], Result], handler: Handler | None = None,
          device_loop: Callable[[int, VirtualDevice, Served], None] | None = None) -> Served:
    """Create a set, run ``statement`` on a thread, and serve every device: by default Write
    data is kept in ``data[i]`` and answered with ``handler`` (default: success for Write,
    Flush, Complete, ClearError; ERROR_NOT_SUPPORTED otherwise)."""
    vds = VirtualDeviceSet()
    assert vds.create(name, VDConfig(device_count=devices, features=features)) == HResult.NOERROR
    out: dict[str, Result] = {}
    t = threading.Thread(target=lambda: out.setdefault("r", statement(conn)), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while True:
        hr, cfg = vds.get_configuration(200)
        if hr != HResult.VD_E_TIMEOUT or not t.is_alive() or time.monotonic() > deadline:
            break
    served = Served(None, cfg.features if cfg else 0, [[] for _ in range(devices)],
                    [0] * devices, 0, [bytearray() for _ in range(devices)])
    threads = []
    if hr == HResult.NOERROR:
        names = refclient.device_names(name, devices)
        for i, n in enumerate(names):
            ohr, dev = vds.open_device(n)
            assert dev is not None, hex(ohr)
            loop = device_loop or _default_loop(handler)
            th = threading.Thread(target=loop, args=(i, dev, served), daemon=True)
            threads.append(th)
            th.start()
        for th in threads:
            th.join(30)
            if th.is_alive():
                vds.signal_abort()
                th.join(5)
    else:
        vds.signal_abort()
    served.close_hr = vds.close()
    t.join(30)
    served.result = out.get("r")
    assert served.result is not None, "the statement did not end"
    return served


def default_answer(i: int, cmd: Command, data: bytearray) -> tuple[int, int]:
    code = cmd.command_code
    if code == C.VDC_Write and cmd.buffer is not None:
        data += cmd.buffer
        return Win32.ERROR_SUCCESS, cmd.size
    if code in (C.VDC_Flush, C.VDC_Complete, C.VDC_ClearError):
        return Win32.ERROR_SUCCESS, 0
    return Win32.ERROR_NOT_SUPPORTED, 0


def _default_loop(handler: Handler | None) -> Callable[[int, VirtualDevice, Served], None]:
    def loop(i: int, dev: VirtualDevice, served: Served) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            hr, cmd = dev.get_command(1000)
            if hr == HResult.VD_E_TIMEOUT:
                continue
            if cmd is None:
                served.ends[i] = hr
                return
            if handler is not None:
                code, n = handler(i, cmd)
                if code == Win32.ERROR_SUCCESS and cmd.command_code == C.VDC_Write:
                    assert cmd.buffer is not None
                    served.data[i] += cmd.buffer[:n]
            else:
                code, n = default_answer(i, cmd, served.data[i])
            served.commands[i].append((int(cmd.command_code), int(cmd.size), code))
            dev.complete_command(cmd, code, n, 0)
    return loop


def save_media(served: Served, media_dir: str) -> None:
    """Store what a pipe backup wrote the way refclient keeps its media (stripe<i>.vbak)."""
    os.makedirs(media_dir, exist_ok=True)
    for path, data in zip(refclient.media_paths(media_dir, len(served.data)), served.data,
                          strict=True):
        with open(path, "wb") as f:
            f.write(data)


# -- 1. round trips over a pairwise covering set -----------------------------------------

MODELS = ("pipe", "tape", "disk")
DEVICES = (1, 2, 64)
BLOCKSIZES = (512, 4096, 65536)
MAXTRANSFERS = (65536, 1048576, 4194304)
COMPLETE = (False, True)

# Level indexes (model, devices, BLOCKSIZE, MAXTRANSFERSIZE, request_complete).  Rows 1-9 are
# the L9(3^4) orthogonal array; rows 10-12 cover the (model, request_complete) pairs it
# misses (a 2-colouring of AG(2,3) always leaves a monochromatic line, so 9 rows cannot do).
COVERING_ARRAY: tuple[tuple[int, int, int, int, int], ...] = (
    (0, 0, 0, 0, 0),
    (0, 1, 1, 2, 0),
    (0, 2, 2, 1, 0),
    (1, 0, 1, 1, 0),
    (1, 1, 2, 0, 0),
    (1, 2, 0, 2, 1),
    (2, 0, 2, 2, 1),
    (2, 1, 0, 1, 1),
    (2, 2, 1, 0, 1),
    (0, 0, 0, 0, 1),
    (2, 0, 0, 0, 0),
    (1, 1, 2, 2, 1),
)
LEVELS = (MODELS, DEVICES, BLOCKSIZES, MAXTRANSFERS, COMPLETE)


def test_covering_array_is_pairwise_complete() -> None:
    """Every pair of levels of every two factors appears in some case."""
    for a, b in itertools.combinations(range(len(LEVELS)), 2):
        seen = {(row[a], row[b]) for row in COVERING_ARRAY}
        want = set(itertools.product(range(len(LEVELS[a])), range(len(LEVELS[b]))))
        assert seen == want, (a, b, want - seen)
    assert len(set(COVERING_ARRAY)) == len(COVERING_ARRAY)


ROUND_TRIPS = [
    pytest.param(MODELS[m], DEVICES[d], BLOCKSIZES[b], MAXTRANSFERS[t], COMPLETE[c],
                 id=f"{MODELS[m]}-{DEVICES[d]}dev-bs{BLOCKSIZES[b]}-mts{MAXTRANSFERS[t]}-"
                    f"{'complete' if COMPLETE[c] else 'nocomplete'}")
    for m, d, b, t, c in COVERING_ARRAY
]


@pytest.mark.parametrize(("model", "devices", "block", "mts", "request_complete"), ROUND_TRIPS)
def test_round_trip_is_byte_identical(conn: Connection, tmp_path: Any,
                                      recorded: list[RecordingSet], model: str, devices: int,
                                      block: int, mts: int, request_complete: bool) -> None:
    """§1.6/§1.7 backup then restore through the reference client gives a byte-identical
    database, for every device model (§5.1), 1/2/64 devices (§1.8), BLOCKSIZE and
    MAXTRANSFERSIZE (§1.10).  VDC_Complete (§6.4) arrives exactly when the client asked for
    it with VDF_RequestComplete, and VDF_CompleteEnabled comes back exactly then (§5)."""
    db = new_db(conn, 1)
    target = db + "_r"
    try:
        before = checksum(conn, db)
        options = f"BLOCKSIZE = {block}, MAXTRANSFERSIZE = {mts}, BUFFERCOUNT = {devices + 2}"
        media_dir = str(tmp_path / "media")
        rep = refclient.backup(conn, db, media_dir, devices=devices, model=model,  # type: ignore[arg-type]
                               options=options, request_complete=request_complete)
        assert rep.ok, (rep.log, rep.result and rep.result.text())
        assert rep.close_hr == HResult.NOERROR
        bset = recorded[-1]
        assert bset.final_features is not None
        assert bset.final_features & Feature.VDF_WriteMedia
        enabled = bool(bset.final_features & Feature.VDF_CompleteEnabled)
        assert enabled is request_complete, hex(bset.final_features)
        assert len(bset.devices) == devices
        for dev in bset.devices:
            codes = dev.codes()
            assert dev.end == HResult.VD_E_CLOSE, dev.name
            assert C.VDC_Write in codes, dev.name
            assert all(s % block == 0 and 0 < s <= mts for s in dev.sizes(C.VDC_Write))
            if request_complete:
                assert codes.count(C.VDC_Complete) == 1
                assert codes[-1] == C.VDC_Complete  # the last command, after the Flush
                assert C.VDC_Flush in codes
            else:
                assert C.VDC_Complete not in codes
        assert rep.bytes == sum(os.path.getsize(p)
                                for p in refclient.media_paths(media_dir, devices))

        rep = refclient.restore(conn, target, media_dir, devices=devices, model=model,  # type: ignore[arg-type]
                                options=options + ", REPLACE")
        assert rep.ok, (rep.log, rep.result and rep.result.text())
        rset = recorded[-1]
        assert rset.final_features is not None
        assert rset.final_features & Feature.VDF_ReadMedia
        assert not rset.final_features & (Feature.VDF_CompleteEnabled | Feature.VDF_WriteMedia)
        for dev in rset.devices:
            assert dev.end == HResult.VD_E_CLOSE
            assert C.VDC_Complete not in dev.codes() and C.VDC_Write not in dev.codes()
        assert checksum(conn, target) == before
        assert checksum(conn, db) == before
    finally:
        drop(conn, db, target)
