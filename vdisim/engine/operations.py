"""BACKUP and RESTORE as the emulated engine runs them over VDI.

Command streams (spec §6.7), per device and device model (§5.1):

- BACKUP, pipe: Write... (data path: pages copied from the database straight into the shared
  buffer) -> Flush x ``plan.flushes`` -> Complete (when VDF_CompleteEnabled) -> CloseDevice.
  Tape adds GetPosition first and WriteMark after the data; disk gives every Write its byte
  position.
- RESTORE, pipe: Read... of sizes between BLOCKSIZE and MAXTRANSFERSIZE (seeded, unrelated to the
  backup's, §1.10) -> one more Read expecting ERROR_HANDLE_EOF -> ClearError -> CloseDevice.
  Tape: Rewind, GetPosition, read the header, SetPosition back, Read... until the filemark
  (or, when the family ends first, SkipMarks 1 past it).
  Disk: the header is read at position 0, then the family again from position 0.
- An error completion puts the device in IO-ERROR: the engine stops, drains, sends ClearError,
  closes the devices normally and fails the statement (§6.6, §8.1); abort (995) fails it
  with the 3013 family (§8.3).
"""

from __future__ import annotations

import json
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Literal

from vdisim.engine import media, tsql
from vdisim.engine.database import Database
from vdisim.engine.plan import Plan
from vdisim.engine.results import Rowset
from vdisim.engine.server_vds import ServerBuffer, ServerCommand
from vdisim.engine.sqlerrors import SqlError, SqlMessage, message, sql_error
from vdisim.engine.vdisession import DeviceLink, StatementCancelled, VdiSession, os_error
from vdisim.protocol.codes import CommandCode, DeviceModel, Feature, Win32

Emit = Callable[[SqlMessage], None]
EmitRowset = Callable[[Rowset], None]
Cancelled = StatementCancelled

EOF_CODES = (Win32.ERROR_HANDLE_EOF, Win32.ERROR_NO_DATA_DETECTED, Win32.ERROR_FILEMARK_DETECTED)


# ------------------------------------------------------------------------- T-SQL -> plan

def compile_statement(stmt: tsql.Backup | tsql.Restore) -> Plan:
    """The plan SQL Server would follow for a BACKUP / RESTORE statement."""
    for dev in stmt.devices:
        if dev.kind != "virtual_device":
            raise sql_error(40517, f"{dev.kind.upper()} = '{dev.name}' (vdisim emulates "
                                   "VIRTUAL_DEVICE only)")
    names = tuple(d.name for d in stmt.devices)
    if isinstance(stmt, tsql.Backup):
        o = stmt.options
        kind: Literal["full", "diff", "log"] = (
            "log" if stmt.log else ("diff" if o.differential else "full"))
        return Plan("backup", stmt.database, names, kind, o.blocksize, o.buffercount,
                    o.maxtransfersize, bool(o.copy_only), bool(o.checksum),
                    bool(o.compression), o.stats, o.name, o.description,
                    recovery=not (stmt.log and o.norecovery),  # tail-log backup (NORECOVERY)
                    snapshot=o.is_snapshot).validate()
    r = stmt.options
    op = "restore" if stmt.kind in ("database", "log") else stmt.kind
    rkind: Literal["full", "log"] = "log" if stmt.kind == "log" else "full"
    return Plan(op, stmt.database, names, rkind,  # type: ignore[arg-type]
                r.blocksize, r.buffercount, r.maxtransfersize, checksum=bool(r.checksum),
                stats=r.stats, recovery=r.recovery is not False, replace=bool(r.replace),
                moves=r.moves, snapshot=r.is_snapshot).validate()


def run_statement(engine: object, stmt: tsql.Backup | tsql.Restore, emit: Emit,
                  rowset: EmitRowset, cancel: threading.Event) -> None:
    if isinstance(stmt, tsql.Restore) and not stmt.devices:
        # RESTORE DATABASE db WITH RECOVERY: recover without a backup.
        with engine.lock:  # type: ignore[attr-defined]
            media.recover_database(engine.catalog, stmt.database or "")  # type: ignore[attr-defined]
        emit(SqlMessage(3014, 0, 1, "RESTORE DATABASE successfully processed 0 pages in "
                                    "0.001 seconds (0.000 MB/sec)."))
        return
    run_plan(engine, compile_statement(stmt), emit, rowset, cancel)


def run_plan(engine: object, plan: Plan, emit: Emit, rowset: EmitRowset,
             cancel: threading.Event) -> None:
    plan.validate()
    if plan.operation == "backup":
        _backup(engine, plan, emit, cancel)
    else:
        _restore(engine, plan, emit, rowset, cancel)


# ------------------------------------------------------------------------- progress

class Progress:
    """STATS = n: message 3211 every n percent (§ BACKUP STATS)."""

    def __init__(self, total: int, stats: int | None, emit: Emit, families: int = 0) -> None:
        self.total = max(1, total)
        self.unknown = families  # RESTORE: family lengths still to learn from their headers
        self.step = stats
        self.emit = emit
        self.done = 0
        self.next = stats or 101
        self.lock = threading.Lock()

    def expect(self, family_length: int) -> None:
        with self.lock:
            self.total = family_length if self.total <= 1 else self.total + family_length
            self.unknown -= 1

    def add(self, n: int) -> None:
        if not self.step:
            with self.lock:
                self.done += n
            return
        with self.lock:
            self.done += n
            if self.unknown:
                return
            pct = self.done * 100 // self.total
            while pct >= self.next and self.next <= 100:
                self.emit(message(3211, self.next))
                self.next += self.step


def _summary(label: str, pages: int, seconds: float, nbytes: int) -> SqlMessage:
    seconds = max(seconds, 0.001)
    return message(3014, label, pages, seconds, nbytes / 1048576 / seconds)


def _run_devices(session: VdiSession, fn: Callable[[DeviceLink], int | SqlError | None]
                 ) -> list[int | SqlError | None]:
    """Run ``fn`` on one thread per device (one server thread per device, §1.5)."""
    results: list[int | SqlError | None] = [None] * len(session.links)

    def work(link: DeviceLink) -> None:
        try:
            results[link.index] = fn(link)
        except SqlError as err:
            if err.messages[-1].number != 3013:
                err = SqlError([*err.messages, session.terminating()])
            results[link.index] = err
            session.set.signal_abort()
        except StatementCancelled:
            results[link.index] = Win32.ERROR_OPERATION_ABORTED
        except Exception as exc:  # a bug must fail the statement, not hang it
            text = f"emulator failure on device {link.name}: {exc!r}"
            results[link.index] = SqlError([SqlMessage(3013, 16, 1, text)])
            session.set.signal_abort()

    threads = [threading.Thread(target=work, args=(link,), daemon=True)
               for link in session.links]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
            if session.cancel.is_set():
                session.set.signal_abort()
    return results


def _try_buffer(session: VdiSession) -> ServerBuffer | None:
    """A free buffer from the pool shared by all devices, or None (never blocks)."""
    try:
        return session.buffers.get_nowait()
    except queue.Empty:
        return None


def _get_buffer(session: VdiSession) -> ServerBuffer | None:
    while True:
        if session.aborted:
            return None
        session.check_cancel()
        try:
            return session.buffers.get(timeout=0.2)
        except queue.Empty:
            continue


def _preamble(session: VdiSession, link: DeviceLink) -> int | None:
    """Optional/unknown commands the plan asks for: clients answer ERROR_NOT_SUPPORTED or
    success; an error is cleared with ClearError (§6.4, §6.6)."""
    for code in session.plan.optional_commands:
        c = link.call(code)
        if c.completion_code == Win32.ERROR_OPERATION_ABORTED:
            return c.completion_code
        if c.completion_code != Win32.ERROR_SUCCESS:
            cleared = link.clear_error()
            if cleared != Win32.ERROR_SUCCESS:
                return cleared
    return None


# ------------------------------------------------------------------------- BACKUP

def _backup(engine: object, plan: Plan, emit: Emit, cancel: threading.Event) -> None:
    assert plan.database is not None
    db = engine.lookup(plan.database)  # type: ignore[attr-defined]
    label = "BACKUP LOG" if plan.kind == "log" else "BACKUP DATABASE"
    with engine.db_lock(db.name):  # type: ignore[attr-defined]
        prepared = media.build_backup(db, plan.kind, copy_only=plan.copy_only, name=plan.name,
                                      description=plan.description, checksum=plan.checksum,
                                      compression=plan.compression)
        session = VdiSession(plan, write_media=True, label=label, cancel=cancel, emit=emit)
        started = time.monotonic()
        ok = False
        try:
            session.open()
            if plan.snapshot:
                _snapshot_backup(engine, session, db, prepared)
            else:
                layout = media.FamilyLayout.for_backup(prepared, len(plan.devices),
                                                       plan.effective_max_transfer,
                                                       plan.effective_block_size)
                total = sum(layout.family_length(i) for i in range(len(plan.devices)))
                progress = Progress(total, plan.stats, emit)
                results = _run_devices(session, lambda link: _write_family(
                    session, link, layout, progress))
                _raise_device_failure(session, results, "RequestDurableMedia")
            ok = True
        finally:
            session.finish(ok or not session.aborted)
        prepared.commit()
        if plan.kind == "log" and not plan.recovery:
            db.state = "RESTORING"  # BACKUP LOG ... WITH NORECOVERY: tail-log backup
    for m in prepared.messages():
        emit(m)
    nbytes = prepared.stream.length
    emit(_summary(tsql_label(plan), prepared.pages_count, time.monotonic() - started, nbytes))


def tsql_label(plan: Plan) -> str:
    if plan.operation == "backup":
        if plan.kind == "log":
            return "BACKUP LOG"
        return "BACKUP DATABASE WITH DIFFERENTIAL" if plan.kind == "diff" else "BACKUP DATABASE"
    return "RESTORE LOG" if plan.kind == "log" else "RESTORE DATABASE"


def _raise_device_failure(session: VdiSession, results: list[int | SqlError | None],
                          what: str) -> None:
    if session.cancel.is_set():
        raise StatementCancelled(session.label)  # ATTENTION: the statement was cancelled
    for link, res in zip(session.links, results, strict=True):
        if isinstance(res, SqlError):
            raise res
        if isinstance(res, int):
            raise session.abort_error(link, what if res == Win32.ERROR_OPERATION_ABORTED
                                      else "", res)
    if session.aborted:
        raise session.abort_error(session.links[0], what, Win32.ERROR_OPERATION_ABORTED)


def _write_family(session: VdiSession, link: DeviceLink, layout: media.FamilyLayout,
                  progress: Progress) -> int | None:
    """Stream family ``link.index`` to its device.  None on success, else a Win32 code."""
    plan = session.plan
    model = session.model
    err = _preamble(session, link)
    if err is not None:
        return err
    if model is DeviceModel.TAPE:
        c = link.call(CommandCode.VDC_GetPosition)
        if c.completion_code != Win32.ERROR_SUCCESS:
            return c.completion_code
    i = link.index
    flen = layout.family_length(i)
    mts = plan.effective_max_transfer
    offset = 0
    error: int | None = None
    writes = 0
    while True:
        if (plan.flush_every and writes >= plan.flush_every and error is None
                and offset < flen and not session.aborted):
            # A Flush in the middle of the data (FILESTREAM backups, §6.4): drain, then flush.
            for c in link.drain():
                if c.buffer is not None:
                    session.buffers.put(c.buffer)
                if c.completion_code != Win32.ERROR_SUCCESS or c.bytes_transferred != c.size:
                    error = error or c.completion_code or Win32.ERROR_DISK_FULL
                else:
                    progress.add(c.bytes_transferred)
            writes = 0
            if error is None and not session.aborted:
                c = link.call(CommandCode.VDC_Flush)
                if c.completion_code != Win32.ERROR_SUCCESS:
                    error = c.completion_code
            continue
        if error is None and offset < flen and not session.aborted:
            buf = _try_buffer(session)
            if buf is None and link.in_flight == 0:
                buf = _get_buffer(session)
            if buf is not None:
                n = min(mts, flen - offset)
                layout.fill(i, offset, buf.data[:n])
                link.submit(CommandCode.VDC_Write, n,
                            offset if model is DeviceModel.DISK else 0, buf)
                offset += n
                writes += 1
                continue
        if link.in_flight == 0:
            break
        c = link.reap()
        if c.buffer is not None:
            session.buffers.put(c.buffer)
        if c.completion_code != Win32.ERROR_SUCCESS:
            error = error or c.completion_code
        elif c.bytes_transferred != c.size:
            error = error or Win32.ERROR_DISK_FULL  # a short write is a lost write
        else:
            progress.add(c.bytes_transferred)
    if session.aborted:
        return Win32.ERROR_OPERATION_ABORTED
    if error is not None:
        link.clear_error()
        return error
    if model is DeviceModel.TAPE:
        c = link.call(CommandCode.VDC_WriteMark)
        if c.completion_code != Win32.ERROR_SUCCESS:
            return _fail_and_clear(link, c.completion_code)
    for _ in range(plan.flushes):
        c = link.call(CommandCode.VDC_Flush)
        if c.completion_code != Win32.ERROR_SUCCESS:
            return _fail_and_clear(link, c.completion_code)
    if session.complete_enabled:
        c = link.call(CommandCode.VDC_Complete)
        if c.completion_code != Win32.ERROR_SUCCESS:
            return _fail_and_clear(link, c.completion_code)
    return None


def _fail_and_clear(link: DeviceLink, code: int) -> int:
    if code != Win32.ERROR_OPERATION_ABORTED:
        link.clear_error()
    return code


# ------------------------------------------------------------------------- snapshot

SNAPSHOT_MAGIC = b"VSNP"


def snapshot_files(data_dir: str, database: str) -> list[str]:
    """The files a snapshot backup copies and a snapshot restore puts back (docs/snapshot.md)."""
    return [os.path.join(data_dir, f"{database}.mdf")]


def _snapshot_backup(engine: object, session: VdiSession, db: Database,
                     prepared: media.PreparedBackup) -> None:
    """BACKUP ... WITH SNAPSHOT (§9): PrepareToFreeze (if asked), freeze, metadata Write,
    Snapshot (the client copies the files), CloseDevice."""
    if len(session.links) != 1:
        raise SqlError([message(3205, 1), session.terminating()])
    link = session.links[0]
    assert session.requested is not None
    if session.requested.features & Feature.VDF_SnapshotPrepare:
        c = link.call(CommandCode.VDC_PrepareToFreeze)
        if c.completion_code != Win32.ERROR_SUCCESS:
            raise session.abort_error(link, "PrepareToFreeze", c.completion_code)
    data_dir = engine.data_dir  # type: ignore[attr-defined]
    path = snapshot_files(data_dir, db.name)[0]
    with open(path, "wb") as f:  # the frozen database file the client snapshots
        f.write(db.data)
    meta = json.dumps({"database": db.name, "sha256": db.content_hash(), "pages": db.n_pages,
                       "lsn": db.lsn, "guid": str(db.guid), "file": os.path.basename(path)}
                      ).encode()
    bs = session.plan.effective_block_size
    blob = SNAPSHOT_MAGIC + len(meta).to_bytes(4, "little") + meta
    blob += bytes(-len(blob) % bs)
    buf = _get_buffer(session)
    if buf is None or len(blob) > buf.size:
        raise session.abort_error(link, "", Win32.ERROR_OPERATION_ABORTED)
    buf.data[:len(blob)] = blob
    c = link.call(CommandCode.VDC_Write, len(blob), 0, buf)
    session.buffers.put(buf)
    if c.completion_code != Win32.ERROR_SUCCESS:
        raise session.abort_error(link, "", c.completion_code)
    c = link.call(CommandCode.VDC_Snapshot)
    if c.completion_code != Win32.ERROR_SUCCESS:  # 995 vetoes the snapshot (§6.4)
        raise session.abort_error(link, "Snapshot", c.completion_code)


def _snapshot_restore(engine: object, session: VdiSession, plan: Plan, emit: Emit) -> None:
    link = session.links[0]
    buf = _get_buffer(session)
    if buf is None:
        raise session.abort_error(link, "", Win32.ERROR_OPERATION_ABORTED)
    bs = plan.effective_block_size
    c = link.call(CommandCode.VDC_Read, min(buf.size, max(bs, 65536)), 0, buf)
    data = bytes(buf.data[:c.bytes_transferred])
    session.buffers.put(buf)
    if c.completion_code not in (0, *EOF_CODES) or data[:4] != SNAPSHOT_MAGIC:
        raise SqlError([message(3242, link.name), session.terminating()])
    if c.completion_code != 0:
        link.clear_error()
    n = int.from_bytes(data[4:8], "little")
    try:
        meta = json.loads(data[8:8 + n])
    except ValueError:
        raise SqlError([message(3242, link.name), session.terminating()]) from None
    c = link.call(CommandCode.VDC_MountSnapshot)
    if c.completion_code != Win32.ERROR_SUCCESS:
        raise session.abort_error(link, "MountSnapshot", c.completion_code)
    path = os.path.join(engine.data_dir, meta["file"])  # type: ignore[attr-defined]
    try:
        with open(path, "rb") as f:
            image = bytearray(f.read())
    except OSError as exc:
        raise SqlError([SqlMessage(5120, 16, 101, f"Unable to open the physical file "
                                                  f"\"{path}\". Operating system error "
                                                  f"{exc.errno}."),
                        session.terminating()]) from None
    target = plan.database or meta["database"]
    import hashlib

    if hashlib.sha256(image).hexdigest() != meta["sha256"] or len(image) % 8192:
        raise SqlError([message(3189), session.terminating()])
    with engine.lock:  # type: ignore[attr-defined]
        key = next((k for k in engine.catalog  # type: ignore[attr-defined]
                    if k.lower() == target.lower()), target)
        db = engine.catalog.get(key)  # type: ignore[attr-defined]
        if db is None or db.n_pages != len(image) // 8192:
            db = engine.create_empty(key, len(image) // 8192)  # type: ignore[attr-defined]
        db.data[:] = image
        db.lsn = int(meta["lsn"])
        db.state = "ONLINE" if plan.recovery else "RESTORING"
    emit(message(3014, "RESTORE DATABASE", len(image) // 8192, 0.001, 0.0))


# ------------------------------------------------------------------------- RESTORE

def _restore(engine: object, plan: Plan, emit: Emit, rowset: EmitRowset,
             cancel: threading.Event) -> None:
    label = {"restore": tsql_label(plan), "verifyonly": "VERIFY DATABASE",
             "headeronly": "RESTORE HEADERONLY", "filelistonly": "RESTORE FILELIST",
             "labelonly": "RESTORE LABELONLY"}[plan.operation]
    metadata_only = plan.operation in ("headeronly", "filelistonly", "labelonly")
    session = VdiSession(plan, write_media=False, label=label, cancel=cancel, emit=emit)
    assembler = media.RestoreAssembler(len(plan.devices), plan.devices,
                                       metadata_only=metadata_only)
    started = time.monotonic()
    ok = False
    try:
        session.open()
        if plan.snapshot and plan.operation == "restore":
            _snapshot_restore(engine, session, plan, emit)
            ok = True
            return
        progress = Progress(0, plan.stats, emit, families=len(plan.devices))
        results = _run_devices(session, lambda link: _read_family(
            session, link, assembler.reader(link.index), progress, metadata_only))
        _raise_device_failure(session, results, "ReadMedia")
        ok = True
    finally:
        session.finish(ok or not session.aborted)
    if metadata_only:
        if plan.operation == "labelonly":
            rowset(media.labelonly_rowset(assembler.family_headers()[0]))
        elif plan.operation == "headeronly":
            rowset(media.headeronly_rowset([assembler.info()]))
        else:
            rowset(media.filelistonly_rowset(assembler.info()))
        return
    if plan.snapshot:
        return
    try:
        bset = assembler.finish(verify_checksums=plan.checksum or None)
    except SqlError as err:  # damaged media (3189/3183/3266...): terminating 3013 follows
        if err.messages[-1].number == 3013:
            raise
        raise SqlError([*err.messages, message(3013, label)]) from None
    if plan.operation == "verifyonly":
        emit(message(3262))
        return
    info = bset.info
    if plan.kind == "log" and info.kind != "log":
        raise SqlError([SqlMessage(3241, 16, 1, "The backup set holds a database backup, "
                                                "not a log backup: use RESTORE DATABASE."),
                        message(3013, label)])
    assert plan.database is not None
    with engine.lock:  # type: ignore[attr-defined]
        with engine.db_lock(plan.database):  # type: ignore[attr-defined]
            try:
                msgs = media.apply_restore(engine.catalog, bset, plan.database,  # type: ignore[attr-defined]
                                           recovery=plan.recovery, replace=plan.replace,
                                           moves=plan.moves)
            except SqlError as err:
                raise SqlError([*err.messages, message(3013, label)]) from None
    for m in msgs:
        emit(m)
    emit(_summary(label if info.kind != "diff" else "RESTORE DATABASE", info.pages_count,
                  time.monotonic() - started, info.stream_length))


def _read_sizes(plan: Plan, device: int) -> Callable[[], int]:
    bs, mts = plan.effective_block_size, plan.effective_max_transfer
    if plan.read_sizes == "max":
        return lambda: mts
    rng = random.Random(f"{plan.seed}:{device}")
    return lambda: rng.randint(1, mts // bs) * bs


def _read_family(session: VdiSession, link: DeviceLink, reader: media.FamilyReader,
                 progress: Progress, metadata_only: bool) -> int | None:
    plan = session.plan
    model = session.model
    bs = plan.effective_block_size
    err = _preamble(session, link)
    if err is not None:
        return err
    head = max(media.FAMILY_HEADER_SIZE, bs)
    if model is DeviceModel.TAPE:
        c = link.call(CommandCode.VDC_Rewind)
        if c.completion_code != Win32.ERROR_SUCCESS:
            return _fail_and_clear(link, c.completion_code)
        c = link.call(CommandCode.VDC_GetPosition)
        if c.completion_code != Win32.ERROR_SUCCESS:
            return _fail_and_clear(link, c.completion_code)
        start = c.out_position
        probe = _probe_header(session, link, head, 0)
        if isinstance(probe, int):
            return probe
        c = link.call(CommandCode.VDC_SetPosition, 0, start)
        if c.completion_code != Win32.ERROR_SUCCESS:
            return _fail_and_clear(link, c.completion_code)
    elif model is DeviceModel.DISK:
        probe = _probe_header(session, link, head, 0)  # §5: header read at position 0
        if isinstance(probe, int):
            return probe
    next_size = _read_sizes(plan, link.index)
    inflight_bytes = 0  # requested, not yet fed
    done: dict[int, ServerCommand] = {}  # completed, keyed by command order
    order = fed = 0
    eof = False
    error: int | None = None

    def want_more() -> bool:
        if eof or error is not None or session.aborted:
            return False
        if metadata_only and reader.header is not None and (
                reader.header.family_index != 0 or reader.assembler.header_ready):
            return False
        length = reader.family_length
        return (length is None and link.in_flight == 0) or (
            length is not None and reader.received + inflight_bytes < length)

    while True:
        if want_more():
            buf = _try_buffer(session)
            if buf is None and link.in_flight == 0:
                buf = _get_buffer(session)
            if buf is not None:
                size = next_size()
                length = reader.family_length
                at = reader.received + inflight_bytes
                if length is not None:
                    size = min(size, -(-(length - at) // bs) * bs)
                link.submit(CommandCode.VDC_Read, size,
                            at if model is DeviceModel.DISK else 0, buf, order)
                order += 1
                inflight_bytes += size
                continue
        if link.in_flight == 0:
            break
        c = link.reap()
        done[int(c.completion_context)] = c
        while fed in done:  # pipe data arrives in GetCommand order: feed in command order
            c = done.pop(fed)
            fed += 1
            inflight_bytes -= c.size
            buf = c.buffer
            assert buf is not None
            n = min(c.bytes_transferred, c.size)
            code = c.completion_code
            try:
                if code in (Win32.ERROR_SUCCESS, *EOF_CODES) and error is None and not eof:
                    known = reader.family_length is not None
                    reader.feed(buf.data[:n])
                    if session.wire_log is not None:
                        session.wire_log.data_read(link.index, buf.data[:n])
                    if not known and reader.family_length is not None:
                        progress.expect(reader.family_length)
                    progress.add(n)
                    if code != Win32.ERROR_SUCCESS:
                        eof = True
                    elif n < c.size and model is DeviceModel.DISK:
                        error = Win32.ERROR_HANDLE_EOF  # a hole in random-access data
                elif code != Win32.ERROR_SUCCESS and error is None:
                    error = code
            finally:
                session.buffers.put(buf)
    if session.aborted:
        return Win32.ERROR_OPERATION_ABORTED
    truncated = not metadata_only and not reader.complete
    if error is not None or truncated:
        code = error if error is not None else Win32.ERROR_HANDLE_EOF
        if code != Win32.ERROR_OPERATION_ABORTED:
            link.clear_error()
        return code
    if eof:
        link.clear_error()  # the EOF completion put the device in IO-ERROR (§6.6 note)
    elif model is DeviceModel.TAPE and not metadata_only:
        # The family is complete before its filemark: skip the mark, as the engine does to
        # leave the tape positioned after the backup set (VDF_FileMarks, §5, §6.4).
        c = link.call(CommandCode.VDC_SkipMarks, 1)
        if c.completion_code == Win32.ERROR_OPERATION_ABORTED:
            return c.completion_code
        if c.completion_code != Win32.ERROR_SUCCESS:
            link.clear_error()
    elif plan.read_to_eof and not metadata_only and model is not DeviceModel.DISK:
        buf = _get_buffer(session)
        if buf is None:
            return Win32.ERROR_OPERATION_ABORTED
        c = link.call(CommandCode.VDC_Read, bs, 0, buf)
        session.buffers.put(buf)
        if c.completion_code == Win32.ERROR_OPERATION_ABORTED:
            return c.completion_code
        if c.completion_code != Win32.ERROR_SUCCESS:
            link.clear_error()
    return None


def _probe_header(session: VdiSession, link: DeviceLink, size: int, position: int) -> int | None:
    """Read the family header at ``position`` and check it (the media-validation read)."""
    buf = _get_buffer(session)
    if buf is None:
        return Win32.ERROR_OPERATION_ABORTED
    size = min(size, buf.size)
    c = link.call(CommandCode.VDC_Read, size, position, buf)
    try:
        if c.completion_code == Win32.ERROR_OPERATION_ABORTED:
            return c.completion_code
        if c.completion_code != Win32.ERROR_SUCCESS:
            return _fail_and_clear(link, c.completion_code)
        media.FamilyHeader.from_bytes(bytes(buf.data[:min(c.bytes_transferred, size)]),
                                      link.name)
    finally:
        session.buffers.put(buf)
    return None


__all__ = ["Cancelled", "compile_statement", "os_error", "run_plan", "run_statement"]
