"""TDS token encoders (MS-TDS §2.2.7): what the server writes in a tabular result.

Several encodings depend on the TDS version the login agreed on (``version`` below, e.g.
``0x74000004``): before TDS 7.2 the DONE row count is 4 bytes (8 from 7.2), the INFO/ERROR
LineNumber 2 bytes (4 from 7.2) and COLMETADATA/RETURNVALUE UserType 2 bytes (4 from 7.2).
jTDS logs in with TDS 7.1 and needs the short forms.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from vdisim.engine.results import Rowset
from vdisim.engine.sqlerrors import SqlMessage
from vdisim.engine.tds.types import WireType, b_varchar, column_type, us_varchar

TDS71 = 0x71000001
TDS72 = 0x72090002
TDS74 = 0x74000004

# Token types
COLMETADATA, ERROR, INFO, LOGINACK, RETURNVALUE = 0x81, 0xAA, 0xAB, 0xAD, 0xAC
ROW, ENVCHANGE, RETURNSTATUS = 0xD1, 0xE3, 0x79
DONE, DONEPROC, DONEINPROC = 0xFD, 0xFE, 0xFF

# DONE status bits
DONE_FINAL, DONE_MORE, DONE_ERROR, DONE_INXACT = 0x00, 0x01, 0x02, 0x04
DONE_COUNT, DONE_ATTN, DONE_SRVERROR = 0x10, 0x20, 0x100
CURCMD_SELECT = 0xC1

# ENVCHANGE types
ENV_DATABASE, ENV_LANGUAGE, ENV_PACKETSIZE, ENV_COLLATION = 1, 2, 4, 7
ENV_BEGIN_TRAN, ENV_COMMIT_TRAN, ENV_ROLLBACK_TRAN = 8, 9, 10

SERVER_NAME = "VDISIM"


def is72(version: int) -> bool:
    """TDS 7.2 or later (TDS 8 logins, 0x08000000, are sent as 7.4)."""
    return version >= 0x72000000 or version < 0x70000000


def done(status: int = DONE_FINAL, curcmd: int = 0, rowcount: int = 0, *,
         token: int = DONE, version: int = TDS74) -> bytes:
    if is72(version):
        return struct.pack("<BHHQ", token, status, curcmd, rowcount)
    return struct.pack("<BHHI", token, status, curcmd, rowcount & 0xFFFFFFFF)


def message(msg: SqlMessage, *, version: int = TDS74, server: str = SERVER_NAME,
            proc: str = "", line: int = 1) -> bytes:
    """INFO (severity <= 10) or ERROR (severity > 10)."""
    token = INFO if msg.severity <= 10 else ERROR
    body = (struct.pack("<iBB", msg.number, msg.state & 0xFF, msg.severity & 0xFF)
            + us_varchar(msg.text) + b_varchar(server[:128]) + b_varchar(proc[:128])
            + (struct.pack("<i", line) if is72(version) else struct.pack("<H", line)))
    return struct.pack("<BH", token, len(body)) + body


def envchange_text(kind: int, new: str, old: str) -> bytes:
    """ENVCHANGE of a B_VARCHAR pair: database (1), language (2), packet size (4)."""
    body = bytes((kind,)) + b_varchar(new) + b_varchar(old)
    return struct.pack("<BH", ENVCHANGE, len(body)) + body


def envchange_bytes(kind: int, new: bytes, old: bytes) -> bytes:
    """ENVCHANGE of a B_VARBYTE pair: collation (7), transactions (8, 9, 10)."""
    body = bytes((kind, len(new))) + new + bytes((len(old),)) + old
    return struct.pack("<BH", ENVCHANGE, len(body)) + body


def loginack(version: int, program: str = "Microsoft SQL Server",
             program_version: tuple[int, int, int] = (16, 0, 1000)) -> bytes:
    """LOGINACK: interface 1 (T-SQL), the agreed TDS version (big-endian), program name and
    version (major, minor, build as two bytes)."""
    major, minor, build = program_version
    body = (b"\x01" + struct.pack(">I", version) + b_varchar(program)
            + bytes((major, minor, build >> 8, build & 0xFF)))
    return struct.pack("<BH", LOGINACK, len(body)) + body


def return_status(value: int) -> bytes:
    return struct.pack("<Bi", RETURNSTATUS, value)


def return_value(ordinal: int, name: str, sql_type: str, value: Any, *,
                 version: int = TDS74) -> bytes:
    """RETURNVALUE of an OUTPUT parameter (status 0x01)."""
    wt = column_type(sql_type)
    usertype = struct.pack("<I", 0) if is72(version) else struct.pack("<H", 0)
    return (struct.pack("<BH", RETURNVALUE, ordinal) + b_varchar(name) + b"\x01" + usertype
            + struct.pack("<H", 0x0001) + wt.type_info + wt.encode(value))


def colmetadata(columns: Sequence[tuple[str, WireType]], *, version: int = TDS74) -> bytes:
    out = bytearray(struct.pack("<BH", COLMETADATA, len(columns)))
    usertype = struct.pack("<I", 0) if is72(version) else struct.pack("<H", 0)
    for name, wt in columns:
        out += usertype + struct.pack("<H", 0x0001) + wt.type_info + b_varchar(name)
    return bytes(out)


def row(types: Sequence[WireType], values: Sequence[Any]) -> bytes:
    return b"\xd1" + b"".join(t.encode(v) for t, v in zip(types, values, strict=True))


def rowset(rs: Rowset, *, version: int = TDS74) -> bytes:
    """COLMETADATA and every ROW of a rowset (the caller adds the DONE)."""
    types = [column_type(c.sql_type) for c in rs.columns]
    out = bytearray(colmetadata([(c.name, t) for c, t in zip(rs.columns, types, strict=True)],
                                version=version))
    for r in rs.rows:
        out += row(types, r)
    return bytes(out)


__all__ = [
    "CURCMD_SELECT", "DONE", "DONEINPROC", "DONEPROC", "DONE_ATTN", "DONE_COUNT",
    "DONE_ERROR", "DONE_FINAL", "DONE_INXACT", "DONE_MORE", "TDS71", "TDS72", "TDS74",
    "colmetadata", "done", "envchange_bytes", "envchange_text", "is72", "loginack",
    "message", "return_status", "return_value", "row", "rowset",
]
