"""TDS data types: column TYPE_INFO and value encoders for rowsets, and parameter decoders.

Written from MS-TDS §2.2.5 (data type definitions).  Rowsets of the engine name their columns'
SQL Server types as strings (``nvarchar(128)``, ``numeric(25,0)``, ``uniqueidentifier``...,
see :mod:`vdisim.engine.results`); :func:`column_type` maps such a name to a
:class:`WireType` that writes TYPE_INFO (for COLMETADATA and RETURNVALUE) and values (for
ROW).  Every column is sent as a nullable type (INTN, BITN, NUMERICN, GUIDN, DATETIMN,
NVARCHAR, BIGVARBINARY, SSVARIANT): rowsets carry NULLs in many columns.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

# Type bytes (MS-TDS §2.2.5.4)
INT1, BIT, INT2, INT4, INT8 = 0x30, 0x32, 0x34, 0x38, 0x7F
DATETIM4, FLT4, MONEY, DATETIME, FLT8, MONEY4 = 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x7A
GUIDN, INTN, BITN, DECIMALN, NUMERICN, FLTN, MONEYN, DATETIMN = (
    0x24, 0x26, 0x68, 0x6A, 0x6C, 0x6D, 0x6E, 0x6F)
DATEN, TIMEN, DATETIME2N, DATETIMEOFFSETN = 0x28, 0x29, 0x2A, 0x2B
BIGVARBINARY, BIGVARCHAR, BIGBINARY, BIGCHAR = 0xA5, 0xA7, 0xAD, 0xAF
NVARCHAR, NCHAR, XML, UDT = 0xE7, 0xEF, 0xF1, 0xF0
TEXT, IMAGE, NTEXT, SSVARIANT = 0x23, 0x22, 0x63, 0x62
DECIMAL_LEGACY, NUMERIC_LEGACY, VARBINARY_LEGACY, VARCHAR_LEGACY = 0x37, 0x3F, 0x25, 0x27
BINARY_LEGACY, CHAR_LEGACY = 0x2D, 0x2F

#: SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, flags IgnoreCase|IgnoreKana|IgnoreWidth, SortId 52
COLLATION = bytes.fromhex("0904D00034")
PLP_NULL = 0xFFFFFFFFFFFFFFFF
PLP_UNKNOWN = 0xFFFFFFFFFFFFFFFE
_EPOCH = datetime(1900, 1, 1)


class TdsTypeError(ValueError):
    """A value or type the encoder cannot write, or a parameter it cannot read."""


def _numeric_size(precision: int) -> int:
    if precision <= 9:
        return 5
    if precision <= 19:
        return 9
    if precision <= 28:
        return 13
    return 17


def encode_decimal(value: Any, size: int, scale: int) -> bytes:
    """A NUMERICN/DECIMALN value: length byte, sign (1 = positive), little-endian magnitude."""
    if value is None:
        return b"\x00"
    d = Decimal(str(value)) if not isinstance(value, Decimal) else value
    n = int(d.scaleb(scale).to_integral_value())
    sign = 0 if n < 0 else 1
    return bytes((size, sign)) + abs(n).to_bytes(size - 1, "little")


def encode_datetime(value: Any) -> bytes:
    """DATETIMN value: days since 1900-01-01 (int32) and 1/300 s ticks since midnight."""
    if value is None:
        return b"\x00"
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if dt.tzinfo is not None:
        dt = dt.replace(tzinfo=None)
    delta = dt - _EPOCH
    days = delta.days
    seconds = delta.seconds + delta.microseconds / 1_000_000
    ticks = round(seconds * 300)
    return b"\x08" + struct.pack("<iI", days, ticks)


def encode_guid(value: Any) -> bytes:
    if value is None:
        return b"\x00"
    u = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    return b"\x10" + u.bytes_le


def encode_nvarchar(value: Any) -> bytes:
    """A USHORTLEN value of NVARCHAR: byte length (0xFFFF = NULL) and UTF-16LE."""
    if value is None:
        return b"\xff\xff"
    data = str(value).encode("utf-16-le")
    if len(data) > 8000:
        raise TdsTypeError("nvarchar value longer than 4000 characters")
    return struct.pack("<H", len(data)) + data


def b_varchar(text: str) -> bytes:
    """B_VARCHAR: a character count byte and UTF-16LE."""
    data = text.encode("utf-16-le")
    if len(data) // 2 > 255:
        raise TdsTypeError("B_VARCHAR longer than 255 characters")
    return bytes((len(data) // 2,)) + data


def us_varchar(text: str) -> bytes:
    """US_VARCHAR: a USHORT character count and UTF-16LE."""
    data = text.encode("utf-16-le")
    return struct.pack("<H", len(data) // 2) + data


@attrs.frozen
class WireType:
    """How one column travels: its TYPE_INFO bytes and its value encoder."""

    sql_type: str
    type_info: bytes
    encode: Callable[[Any], bytes]


_TYPE_RE = re.compile(r"\s*([a-z_0-9]+)\s*(?:\(\s*(max|\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")


def _intn(size: int) -> Callable[[Any], bytes]:
    fmt = {1: "<B", 2: "<h", 4: "<i", 8: "<q"}[size]

    def enc(value: Any) -> bytes:
        if value is None:
            return b"\x00"
        return bytes((size,)) + struct.pack(fmt, int(value))
    return enc


def _bitn(value: Any) -> bytes:
    return b"\x00" if value is None else b"\x01" + (b"\x01" if value else b"\x00")


def _varbinary(value: Any) -> bytes:
    if value is None:
        return b"\xff\xff"
    data = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
    return struct.pack("<H", len(data)) + data


def encode_variant(value: Any) -> bytes:
    """An SSVARIANT value (MS-TDS §2.2.5.5.4): LONG length, base type, property bytes, data."""
    if value is None:
        return b"\x00\x00\x00\x00"
    if isinstance(value, bool | int):
        if -(2**31) <= int(value) < 2**31:
            body = bytes((INT4, 0)) + struct.pack("<i", int(value))
        else:
            body = bytes((INT8, 0)) + struct.pack("<q", int(value))
    else:
        data = str(value).encode("utf-16-le")
        body = bytes((NVARCHAR, 7)) + COLLATION + struct.pack("<H", 8000) + data
    return struct.pack("<I", len(body)) + body


def column_type(sql_type: str) -> WireType:
    """The wire type of a rowset column named like SQL Server's types."""
    m = _TYPE_RE.match(sql_type.lower())
    if m is None:
        raise TdsTypeError(f"unknown column type {sql_type!r}")
    name, arg, arg2 = m.group(1), m.group(2), m.group(3)
    if name in ("nvarchar", "varchar", "nchar", "char", "sysname", "ntext", "text"):
        chars = 4000 if arg in (None, "max") or name in ("sysname", "ntext", "text") else int(arg)
        if name == "sysname":
            chars = 128
        maxlen = min(8000, max(2, chars * 2))
        return WireType(sql_type, bytes((NVARCHAR,)) + struct.pack("<H", maxlen) + COLLATION,
                        encode_nvarchar)
    ints = {"tinyint": 1, "smallint": 2, "int": 4, "bigint": 8}
    if name in ints:
        size = ints[name]
        return WireType(sql_type, bytes((INTN, size)), _intn(size))
    if name == "bit":
        return WireType(sql_type, bytes((BITN, 1)), _bitn)
    if name in ("numeric", "decimal"):
        precision = 18 if arg in (None, "max") else int(arg)
        scale = int(arg2) if arg2 else 0
        if not 1 <= precision <= 38 or scale > precision:
            raise TdsTypeError(f"bad precision/scale in {sql_type!r}")
        size = _numeric_size(precision)
        return WireType(sql_type, bytes((NUMERICN, size, precision, scale)),
                        lambda v: encode_decimal(v, size, scale))
    if name == "uniqueidentifier":
        return WireType(sql_type, bytes((GUIDN, 16)), encode_guid)
    if name in ("datetime", "smalldatetime"):
        return WireType(sql_type, bytes((DATETIMN, 8)), encode_datetime)
    if name in ("varbinary", "binary"):
        maxlen = 8000 if arg in (None, "max") else int(arg)
        return WireType(sql_type, bytes((BIGVARBINARY,)) + struct.pack("<H", maxlen), _varbinary)
    if name == "sql_variant":
        return WireType(sql_type, bytes((SSVARIANT,)) + struct.pack("<I", 8016), encode_variant)
    raise TdsTypeError(f"unsupported column type {sql_type!r}")


# --------------------------------------------------------------------------- parameters


class Reader:
    """A cursor over a request payload (little-endian unless told)."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise TdsTypeError("request truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack("<H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def b_varchar(self) -> str:
        return self.take(self.u8() * 2).decode("utf-16-le", errors="replace")

    def us_varchar(self) -> str:
        return self.take(self.u16() * 2).decode("utf-16-le", errors="replace")

    @property
    def at_end(self) -> bool:
        return self.pos >= len(self.data)


@attrs.frozen
class ParamType:
    """A parameter's TYPE_INFO as the client sent it."""

    code: int
    size: int = 0
    precision: int = 0
    scale: int = 0
    collation: bytes = b""


_FIXED = {INT1: 1, BIT: 1, INT2: 2, INT4: 4, INT8: 8, DATETIM4: 4, FLT4: 4, MONEY: 8,
          DATETIME: 8, FLT8: 8, MONEY4: 4}


def read_type_info(r: Reader) -> ParamType:
    code = r.u8()
    if code in _FIXED:
        return ParamType(code, _FIXED[code])
    if code in (GUIDN, INTN, BITN, FLTN, MONEYN, DATETIMN):
        return ParamType(code, r.u8())
    if code in (DECIMALN, NUMERICN, DECIMAL_LEGACY, NUMERIC_LEGACY):
        return ParamType(code, r.u8(), r.u8(), r.u8())
    if code == DATEN:
        return ParamType(code, 3)
    if code in (TIMEN, DATETIME2N, DATETIMEOFFSETN):
        return ParamType(code, 0, 0, r.u8())
    if code in (BIGVARCHAR, BIGCHAR, NVARCHAR, NCHAR):
        return ParamType(code, r.u16(), collation=r.take(5))
    if code in (BIGVARBINARY, BIGBINARY):
        return ParamType(code, r.u16())
    if code in (VARBINARY_LEGACY, VARCHAR_LEGACY, BINARY_LEGACY, CHAR_LEGACY):
        return ParamType(code, r.u8())
    if code in (TEXT, NTEXT):
        size = r.u32()
        return ParamType(code, size, collation=r.take(5))
    if code == IMAGE:
        return ParamType(code, r.u32())
    raise TdsTypeError(f"parameter type 0x{code:02X} is not supported")


def _read_plp(r: Reader) -> bytes | None:
    total = r.u64()
    if total == PLP_NULL:
        return None
    out = bytearray()
    while True:
        chunk = r.u32()
        if chunk == 0:
            return bytes(out)
        out += r.take(chunk)


def _char_codec(collation: bytes) -> str:
    return "cp1252"


def _scaled(raw: int, scale: int) -> Decimal | int:
    return raw if scale == 0 else Decimal(raw).scaleb(-scale)


def read_value(r: Reader, t: ParamType) -> Any:
    """A parameter value (TYPE_VARBYTE) of type ``t``, as a Python value."""
    c = t.code
    if c in _FIXED:
        data = r.take(t.size)
        return _fixed_value(c, data)
    if c in (INTN, BITN, FLTN, MONEYN, DATETIMN, GUIDN):
        n = r.u8()
        if n == 0:
            return None
        data = r.take(n)
        if c == INTN:
            return int.from_bytes(data, "little", signed=True)
        if c == BITN:
            return bool(data[0])
        if c == FLTN:
            if n not in (4, 8):
                raise TdsTypeError(f"float of {n} bytes")
            return struct.unpack("<f" if n == 4 else "<d", data)[0]
        if c == GUIDN:
            if n != 16:
                raise TdsTypeError(f"uniqueidentifier of {n} bytes")
            return str(uuid.UUID(bytes_le=data)).upper()
        if n not in (4, 8):
            raise TdsTypeError(f"datetime/money of {n} bytes")
        return _fixed_value({4: DATETIM4, 8: DATETIME}[n] if c == DATETIMN
                            else {4: MONEY4, 8: MONEY}[n], data)
    if c in (DECIMALN, NUMERICN, DECIMAL_LEGACY, NUMERIC_LEGACY):
        n = r.u8()
        if n == 0:
            return None
        data = r.take(n)
        mag = int.from_bytes(data[1:], "little")
        return _scaled(mag if data[0] else -mag, t.scale)
    if c in (NVARCHAR, NCHAR, BIGVARCHAR, BIGCHAR, BIGVARBINARY, BIGBINARY):
        if t.size == 0xFFFF:
            raw = _read_plp(r)
        else:
            n = r.u16()
            raw = None if n == 0xFFFF else r.take(n)
        if raw is None:
            return None
        if c in (NVARCHAR, NCHAR):
            return raw.decode("utf-16-le", errors="replace")
        if c in (BIGVARCHAR, BIGCHAR):
            return raw.decode(_char_codec(t.collation), errors="replace")
        return raw
    if c in (VARBINARY_LEGACY, VARCHAR_LEGACY, BINARY_LEGACY, CHAR_LEGACY):
        n = r.u8()
        if n == 0 and c in (VARBINARY_LEGACY, VARCHAR_LEGACY):
            return None
        raw = r.take(n)
        return raw.decode("cp1252", errors="replace") if c in (VARCHAR_LEGACY,
                                                               CHAR_LEGACY) else raw
    if c in (TEXT, NTEXT, IMAGE):
        n = r.u32()
        if n == 0xFFFFFFFF:
            return None
        raw = r.take(n)
        if c == NTEXT:
            return raw.decode("utf-16-le", errors="replace")
        if c == TEXT:
            return raw.decode("cp1252", errors="replace")
        return raw
    if c in (DATEN, TIMEN, DATETIME2N, DATETIMEOFFSETN):
        n = r.u8()
        return None if n == 0 else r.take(n).hex()
    raise TdsTypeError(f"parameter type 0x{c:02X} is not supported")


def _fixed_value(c: int, data: bytes) -> Any:
    if c in (INT1,):
        return data[0]
    if c == BIT:
        return bool(data[0])
    if c in (INT2, INT4, INT8):
        return int.from_bytes(data, "little", signed=True)
    if c == FLT4:
        return struct.unpack("<f", data)[0]
    if c == FLT8:
        return struct.unpack("<d", data)[0]
    if c == MONEY:
        hi, lo = struct.unpack("<iI", data)
        return Decimal((hi << 32) | lo).scaleb(-4)
    if c == MONEY4:
        return Decimal(struct.unpack("<i", data)[0]).scaleb(-4)
    if c == DATETIME:
        days, ticks = struct.unpack("<iI", data)
        return _day_time(days, ticks / 300.0)
    if c == DATETIM4:
        days, minutes = struct.unpack("<HH", data)
        return _day_time(days, minutes * 60.0)
    raise TdsTypeError(f"fixed type 0x{c:02X}")  # pragma: no cover


def _day_time(days: int, seconds: float) -> str:
    from datetime import timedelta

    try:
        return (_EPOCH + timedelta(days=days, seconds=seconds)).isoformat()
    except OverflowError:
        raise TdsTypeError(f"datetime out of range ({days} days)") from None


__all__ = [
    "COLLATION", "ParamType", "Reader", "TdsTypeError", "WireType", "b_varchar",
    "column_type", "encode_datetime", "encode_decimal", "encode_guid", "encode_nvarchar",
    "encode_variant", "read_type_info", "read_value", "us_varchar",
]
