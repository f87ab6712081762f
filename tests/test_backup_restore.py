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
from vdisim.engine import Connection, Engine, Plan, operations
from vdisim.engine.connection import Result
from vdisim.engine.database import PAGE_SIZE
from vdisim.engine.media import FAMILY_HEADER_SIZE, SET_HEADER_SIZE
from vdisim.protocol.codes import CommandCode, Feature, HResult, VDF_LikePipe, Win32
from vdisim.protocol.records import VDConfig

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
        self.abort_reason: int | None = None  # diagnostics: why the set was aborted
        RecordingSet.created.append(self)

    def get_configuration(self, timeout_ms: int) -> tuple[int, VDConfig | None]:
        hr, cfg = super().get_configuration(timeout_ms)
        if cfg is not None:
            self.final_features = cfg.features
        return hr, cfg

    def close(self) -> int:
        core = self._core
        self.abort_reason = core.abort_reason if core is not None else None
        return super().close()

    def open_device(self, name: str) -> tuple[int, Any]:
        hr, dev = super().open_device(name)
        if dev is None:
            return hr, dev
        rec = RecordingDevice(dev)
        self.devices.append(rec)
        return hr, rec


@pytest.fixture(autouse=True)
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RecordingSet]]:
    """Make refclient use RecordingSet; yields the sets it created, in order."""
    RecordingSet.created = []
    monkeypatch.setattr(refclient, "VirtualDeviceSet", RecordingSet)
    yield RecordingSet.created


def explain(rep: refclient.ClientReport) -> str:
    """Everything about a failed refclient run, for the assertion message."""
    sets = [s for s in RecordingSet.created if s.devices and s.devices[0].name == rep.set_name]
    reason = sets[-1].abort_reason if sets else None
    return (f"{rep.result.text() if rep.result else 'no result'}\nlog={rep.log} "
            f"devices={rep.devices} config_hr={rep.config_hr:#x} abort_reason={reason}")


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
    try:
        assert hr == HResult.NOERROR, hex(hr)
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
    finally:
        if hr != HResult.NOERROR or any(th.is_alive() for th in threads):
            vds.signal_abort()  # something went wrong: never leave the set behind
            for th in threads:
                th.join(5)
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
        assert rep.ok, explain(rep)
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
        assert rep.ok, explain(rep)
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


# -- 2. restore Read sizes (§1.10) ------------------------------------------------------------


@pytest.mark.parametrize(("size_mb", "block", "mts"), [(1, 512, 65536), (2, 4096, 262144)],
                         ids=["bs512-mts64k", "bs4096-mts256k"])
def test_restore_read_sizes_are_unrelated_to_the_backup(conn: Connection, tmp_path: Any,
                                                         recorded: list[RecordingSet],
                                                         size_mb: int, block: int,
                                                         mts: int) -> None:
    """§1.10: RESTORE asks for any multiple of BLOCKSIZE up to MAXTRANSFERSIZE, in a sequence
    unrelated to the BACKUP's; the client treats the data as a byte stream and the database
    still comes back byte-identical."""
    db = new_db(conn, size_mb)
    try:
        before = checksum(conn, db)
        options = f"BLOCKSIZE = {block}, MAXTRANSFERSIZE = {mts}"
        rep = refclient.backup(conn, db, str(tmp_path), options=options)
        assert rep.ok, explain(rep)
        writes = recorded[-1].devices[0].sizes(C.VDC_Write)
        rep = refclient.restore(conn, db, str(tmp_path), options=options + ", REPLACE")
        assert rep.ok, explain(rep)
        reads = recorded[-1].devices[0].sizes(C.VDC_Read)
        assert len(reads) >= 4
        assert all(s % block == 0 and block <= s <= mts for s in reads), reads
        body = reads[:-2]  # without the family's last (clipped) Read and the EOF probe
        assert len(set(body)) >= 3, reads  # varying sizes, not one fixed transfer size
        assert reads != writes
        assert set(body) - set(writes), (reads, writes)  # sizes the backup never wrote
        assert checksum(conn, db) == before
    finally:
        drop(conn, db)


# -- 3. full / differential / log chain ------------------------------------------------------


@attrs.define
class Chain:
    db: str
    dirs: dict[str, str]  # full, diff, log1, log2 -> media dir
    hashes: dict[str, str]  # checksum right after each backup


@pytest.fixture(scope="module")
def chain(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """CREATE DATABASE, full, workload, diff, workload, log, workload, log (1 device, pipe)."""
    base = tmp_path_factory.mktemp("chain")
    with engine.connect() as conn:
        db = new_db(conn, 1, "chain")
        dirs = {k: str(base / k) for k in ("full", "diff", "log1", "log2")}
        hashes: dict[str, str] = {}
        steps = (("full", {}), ("diff", {"options": "DIFFERENTIAL"}), ("log1", {"log": True}),
                 ("log2", {"log": True}))
        for seed, (key, kw) in enumerate(steps):
            if key != "full":
                r = conn.execute(f"EXEC sp_vdisim_workload '{db}', 40, {seed + 7}")
                assert r.ok, r.text()
            rep = refclient.backup(conn, db, dirs[key], **kw)  # type: ignore[arg-type]
            assert rep.ok, explain(rep)
            hashes[key] = checksum(conn, db)
        assert len(set(hashes.values())) == 4  # every workload changed the database
        yield Chain(db, dirs, hashes)
        drop(conn, db)


def test_full_diff_log_chain_restores_to_last_log_backup(conn: Connection, chain: Chain) -> None:
    """§1.6 step 10, docs/media.md (restore sequencing): RESTORE full, diff, log WITH
    NORECOVERY, log WITH RECOVERY into a new name gives the source as it was at the last log
    backup, not as it is now."""
    target = chain.db + "_chain"
    try:
        r = conn.execute(f"EXEC sp_vdisim_workload '{chain.db}', 30, 99")  # after the chain
        assert r.ok
        assert checksum(conn, chain.db) != chain.hashes["log2"]
        steps = (("full", "DATABASE", "NORECOVERY"), ("diff", "DATABASE", "NORECOVERY"),
                 ("log1", "LOG", "NORECOVERY"), ("log2", "LOG", "RECOVERY"))
        for key, kind, recovery in steps:
            rep = refclient.restore(conn, target, chain.dirs[key], kind=kind, options=recovery)
            assert rep.ok, (key, explain(rep))
            assert numbers(rep.result)[-1] == 3014  # type: ignore[arg-type]
            state = conn.execute(f"EXEC sp_vdisim_checksum '{target}'").rowsets[0].rows[0][4]
            assert state == ("ONLINE" if recovery == "RECOVERY" else "RESTORING"), key
        assert checksum(conn, target) == chain.hashes["log2"]
    finally:
        drop(conn, target)


def test_log_restored_out_of_order_fails_4305(conn: Connection, chain: Chain) -> None:
    """docs/media.md (restore sequencing): skipping the first log backup, the second begins
    after the restored database's redo point -> 4305 then 3013; the first log still applies
    afterwards."""
    target = chain.db + "_ooo"
    try:
        for key, kind in (("full", "DATABASE"), ("diff", "DATABASE")):
            rep = refclient.restore(conn, target, chain.dirs[key], kind=kind,
                                    options="NORECOVERY")
            assert rep.ok, explain(rep)
        rep = refclient.restore(conn, target, chain.dirs["log2"], kind="LOG",
                                options="NORECOVERY")
        assert rep.result is not None and not rep.result.ok
        assert rep.result.error_numbers == [4305, 3013]
        assert rep.close_hr == HResult.NOERROR
        rep = refclient.restore(conn, target, chain.dirs["log1"], kind="LOG",
                                options="NORECOVERY")
        assert rep.ok, explain(rep)
        rep = refclient.restore(conn, target, chain.dirs["log2"], kind="LOG")
        assert rep.ok, explain(rep)
        assert checksum(conn, target) == chain.hashes["log2"]
    finally:
        drop(conn, target)


def test_log_restore_onto_online_database_fails_3117(conn: Connection, chain: Chain) -> None:
    """docs/media.md: a log backup cannot roll forward an ONLINE database: 3117 then 3013,
    database unchanged."""
    before = checksum(conn, chain.db)
    rep = refclient.restore(conn, chain.db, chain.dirs["log1"], kind="LOG")
    assert rep.result is not None
    assert rep.result.error_numbers == [3117, 3013]
    assert checksum(conn, chain.db) == before


# -- 4. metadata-only RESTOREs ----------------------------------------------------------------


def test_headeronly_reports_type_and_lsns(conn: Connection, chain: Chain) -> None:
    """§5 (VDF_ReadMedia reads), docs/media.md rowsets: HEADERONLY gives BackupType 1 full,
    5 differential, 2 log, and integer LSNs that chain."""
    rows = {}
    for key in ("full", "diff", "log1", "log2"):
        rep = refclient.restore(conn, None, chain.dirs[key], kind="HEADERONLY")
        assert rep.ok, explain(rep)
        assert rep.result is not None and len(rep.result.rowsets) == 1
        (row,) = rep.result.rowsets[0].dicts()
        rows[key] = row
        assert row["DatabaseName"] == chain.db
        assert isinstance(row["FirstLSN"], int) and isinstance(row["LastLSN"], int)
        assert row["FirstLSN"] <= row["LastLSN"]
    assert [rows[k]["BackupType"] for k in ("full", "diff", "log1", "log2")] == [1, 5, 2, 2]
    assert rows["log1"]["LastLSN"] == rows["log2"]["FirstLSN"]
    assert rows["log1"]["FirstLSN"] < rows["log2"]["FirstLSN"]


def test_filelistonly_and_labelonly(conn: Connection, chain: Chain) -> None:
    """docs/media.md rowsets: FILELISTONLY lists the data (D) and log (L) files, LABELONLY
    the one-family media label."""
    rep = refclient.restore(conn, None, chain.dirs["full"], kind="FILELISTONLY")
    assert rep.ok, explain(rep)
    assert rep.result is not None
    files = rep.result.rowsets[0].dicts()
    assert [(f["LogicalName"], f["Type"]) for f in files] == [(chain.db, "D"),
                                                             (chain.db + "_log", "L")]
    rep = refclient.restore(conn, None, chain.dirs["full"], kind="LABELONLY")
    assert rep.ok, explain(rep)
    assert rep.result is not None
    (label,) = rep.result.rowsets[0].dicts()
    assert label["FamilyCount"] == 1 and label["FamilySequenceNumber"] == 1
    assert label["MediaSetId"]


def test_verifyonly_valid_set(conn: Connection, chain: Chain) -> None:
    """VERIFYONLY of an intact set: only message 3262, no error."""
    for key in ("full", "diff", "log1"):
        rep = refclient.restore(conn, None, chain.dirs[key], kind="VERIFYONLY")
        assert rep.ok, explain(rep)
        assert rep.result is not None
        assert numbers(rep.result) == [3262]
        assert rep.result.messages[0].text == "The backup set on file 1 is valid."


def corrupt_copy(src: str, dst: str) -> int:
    """Copy a 1-device media dir and flip one byte in the middle of the payload; returns the
    byte's offset in the family."""
    shutil.copytree(src, dst)
    (path,) = refclient.media_paths(dst, 1)
    offset = os.path.getsize(path) // 2 + 100
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))
    return offset


def test_verifyonly_detects_one_corrupt_byte(conn: Connection, chain: Chain,
                                             tmp_path: Any) -> None:
    """§1.10 (the client must reproduce the stream exactly): one flipped payload byte ->
    VERIFYONLY fails with 3189 (damaged backup set) + 3013."""
    bad = str(tmp_path / "bad")
    corrupt_copy(chain.dirs["full"], bad)
    rep = refclient.restore(conn, None, bad, kind="VERIFYONLY")
    assert rep.result is not None
    assert rep.result.error_numbers == [3189, 3013]
    assert rep.close_hr == HResult.NOERROR


def test_verifyonly_with_checksum_detects_corrupt_page(conn: Connection, tmp_path: Any) -> None:
    """Backup WITH CHECKSUM, one flipped byte in a page: VERIFYONLY WITH CHECKSUM -> 3183."""
    db = new_db(conn, 1)
    try:
        rep = refclient.backup(conn, db, str(tmp_path / "good"), options="CHECKSUM")
        assert rep.ok, explain(rep)
        rep = refclient.restore(conn, None, str(tmp_path / "good"), kind="VERIFYONLY",
                                options="CHECKSUM")
        assert rep.ok, explain(rep)
        bad = str(tmp_path / "bad")
        offset = corrupt_copy(str(tmp_path / "good"), bad)
        rep = refclient.restore(conn, None, bad, kind="VERIFYONLY", options="CHECKSUM")
        assert rep.result is not None
        assert rep.result.error_numbers == [3183, 3013]
        # docs/media.md: family header area, set header, then the full image's pages
        page = (offset - FAMILY_HEADER_SIZE - SET_HEADER_SIZE) // PAGE_SIZE
        assert f"page (1:{page}) in database" in rep.result.messages[0].text
        before = checksum(conn, db)
        rep = refclient.restore(conn, db, bad, options="REPLACE, CHECKSUM")
        assert rep.result is not None and rep.result.error_numbers == [3183, 3013]
        assert checksum(conn, db) == before
    finally:
        drop(conn, db)


# -- 5. messages ------------------------------------------------------------------------------


def test_backup_messages_4035_and_3014(conn: Connection, tmp_path: Any) -> None:
    """BACKUP prints one 4035 line per file, then 3014 with the total page count."""
    db = new_db(conn, 2)
    try:
        rep = refclient.backup(conn, db, str(tmp_path))
        assert rep.ok and rep.result is not None
        msgs = rep.result.messages
        assert [m.number for m in msgs] == [4035, 4035, 3014]
        assert msgs[0].text == f"Processed 256 pages for database '{db}', file '{db}' on file 1."
        assert msgs[1].text.startswith("Processed ")
        assert msgs[1].text.endswith(f" pages for database '{db}', file '{db}_log' on file 1.")
        pages = sum(int(m.text.split()[1]) for m in msgs[:2])
        assert msgs[2].text.startswith(f"BACKUP DATABASE successfully processed {pages} pages "
                                       "in ")
        assert all(m.severity == 0 for m in msgs)
    finally:
        drop(conn, db)


def test_backup_stats_50_reports_progress(conn: Connection, tmp_path: Any) -> None:
    """STATS = 50 -> 3211 '50 percent processed.' and '100 percent processed.' before
    3014."""
    db = new_db(conn, 1)
    try:
        rep = refclient.backup(conn, db, str(tmp_path), options="STATS = 50")
        assert rep.ok and rep.result is not None
        progress = [m.text for m in rep.result.messages if m.number == 3211]
        assert progress == ["50 percent processed.", "100 percent processed."]
        assert numbers(rep.result)[-1] == 3014
    finally:
        drop(conn, db)


def test_statement_naming_no_set_fails_18210(conn: Connection) -> None:
    """§1.4, §8.3: no set of that name -> 18210 (0x80070002) then 3013."""
    name = new_set_name()
    db = new_db(conn, 1)
    try:
        for sql in (f"BACKUP DATABASE [{db}] TO VIRTUAL_DEVICE = '{name}'",
                    f"RESTORE VERIFYONLY FROM VIRTUAL_DEVICE = '{name}'"):
            r = conn.execute(sql)
            assert r.error_numbers == [18210, 3013], r.text()
            assert "0x80070002" in r.messages[0].text
            assert name in r.messages[0].text
    finally:
        drop(conn, db)


# -- 6. error completion (§6.6, §8.1) --------------------------------------------------------


def test_disk_full_on_third_write_clears_error_then_closes(conn: Connection) -> None:
    """§6.6/§8.1: device 0 holds Writes 1-3 and completes the 3rd with ERROR_DISK_FULL.
    ClearError is not delivered while Writes 1-2 are outstanding; once they are completed it
    is, then VD_E_CLOSE (not VD_E_ABORT) ends every device; the BACKUP fails with 3013."""
    db = new_db(conn, 1)
    name = new_set_name()
    events: list[tuple[str, int]] = []
    default = _default_loop(None)

    def loop(i: int, dev: VirtualDevice, served: Served) -> None:
        if i != 0:
            default(i, dev, served)
            return
        held: list[Command] = []
        while len(held) < 3:
            hr, cmd = dev.get_command(5000)
            if cmd is None:
                events.append(("early end", hr))
                return
            events.append(("got", int(cmd.command_code)))
            held.append(cmd)
        events.append(("complete 3rd", dev.complete_command(held[2], Win32.ERROR_DISK_FULL,
                                                            0, 0)))
        hr, cmd = dev.get_command(300)  # Writes 1-2 outstanding: nothing may be delivered
        events.append(("while outstanding", hr if cmd is None else -int(cmd.command_code)))
        for cmd in held[:2]:
            assert cmd.buffer is not None
            served.data[0] += cmd.buffer
            events.append(("complete", dev.complete_command(cmd, 0, cmd.size, 0)))
        while True:
            hr, cmd = dev.get_command(5000)
            if cmd is None:
                events.append(("end", hr))
                served.ends[0] = hr
                return
            events.append(("got", int(cmd.command_code)))
            events.append(("complete", dev.complete_command(cmd, 0, 0, 0)))

    try:
        plan_sql = (f"BACKUP DATABASE [{db}] TO VIRTUAL_DEVICE = '{name}', "
                    f"VIRTUAL_DEVICE = '{name}1' WITH BUFFERCOUNT = 32")
        served = serve(conn, name, 2, VDF_LikePipe, lambda c: c.execute(plan_sql),
                       device_loop=loop)
        assert events == [
            ("got", C.VDC_Write), ("got", C.VDC_Write), ("got", C.VDC_Write),
            ("complete 3rd", HResult.NOERROR),
            ("while outstanding", HResult.VD_E_TIMEOUT),
            ("complete", HResult.NOERROR), ("complete", HResult.NOERROR),
            ("got", C.VDC_ClearError), ("complete", HResult.NOERROR),
            ("end", HResult.VD_E_CLOSE),
        ]
        assert served.ends == [HResult.VD_E_CLOSE, HResult.VD_E_CLOSE]
        assert served.close_hr == HResult.NOERROR
        r = served.result
        assert r is not None and not r.ok
        assert r.error_numbers[-1] == 3013
        assert 3202 in r.error_numbers or 18210 in r.error_numbers
        assert "112" in r.text()
        assert not [m for m in r.messages if m.number == 3014]
    finally:
        drop(conn, db)


# -- 7. several Flushes, unknown commands (§6.4) ---------------------------------------------


@pytest.mark.parametrize("request_complete", [False, True], ids=["plain", "complete"])
def test_several_flushes_backup_still_restorable(conn: Connection, tmp_path: Any,
                                                 request_complete: bool) -> None:
    """§6.4: Flush may arrive several times per backup; with VDC_Complete enabled it comes
    once, after the last Flush.  The media restores byte-identically."""
    db = new_db(conn, 1)
    name = new_set_name()
    try:
        before = checksum(conn, db)
        features = VDF_LikePipe | (Feature.VDF_RequestComplete if request_complete else 0)
        served = serve(conn, name, 1, features,
                       lambda c: c.run_plan(Plan("backup", db, (name,), flushes=3)))
        assert served.result is not None and served.result.ok, served.result.text()
        codes = [c for c, _, _ in served.commands[0]]
        assert codes.count(C.VDC_Flush) == 3
        tail = [C.VDC_Flush] * 3 + ([C.VDC_Complete] if request_complete else [])
        assert codes[-len(tail):] == tail
        assert set(codes[:-len(tail)]) == {C.VDC_Write}
        assert served.ends == [HResult.VD_E_CLOSE]
        save_media(served, str(tmp_path))
        rep = refclient.restore(conn, db, str(tmp_path), options="REPLACE")
        assert rep.ok, explain(rep)
        assert checksum(conn, db) == before
    finally:
        drop(conn, db)


def test_unknown_and_optional_commands_are_cleared(conn: Connection, tmp_path: Any) -> None:
    """§6.4/§6.6: commands 11 (Discard), 16 (FileInfoBegin) and 99 (unknown) answered
    ERROR_NOT_SUPPORTED: the engine sends ClearError after each and the backup succeeds."""
    db = new_db(conn, 1)
    name = new_set_name()
    try:
        before = checksum(conn, db)
        served = serve(conn, name, 1, VDF_LikePipe, lambda c: c.run_plan(
            Plan("backup", db, (name,), optional_commands=(11, 16, 99))))
        assert served.result is not None and served.result.ok, served.result.text()
        assert numbers(served.result)[-1] == 3014
        first = [(c, code) for c, _, code in served.commands[0][:6]]
        nsup, ok = Win32.ERROR_NOT_SUPPORTED, Win32.ERROR_SUCCESS
        assert first == [(11, nsup), (C.VDC_ClearError, ok), (16, nsup),
                         (C.VDC_ClearError, ok), (99, nsup), (C.VDC_ClearError, ok)]
        rest = [c for c, _, _ in served.commands[0][6:]]
        assert rest[0] == C.VDC_Write and rest[-1] == C.VDC_Flush
        assert C.VDC_ClearError not in rest
        assert served.ends == [HResult.VD_E_CLOSE]
        save_media(served, str(tmp_path))
        rep = refclient.restore(conn, db, str(tmp_path), options="REPLACE")
        assert rep.ok, explain(rep)
        assert checksum(conn, db) == before
    finally:
        drop(conn, db)


# -- 8. snapshot (§6.4, §6.7, §9) ------------------------------------------------------------


def test_snapshot_backup_and_restore(conn: Connection, engine: Engine, tmp_path: Any,
                                     recorded: list[RecordingSet]) -> None:
    """BACKUP ... WITH SNAPSHOT and VDF_SnapshotPrepare: PrepareToFreeze, Write(metadata),
    Snapshot, then VD_E_CLOSE.  After a workload, RESTORE ... WITH SNAPSHOT, REPLACE asks for
    MountSnapshot and brings back the pre-workload bytes."""
    db = new_db(conn, 1)
    data_dir = os.path.join(os.path.dirname(engine.address), "data")
    snap = refclient.SnapshotFiles(files=operations.snapshot_files(data_dir, db),
                                   store=str(tmp_path / "store"))
    media_dir = str(tmp_path / "media")
    try:
        before = checksum(conn, db)
        rep = refclient.backup(conn, db, media_dir, options="SNAPSHOT", snapshot=snap,
                               features=Feature.VDF_SnapshotPrepare, request_complete=False)
        assert rep.ok, explain(rep)
        (dev,) = recorded[-1].devices
        codes = dev.codes()
        assert codes[0] == C.VDC_PrepareToFreeze and codes[-1] == C.VDC_Snapshot
        assert codes.count(C.VDC_Write) >= 1 and set(codes[1:-1]) == {C.VDC_Write}
        assert dev.end == HResult.VD_E_CLOSE
        assert os.listdir(snap.store) == [f"{db}.mdf"]

        r = conn.execute(f"EXEC sp_vdisim_workload '{db}', 50, 7")
        assert r.ok
        assert checksum(conn, db) != before

        rep = refclient.restore(conn, db, media_dir, options="SNAPSHOT, REPLACE", snapshot=snap)
        assert rep.ok, explain(rep)
        (dev,) = recorded[-1].devices
        assert C.VDC_MountSnapshot in dev.codes()
        assert dev.codes()[0] == C.VDC_Read
        assert dev.end == HResult.VD_E_CLOSE
        assert checksum(conn, db) == before
    finally:
        drop(conn, db)


def test_snapshot_vetoed_with_995_fails_backup(conn: Connection) -> None:
    """§6.4: completing VDC_Snapshot with ERROR_OPERATION_ABORTED vetoes the snapshot: the
    BACKUP fails (3013) and prints no 3014; the devices are closed normally (§8.1)."""
    db = new_db(conn, 1)
    name = new_set_name()

    def handler(i: int, cmd: Command) -> tuple[int, int]:
        if cmd.command_code == C.VDC_Snapshot:
            return Win32.ERROR_OPERATION_ABORTED, 0
        if cmd.command_code == C.VDC_Write:
            return Win32.ERROR_SUCCESS, cmd.size
        if cmd.command_code in (C.VDC_PrepareToFreeze, C.VDC_ClearError):
            return Win32.ERROR_SUCCESS, 0
        return Win32.ERROR_NOT_SUPPORTED, 0

    try:
        sql = f"BACKUP DATABASE [{db}] TO VIRTUAL_DEVICE = '{name}' WITH SNAPSHOT"
        served = serve(conn, name, 1, VDF_LikePipe | Feature.VDF_SnapshotPrepare,
                       lambda c: c.execute(sql), handler=handler)
        r = served.result
        assert r is not None and not r.ok
        assert r.error_numbers[-1] == 3013
        assert "995" in r.text()
        assert not [m for m in r.messages if m.number == 3014]
        codes = [c for c, _, _ in served.commands[0]]
        assert codes[0] == C.VDC_PrepareToFreeze
        assert C.VDC_Snapshot in codes
        assert served.ends == [HResult.VD_E_CLOSE]  # §8.1: an error completion, not abort
        assert served.close_hr == HResult.NOERROR
    finally:
        drop(conn, db)
