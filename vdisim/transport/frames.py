"""Control-channel frames: fixed little-endian layouts, documented in docs/wire.md.

Every frame is a 12-byte header ``<4sHHI`` (magic ``b"VDI1"``, type, flags, payload length)
followed by the payload of that type.  Decoders validate every field a peer sends and raise
:class:`FrameError`; nothing is ever unpickled.
"""

from __future__ import annotations

import enum
import struct

import attrs

from vdisim.protocol.records import VDConfig

MAGIC = b"VDI1"
PROTOCOL_VERSION = 1
HEADER = struct.Struct("<4sHHI")
MAX_PAYLOAD = 1 << 20
TOKEN_SIZE = 16
SEGNAME_SIZE = 64


class FrameError(Exception):
    """A peer sent bytes that are not a valid frame."""


class FrameType(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    CONFIGURE = 3
    COMMAND = 4
    COMPLETION = 5
    CLOSE_DEVICE = 6
    ABORT = 7
    SERVER_CLOSE = 8
    EVENT = 9
    OPEN_DEVICE_REQ = 10
    OPEN_DEVICE_REPLY = 11
    GOODBYE = 12


class Role(enum.IntEnum):
    ENGINE = 1
    SECONDARY = 2


class AbortReason(enum.IntEnum):
    CLIENT_SIGNAL_ABORT = 1
    SERVER_SIGNAL_ABORT = 2
    CLIENT_CLOSE_WITH_DEVICES_OPEN = 3
    SERVER_TIMEOUT = 4
    PEER_DIED = 5
    LIBRARY_ERROR = 6
    SERVER_CLOSE_WITH_DEVICES_OPEN = 7


class EventCall(enum.IntEnum):
    """Client API calls reported to the engine as EVENT frames (the client's wire trace)."""

    CREATE = 1
    GET_CONFIGURATION = 2
    OPEN_DEVICE = 3
    GET_COMMAND = 4
    COMPLETE_COMMAND = 5
    SIGNAL_ABORT = 6
    CLOSE = 7
    OPEN_IN_SECONDARY = 8
    GET_BUFFER_HANDLE = 9
    MAP_BUFFER_HANDLE = 10


NO_DEVICE = 0xFFFF
COMPLETION_GENERATED = 0x0001  # completion made by the library (1117 in IO-ERROR), not the user

_HELLO = struct.Struct("<BBHI16s")
_WELCOME = struct.Struct("<IBBH")
_CONFIGURE = struct.Struct("<44s64sQHH")
_COMMAND = struct.Struct("<HHIIIQQII")
_COMPLETION = struct.Struct("<HHIIIQ")
_CLOSE_DEVICE = struct.Struct("<HH")
_ABORT = struct.Struct("<I")
_EVENT = struct.Struct("<HhIIIIqQ")
_OPEN_REQ = struct.Struct("<H")
_OPEN_REPLY = struct.Struct("<IH")
_NAME_LEN = struct.Struct("<H")
# Header + payload in one struct for the hot frames (encode and decode without slicing).
_COMMAND_FRAME = struct.Struct("<4sHHI" + _COMMAND.format[1:])
_COMPLETION_FRAME = struct.Struct("<4sHHI" + _COMPLETION.format[1:])
_EVENT_FRAME = struct.Struct("<4sHHI" + _EVENT.format[1:])
_FRAME_TYPES: dict[int, FrameType] = {int(t): t for t in FrameType}
_EVENT_CALLS: dict[int, EventCall] = {int(c): c for c in EventCall}


def _frame(ftype: FrameType, payload: bytes, flags: int = 0) -> bytes:
    return HEADER.pack(MAGIC, ftype, flags, len(payload)) + payload


def parse_header(data: bytes | bytearray | memoryview) -> tuple[FrameType, int, int]:
    return _parse_header_at(data, 0)


def _parse_header_at(data: bytes | bytearray | memoryview,
                     off: int) -> tuple[FrameType, int, int]:
    magic, ftype, flags, length = HEADER.unpack_from(data, off)
    if magic != MAGIC:
        raise FrameError(f"bad frame magic {bytes(magic)!r}")
    if length > MAX_PAYLOAD:
        raise FrameError(f"frame payload of {length} bytes exceeds {MAX_PAYLOAD}")
    t = _FRAME_TYPES.get(ftype)
    if t is None:
        raise FrameError(f"unknown frame type {ftype}")
    return t, flags, length


def decode_frames(buf: bytes | bytearray | memoryview) -> tuple[list[Frame], int]:
    """Decode every complete frame at the start of ``buf``: (frames, bytes consumed).

    The same validation as :func:`parse_header` + :func:`decode`; COMMAND, COMPLETION and
    EVENT (the per-buffer frames) are unpacked in place, without copying their payload.
    """
    out: list[Frame] = []
    off = 0
    hs = HEADER.size
    end = len(buf)
    while end - off >= hs:
        ftype, flags, length = _parse_header_at(buf, off)
        if end - off - hs < length:
            break
        if ftype is FrameType.COMMAND and length == _COMMAND.size:
            _m, _t, _f, _l, dev, _x, cid, code, size, pos, boff, bid, _p = \
                _COMMAND_FRAME.unpack_from(buf, off)
            out.append(Command(dev, cid, code, size, pos, boff, bid))
        elif ftype is FrameType.COMPLETION and length == _COMPLETION.size:
            _m, _t, _f, _l, dev, fl, cid, code, n, pos = _COMPLETION_FRAME.unpack_from(buf, off)
            out.append(Completion(dev, cid, code, n, pos, bool(fl & COMPLETION_GENERATED)))
        elif ftype is FrameType.EVENT and length == _EVENT.size:
            _m, _t, _f, _l, call, dev, hr, a, b, pid, c, t = _EVENT_FRAME.unpack_from(buf, off)
            ecall = _EVENT_CALLS.get(call)
            if ecall is None:
                raise FrameError(f"unknown event call {call}")
            out.append(Event(ecall, dev, hr, a, b, pid, c, t))
        else:
            out.append(decode(ftype, flags, bytes(buf[off + hs:off + hs + length])))
        off += hs + length
    return out, off


def _expect(payload: bytes | memoryview, st: struct.Struct, what: str) -> tuple[object, ...]:
    if len(payload) != st.size:
        raise FrameError(f"{what} payload is {len(payload)} bytes, expected {st.size}")
    return st.unpack(payload)


def _pack_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("name too long")
    return _NAME_LEN.pack(len(raw)) + raw


def _unpack_names(data: bytes | memoryview, count: int) -> tuple[str, ...]:
    names = []
    off = 0
    for _ in range(count):
        if off + 2 > len(data):
            raise FrameError("truncated device name list")
        (n,) = _NAME_LEN.unpack_from(data, off)
        off += 2
        if n == 0 or n > 255 or off + n > len(data):
            raise FrameError("bad device name length")
        try:
            names.append(bytes(data[off:off + n]).decode("utf-8"))
        except UnicodeDecodeError:
            raise FrameError("device name is not UTF-8") from None
        off += n
    if off != len(data):
        raise FrameError("trailing bytes after device names")
    if len(set(names)) != len(names):
        raise FrameError("duplicate device names")
    return tuple(names)


# ------------------------------------------------------------------------------ frame values

@attrs.frozen
class Hello:
    role: Role
    version: int
    pid: int
    token: bytes

    def encode(self) -> bytes:
        body = _HELLO.pack(self.role, 0, self.version, self.pid, self.token)
        return _frame(FrameType.HELLO, body)


@attrs.frozen
class Welcome:
    status: int  # HRESULT
    set_state: int  # ClientState index (informational)
    aborted: bool

    def encode(self) -> bytes:
        return _frame(FrameType.WELCOME, _WELCOME.pack(self.status, self.set_state,
                                                       int(self.aborted), 0))


@attrs.frozen
class Configure:
    config: VDConfig
    segment: str
    area_size: int
    device_names: tuple[str, ...]

    def encode(self) -> bytes:
        seg = self.segment.encode("ascii")
        body = _CONFIGURE.pack(self.config.pack(), seg, self.area_size, len(self.device_names), 0)
        names = b"".join(_pack_name(n) for n in self.device_names)
        return _frame(FrameType.CONFIGURE, body + names)


@attrs.frozen
class Command:
    device: int
    cmd_id: int
    code: int
    size: int
    position: int
    buffer_offset: int
    buffer_id: int

    def encode(self) -> bytes:
        return encode_command(self.device, self.cmd_id, self.code, self.size, self.position,
                              self.buffer_offset, self.buffer_id)


def encode_command(device: int, cmd_id: int, code: int, size: int, position: int,
                   buffer_offset: int, buffer_id: int) -> bytes:
    """``Command(...).encode()`` without building the value (the engine's send path)."""
    return _COMMAND_FRAME.pack(MAGIC, FrameType.COMMAND, 0, _COMMAND.size, device, 0, cmd_id,
                               code, size, position, buffer_offset, buffer_id, 0)


@attrs.frozen
class Completion:
    device: int
    cmd_id: int
    code: int
    bytes_transferred: int
    position: int
    generated: bool = False

    def encode(self) -> bytes:
        return encode_completion(self.device, self.cmd_id, self.code, self.bytes_transferred,
                                 self.position, self.generated)


def encode_completion(device: int, cmd_id: int, code: int, nbytes: int, position: int,
                      generated: bool = False) -> bytes:
    return _COMPLETION_FRAME.pack(
        MAGIC, FrameType.COMPLETION, 0, _COMPLETION.size,
        device, COMPLETION_GENERATED if generated else 0, cmd_id, code & 0xFFFFFFFF,
        nbytes & 0xFFFFFFFF, position & 0xFFFFFFFFFFFFFFFF)


@attrs.frozen
class CloseDevice:
    device: int

    def encode(self) -> bytes:
        return _frame(FrameType.CLOSE_DEVICE, _CLOSE_DEVICE.pack(self.device, 0))


@attrs.frozen
class Abort:
    reason: int

    def encode(self) -> bytes:
        return _frame(FrameType.ABORT, _ABORT.pack(self.reason))


@attrs.frozen
class ServerClose:
    def encode(self) -> bytes:
        return _frame(FrameType.SERVER_CLOSE, b"")


@attrs.frozen
class Goodbye:
    def encode(self) -> bytes:
        return _frame(FrameType.GOODBYE, b"")


@attrs.frozen
class Event:
    call: EventCall
    device: int  # -1: none
    hresult: int
    a: int
    b: int
    pid: int
    c: int
    t_ns: int

    def encode(self) -> bytes:
        return encode_event(self.call, self.device, self.hresult, self.a, self.b, self.pid,
                            self.c, self.t_ns)


def encode_event(call: int, device: int, hresult: int, a: int, b: int, pid: int, c: int,
                 t_ns: int) -> bytes:
    """``Event(...).encode()`` without building the value (the client's report path)."""
    return _EVENT_FRAME.pack(MAGIC, FrameType.EVENT, 0, _EVENT.size, call, device,
                             hresult & 0xFFFFFFFF, a & 0xFFFFFFFF, b & 0xFFFFFFFF, pid, c, t_ns)


@attrs.frozen
class OpenDeviceReq:
    name: str

    def encode(self) -> bytes:
        return _frame(FrameType.OPEN_DEVICE_REQ, _OPEN_REQ.pack(1) + _pack_name(self.name))


@attrs.frozen
class OpenDeviceReply:
    hresult: int
    device: int

    def encode(self) -> bytes:
        return _frame(FrameType.OPEN_DEVICE_REPLY, _OPEN_REPLY.pack(self.hresult, self.device))


Frame = (Hello | Welcome | Configure | Command | Completion | CloseDevice | Abort | ServerClose
         | Event | OpenDeviceReq | OpenDeviceReply | Goodbye)


def decode(ftype: FrameType, flags: int, p: bytes | memoryview) -> Frame:
    """Decode and validate one payload.  Raises FrameError for anything malformed."""
    if ftype is FrameType.COMMAND:
        dev, _f, cid, code, size, pos, off, bid, _pad = _expect(p, _COMMAND, "COMMAND")
        return Command(dev, cid, code, size, pos, off, bid)  # type: ignore[arg-type]
    if ftype is FrameType.COMPLETION:
        dev, fl, cid, code, n, pos = _expect(p, _COMPLETION, "COMPLETION")
        return Completion(dev, cid, code, n, pos, bool(fl & COMPLETION_GENERATED))  # type: ignore[arg-type,operator]
    if ftype is FrameType.EVENT:
        call, dev, hr, a, b, pid, c, t = _expect(p, _EVENT, "EVENT")
        ecall = _EVENT_CALLS.get(call)  # type: ignore[call-overload]
        if ecall is None:
            raise FrameError(f"unknown event call {call}")
        return Event(ecall, dev, hr, a, b, pid, c, t)  # type: ignore[arg-type]
    if ftype is FrameType.HELLO:
        role, _r, version, pid, token = _expect(p, _HELLO, "HELLO")
        try:
            return Hello(Role(role), version, pid, token)  # type: ignore[arg-type]
        except ValueError:
            raise FrameError(f"unknown role {role}") from None
    if ftype is FrameType.WELCOME:
        status, st, ab, _r = _expect(p, _WELCOME, "WELCOME")
        return Welcome(status, st, bool(ab))  # type: ignore[arg-type]
    if ftype is FrameType.CONFIGURE:
        if len(p) < _CONFIGURE.size:
            raise FrameError("CONFIGURE payload too short")
        cfg, seg, area, count, _r = _CONFIGURE.unpack_from(p)
        try:
            segment = bytes(seg).rstrip(b"\0").decode("ascii")
        except UnicodeDecodeError:
            raise FrameError("segment name is not ASCII") from None
        if not segment or "/" in segment:
            raise FrameError("bad segment name")
        config = VDConfig.unpack(cfg)
        if count != config.device_count or not 1 <= count <= 64:
            raise FrameError("device count does not match the configuration")
        names = _unpack_names(p[_CONFIGURE.size:], count)
        return Configure(config, segment, area, names)
    if ftype is FrameType.CLOSE_DEVICE:
        dev, _r = _expect(p, _CLOSE_DEVICE, "CLOSE_DEVICE")
        return CloseDevice(dev)  # type: ignore[arg-type]
    if ftype is FrameType.ABORT:
        (reason,) = _expect(p, _ABORT, "ABORT")
        return Abort(reason)  # type: ignore[arg-type]
    if ftype is FrameType.SERVER_CLOSE:
        if len(p):
            raise FrameError("SERVER_CLOSE carries no payload")
        return ServerClose()
    if ftype is FrameType.GOODBYE:
        if len(p):
            raise FrameError("GOODBYE carries no payload")
        return Goodbye()
    if ftype is FrameType.OPEN_DEVICE_REQ:
        if len(p) < 2:
            raise FrameError("OPEN_DEVICE_REQ too short")
        return OpenDeviceReq(_unpack_names(p[2:], 1)[0])
    if ftype is FrameType.OPEN_DEVICE_REPLY:
        hr, dev = _expect(p, _OPEN_REPLY, "OPEN_DEVICE_REPLY")
        return OpenDeviceReply(hr, dev)  # type: ignore[arg-type]
    raise FrameError(f"unhandled frame type {ftype}")  # pragma: no cover
