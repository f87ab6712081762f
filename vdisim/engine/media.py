"""The backup media format: a self-describing backup stream striped over device families.

A BACKUP produces one *backup set*, serialised as a **logical stream**::

    set header (4096 bytes) | payload | set trailer (64 bytes, SHA-256 digest, see below)

and splits it over N *media families* (one per virtual device)::

    family i = family header area | logical stripes i, i+N, i+2N, ... | zero padding

Every layout is declared once, as a :class:`Layout` table below; ``docs/media.md`` shows the
same tables (a test checks they agree).  The restore side (:class:`FamilyReader`,
:class:`RestoreAssembler`) accepts each family as a sequence of chunks of any size, parses
the headers as soon as they arrive (enough for HEADERONLY/FILELISTONLY/LABELONLY) and, once
every family is in, rebuilds the backup set (:class:`BackupSet`).  :func:`apply_restore`
applies one backup set to a catalogue of databases with SQL Server's restore-sequence rules.

Performance: the payload of an uncompressed full backup is ``memoryview(db.data)`` itself,
so :meth:`LogicalStream.readinto` and :meth:`FamilyLayout.fill` are slice copies only.  Page
checksums are computed once, when pages change, never on the data path: the trailer's
SHA-256 (:func:`set_digest`) covers the set header, the 64-byte page headers (which carry
each page's body CRC32, page id and LSN) and the run/record headers, but not the page
bodies, so building it reads 64 bytes per 8 KiB page (~40 ms per GiB, a strided gather;
compressed payloads are hashed as stored).  RESTORE checks every page body against its
header's CRC32.  The trailer is still computed lazily (in a background thread for large
backups).  The database must not change until the stream has been read.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import os
import struct
import threading
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

import attrs

from vdisim.engine.database import (
    PAGE_HEADER_SIZE,
    PAGE_SIZE,
    Database,
    LogRecord,
    derived_uuid,
    iso_datetime,
    lsn_str,
    page_ok,
)
from vdisim.engine.results import Column, Rowset
from vdisim.engine.sqlerrors import SqlError, SqlMessage, message, sql_error

BackupKind = Literal["full", "diff", "log"]

FORMAT_VERSION = 1
SET_HEADER_SIZE = 4096
FAMILY_HEADER_SIZE = 4096
TRAILER_SIZE = 64
COMPRESSION_CHUNK = 1 << 20
MIN_STRIPE = 64 * 1024
MAX_STRIPE = 4 * 1024 * 1024
MAX_FAMILIES = 64
FULL_LOG_PAGES = 2  # log pages a data backup carries ("Processed 2 pages ... file 'x_log'")
_PREFETCH_DIGEST_AT = 16 * 1024 * 1024

# What the emulated server reports about itself (SQL Server 2019 RTM, default collation).
SOFTWARE_VENDOR_ID = 4608
SOFTWARE_NAME = "Microsoft SQL Server"
SOFTWARE_VERSION = (15, 0, 2000)
DATABASE_VERSION = 904
COMPATIBILITY_LEVEL = 150
COLLATION = "SQL_Latin1_General_CP1_CI_AS"
SORT_ORDER = 52
CODE_PAGE = 1252
UNICODE_LOCALE_ID = 1033
UNICODE_COMPARISON_STYLE = 196609
DEVICE_TYPE_VIRTUAL = 7
DEFAULT_SERVER = "VDISIM"
DEFAULT_USER = "sa"

BACKUP_TYPE: dict[str, int] = {"full": 1, "log": 2, "diff": 5}
BACKUP_KIND: dict[int, BackupKind] = {1: "full", 2: "log", 5: "diff"}
BACKUP_TYPE_DESCRIPTION: dict[str, str] = {
    "full": "Database", "log": "Transaction Log", "diff": "Database Differential"}
_RECOVERY_CODE: dict[str, int] = {"FULL": 1, "SIMPLE": 3}
_RECOVERY_NAME: dict[int, Literal["FULL", "SIMPLE"]] = {1: "FULL", 3: "SIMPLE"}

# set-header / family-header flag bits
FLAG_COPY_ONLY = 1
FLAG_CHECKSUM = 2
FLAG_COMPRESSED = 4
FLAG_BEGINS_LOG_CHAIN = 8

_ZEROS = bytes(65536)
_T = TypeVar("_T")
_R = TypeVar("_R")

# ---------------------------------------------------------------------------------------
# Layouts: one table per on-media structure; bytes <-> dict conversion in one place.
# ---------------------------------------------------------------------------------------

Value = int | bytes | str | None


@attrs.frozen
class LayoutField:
    """One field: ``code`` is a little-endian struct code, or ``T<n>`` for a text of at most
    n UTF-16 code units stored as u16 length (0xFFFF = NULL) + 2n bytes of UTF-16LE."""

    name: str
    code: str
    offset: int
    size: int
    doc: str

    @property
    def text_chars(self) -> int:
        return int(self.code[1:]) if self.code.startswith("T") else 0


def _struct_code(code: str) -> str:
    return f"H{2 * int(code[1:])}s" if code.startswith("T") else code


class Layout:
    """A fixed binary layout, padded with zeros to ``total`` bytes.  With ``crc`` the last
    4 bytes hold the CRC32 of everything before them."""

    def __init__(self, title: str, total: int, spec: Sequence[tuple[str, str, str]], *,
                 crc: bool) -> None:
        fields: list[LayoutField] = []
        offset = 0
        for name, code, doc in spec:
            size = struct.calcsize("<" + _struct_code(code))
            fields.append(LayoutField(name, code, offset, size, doc))
            offset += size
        self.title = title
        self.total = total
        self.crc = crc
        self.fields = tuple(fields)
        self.struct = struct.Struct("<" + "".join(_struct_code(f.code) for f in fields))
        if self.struct.size > self.limit:
            raise ValueError(f"{title}: {self.struct.size} bytes do not fit in {self.limit}")

    @property
    def limit(self) -> int:
        return self.total - 4 if self.crc else self.total

    def pack(self, values: Mapping[str, Value]) -> bytes:
        args: list[Any] = []
        for f in self.fields:
            value = values.get(f.name)
            if f.text_chars:
                args.extend(_encode_text(value, f.text_chars))
            elif f.code.endswith("s"):
                args.append(value if isinstance(value, bytes) else b"")
            else:
                args.append(value if isinstance(value, int) else 0)
        body = self.struct.pack(*args).ljust(self.limit, b"\0")
        if self.crc:
            body += zlib.crc32(body).to_bytes(4, "little")
        return body

    def unpack(self, buf: bytes | bytearray | memoryview) -> dict[str, Value]:
        raw = iter(self.struct.unpack_from(buf, 0))
        out: dict[str, Value] = {}
        for f in self.fields:
            item = next(raw)
            if f.text_chars:
                out[f.name] = _decode_text(int(item), bytes(next(raw)))
            elif not f.name.startswith("reserved"):
                out[f.name] = bytes(item) if isinstance(item, bytes) else int(item)
        return out

    def crc_ok(self, buf: bytes | bytearray | memoryview) -> bool:
        if not self.crc:
            return True
        stored = int.from_bytes(bytes(buf[self.limit:self.total]), "little")
        return zlib.crc32(buf[:self.limit]) == stored

    def markdown(self) -> str:
        """The layout as the Markdown table ``docs/media.md`` shows."""
        lines = ["| offset | size | field | type | meaning |", "|---:|---:|---|---|---|"]
        for f in self.fields:
            lines.append(f"| {f.offset} | {f.size} | {f.name} | {_type_name(f.code)} | {f.doc} |")
        if self.crc:
            lines.append(f"| {self.limit} | 4 | crc32 | u32 | CRC32 of bytes 0..{self.limit - 1} |")
        return "\n".join(lines)


def _type_name(code: str) -> str:
    names = {"B": "u8", "H": "u16", "I": "u32", "Q": "u64"}
    if code.startswith("T"):
        return f"text({code[1:]})"
    return names.get(code, f"bytes[{code[:-1]}]")


def _encode_text(value: Value, chars: int) -> tuple[int, bytes]:
    if value is None:
        return 0xFFFF, b""
    text = str(value)[:chars]
    raw = text.encode("utf-16-le")
    while len(raw) > 2 * chars:  # non-BMP characters take two code units
        text = text[:-1]
        raw = text.encode("utf-16-le")
    return len(raw) // 2, raw


def _decode_text(length: int, raw: bytes) -> str | None:
    if length == 0xFFFF:
        return None
    return raw[:2 * length].decode("utf-16-le", errors="replace")


SET_HEADER = Layout("set header", SET_HEADER_SIZE, [
    ("magic", "4s", '`b"VSET"`'),
    ("version", "H", "format version (1)"),
    ("header_size", "H", "4096"),
    ("backup_type", "B", "1 = full, 2 = log, 5 = differential (HEADERONLY BackupType)"),
    ("recovery_model", "B", "1 = FULL, 3 = SIMPLE"),
    ("flags", "H", "1 copy-only, 2 checksums, 4 compressed, 8 begins log chain"),
    ("page_size", "I", "8192"),
    ("database_id", "I", "source database id"),
    ("database_pages", "I", "pages in the data file"),
    ("data_pages", "I", "data pages in this backup"),
    ("log_pages", "I", "log pages in this backup"),
    ("record_count", "I", "runs (diff), log records (log), 1 (full)"),
    ("compression_chunk", "I", "raw bytes per compressed chunk, 0 = not compressed"),
    ("software_major", "H", "SoftwareVersionMajor"),
    ("software_minor", "H", "SoftwareVersionMinor"),
    ("software_build", "I", "SoftwareVersionBuild"),
    ("database_version", "I", "DatabaseVersion"),
    ("compatibility_level", "B", "CompatibilityLevel"),
    ("reserved1", "3s", "zero"),
    ("database_guid", "16s", "BindingID"),
    ("family_guid", "16s", "FamilyGUID"),
    ("fork_guid", "16s", "RecoveryForkID = FirstRecoveryForkID"),
    ("backup_set_guid", "16s", "BackupSetGUID"),
    ("diff_base_guid", "16s", "DifferentialBaseGUID (zero = NULL)"),
    ("first_lsn", "Q", "FirstLSN"),
    ("last_lsn", "Q", "LastLSN (next LSN after the backup)"),
    ("checkpoint_lsn", "Q", "CheckpointLSN"),
    ("database_backup_lsn", "Q", "DatabaseBackupLSN (LSN of the last full backup)"),
    ("diff_base_lsn", "Q", "DifferentialBaseLSN (0 = NULL)"),
    ("create_lsn", "Q", "LSN at database creation (FILELISTONLY CreateLSN)"),
    ("backup_size", "Q", "BackupSize: header + uncompressed payload + trailer"),
    ("payload_length", "Q", "payload bytes as stored (compressed or not)"),
    ("raw_payload_length", "Q", "payload bytes before compression"),
    ("start_date", "24s", "BackupStartDate, ASCII ISO 8601"),
    ("finish_date", "24s", "BackupFinishDate, ASCII ISO 8601"),
    ("creation_date", "24s", "DatabaseCreationDate, ASCII ISO 8601"),
    ("database_name", "T128", "DatabaseName"),
    ("backup_name", "T128", "BackupName"),
    ("description", "T255", "BackupDescription"),
    ("user_name", "T128", "UserName"),
    ("server_name", "T128", "ServerName"),
    ("machine_name", "T128", "MachineName"),
    ("collation", "T128", "Collation"),
    ("data_logical_name", "T128", "data file LogicalName"),
    ("data_physical_name", "T260", "data file PhysicalName"),
    ("log_logical_name", "T128", "log file LogicalName"),
    ("log_physical_name", "T260", "log file PhysicalName"),
], crc=True)

FAMILY_HEADER = Layout("family header", FAMILY_HEADER_SIZE, [
    ("magic", "4s", '`b"VFAM"`'),
    ("version", "H", "format version (1)"),
    ("header_size", "H", "4096"),
    ("header_area", "I", "bytes before the first stripe: max(4096, block_size)"),
    ("family_index", "I", "0-based (LABELONLY FamilySequenceNumber - 1)"),
    ("family_count", "I", "families in the media set"),
    ("stripe_size", "I", "logical stripe size (MAXTRANSFERSIZE)"),
    ("block_size", "I", "BLOCKSIZE; the family length is a multiple of it"),
    ("flags", "I", "same bits as the set header flags"),
    ("logical_length", "Q", "length of the logical stream"),
    ("family_data_length", "Q", "stripe bytes in this family"),
    ("family_length", "Q", "total bytes of this family"),
    ("image_offset", "Q", "logical offset of the page image (uncompressed full), else 0"),
    ("image_length", "Q", "length of that page image, else 0"),
    ("media_set_guid", "16s", "MediaSetId"),
    ("media_family_guid", "16s", "MediaFamilyId"),
    ("backup_set_guid", "16s", "BackupSetGUID of the set on the media"),
    ("database_guid", "16s", "BindingID of the backed-up database"),
    ("backup_type", "B", "1, 2 or 5"),
    ("reserved1", "7s", "zero"),
    ("first_lsn", "Q", "FirstLSN of the set"),
    ("last_lsn", "Q", "LastLSN of the set"),
    ("software_vendor_id", "I", "4608"),
    ("reserved2", "4s", "zero"),
    ("media_date", "24s", "MediaDate, ASCII ISO 8601"),
    ("media_name", "T128", "MediaName"),
    ("media_description", "T255", "MediaDescription"),
    ("software_name", "T128", "SoftwareName"),
    ("database_name", "T128", "DatabaseName of the set"),
    ("backup_name", "T128", "BackupName of the set"),
], crc=True)

TRAILER = Layout("set trailer", TRAILER_SIZE, [
    ("magic", "4s", '`b"VEND"`'),
    ("version", "H", "format version (1)"),
    ("reserved1", "2s", "zero"),
    ("record_count", "I", "as in the set header"),
    ("reserved2", "4s", "zero"),
    ("payload_length", "Q", "as in the set header"),
    ("stream_length", "Q", "length of the whole logical stream"),
    ("sha256", "32s", "SHA-256 of the set header and the payload minus page bodies"),
], crc=False)

RUN_HEADER = Layout("page run header", 16, [
    ("magic", "4s", '`b"VRUN"`'),
    ("first_page", "I", "page id of the first page"),
    ("page_count", "I", "pages that follow (page_count * 8192 bytes)"),
    ("reserved1", "4s", "zero"),
], crc=False)

LOG_RECORD_HEADER = Layout("log record header", 16, [
    ("magic", "4s", '`b"VLOG"`'),
    ("page_id", "I", "page the record changed"),
    ("lsn", "Q", "LSN of the change; 8192 bytes of page after-image follow"),
], crc=False)

CHUNK_HEADER = Layout("compressed chunk header", 16, [
    ("magic", "4s", '`b"VZC1"`'),
    ("raw_length", "I", "bytes after decompression (1 MiB except the last)"),
    ("stored_length", "I", "zlib bytes that follow"),
    ("reserved1", "4s", "zero"),
], crc=False)

LAYOUTS: tuple[Layout, ...] = (SET_HEADER, TRAILER, RUN_HEADER, LOG_RECORD_HEADER,
                               CHUNK_HEADER, FAMILY_HEADER)


def _int(d: Mapping[str, Value], key: str) -> int:
    value = d[key]
    if not isinstance(value, int):
        raise TypeError(f"{key} is not an int")
    return value


def _bytes(d: Mapping[str, Value], key: str) -> bytes:
    value = d[key]
    if not isinstance(value, bytes):
        raise TypeError(f"{key} is not bytes")
    return value


def _text(d: Mapping[str, Value], key: str) -> str | None:
    value = d[key]
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} is not text")
    return value


def _req_text(d: Mapping[str, Value], key: str) -> str:
    return _text(d, key) or ""


def _date(d: Mapping[str, Value], key: str) -> str:
    return _bytes(d, key).rstrip(b"\0").decode("ascii", errors="replace")


def _guid(d: Mapping[str, Value], key: str) -> uuid.UUID | None:
    raw = _bytes(d, key)
    return None if raw == bytes(16) else uuid.UUID(bytes=raw)


def _req_guid(d: Mapping[str, Value], key: str) -> uuid.UUID:
    return _guid(d, key) or uuid.UUID(int=0)


def _guid_bytes(value: uuid.UUID | None) -> bytes:
    return bytes(16) if value is None else value.bytes


def guid_str(value: uuid.UUID | None) -> str | None:
    """GUIDs as rowsets carry them: upper-case 8-4-4-4-12 strings, as SQL Server shows them."""
    return None if value is None else str(value).upper()


# ---------------------------------------------------------------------------------------
# Backup set metadata
# ---------------------------------------------------------------------------------------


@attrs.frozen
class BackupSetInfo:
    """Everything the set header carries (what RESTORE HEADERONLY/FILELISTONLY show)."""

    kind: BackupKind
    backup_name: str | None
    description: str | None
    database_name: str
    database_id: int
    database_guid: uuid.UUID
    family_guid: uuid.UUID
    fork_guid: uuid.UUID
    backup_set_guid: uuid.UUID
    diff_base_guid: uuid.UUID | None
    first_lsn: int
    last_lsn: int
    checkpoint_lsn: int
    database_backup_lsn: int
    diff_base_lsn: int | None
    create_lsn: int
    backup_size: int
    compressed_backup_size: int
    payload_length: int
    raw_payload_length: int
    copy_only: bool
    checksum: bool
    compressed: bool
    begins_log_chain: bool
    recovery_model: Literal["FULL", "SIMPLE"]
    page_size: int
    database_pages: int
    data_pages: int
    log_pages: int
    record_count: int
    compression_chunk: int
    backup_start_date: str
    backup_finish_date: str
    database_creation_date: str
    user_name: str
    server_name: str
    machine_name: str
    collation: str
    data_logical_name: str
    data_physical_name: str
    log_logical_name: str
    log_physical_name: str
    software_version: tuple[int, int, int] = SOFTWARE_VERSION
    database_version: int = DATABASE_VERSION
    compatibility_level: int = COMPATIBILITY_LEVEL

    @property
    def backup_type(self) -> int:
        return BACKUP_TYPE[self.kind]

    @property
    def pages_count(self) -> int:
        """Pages processed, as the 3014 message counts them."""
        return self.data_pages + self.log_pages

    @property
    def flags(self) -> int:
        return ((FLAG_COPY_ONLY if self.copy_only else 0)
                | (FLAG_CHECKSUM if self.checksum else 0)
                | (FLAG_COMPRESSED if self.compressed else 0)
                | (FLAG_BEGINS_LOG_CHAIN if self.begins_log_chain else 0))

    @property
    def image_range(self) -> tuple[int, int]:
        """``(offset, length)`` of the raw page image in the logical stream, or (0, 0)."""
        if self.kind == "full" and not self.compressed:
            return SET_HEADER_SIZE, self.raw_payload_length
        return 0, 0

    def to_header_bytes(self) -> bytes:
        major, minor, build = self.software_version
        return SET_HEADER.pack({
            "magic": b"VSET", "version": FORMAT_VERSION, "header_size": SET_HEADER_SIZE,
            "backup_type": self.backup_type,
            "recovery_model": _RECOVERY_CODE[self.recovery_model], "flags": self.flags,
            "page_size": self.page_size, "database_id": self.database_id,
            "database_pages": self.database_pages, "data_pages": self.data_pages,
            "log_pages": self.log_pages, "record_count": self.record_count,
            "compression_chunk": self.compression_chunk,
            "software_major": major, "software_minor": minor, "software_build": build,
            "database_version": self.database_version,
            "compatibility_level": self.compatibility_level,
            "database_guid": self.database_guid.bytes, "family_guid": self.family_guid.bytes,
            "fork_guid": self.fork_guid.bytes, "backup_set_guid": self.backup_set_guid.bytes,
            "diff_base_guid": _guid_bytes(self.diff_base_guid),
            "first_lsn": self.first_lsn, "last_lsn": self.last_lsn,
            "checkpoint_lsn": self.checkpoint_lsn,
            "database_backup_lsn": self.database_backup_lsn,
            "diff_base_lsn": self.diff_base_lsn or 0, "create_lsn": self.create_lsn,
            "backup_size": self.backup_size, "payload_length": self.payload_length,
            "raw_payload_length": self.raw_payload_length,
            "start_date": self.backup_start_date.encode("ascii"),
            "finish_date": self.backup_finish_date.encode("ascii"),
            "creation_date": self.database_creation_date.encode("ascii"),
            "database_name": self.database_name, "backup_name": self.backup_name,
            "description": self.description, "user_name": self.user_name,
            "server_name": self.server_name, "machine_name": self.machine_name,
            "collation": self.collation,
            "data_logical_name": self.data_logical_name,
            "data_physical_name": self.data_physical_name,
            "log_logical_name": self.log_logical_name,
            "log_physical_name": self.log_physical_name,
        })

    @classmethod
    def from_header_bytes(cls, buf: bytes | bytearray | memoryview) -> BackupSetInfo:
        """Parse a set header; a damaged or foreign header raises SqlError 3189."""
        if len(buf) < SET_HEADER_SIZE or bytes(buf[:4]) != b"VSET" or not SET_HEADER.crc_ok(buf):
            raise sql_error(3189)
        d = SET_HEADER.unpack(buf)
        kind = BACKUP_KIND.get(_int(d, "backup_type"))
        model = _RECOVERY_NAME.get(_int(d, "recovery_model"))
        if kind is None or model is None or _int(d, "version") != FORMAT_VERSION:
            raise sql_error(3189)
        return cls._from_fields(d, kind, model)

    @classmethod
    def _from_fields(cls, d: Mapping[str, Value], kind: BackupKind,
                     model: Literal["FULL", "SIMPLE"]) -> BackupSetInfo:
        flags = _int(d, "flags")
        header_len = SET_HEADER_SIZE + TRAILER_SIZE
        return cls(
            kind=kind, backup_name=_text(d, "backup_name"), description=_text(d, "description"),
            database_name=_req_text(d, "database_name"), database_id=_int(d, "database_id"),
            database_guid=_req_guid(d, "database_guid"), family_guid=_req_guid(d, "family_guid"),
            fork_guid=_req_guid(d, "fork_guid"), backup_set_guid=_req_guid(d, "backup_set_guid"),
            diff_base_guid=_guid(d, "diff_base_guid"),
            first_lsn=_int(d, "first_lsn"), last_lsn=_int(d, "last_lsn"),
            checkpoint_lsn=_int(d, "checkpoint_lsn"),
            database_backup_lsn=_int(d, "database_backup_lsn"),
            diff_base_lsn=_int(d, "diff_base_lsn") or None, create_lsn=_int(d, "create_lsn"),
            backup_size=_int(d, "backup_size"),
            compressed_backup_size=header_len + _int(d, "payload_length"),
            payload_length=_int(d, "payload_length"),
            raw_payload_length=_int(d, "raw_payload_length"),
            copy_only=bool(flags & FLAG_COPY_ONLY), checksum=bool(flags & FLAG_CHECKSUM),
            compressed=bool(flags & FLAG_COMPRESSED),
            begins_log_chain=bool(flags & FLAG_BEGINS_LOG_CHAIN),
            recovery_model=model, page_size=_int(d, "page_size"),
            database_pages=_int(d, "database_pages"), data_pages=_int(d, "data_pages"),
            log_pages=_int(d, "log_pages"), record_count=_int(d, "record_count"),
            compression_chunk=_int(d, "compression_chunk"),
            backup_start_date=_date(d, "start_date"), backup_finish_date=_date(d, "finish_date"),
            database_creation_date=_date(d, "creation_date"),
            user_name=_req_text(d, "user_name"), server_name=_req_text(d, "server_name"),
            machine_name=_req_text(d, "machine_name"), collation=_req_text(d, "collation"),
            data_logical_name=_req_text(d, "data_logical_name"),
            data_physical_name=_req_text(d, "data_physical_name"),
            log_logical_name=_req_text(d, "log_logical_name"),
            log_physical_name=_req_text(d, "log_physical_name"),
            software_version=(_int(d, "software_major"), _int(d, "software_minor"),
                              _int(d, "software_build")),
            database_version=_int(d, "database_version"),
            compatibility_level=_int(d, "compatibility_level"),
        )

    @property
    def stream_length(self) -> int:
        return self.compressed_backup_size


# ---------------------------------------------------------------------------------------
# The logical stream
# ---------------------------------------------------------------------------------------


class LazyBytes:
    """Bytes computed on first use (thread-safe); :meth:`prefetch` computes them in a
    background thread.  Used for the trailer (see :func:`set_digest`)."""

    def __init__(self, length: int, compute: Callable[[], bytes]) -> None:
        self.length = length
        self._compute = compute
        self._lock = threading.Lock()
        self._value: bytes | None = None

    def get(self) -> bytes:
        with self._lock:
            if self._value is None:
                value = self._compute()
                if len(value) != self.length:
                    raise ValueError("lazy segment computed the wrong length")
                self._value = value
            return self._value

    def prefetch(self) -> None:
        threading.Thread(target=self._quiet_get, name="vdisim-digest", daemon=True).start()

    def _quiet_get(self) -> None:
        try:
            self.get()
        except Exception:  # get() raises again for the reader that needs the value
            pass


Segment = bytes | bytearray | memoryview | LazyBytes


def _view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _seg_len(seg: Segment) -> int:
    return seg.length if isinstance(seg, LazyBytes) else len(_view(seg))


class LogicalStream:
    """A logical stream made of segments; reads copy straight from them (no join)."""

    def __init__(self, segments: Iterable[Segment]) -> None:
        self._segments: list[memoryview | LazyBytes] = []
        self._starts: list[int] = []
        pos = 0
        for seg in segments:
            size = _seg_len(seg)
            if size == 0:
                continue
            self._starts.append(pos)
            self._segments.append(seg if isinstance(seg, LazyBytes) else _view(seg))
            pos += size
        self.length = pos

    def _segment(self, index: int) -> memoryview:
        seg = self._segments[index]
        return memoryview(seg.get()) if isinstance(seg, LazyBytes) else seg

    def readinto(self, offset: int, out: memoryview) -> int:
        """Copy ``len(out)`` bytes (fewer at the end) from ``offset`` into ``out``."""
        if offset < 0:
            raise ValueError("negative offset")
        out = _view(out)
        n = max(0, min(len(out), self.length - offset))
        index = bisect.bisect_right(self._starts, offset) - 1
        done = 0
        while done < n:
            view = self._segment(index)
            within = offset + done - self._starts[index]
            k = min(n - done, len(view) - within)
            out[done:done + k] = view[within:within + k]
            done += k
            index += 1
        return n

    def read(self, offset: int, size: int) -> bytes:
        buf = bytearray(max(0, min(size, self.length - offset)))
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def views(self, offset: int = 0, size: int | None = None) -> Iterator[memoryview]:
        """Zero-copy views covering ``[offset, offset+size)`` (segment by segment)."""
        end = self.length if size is None else min(self.length, offset + size)
        index = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while offset < end and index < len(self._segments):
            view = self._segment(index)
            within = offset - self._starts[index]
            k = min(end - offset, len(view) - within)
            yield view[within:within + k]
            offset += k
            index += 1


# ---------------------------------------------------------------------------------------
# BACKUP: building the backup set
# ---------------------------------------------------------------------------------------


@attrs.frozen
class _Payload:
    segments: tuple[Segment, ...]
    length: int
    data_pages: int
    log_pages: int
    record_count: int


def _check_backup_allowed(db: Database, kind: BackupKind) -> None:
    if db.state == "RESTORING":
        raise sql_error(927, db.name)
    if kind == "diff" and db.last_full_lsn is None:
        raise sql_error(3035, db.name)
    if kind == "log":
        if db.recovery_model != "FULL":
            raise sql_error(4208)
        if db.last_full_lsn is None or db.log_chain_start is None:
            raise sql_error(4214)


def page_runs(pages: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted page ids coalesced into ``(first_page, count)`` runs."""
    runs: list[list[int]] = []
    for page in sorted(set(pages)):
        if runs and runs[-1][0] + runs[-1][1] == page:
            runs[-1][1] += 1
        else:
            runs.append([page, 1])
    return [(first, count) for first, count in runs]


def _full_payload(db: Database) -> _Payload:
    return _Payload((memoryview(db.data),), len(db.data), db.n_pages, FULL_LOG_PAGES, 1)


def _diff_payload(db: Database) -> _Payload:
    view = memoryview(db.data)
    segments: list[Segment] = []
    runs = page_runs(db.changed_since_full)
    for first, count in runs:
        segments.append(RUN_HEADER.pack({"magic": b"VRUN", "first_page": first,
                                         "page_count": count}))
        segments.append(view[first * PAGE_SIZE:(first + count) * PAGE_SIZE])
    pages = sum(count for _first, count in runs)
    length = len(runs) * RUN_HEADER.total + pages * PAGE_SIZE
    return _Payload(tuple(segments), length, pages, FULL_LOG_PAGES, len(runs))


def _log_records(db: Database) -> list[LogRecord]:
    first, last = _log_range(db)
    return [r for r in db.log if first <= r.lsn < last]


def _log_range(db: Database) -> tuple[int, int]:
    first = db.log_chain_start if db.log_chain_start is not None else db.lsn + 1
    return first, db.lsn + 1


def _log_payload(db: Database) -> _Payload:
    segments: list[Segment] = []
    records = _log_records(db)
    for rec in records:
        segments.append(LOG_RECORD_HEADER.pack({"magic": b"VLOG", "page_id": rec.page_id,
                                                "lsn": rec.lsn}))
        segments.append(rec.image)
    length = len(records) * (LOG_RECORD_HEADER.total + PAGE_SIZE)
    return _Payload(tuple(segments), length, 0, len(records), len(records))


def _compress_payload(payload: _Payload) -> tuple[list[Segment], int]:
    """zlib level 1, independent 1 MiB chunks (compressed in parallel threads)."""
    raw = LogicalStream(payload.segments)
    chunks = (_chunk_bytes(raw, off) for off in range(0, raw.length, COMPRESSION_CHUNK))
    out: list[Segment] = []
    for raw_len, packed in _parallel_map(_compress_chunk, chunks):
        out.append(CHUNK_HEADER.pack({"magic": b"VZC1", "raw_length": raw_len,
                                      "stored_length": len(packed)}))
        out.append(packed)
    return out, sum(_seg_len(s) for s in out)


def _chunk_bytes(raw: LogicalStream, offset: int) -> memoryview | bytes:
    views = list(raw.views(offset, COMPRESSION_CHUNK))
    return views[0] if len(views) == 1 else b"".join(views)


def _compress_chunk(chunk: memoryview | bytes) -> tuple[int, bytes]:
    return len(chunk), zlib.compress(chunk, 1)


def _parallel_map(func: Callable[[_T], _R], items: Iterable[_T]) -> Iterator[_R]:
    """``map`` over a small thread pool (zlib releases the GIL), bounded look-ahead."""
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[_R]] = deque()
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


_GATHER_BLOCK = 256  # pages per block of the strided page-header gather (stays in cache/TLB)
_WORDS_PER_PAGE = PAGE_SIZE // 8
_HEADER_WORDS = PAGE_HEADER_SIZE // 8


def page_headers(pages: bytes | bytearray | memoryview) -> bytes:
    """The 64-byte headers of the pages in ``pages`` (a whole number of 8 KiB pages),
    concatenated: a strided gather (8-byte words, block by block), no per-byte work."""
    view = _view(pages)
    if len(view) % PAGE_SIZE:
        raise ValueError("not a whole number of pages")
    n = len(view) // PAGE_SIZE
    out = bytearray(n * PAGE_HEADER_SIZE)
    src, dst = view.cast("Q"), memoryview(out).cast("Q")
    for first in range(0, n, _GATHER_BLOCK):
        last = min(n, first + _GATHER_BLOCK)
        s = src[first * _WORDS_PER_PAGE:last * _WORDS_PER_PAGE]
        d = dst[first * _HEADER_WORDS:last * _HEADER_WORDS]
        for k in range(_HEADER_WORDS):
            d[k::_HEADER_WORDS] = s[k::_WORDS_PER_PAGE]
    return bytes(out)


def set_digest(header: bytes | bytearray | memoryview, payload: Iterable[Segment], *,
               compressed: bool) -> bytes:
    """The trailer's SHA-256 over the set header and the payload given as its segments.

    Uncompressed: a segment whose length is a multiple of 8192 holds page images and
    contributes only its page headers (:func:`page_headers`); any other segment (a 16-byte
    run or log record header) contributes all its bytes.  Page bodies are protected by
    their header's CRC32, which RESTORE checks.  Compressed: every stored byte.
    """
    digest = hashlib.sha256(header)
    for seg in payload:
        if isinstance(seg, LazyBytes):
            raise TypeError("payload segments are never lazy")
        view = _view(seg)
        if compressed or len(view) % PAGE_SIZE:
            digest.update(view)
        else:
            digest.update(page_headers(view))
    return digest.digest()


def _trailer(header: bytes, stored: Sequence[Segment], payload_length: int,
             record_count: int, *, compressed: bool) -> LazyBytes:
    stream_length = len(header) + payload_length + TRAILER_SIZE

    def compute() -> bytes:
        digest = set_digest(header, stored, compressed=compressed)
        return TRAILER.pack({"magic": b"VEND", "version": FORMAT_VERSION,
                             "record_count": record_count, "payload_length": payload_length,
                             "stream_length": stream_length, "sha256": digest})

    return LazyBytes(TRAILER_SIZE, compute)


@attrs.define(eq=False)
class PreparedBackup:
    """A backup set ready to stream.  :meth:`commit` once the BACKUP has succeeded."""

    db: Database
    info: BackupSetInfo
    stream: LogicalStream
    committed: bool = False

    @property
    def pages_count(self) -> int:
        return self.info.pages_count

    def commit(self) -> None:
        """Apply the backup's bookkeeping to the database (only for a successful BACKUP)."""
        if self.committed:
            raise RuntimeError("backup already committed")
        self.committed = True
        if self.info.copy_only:
            return
        if self.info.kind == "full":
            _commit_full(self.db, self.info)
        elif self.info.kind == "log":
            _commit_log(self.db, self.info)

    def messages(self) -> list[SqlMessage]:
        """The 4035 lines BACKUP prints before its 3014 summary."""
        info = self.info
        out = []
        if info.kind != "log":
            out.append(message(4035, info.data_pages, info.database_name, info.data_logical_name))
        out.append(message(4035, info.log_pages, info.database_name, info.log_logical_name))
        return out


def _commit_full(db: Database, info: BackupSetInfo) -> None:
    ckpt = info.checkpoint_lsn
    db.last_full_lsn = ckpt
    db.diff_base_guid = info.backup_set_guid
    db.changed_since_full = {p for p in db.changed_since_full if db.page_lsn(p) > ckpt}
    if db.recovery_model == "FULL" and db.log_chain_start is None:
        db.log_chain_start = ckpt + 1
        db.log = [r for r in db.log if r.lsn > ckpt]


def _commit_log(db: Database, info: BackupSetInfo) -> None:
    db.log = [r for r in db.log if r.lsn >= info.last_lsn]
    db.log_chain_start = info.last_lsn
    db.last_log_backup_lsn = info.last_lsn


def build_backup(db: Database, kind: BackupKind, *, copy_only: bool, name: str | None,
                 description: str | None, checksum: bool, compression: bool,
                 backup_start_date: str | None = None, user_name: str = DEFAULT_USER,
                 server_name: str = DEFAULT_SERVER,
                 machine_name: str = DEFAULT_SERVER) -> PreparedBackup:
    """Prepare BACKUP DATABASE (``full``/``diff``) or BACKUP LOG (``log``) of ``db``.

    Raises SqlError 927 (database restoring), 3035 (diff without a full backup), 4208
    (log backup in SIMPLE), 4214 (log backup without a current full backup).
    """
    if kind not in BACKUP_TYPE:
        raise ValueError(f"unknown backup kind {kind!r}")
    _check_backup_allowed(db, kind)
    builders = {"full": _full_payload, "diff": _diff_payload, "log": _log_payload}
    payload = builders[kind](db)
    stored, stored_length = (_compress_payload(payload) if compression
                             else (list(payload.segments), payload.length))
    start = backup_start_date or _default_start_date(db)
    info = _make_info(db, kind, payload, stored_length, start=start, copy_only=copy_only,
                      name=name, description=description, checksum=checksum,
                      compression=compression, names=(user_name, server_name, machine_name))
    header = info.to_header_bytes()
    trailer = _trailer(header, stored, stored_length, payload.record_count,
                       compressed=compression)
    if stored_length >= _PREFETCH_DIGEST_AT:
        trailer.prefetch()
    db.backup_count += 1
    return PreparedBackup(db, info, LogicalStream([header, *stored, trailer]))


def _default_start_date(db: Database) -> str:
    """Deterministic: the creation date plus one second per LSN since creation."""
    created = datetime.fromisoformat(db.creation_date)
    return iso_datetime(created + timedelta(seconds=db.lsn - db.create_lsn + 1))


def _lsns(db: Database, kind: BackupKind) -> tuple[int, int, int, int, int | None]:
    """(first, last, checkpoint, database_backup_lsn, diff_base_lsn) of a new backup."""
    base = db.last_full_lsn or 0
    if kind == "log":
        first, last = _log_range(db)
        return first, last, base, base, None
    diff_base = db.last_full_lsn if kind == "diff" else None
    return db.lsn, db.lsn + 1, db.lsn, base, diff_base


def _make_info(db: Database, kind: BackupKind, payload: _Payload, stored_length: int, *,
               start: str, copy_only: bool, name: str | None, description: str | None,
               checksum: bool, compression: bool,
               names: tuple[str, str, str]) -> BackupSetInfo:
    first, last, ckpt, db_backup_lsn, diff_base_lsn = _lsns(db, kind)
    set_guid = derived_uuid("backupset", db.guid, db.name, kind, db.lsn, copy_only,
                            db.backup_count, start)
    data_file, log_file = db.files
    return BackupSetInfo(
        kind=kind, backup_name=name, description=description, database_name=db.name,
        database_id=db.db_id, database_guid=db.guid, family_guid=db.family_guid,
        fork_guid=db.fork_guid, backup_set_guid=set_guid,
        diff_base_guid=db.diff_base_guid if kind == "diff" else None,
        first_lsn=first, last_lsn=last, checkpoint_lsn=ckpt,
        database_backup_lsn=db_backup_lsn, diff_base_lsn=diff_base_lsn,
        create_lsn=db.create_lsn,
        backup_size=SET_HEADER_SIZE + payload.length + TRAILER_SIZE,
        compressed_backup_size=SET_HEADER_SIZE + stored_length + TRAILER_SIZE,
        payload_length=stored_length, raw_payload_length=payload.length,
        copy_only=copy_only, checksum=checksum, compressed=compression,
        begins_log_chain=kind == "log" and db.last_log_backup_lsn != db.log_chain_start,
        recovery_model=db.recovery_model, page_size=PAGE_SIZE, database_pages=db.n_pages,
        data_pages=payload.data_pages, log_pages=payload.log_pages,
        record_count=payload.record_count,
        compression_chunk=COMPRESSION_CHUNK if compression else 0,
        backup_start_date=start, backup_finish_date=start,
        database_creation_date=db.creation_date, user_name=names[0], server_name=names[1],
        machine_name=names[2], collation=COLLATION,
        data_logical_name=data_file.logical_name, data_physical_name=data_file.physical_name,
        log_logical_name=log_file.logical_name, log_physical_name=log_file.physical_name,
    )


# ---------------------------------------------------------------------------------------
# Striping over media families
# ---------------------------------------------------------------------------------------


@attrs.frozen
class FamilyHeader:
    """The header block at the start of every media family (RESTORE LABELONLY)."""

    family_index: int
    family_count: int
    stripe_size: int
    block_size: int
    logical_length: int
    image_offset: int
    image_length: int
    media_set_guid: uuid.UUID
    media_family_guid: uuid.UUID
    backup_set_guid: uuid.UUID
    database_guid: uuid.UUID
    backup_type: int
    compressed: bool
    checksum: bool
    first_lsn: int
    last_lsn: int
    media_date: str
    database_name: str
    backup_name: str | None
    media_name: str | None = None
    media_description: str | None = None
    software_name: str = SOFTWARE_NAME
    software_vendor_id: int = SOFTWARE_VENDOR_ID

    @property
    def geometry(self) -> FamilyLayout:
        return FamilyLayout(self.logical_length, self.family_count, self.stripe_size,
                            self.block_size)

    @property
    def header_area(self) -> int:
        return max(FAMILY_HEADER_SIZE, self.block_size)

    def same_media_set(self, other: FamilyHeader) -> bool:
        """Whether two family headers describe the same media set (all but the index)."""
        return attrs.evolve(other, family_index=self.family_index,
                            media_family_guid=self.media_family_guid) == self

    def to_bytes(self) -> bytes:
        geometry = self.geometry
        flags = ((FLAG_CHECKSUM if self.checksum else 0)
                 | (FLAG_COMPRESSED if self.compressed else 0))
        return FAMILY_HEADER.pack({
            "magic": b"VFAM", "version": FORMAT_VERSION, "header_size": FAMILY_HEADER_SIZE,
            "header_area": self.header_area, "family_index": self.family_index,
            "family_count": self.family_count, "stripe_size": self.stripe_size,
            "block_size": self.block_size, "flags": flags,
            "logical_length": self.logical_length,
            "family_data_length": geometry.family_data_length(self.family_index),
            "family_length": geometry.family_length(self.family_index),
            "image_offset": self.image_offset, "image_length": self.image_length,
            "media_set_guid": self.media_set_guid.bytes,
            "media_family_guid": self.media_family_guid.bytes,
            "backup_set_guid": self.backup_set_guid.bytes,
            "database_guid": self.database_guid.bytes, "backup_type": self.backup_type,
            "first_lsn": self.first_lsn, "last_lsn": self.last_lsn,
            "software_vendor_id": self.software_vendor_id,
            "media_date": self.media_date.encode("ascii"), "media_name": self.media_name,
            "media_description": self.media_description,
            "software_name": self.software_name, "database_name": self.database_name,
            "backup_name": self.backup_name,
        })

    @classmethod
    def from_bytes(cls, buf: bytes | bytearray | memoryview, device: str) -> FamilyHeader:
        """Parse and validate: wrong magic -> 3242, malformed/damaged -> 3241."""
        if len(buf) < FAMILY_HEADER_SIZE or bytes(buf[:4]) != b"VFAM":
            raise sql_error(3242, device)
        if not FAMILY_HEADER.crc_ok(buf):
            raise sql_error(3241, device)
        d = FAMILY_HEADER.unpack(buf)
        try:
            header = cls._from_fields(d)
            header.geometry.check()
        except (ValueError, TypeError) as exc:
            raise sql_error(3241, device) from exc
        geometry = header.geometry
        consistent = (
            _int(d, "version") == FORMAT_VERSION
            and header.family_index < header.family_count
            and _int(d, "header_area") == header.header_area
            and _int(d, "family_length") == geometry.family_length(header.family_index)
            and header.image_offset + header.image_length <= header.logical_length)
        if not consistent:
            raise sql_error(3241, device)
        return header

    @classmethod
    def _from_fields(cls, d: Mapping[str, Value]) -> FamilyHeader:
        flags = _int(d, "flags")
        return cls(
            family_index=_int(d, "family_index"), family_count=_int(d, "family_count"),
            stripe_size=_int(d, "stripe_size"), block_size=_int(d, "block_size"),
            logical_length=_int(d, "logical_length"), image_offset=_int(d, "image_offset"),
            image_length=_int(d, "image_length"),
            media_set_guid=_req_guid(d, "media_set_guid"),
            media_family_guid=_req_guid(d, "media_family_guid"),
            backup_set_guid=_req_guid(d, "backup_set_guid"),
            database_guid=_req_guid(d, "database_guid"), backup_type=_int(d, "backup_type"),
            compressed=bool(flags & FLAG_COMPRESSED), checksum=bool(flags & FLAG_CHECKSUM),
            first_lsn=_int(d, "first_lsn"), last_lsn=_int(d, "last_lsn"),
            media_date=_date(d, "media_date"), database_name=_req_text(d, "database_name"),
            backup_name=_text(d, "backup_name"), media_name=_text(d, "media_name"),
            media_description=_text(d, "media_description"),
            software_name=_req_text(d, "software_name"),
            software_vendor_id=_int(d, "software_vendor_id"),
        )


@attrs.frozen
class MediaLabel:
    """What every family header of one media set shares besides the geometry."""

    media_set_guid: uuid.UUID
    info: BackupSetInfo
    media_date: str
    media_name: str | None = None
    media_description: str | None = None


@attrs.frozen
class FamilyLayout:
    """Geometry of a striped media set, plus (for BACKUP) the stream and label to fill from.

    Family ``i``: a header area of ``max(4096, block_size)`` bytes (header + zeros), then
    logical stripes i, i+N, i+2N, ... of ``stripe_size`` bytes (the last one of the stream
    possibly shorter), then zeros up to a multiple of ``block_size``.
    """

    stream_length: int
    family_count: int
    stripe_size: int
    block_size: int
    stream: LogicalStream | None = attrs.field(default=None, eq=False, repr=False)
    label: MediaLabel | None = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """ValueError unless block 512..65536 (power of 2), stripe a multiple of 64 KiB in
        64 KiB..4 MiB, 1..64 families."""
        bs, ss = self.block_size, self.stripe_size
        if not (512 <= bs <= 65536 and bs & (bs - 1) == 0):
            raise ValueError(f"block size {bs} is not a power of 2 in 512..65536")
        if not (MIN_STRIPE <= ss <= MAX_STRIPE and ss % MIN_STRIPE == 0):
            raise ValueError(f"stripe size {ss} is not a multiple of 64 KiB in 64 KiB..4 MiB")
        if not 1 <= self.family_count <= MAX_FAMILIES:
            raise ValueError(f"family count {self.family_count} not in 1..{MAX_FAMILIES}")
        if self.stream_length < 0:
            raise ValueError("negative stream length")

    @classmethod
    def for_backup(cls, prepared: PreparedBackup, family_count: int, stripe_size: int,
                   block_size: int, *, media_name: str | None = None,
                   media_description: str | None = None) -> FamilyLayout:
        info = prepared.info
        media_set = derived_uuid("mediaset", info.backup_set_guid, family_count, stripe_size,
                                 block_size)
        label = MediaLabel(media_set, info, info.backup_start_date, media_name,
                           media_description)
        return cls(prepared.stream.length, family_count, stripe_size, block_size,
                   prepared.stream, label)

    # -- geometry ----------------------------------------------------------------------

    @property
    def header_area(self) -> int:
        return max(FAMILY_HEADER_SIZE, self.block_size)

    @property
    def stripe_count(self) -> int:
        return -(-self.stream_length // self.stripe_size)

    def family_stripes(self, i: int) -> int:
        return max(0, -(-(self.stripe_count - i) // self.family_count))

    def family_data_length(self, i: int) -> int:
        stripes = self.family_stripes(i)
        if stripes == 0:
            return 0
        last = i + (stripes - 1) * self.family_count
        return (stripes - 1) * self.stripe_size + self.stripe_length(last)

    def stripe_length(self, logical_stripe: int) -> int:
        return min(self.stripe_size, self.stream_length - logical_stripe * self.stripe_size)

    def family_length(self, i: int) -> int:
        used = self.header_area + self.family_data_length(i)
        return -(-used // self.block_size) * self.block_size

    def locate(self, i: int, family_offset: int) -> tuple[Literal["header", "data", "pad"],
                                                          int, int]:
        """What lies at ``family_offset`` of family ``i``: ``(region, position, run)``.

        ``position`` is the offset within the header area, the *logical* offset for
        data, or the offset within the padding; ``run`` is how many bytes from there on
        are contiguous in that region (0 past the end of the family).
        """
        area = self.header_area
        if family_offset < area:
            return "header", family_offset, area - family_offset
        data_end = area + self.family_data_length(i)
        if family_offset < data_end:
            k, within = divmod(family_offset - area, self.stripe_size)
            stripe = i + k * self.family_count
            return ("data", stripe * self.stripe_size + within,
                    self.stripe_length(stripe) - within)
        pad = family_offset - data_end
        return "pad", pad, max(0, self.family_length(i) - family_offset)

    # -- BACKUP side -------------------------------------------------------------------

    def header(self, i: int) -> FamilyHeader:
        if self.label is None:
            raise ValueError("this layout has no media label")
        label, info = self.label, self.label.info
        image_offset, image_length = info.image_range
        return FamilyHeader(
            family_index=i, family_count=self.family_count, stripe_size=self.stripe_size,
            block_size=self.block_size, logical_length=self.stream_length,
            image_offset=image_offset, image_length=image_length,
            media_set_guid=label.media_set_guid,
            media_family_guid=derived_uuid("mediafamily", label.media_set_guid, i),
            backup_set_guid=info.backup_set_guid, database_guid=info.database_guid,
            backup_type=info.backup_type, compressed=info.compressed, checksum=info.checksum,
            first_lsn=info.first_lsn, last_lsn=info.last_lsn, media_date=label.media_date,
            database_name=info.database_name, backup_name=info.backup_name,
            media_name=label.media_name, media_description=label.media_description,
        )

    def header_bytes(self, i: int) -> bytes:
        return self.header(i).to_bytes()

    def fill(self, i: int, family_offset: int, out: memoryview) -> int:
        """Write family ``i``'s bytes from ``family_offset`` into ``out``; returns the count
        (``len(out)``, or fewer at the end of the family)."""
        if self.stream is None:
            raise ValueError("this layout has no stream to fill from")
        if not 0 <= i < self.family_count:
            raise IndexError(f"family {i} outside 0..{self.family_count - 1}")
        out = _view(out)
        n = max(0, min(len(out), self.family_length(i) - family_offset))
        done = 0
        header: bytes | None = None
        while done < n:
            region, pos, run = self.locate(i, family_offset + done)
            k = min(n - done, run)
            target = out[done:done + k]
            if region == "data":
                self.stream.readinto(pos, target)
            elif region == "header":
                header = header or self.header_bytes(i)
                target[:] = _padded(header, pos, k)
            else:
                target[:] = memoryview(_ZEROS)[:k]
            done += k
        return n


def _padded(data: bytes, pos: int, k: int) -> memoryview | bytes:
    piece = data[pos:pos + k]
    return piece if len(piece) == k else piece + bytes(k - len(piece))


# ---------------------------------------------------------------------------------------
# RESTORE: reading families back
# ---------------------------------------------------------------------------------------


class _SplitBuffer:
    """The logical stream being reassembled, in up to three bytearrays so that the page
    image of an uncompressed full backup is one bytearray the database can adopt."""

    def __init__(self, length: int, image_offset: int, image_length: int) -> None:
        cuts = sorted({0, image_offset, image_offset + image_length, length})
        spans = [(a, b) for a, b in itertools.pairwise(cuts) if b > a]
        self.starts = [a for a, _b in spans]
        self.regions = [bytearray(b - a) for a, b in spans]
        self.length = length

    def write(self, offset: int, data: memoryview) -> None:
        done = 0
        while done < len(data):
            index = bisect.bisect_right(self.starts, offset + done) - 1
            region = self.regions[index]
            within = offset + done - self.starts[index]
            k = min(len(data) - done, len(region) - within)
            region[within:within + k] = data[done:done + k]
            done += k

    def view(self, start: int, end: int) -> memoryview:
        """A view of ``[start, end)``, which must lie in one region."""
        index = bisect.bisect_right(self.starts, start) - 1
        within = start - self.starts[index]
        if end - self.starts[index] > len(self.regions[index]):
            raise ValueError("range spans regions")
        return memoryview(self.regions[index])[within:within + end - start]

    def region_at(self, start: int) -> bytearray:
        return self.regions[bisect.bisect_right(self.starts, start) - 1]

    def views(self, start: int, end: int) -> Iterator[memoryview]:
        for region_start, region in zip(self.starts, self.regions, strict=True):
            a = max(start, region_start)
            b = min(end, region_start + len(region))
            if a < b:
                yield memoryview(region)[a - region_start:b - region_start]


class FamilyReader:
    """One media family as it arrives from one device: feed its bytes in order, in chunks
    of any size.  The header is parsed and validated as soon as it is complete."""

    def __init__(self, assembler: RestoreAssembler, device: str) -> None:
        self.assembler = assembler
        self.device = device
        self.header: FamilyHeader | None = None
        self.received = 0
        self._head = bytearray()
        self._layout: FamilyLayout | None = None

    @property
    def family_length(self) -> int | None:
        if self._layout is None or self.header is None:
            return None
        return self._layout.family_length(self.header.family_index)

    @property
    def complete(self) -> bool:
        length = self.family_length
        return length is not None and self.received >= length

    @property
    def remaining(self) -> int | None:
        """Bytes still expected (None until the header has been read)."""
        length = self.family_length
        return None if length is None else max(0, length - self.received)

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        data = _view(chunk)
        if self.header is None:
            data = self._feed_head(data)
            if self.header is None:
                return
        self._route(data)

    def _feed_head(self, data: memoryview) -> memoryview:
        need = FAMILY_HEADER_SIZE - len(self._head)
        self._head += data[:need]
        self.received += min(need, len(data))
        if len(self._head) < FAMILY_HEADER_SIZE:
            return data[len(data):]
        header = FamilyHeader.from_bytes(self._head, self.device)
        self.assembler._register(self, header)
        self.header = header
        self._layout = header.geometry
        return data[need:]

    def _route(self, data: memoryview) -> None:
        assert self.header is not None and self._layout is not None
        index = self.header.family_index
        done = 0
        while done < len(data):
            region, pos, run = self._layout.locate(index, self.received)
            if run == 0:  # past the end of the family: ignore what the device sends
                self.received += len(data) - done
                return
            k = min(len(data) - done, run)
            if region == "data":
                self.assembler._write(pos, data[done:done + k])
            done += k
            self.received += k


@attrs.frozen
class PageRun:
    """``page_count`` consecutive page images starting at page ``first_page``."""

    first_page: int
    page_count: int
    data: memoryview


@attrs.frozen
class BackupSet:
    """A backup set read back from media: metadata plus payload."""

    info: BackupSetInfo
    runs: tuple[PageRun, ...]
    records: tuple[LogRecord, ...]
    checksums_verified: bool
    _image: list[bytearray] = attrs.field(factory=list, repr=False, alias="image_holder")

    @property
    def consumed(self) -> bool:
        return self.info.kind == "full" and not self._image

    def take_image(self) -> bytearray:
        """The page image of a full backup, handed over without copying (once)."""
        if self.info.kind != "full":
            raise ValueError("only a full backup has a page image")
        if not self._image:
            raise ValueError("the page image was already applied; read the media again")
        return self._image.pop()


class RestoreAssembler:
    """Collects the families of one media set and rebuilds the backup set.

    ``devices`` name the devices (for messages); ``reader(k)`` is the reader for the k-th
    device.  Readers may be fed from different threads.  With ``metadata_only`` only the
    set header is kept (HEADERONLY/FILELISTONLY/LABELONLY stop early and need no buffer).
    """

    def __init__(self, family_count: int, devices: Sequence[str] | None = None, *,
                 metadata_only: bool = False) -> None:
        if not 1 <= family_count <= MAX_FAMILIES:
            raise ValueError(f"family count {family_count} not in 1..{MAX_FAMILIES}")
        names = list(devices) if devices is not None else [
            f"device{k + 1}" for k in range(family_count)]
        if len(names) != family_count:
            raise ValueError("one device name per family")
        self.family_count = family_count
        self.metadata_only = metadata_only
        self.readers = [FamilyReader(self, name) for name in names]
        self._lock = threading.Lock()
        self._families: dict[int, FamilyReader] = {}
        self._first: FamilyHeader | None = None
        self._buffer: _SplitBuffer | None = None
        self._set_header = bytearray(SET_HEADER_SIZE)
        self._result: BackupSet | None = None

    def reader(self, k: int) -> FamilyReader:
        return self.readers[k]

    # -- called by readers -------------------------------------------------------------

    def _register(self, reader: FamilyReader, header: FamilyHeader) -> None:
        with self._lock:
            if header.family_count > self.family_count:
                raise sql_error(3132, header.family_count, self.family_count)
            if header.family_count < self.family_count:
                raise sql_error(3231, reader.device, header.family_count, self.family_count)
            if self._first is not None and not self._first.same_media_set(header):
                raise sql_error(3258, reader.device)
            if header.family_index in self._families:
                raise sql_error(3227, reader.device, self.family_count, len(self._families))
            self._families[header.family_index] = reader
            if self._first is None:
                self._first = header
                if not self.metadata_only:
                    self._buffer = _SplitBuffer(header.logical_length, header.image_offset,
                                                header.image_length)

    def _write(self, offset: int, data: memoryview) -> None:
        if offset < SET_HEADER_SIZE:
            k = min(len(data), SET_HEADER_SIZE - offset)
            self._set_header[offset:offset + k] = data[:k]
        if self._buffer is not None:
            self._buffer.write(offset, data)

    # -- metadata ----------------------------------------------------------------------

    def family_headers(self) -> list[FamilyHeader]:
        """Headers read so far, in family order."""
        return [r.header for _i, r in sorted(self._families.items()) if r.header is not None]

    @property
    def header_ready(self) -> bool:
        """Whether the set header has arrived (it is at the start of family 0's data)."""
        reader = self._families.get(0)
        if reader is None or reader.header is None:
            return False
        needed = reader.header.header_area + min(SET_HEADER_SIZE, reader.header.logical_length)
        return reader.received >= needed

    def info(self) -> BackupSetInfo:
        """The set header (HEADERONLY).  Not there yet -> SqlError 3208."""
        if not self.header_ready:
            raise sql_error(3208)
        return BackupSetInfo.from_header_bytes(self._set_header)

    @property
    def complete(self) -> bool:
        return len(self._families) == self.family_count and all(
            r.complete for r in self._families.values())

    # -- the whole set -----------------------------------------------------------------

    def finish(self, *, verify_checksums: bool | None = None) -> BackupSet:
        """Check that every family is complete and the set undamaged; parse the payload.

        Every page body is always checked against its header's CRC32 (the trailer digest
        covers page headers, not bodies).  A mismatch is 3183 (naming the page) when
        ``verify_checksums`` (default: when the backup was made WITH CHECKSUM), else 3189;
        a trailer digest mismatch or malformed payload is 3189.
        """
        if self._result is not None:
            return self._result
        if self.metadata_only:
            raise ValueError("a metadata-only assembler keeps no payload")
        buffer = self._check_complete()
        info = self.info()
        if info.stream_length != buffer.length:
            raise sql_error(3189)
        trailer = TRAILER.unpack(buffer.view(buffer.length - TRAILER_SIZE, buffer.length))
        self._check_trailer(info, trailer)
        verify = info.checksum if verify_checksums is None else verify_checksums
        result = _parse_set(info, buffer)
        if verify:  # page checks first, so that a damaged page is reported by its number
            _verify_backup(result, info.database_name)
        if _stored_digest(info, buffer) != _bytes(trailer, "sha256"):
            raise sql_error(3189)
        if not verify:
            _verify_backup(result, info.database_name, error=3189)
        self._result = result
        return result

    def _check_complete(self) -> _SplitBuffer:
        if self._first is None or self._buffer is None:
            raise sql_error(3208)
        if len(self._families) < self._first.family_count:
            raise sql_error(3132, self._first.family_count, len(self._families))
        for reader in self.readers:
            if reader.header is None:
                raise sql_error(3208)
            if not reader.complete:
                raise sql_error(3266, reader.device)
        return self._buffer

    @staticmethod
    def _check_trailer(info: BackupSetInfo, trailer: Mapping[str, Value]) -> None:
        ok = (_bytes(trailer, "magic") == b"VEND"
              and _int(trailer, "payload_length") == info.payload_length
              and _int(trailer, "stream_length") == info.stream_length
              and _int(trailer, "record_count") == info.record_count)
        if not ok:
            raise sql_error(3189)


def header_only(assembler: RestoreAssembler) -> BackupSetInfo:
    """HEADERONLY/FILELISTONLY: the set info, once family 0's header and the set header
    have been read (the rest of the media need not be read)."""
    return assembler.info()


def _stored_digest(info: BackupSetInfo, buffer: _SplitBuffer) -> bytes:
    """:func:`set_digest` of the set as read back (its payload already parsed)."""
    start, end = SET_HEADER_SIZE, SET_HEADER_SIZE + info.payload_length
    header = buffer.view(0, SET_HEADER_SIZE)
    if info.compressed:
        return set_digest(header, buffer.views(start, end), compressed=True)
    return set_digest(header, _payload_segments(info, buffer.view(start, end)),
                      compressed=False)


def _payload_segments(info: BackupSetInfo, payload: memoryview) -> list[memoryview]:
    """An uncompressed payload cut as :func:`build_backup` cuts it: page images apart
    from the 16-byte run / log record headers."""
    if info.kind == "full":
        return [payload]
    out: list[memoryview] = []
    pos = 0
    while pos < len(payload):
        count = 1
        if info.kind == "diff":
            count = _int(RUN_HEADER.unpack(payload[pos:pos + RUN_HEADER.total]), "page_count")
        start = pos + RUN_HEADER.total  # == LOG_RECORD_HEADER.total
        out.extend((payload[pos:start], payload[start:start + count * PAGE_SIZE]))
        pos = start + count * PAGE_SIZE
    return out


def _payload_view(info: BackupSetInfo, buffer: _SplitBuffer) -> memoryview | bytearray:
    start = SET_HEADER_SIZE
    if not info.compressed:
        return buffer.view(start, start + info.payload_length)
    return _decompress(buffer.view(start, start + info.payload_length), info.raw_payload_length)


def _parse_set(info: BackupSetInfo, buffer: _SplitBuffer) -> BackupSet:
    """Parse the payload (malformed -> 3189); the caller verifies every page."""
    try:
        payload = _payload_view(info, buffer)
        if info.kind == "full":
            image = _full_image(info, buffer, payload)
            backup = BackupSet(info, (PageRun(0, info.database_pages, memoryview(image)),), (),
                               True, image_holder=[image])
        elif info.kind == "diff":
            backup = BackupSet(info, _parse_runs(info, _view(payload)), (), True)
        else:
            backup = BackupSet(info, (), _parse_records(info, _view(payload)), True)
    except (ValueError, struct.error, zlib.error) as exc:
        raise sql_error(3189) from exc
    return backup


def _full_image(info: BackupSetInfo, buffer: _SplitBuffer,
                payload: memoryview | bytearray) -> bytearray:
    if len(payload) != info.database_pages * PAGE_SIZE:
        raise ValueError("full image has the wrong size")
    if isinstance(payload, bytearray):
        return payload
    region = buffer.region_at(SET_HEADER_SIZE)
    if len(region) != len(payload):
        raise ValueError("the page image is not a region of its own")
    return region


def _decompress(stored: memoryview, raw_length: int) -> bytearray:
    out = bytearray(raw_length)
    jobs: list[tuple[int, int, memoryview]] = []
    pos = raw = 0
    while pos < len(stored):
        hdr = CHUNK_HEADER.unpack(stored[pos:pos + CHUNK_HEADER.total])
        size, packed = _int(hdr, "raw_length"), _int(hdr, "stored_length")
        start = pos + CHUNK_HEADER.total
        if _bytes(hdr, "magic") != b"VZC1" or start + packed > len(stored):
            raise ValueError("bad compressed chunk")
        jobs.append((raw, size, stored[start:start + packed]))
        pos, raw = start + packed, raw + size
    if raw != raw_length:
        raise ValueError("compressed payload has the wrong raw length")
    for (offset, size, _packed), data in zip(jobs, _parallel_map(_inflate, jobs), strict=True):
        if len(data) != size:
            raise ValueError("chunk inflated to the wrong size")
        out[offset:offset + size] = data
    return out


def _inflate(job: tuple[int, int, memoryview]) -> bytes:
    return zlib.decompress(job[2])


def _parse_runs(info: BackupSetInfo, payload: memoryview) -> tuple[PageRun, ...]:
    runs: list[PageRun] = []
    pos = 0
    while pos < len(payload):
        hdr = RUN_HEADER.unpack(payload[pos:pos + RUN_HEADER.total])
        first, count = _int(hdr, "first_page"), _int(hdr, "page_count")
        start = pos + RUN_HEADER.total
        end = start + count * PAGE_SIZE
        if (_bytes(hdr, "magic") != b"VRUN" or end > len(payload)
                or first + count > info.database_pages):
            raise ValueError("bad page run")
        runs.append(PageRun(first, count, payload[start:end]))
        pos = end
    if len(runs) != info.record_count or sum(r.page_count for r in runs) != info.data_pages:
        raise ValueError("page runs do not match the header")
    return tuple(runs)


def _parse_records(info: BackupSetInfo, payload: memoryview) -> tuple[LogRecord, ...]:
    records: list[LogRecord] = []
    step = LOG_RECORD_HEADER.total + PAGE_SIZE
    if len(payload) % step:
        raise ValueError("log payload is not a whole number of records")
    for pos in range(0, len(payload), step):
        hdr = LOG_RECORD_HEADER.unpack(payload[pos:pos + LOG_RECORD_HEADER.total])
        lsn, page_id = _int(hdr, "lsn"), _int(hdr, "page_id")
        if (_bytes(hdr, "magic") != b"VLOG" or page_id >= info.database_pages
                or not info.first_lsn <= lsn < info.last_lsn):
            raise ValueError("bad log record")
        records.append(LogRecord(lsn, page_id, bytes(payload[pos + 16:pos + step])))
    if len(records) != info.record_count:
        raise ValueError("log records do not match the header")
    return tuple(records)


def _verify_backup(backup: BackupSet, database_name: str, *,
                   error: Literal[3183, 3189] = 3183) -> None:
    """Every page image must carry its page id and a matching checksum, else 3183 (naming
    the page) or, with ``error=3189``, 3189 (damaged backup set)."""
    def bad(page_id: int) -> SqlError:
        return sql_error(3183, 1, page_id, database_name) if error == 3183 else sql_error(3189)

    for run in backup.runs:
        for k in range(run.page_count):
            if not page_ok(run.data, k, run.first_page + k):
                raise bad(run.first_page + k)
    for rec in backup.records:
        if not page_ok(rec.image, 0, rec.page_id):
            raise bad(rec.page_id)


# ---------------------------------------------------------------------------------------
# RESTORE: sequence rules
# ---------------------------------------------------------------------------------------


def apply_restore(catalog: dict[str, Database], backup: BackupSet, target_name: str, *,
                  recovery: bool, replace: bool,
                  moves: tuple[tuple[str, str], ...] = ()) -> list[SqlMessage]:
    """Apply one backup set to ``catalog[target_name]`` (RESTORE DATABASE / RESTORE LOG).

    Returns the 4035 messages to print (the engine adds the timed 3014 summary).  Errors:
    3234 (MOVE of an unknown logical file), 3154 (other database, no REPLACE), 3159 (log
    tail not backed up, no REPLACE), 3118 (diff/log for a missing database), 3117 (target
    not RESTORING), 3136 (wrong differential base), 3120 (diff older than the database),
    4305/4326 (log too recent/too early), 3183 (page checksum mismatch).
    """
    info = backup.info
    _check_moves(info, target_name, moves)
    if info.kind == "full":
        _restore_full(catalog, backup, target_name, replace=replace, moves=moves)
    else:
        db = _restoring_target(catalog, info, target_name)
        if info.kind == "diff":
            _restore_diff(db, backup, target_name)
        else:
            _restore_log(db, backup, target_name)
    catalog[target_name].state = "ONLINE" if recovery else "RESTORING"
    return restore_messages(info, target_name)


def restore_messages(info: BackupSetInfo, target_name: str) -> list[SqlMessage]:
    """The 4035 lines of a RESTORE: one per file (data file first)."""
    data_pages = 0 if info.kind == "log" else info.data_pages
    return [message(4035, data_pages, target_name, info.data_logical_name),
            message(4035, info.log_pages, target_name, info.log_logical_name)]


def statement_name(kind: BackupKind, *, restore: bool) -> str:
    """'BACKUP DATABASE', 'RESTORE LOG', ... as the 3014/3013 messages name the statement."""
    verb = "RESTORE" if restore else "BACKUP"
    return f"{verb} {'LOG' if kind == 'log' else 'DATABASE'}"


def recover_database(catalog: dict[str, Database], name: str) -> None:
    """RESTORE DATABASE name WITH RECOVERY without a backup: RESTORING -> ONLINE."""
    db = catalog.get(name)
    if db is None:
        raise sql_error(3118, name)
    if db.state == "ONLINE":
        raise sql_error(3153)
    db.state = "ONLINE"


def _check_moves(info: BackupSetInfo, target_name: str,
                 moves: tuple[tuple[str, str], ...]) -> None:
    known = {info.data_logical_name.lower(), info.log_logical_name.lower()}
    for logical, _physical in moves:
        if logical.lower() not in known:
            raise sql_error(3234, logical, target_name)


def _moved(info: BackupSetInfo, moves: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    paths = {info.data_logical_name.lower(): info.data_physical_name,
             info.log_logical_name.lower(): info.log_physical_name}
    for logical, physical in moves:
        paths[logical.lower()] = physical
    return paths[info.data_logical_name.lower()], paths[info.log_logical_name.lower()]


def _restore_full(catalog: dict[str, Database], backup: BackupSet, target_name: str, *,
                  replace: bool, moves: tuple[tuple[str, str], ...]) -> None:
    info = backup.info
    existing = catalog.get(target_name)
    if existing is not None and not replace:
        if existing.guid != info.database_guid:
            raise sql_error(3154, target_name)
        if existing.state == "ONLINE" and existing.has_log_tail():
            raise sql_error(3159, target_name)
    if backup.consumed:
        raise ValueError("the page image was already applied; read the media again")
    if not backup.checksums_verified:
        _verify_backup(backup, target_name)
    data_path, log_path = _moved(info, moves)
    db_id = existing.db_id if existing is not None else _next_db_id(catalog)
    catalog[target_name] = _restored_database(backup, target_name, db_id, data_path, log_path)


def _next_db_id(catalog: Mapping[str, Database]) -> int:
    return max([4, *(db.db_id for db in catalog.values())]) + 1


def _restored_database(backup: BackupSet, name: str, db_id: int, data_path: str,
                       log_path: str) -> Database:
    info = backup.info
    ckpt = info.checkpoint_lsn
    return Database(
        name=name, db_id=db_id, seed=0, n_pages=info.database_pages, data=backup.take_image(),
        guid=info.database_guid, family_guid=info.family_guid, fork_guid=info.fork_guid,
        creation_date=info.database_creation_date, data_path=data_path, log_path=log_path,
        create_lsn=info.create_lsn, lsn=ckpt, recovery_model=info.recovery_model,
        state="RESTORING", last_full_lsn=ckpt, diff_base_guid=info.backup_set_guid,
        log_chain_start=ckpt + 1 if info.recovery_model == "FULL" else None,
    )


def _restoring_target(catalog: Mapping[str, Database], info: BackupSetInfo,
                      target_name: str) -> Database:
    db = catalog.get(target_name)
    if db is None:
        raise sql_error(3118, target_name)
    if db.state != "RESTORING":
        raise sql_error(3117)
    if db.guid != info.database_guid:
        raise sql_error(3154, target_name)
    return db


def _restore_diff(db: Database, backup: BackupSet, target_name: str) -> None:
    info = backup.info
    if info.diff_base_lsn != db.last_full_lsn or info.diff_base_guid != db.diff_base_guid:
        raise sql_error(3136)
    if info.checkpoint_lsn < db.lsn:
        raise sql_error(3120)
    if not backup.checksums_verified:
        _verify_backup(backup, target_name)
    for run in backup.runs:
        start = run.first_page * PAGE_SIZE
        db.data[start:start + run.page_count * PAGE_SIZE] = run.data
        db.changed_since_full.update(range(run.first_page, run.first_page + run.page_count))
    db.lsn = info.checkpoint_lsn
    db.log_chain_start = db.lsn + 1 if db.recovery_model == "FULL" else None


def _restore_log(db: Database, backup: BackupSet, target_name: str) -> None:
    info = backup.info
    redo = db.lsn + 1
    if info.first_lsn > redo:
        raise sql_error(4305, lsn_str(info.first_lsn), lsn_str(redo))
    empty_at_redo = info.first_lsn == info.last_lsn == redo
    if info.last_lsn < redo or (info.last_lsn == redo and not empty_at_redo):
        raise sql_error(4326, lsn_str(info.last_lsn), lsn_str(redo))
    if not backup.checksums_verified:
        _verify_backup(backup, target_name)
    for rec in sorted(backup.records, key=lambda r: r.lsn):
        if rec.lsn >= redo:
            db.write_page(rec.page_id, rec.image)
            db.changed_since_full.add(rec.page_id)
    db.lsn = info.last_lsn - 1
    db.log_chain_start = info.last_lsn


# ---------------------------------------------------------------------------------------
# Rowsets
# ---------------------------------------------------------------------------------------

HEADERONLY_COLUMNS: tuple[Column, ...] = tuple(Column(n, t) for n, t in [
    ("BackupName", "nvarchar(128)"), ("BackupDescription", "nvarchar(255)"),
    ("BackupType", "smallint"), ("ExpirationDate", "datetime"), ("Compressed", "bit"),
    ("Position", "smallint"), ("DeviceType", "tinyint"), ("UserName", "nvarchar(128)"),
    ("ServerName", "nvarchar(128)"), ("DatabaseName", "nvarchar(128)"),
    ("DatabaseVersion", "int"), ("DatabaseCreationDate", "datetime"),
    ("BackupSize", "numeric(20,0)"), ("FirstLSN", "numeric(25,0)"),
    ("LastLSN", "numeric(25,0)"), ("CheckpointLSN", "numeric(25,0)"),
    ("DatabaseBackupLSN", "numeric(25,0)"), ("BackupStartDate", "datetime"),
    ("BackupFinishDate", "datetime"), ("SortOrder", "smallint"), ("CodePage", "smallint"),
    ("UnicodeLocaleId", "int"), ("UnicodeComparisonStyle", "int"),
    ("CompatibilityLevel", "tinyint"), ("SoftwareVendorId", "int"),
    ("SoftwareVersionMajor", "int"), ("SoftwareVersionMinor", "int"),
    ("SoftwareVersionBuild", "int"), ("MachineName", "nvarchar(128)"), ("Flags", "int"),
    ("BindingID", "uniqueidentifier"), ("RecoveryForkID", "uniqueidentifier"),
    ("Collation", "nvarchar(128)"), ("FamilyGUID", "uniqueidentifier"),
    ("HasBulkLoggedData", "bit"), ("IsSnapshot", "bit"), ("IsReadOnly", "bit"),
    ("IsSingleUser", "bit"), ("HasBackupChecksums", "bit"), ("IsDamaged", "bit"),
    ("BeginsLogChain", "bit"), ("HasIncompleteMetaData", "bit"), ("IsForceOffline", "bit"),
    ("IsCopyOnly", "bit"), ("FirstRecoveryForkID", "uniqueidentifier"),
    ("ForkPointLSN", "numeric(25,0)"), ("RecoveryModel", "nvarchar(60)"),
    ("DifferentialBaseLSN", "numeric(25,0)"), ("DifferentialBaseGUID", "uniqueidentifier"),
    ("BackupTypeDescription", "nvarchar(60)"), ("BackupSetGUID", "uniqueidentifier"),
    ("CompressedBackupSize", "bigint"), ("containment", "tinyint"),
    ("KeyAlgorithm", "nvarchar(32)"), ("EncryptorThumbprint", "varbinary(20)"),
    ("EncryptorType", "nvarchar(32)"),
])

FILELISTONLY_COLUMNS: tuple[Column, ...] = tuple(Column(n, t) for n, t in [
    ("LogicalName", "nvarchar(128)"), ("PhysicalName", "nvarchar(260)"),
    ("Type", "nvarchar(1)"), ("FileGroupName", "nvarchar(128)"), ("Size", "numeric(20,0)"),
    ("MaxSize", "numeric(20,0)"), ("FileID", "bigint"), ("CreateLSN", "numeric(25,0)"),
    ("DropLSN", "numeric(25,0)"), ("UniqueID", "uniqueidentifier"),
    ("ReadOnlyLSN", "numeric(25,0)"), ("ReadWriteLSN", "numeric(25,0)"),
    ("BackupSizeInBytes", "bigint"), ("SourceBlockSize", "int"), ("FileGroupID", "int"),
    ("LogGroupGUID", "uniqueidentifier"), ("DifferentialBaseLSN", "numeric(25,0)"),
    ("DifferentialBaseGUID", "uniqueidentifier"), ("IsReadOnly", "bit"), ("IsPresent", "bit"),
    ("TDEThumbprint", "varbinary(32)"), ("SnapshotURL", "nvarchar(360)"),
])

LABELONLY_COLUMNS: tuple[Column, ...] = tuple(Column(n, t) for n, t in [
    ("MediaName", "nvarchar(128)"), ("MediaSetId", "uniqueidentifier"),
    ("FamilyCount", "int"), ("FamilySequenceNumber", "int"),
    ("MediaFamilyId", "uniqueidentifier"), ("MediaSequenceNumber", "int"),
    ("MediaLabelPresent", "tinyint"), ("MediaDescription", "nvarchar(255)"),
    ("SoftwareName", "nvarchar(128)"), ("SoftwareVendorId", "int"), ("MediaDate", "datetime"),
    ("Mirror_Count", "int"), ("IsCompressed", "bit"),
])

MAX_SIZE_UNLIMITED = 35184372080640  # what SQL Server shows for an unlimited data file
MAX_LOG_SIZE = 2199023255552  # 2 TB, the log file limit
HEADERONLY_FLAG_CHECKSUMS = 16  # HEADERONLY Flags bit: backup contains backup checksums


def _headeronly_row(info: BackupSetInfo, position: int) -> tuple[Any, ...]:
    major, minor, build = info.software_version
    values: dict[str, Any] = {
        "BackupName": info.backup_name, "BackupDescription": info.description,
        "BackupType": info.backup_type, "ExpirationDate": None,
        "Compressed": info.compressed, "Position": position,
        "DeviceType": DEVICE_TYPE_VIRTUAL, "UserName": info.user_name,
        "ServerName": info.server_name, "DatabaseName": info.database_name,
        "DatabaseVersion": info.database_version,
        "DatabaseCreationDate": info.database_creation_date,
        "BackupSize": info.backup_size, "FirstLSN": info.first_lsn, "LastLSN": info.last_lsn,
        "CheckpointLSN": info.checkpoint_lsn, "DatabaseBackupLSN": info.database_backup_lsn,
        "BackupStartDate": info.backup_start_date,
        "BackupFinishDate": info.backup_finish_date, "SortOrder": SORT_ORDER,
        "CodePage": CODE_PAGE, "UnicodeLocaleId": UNICODE_LOCALE_ID,
        "UnicodeComparisonStyle": UNICODE_COMPARISON_STYLE,
        "CompatibilityLevel": info.compatibility_level,
        "SoftwareVendorId": SOFTWARE_VENDOR_ID, "SoftwareVersionMajor": major,
        "SoftwareVersionMinor": minor, "SoftwareVersionBuild": build,
        "MachineName": info.machine_name,
        "Flags": HEADERONLY_FLAG_CHECKSUMS if info.checksum else 0,
        "BindingID": guid_str(info.database_guid), "RecoveryForkID": guid_str(info.fork_guid),
        "Collation": info.collation, "FamilyGUID": guid_str(info.family_guid),
        "HasBulkLoggedData": False, "IsSnapshot": False, "IsReadOnly": False,
        "IsSingleUser": False, "HasBackupChecksums": info.checksum, "IsDamaged": False,
        "BeginsLogChain": info.begins_log_chain, "HasIncompleteMetaData": False,
        "IsForceOffline": False, "IsCopyOnly": info.copy_only,
        "FirstRecoveryForkID": guid_str(info.fork_guid), "ForkPointLSN": None,
        "RecoveryModel": info.recovery_model, "DifferentialBaseLSN": info.diff_base_lsn,
        "DifferentialBaseGUID": guid_str(info.diff_base_guid),
        "BackupTypeDescription": BACKUP_TYPE_DESCRIPTION[info.kind],
        "BackupSetGUID": guid_str(info.backup_set_guid),
        "CompressedBackupSize": info.compressed_backup_size, "containment": 0,
        "KeyAlgorithm": None, "EncryptorThumbprint": None, "EncryptorType": None,
    }
    return tuple(values[c.name] for c in HEADERONLY_COLUMNS)


def headeronly_rowset(infos: Sequence[BackupSetInfo]) -> Rowset:
    """RESTORE HEADERONLY: one row per backup set (Position = 1-based index)."""
    return Rowset(HEADERONLY_COLUMNS,
                  tuple(_headeronly_row(info, k + 1) for k, info in enumerate(infos)))


def _file_row(info: BackupSetInfo, file_type: Literal["D", "L"]) -> tuple[Any, ...]:
    is_data = file_type == "D"
    file_id = 1 if is_data else 2
    diff = info.kind == "diff" and is_data
    values: dict[str, Any] = {
        "LogicalName": info.data_logical_name if is_data else info.log_logical_name,
        "PhysicalName": info.data_physical_name if is_data else info.log_physical_name,
        "Type": file_type, "FileGroupName": "PRIMARY" if is_data else None,
        "Size": info.database_pages * info.page_size if is_data else 8 * 1024 * 1024,
        "MaxSize": MAX_SIZE_UNLIMITED if is_data else MAX_LOG_SIZE, "FileID": file_id,
        "CreateLSN": 0, "DropLSN": None,
        "UniqueID": guid_str(derived_uuid("file", info.family_guid, file_id)),
        "ReadOnlyLSN": 0, "ReadWriteLSN": 0,
        "BackupSizeInBytes": (info.data_pages if is_data else info.log_pages) * PAGE_SIZE,
        "SourceBlockSize": 4096, "FileGroupID": 1 if is_data else 0, "LogGroupGUID": None,
        "DifferentialBaseLSN": info.diff_base_lsn if diff else None,
        "DifferentialBaseGUID": guid_str(info.diff_base_guid) if diff else None,
        "IsReadOnly": False, "IsPresent": True,
        "TDEThumbprint": None, "SnapshotURL": None,
    }
    return tuple(values[c.name] for c in FILELISTONLY_COLUMNS)


def filelistonly_rowset(info: BackupSetInfo) -> Rowset:
    """RESTORE FILELISTONLY: the data file and the log file of the backed-up database."""
    return Rowset(FILELISTONLY_COLUMNS, (_file_row(info, "D"), _file_row(info, "L")))


def labelonly_rowset(header: FamilyHeader) -> Rowset:
    """RESTORE LABELONLY: the media label of one family."""
    values: dict[str, Any] = {
        "MediaName": header.media_name, "MediaSetId": guid_str(header.media_set_guid),
        "FamilyCount": header.family_count, "FamilySequenceNumber": header.family_index + 1,
        "MediaFamilyId": guid_str(header.media_family_guid), "MediaSequenceNumber": 1,
        "MediaLabelPresent": 1, "MediaDescription": header.media_description,
        "SoftwareName": header.software_name, "SoftwareVendorId": header.software_vendor_id,
        "MediaDate": header.media_date, "Mirror_Count": 1, "IsCompressed": header.compressed,
    }
    return Rowset(LABELONLY_COLUMNS, (tuple(values[c.name] for c in LABELONLY_COLUMNS),))


__all__ = [
    "BACKUP_TYPE", "COMPRESSION_CHUNK", "FAMILY_HEADER", "FAMILY_HEADER_SIZE", "LAYOUTS",
    "SET_HEADER", "SET_HEADER_SIZE", "TRAILER", "TRAILER_SIZE", "BackupKind", "BackupSet",
    "BackupSetInfo", "FamilyHeader", "FamilyLayout", "FamilyReader", "Layout",
    "LogicalStream", "MediaLabel", "PageRun", "PreparedBackup", "RestoreAssembler",
    "apply_restore", "build_backup", "filelistonly_rowset", "guid_str",
    "header_only", "headeronly_rowset", "labelonly_rowset", "page_headers", "page_runs",
    "recover_database", "restore_messages", "set_digest", "statement_name",
]
