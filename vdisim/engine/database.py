"""Synthetic databases that change: the data the emulated engine backs up and restores.

A database is ``n_pages`` pages of :data:`PAGE_SIZE` bytes held in ONE ``bytearray``
(:attr:`Database.data`), so that a full backup can stream ``memoryview(db.data)[a:b]``
without copying.  Every page starts with a 64-byte header (:data:`PAGE_HEADER`):

====== ==== ============ ==========================================================
offset size field        meaning
====== ==== ============ ==========================================================
0      4    magic        ``b"VPG1"``
4      4    page_id      u32, index of the page in the data file
8      8    page_lsn     u64, LSN of the last change to the page
16     4    database_id  u32
20     4    body_crc32   u32, ``zlib.crc32`` of the 8128 body bytes (the page checksum)
24     40   reserved     zero
====== ==== ============ ==========================================================

The page checksum is computed once, when the page changes; nothing on the backup data
path recomputes it.  Each change gets the next LSN (monotone integers starting at
:data:`CREATE_LSN`) and, in the FULL recovery model, appends a :class:`LogRecord` holding
the after-image of the whole page to :attr:`Database.log`.

Log-chain bookkeeping (used by :mod:`vdisim.engine.media`):

* ``last_full_lsn``/``diff_base_guid``: checkpoint LSN and backup-set GUID of the last
  (non copy-only) full backup: the differential base.
* ``log_chain_start``: first LSN the next log backup must cover; ``None`` while there is
  no log chain (no full backup yet, or the SIMPLE recovery model broke it).
* ``last_log_backup_lsn``: LastLSN of the last log backup (exclusive end).
"""

from __future__ import annotations

import hashlib
import random
import struct
import uuid
import zlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal

import attrs

PAGE_SIZE = 8192
PAGE_HEADER = struct.Struct("<4sIQII40x")
PAGE_HEADER_SIZE = PAGE_HEADER.size
PAGE_BODY_SIZE = PAGE_SIZE - PAGE_HEADER_SIZE
PAGE_MAGIC = b"VPG1"
CREATE_LSN = 1000
DEFAULT_DATA_DIR = "/var/opt/mssql/data"
DEFAULT_LOG_FILE_SIZE = 8 * 1024 * 1024

RecoveryModel = Literal["FULL", "SIMPLE"]
DatabaseState = Literal["ONLINE", "RESTORING"]

_SOURCE_CHUNK = 1 << 20  # random bytes page bodies are cut from
_BASE_DATE = datetime(2024, 1, 1)

assert PAGE_HEADER_SIZE == 64


def lsn_str(lsn: int) -> str:
    """An LSN as SQL Server prints a numeric LSN (a plain decimal string)."""
    return str(lsn)


def iso_datetime(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmm``: datetime values as rowsets and media carry them."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def derived_uuid(*parts: object) -> uuid.UUID:
    """A version-4-shaped UUID derived deterministically from ``parts``."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


@attrs.frozen
class LogRecord:
    """One change: its LSN, the page it changed and the after-image of the whole page."""

    lsn: int
    page_id: int
    image: bytes


@attrs.frozen
class DatabaseFile:
    """One file of a database as RESTORE FILELISTONLY lists it."""

    logical_name: str
    physical_name: str
    type: Literal["D", "L"]
    file_id: int
    size: int


@attrs.define(eq=False)
class Database:
    """A synthetic database.  Build one with :meth:`create`."""

    name: str
    db_id: int
    seed: int
    n_pages: int
    data: bytearray
    guid: uuid.UUID
    family_guid: uuid.UUID
    fork_guid: uuid.UUID
    creation_date: str
    data_path: str
    log_path: str
    create_lsn: int = CREATE_LSN
    lsn: int = CREATE_LSN
    recovery_model: RecoveryModel = "FULL"
    state: DatabaseState = "ONLINE"
    last_full_lsn: int | None = None
    diff_base_guid: uuid.UUID | None = None
    log_chain_start: int | None = None
    last_log_backup_lsn: int | None = None
    log: list[LogRecord] = attrs.field(factory=list)
    changed_since_full: set[int] = attrs.field(factory=set)
    backup_count: int = 0

    @classmethod
    def create(cls, name: str, n_pages: int, seed: int, db_id: int, *,
               data_dir: str = DEFAULT_DATA_DIR) -> Database:
        """Build ``n_pages`` deterministic pseudo-random pages (1 GiB in a few seconds)."""
        if n_pages <= 0:
            raise ValueError("n_pages must be positive")
        data = _build_pages(n_pages, seed, db_id)
        guid = derived_uuid("database", name.lower(), seed)
        created = _BASE_DATE + timedelta(seconds=seed % 10_000_000)
        return cls(
            name=name, db_id=db_id, seed=seed, n_pages=n_pages, data=data, guid=guid,
            family_guid=guid, fork_guid=derived_uuid("fork", name.lower(), seed),
            creation_date=iso_datetime(created),
            data_path=f"{data_dir}/{name}.mdf", log_path=f"{data_dir}/{name}_log.ldf",
        )

    # -- files -------------------------------------------------------------------------

    @property
    def data_logical_name(self) -> str:
        return self.name

    @property
    def log_logical_name(self) -> str:
        return f"{self.name}_log"

    @property
    def files(self) -> tuple[DatabaseFile, DatabaseFile]:
        return (
            DatabaseFile(self.data_logical_name, self.data_path, "D", 1,
                         self.n_pages * PAGE_SIZE),
            DatabaseFile(self.log_logical_name, self.log_path, "L", 2, DEFAULT_LOG_FILE_SIZE),
        )

    # -- pages -------------------------------------------------------------------------

    def page(self, page_id: int) -> memoryview:
        """A read-only view of one page."""
        start = self._page_offset(page_id)
        return memoryview(self.data)[start:start + PAGE_SIZE].toreadonly()

    def page_lsn(self, page_id: int) -> int:
        return _read_header(self.data, self._page_offset(page_id))[2]

    def write_page(self, page_id: int, image: bytes | memoryview) -> None:
        """Overwrite a whole page with ``image`` (restore path; the checksum travels)."""
        start = self._page_offset(page_id)
        self.data[start:start + PAGE_SIZE] = image

    def _page_offset(self, page_id: int) -> int:
        if not 0 <= page_id < self.n_pages:
            raise IndexError(f"page {page_id} outside 0..{self.n_pages - 1}")
        return page_id * PAGE_SIZE

    # -- changes -----------------------------------------------------------------------

    def run_workload(self, n_changes: int, seed: int) -> None:
        """Change ``n_changes`` pages (deterministic from ``seed``; pages may repeat)."""
        rng = random.Random(seed)
        for _ in range(n_changes):
            page_id = rng.randrange(self.n_pages)
            length = rng.randrange(32, 1025)
            offset = rng.randrange(PAGE_BODY_SIZE - length + 1)
            self._change_page(page_id, offset, rng.randbytes(length))

    def _change_page(self, page_id: int, body_offset: int, new_bytes: bytes) -> None:
        start = self._page_offset(page_id)
        body = start + PAGE_HEADER_SIZE
        self.data[body + body_offset:body + body_offset + len(new_bytes)] = new_bytes
        self.lsn += 1
        crc = zlib.crc32(memoryview(self.data)[body:start + PAGE_SIZE])
        PAGE_HEADER.pack_into(self.data, start, PAGE_MAGIC, page_id, self.lsn, self.db_id, crc)
        self.changed_since_full.add(page_id)
        if self.recovery_model == "FULL":
            self.log.append(LogRecord(self.lsn, page_id, bytes(self.data[start:start + PAGE_SIZE])))
        else:
            self.log_chain_start = None  # SIMPLE truncates the log: the chain is broken

    def set_recovery_model(self, model: RecoveryModel) -> None:
        """ALTER DATABASE ... SET RECOVERY: SIMPLE truncates the log and breaks the chain."""
        self.recovery_model = model
        if model == "SIMPLE":
            self.log.clear()
            self.log_chain_start = None

    def has_log_tail(self) -> bool:
        """True when the log holds work no log backup has saved (tail-log check, 3159)."""
        if self.recovery_model != "FULL" or self.log_chain_start is None:
            return False
        return any(r.lsn >= self.log_chain_start for r in self.log)

    # -- verification ------------------------------------------------------------------

    def content_hash(self) -> str:
        """sha256 hex of all pages: equal hashes mean byte-identical databases."""
        return hashlib.sha256(self.data).hexdigest()

    def verify_pages(self, page_ids: Iterable[int] | None = None) -> list[int]:
        """Ids of pages whose stored checksum (or header) does not match their body.

        ``page_ids`` restricts the check to some pages; by default all pages are checked.
        """
        ids = range(self.n_pages) if page_ids is None else sorted(set(page_ids))
        return [p for p in ids if not page_ok(self.data, p, p)]


def page_ok(buf: bytes | bytearray | memoryview, index: int, page_id: int) -> bool:
    """Whether the ``index``-th page of ``buf`` is page ``page_id`` with a valid checksum."""
    start = index * PAGE_SIZE
    magic, pid, _lsn, _db, crc = _read_header(buf, start)
    if magic != PAGE_MAGIC or pid != page_id:
        return False
    return zlib.crc32(memoryview(buf)[start + PAGE_HEADER_SIZE:start + PAGE_SIZE]) == crc


def page_header(buf: bytes | bytearray | memoryview, index: int) -> tuple[int, int, int, int]:
    """``(page_id, page_lsn, database_id, body_crc32)`` of the ``index``-th page of ``buf``."""
    _magic, pid, lsn, db_id, crc = _read_header(buf, index * PAGE_SIZE)
    return pid, lsn, db_id, crc


def _read_header(buf: bytes | bytearray | memoryview,
                 start: int) -> tuple[bytes, int, int, int, int]:
    magic, pid, lsn, db_id, crc = PAGE_HEADER.unpack_from(buf, start)
    return bytes(magic), int(pid), int(lsn), int(db_id), int(crc)


def _build_pages(n_pages: int, seed: int, db_id: int) -> bytearray:
    """Pages whose bodies are 25-75 % random "rows" cut from one random chunk, rest zero.

    The zero tail makes pages compress about 2:1 (like real pages with free space); the
    per-page loop only does slice copies, one crc32 and one header pack per page.
    """
    rng = random.Random(seed)
    source = memoryview(rng.randbytes(_SOURCE_CHUNK + PAGE_BODY_SIZE))
    shape = rng.randbytes(4 * n_pages)
    data = bytearray(n_pages * PAGE_SIZE)
    view = memoryview(data)
    quarter = PAGE_BODY_SIZE // 4
    for page_id in range(n_pages):
        start = page_id * PAGE_SIZE
        body = start + PAGE_HEADER_SIZE
        r_fill, r_off = struct.unpack_from("<HH", shape, 4 * page_id)
        fill = quarter + (r_fill * 2 * quarter) // 0xFFFF
        src = (page_id * 40503 + r_off * 16) % _SOURCE_CHUNK
        view[body:body + fill] = source[src:src + fill]
        crc = zlib.crc32(view[body:start + PAGE_SIZE])
        PAGE_HEADER.pack_into(data, start, PAGE_MAGIC, page_id, CREATE_LSN, db_id, crc)
    return data
