"""The sans-I/O protocol layer: constants, VDConfig, client config checks, wire frames, and the
generated state-table document.

Every expected value below is copied from the spec digest (shared/spec/vdi-spec.md), never from
the code under test: HRESULTs §7, command codes §6.2, feature bits §5, Win32 codes §6.5,
VDWhence §6.1, VDConfig §4.1.  Frames follow the layouts documented in vdisim/transport/frames.py.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vdisim.protocol import codes, states
from vdisim.protocol.codes import (
    INFINITE,
    CommandCode,
    Feature,
    HResult,
    VDWhence,
    Win32,
    failed,
    hresult_from_win32,
    hresult_name,
    to_signed,
    to_unsigned,
)
from vdisim.protocol.records import VDConfig, check_client_config
from vdisim.transport import frames
from vdisim.transport.channel import Channel
from vdisim.transport.frames import FrameError, FrameType

ROOT = Path(__file__).resolve().parent.parent
U32 = st.integers(min_value=0, max_value=0xFFFFFFFF)

# ---------------------------------------------------------------------------------------------
# §7 HRESULTs: name, hex, unsigned decimal, signed int32 (the Linux view), straight from the table.

HRESULT_TABLE = [
    ("NOERROR", 0x00000000, 0, 0),
    ("VD_E_NOTOPEN", 0x80770002, 2155282434, -2139684862),
    ("VD_E_TIMEOUT", 0x80770003, 2155282435, -2139684861),
    ("VD_E_ABORT", 0x80770004, 2155282436, -2139684860),
    ("VD_E_SECURITY", 0x80770005, 2155282437, -2139684859),
    ("VD_E_INVALID", 0x80770006, 2155282438, -2139684858),
    ("VD_E_INSTANCE_NAME", 0x80770007, 2155282439, -2139684857),
    ("VD_E_NOTSUPPORTED", 0x80770009, 2155282441, -2139684855),
    ("VD_E_MEMORY", 0x8077000A, 2155282442, -2139684854),
    ("VD_E_UNEXPECTED", 0x8077000B, 2155282443, -2139684853),
    ("VD_E_PROTOCOL", 0x8077000C, 2155282444, -2139684852),
    ("VD_E_OPEN", 0x8077000D, 2155282445, -2139684851),
    ("VD_E_CLOSE", 0x8077000E, 2155282446, -2139684850),
    ("VD_E_BUSY", 0x8077000F, 2155282447, -2139684849),
]


@pytest.mark.parametrize(("name", "hexval", "unsigned", "signed"), HRESULT_TABLE,
                         ids=[r[0] for r in HRESULT_TABLE])
def test_hresult_values_match_header(name: str, hexval: int, unsigned: int, signed: int) -> None:
    """§7: each HRESULT has the vdierror.h bit pattern; Linux returns it as a negative int."""
    hr = HResult[name]
    assert hexval == unsigned
    assert int(hr) == hexval
    assert getattr(codes, name) == hexval  # module-level alias
    assert to_signed(hr) == signed
    assert to_unsigned(signed) == hexval
    assert to_unsigned(to_signed(hr)) == hexval
    assert hresult_name(hexval) == name
    assert hresult_name(signed) == name
    assert failed(hr) is (hexval != 0)
    if hexval:  # MAKE_HRESULT(SEVERITY_ERROR, 0x77, code) (§7)
        assert hexval >> 31 == 1 and (hexval >> 16) & 0x7FF == 0x77


def test_hresult_set_is_exactly_the_header_set() -> None:
    """§7: code 8 is unused; the two server-only codes have vdisim-private values (§11.12)."""
    public = {name for name, *_ in HRESULT_TABLE}
    assert {m.name for m in HResult} == public | {"VD_E_QUEUE_FULL", "VD_E_IO_ERROR"}
    assert 0x80770008 not in {int(m) for m in HResult}
    assert HResult.VD_E_QUEUE_FULL == 0x80770010
    assert HResult.VD_E_IO_ERROR == 0x80770011
    assert to_signed(HResult.VD_E_CLOSE) == -2139684850  # §12 item 20


def test_other_hresults() -> None:
    """§7: E_ACCESSDENIED and HRESULT_FROM_WIN32 (0x8007xxxx); ERROR_ALREADY_EXISTS is 183."""
    assert codes.E_ACCESSDENIED == 0x80070005
    assert hresult_from_win32(0) == 0
    assert hresult_from_win32(2) == 0x80070002
    assert hresult_from_win32(183) == 0x800700B7
    assert states.ERROR_ALREADY_EXISTS == 183
    assert hresult_name(0x80070002) == "0x80070002"
    assert to_signed(0x7FFFFFFF) == 0x7FFFFFFF
    assert to_unsigned(-1) == 0xFFFFFFFF


@given(U32)
@settings(max_examples=300, deadline=None, database=None)
def test_signed_unsigned_round_trip(hr: int) -> None:
    """§11.25: the signed and unsigned views are the same 32 bits."""
    s = to_signed(hr)
    assert -(1 << 31) <= s < (1 << 31)
    assert struct.pack("<i", s) == struct.pack("<I", hr)
    assert to_unsigned(s) == hr


# ---------------------------------------------------------------------------------------------
# §6.2 command codes, §5 features, §6.5 Win32 codes, §6.1 VDWhence.

COMMAND_CODES = {
    1: "VDC_Read", 2: "VDC_Write", 3: "VDC_ClearError", 4: "VDC_Rewind", 5: "VDC_WriteMark",
    6: "VDC_SkipMarks", 7: "VDC_SkipBlocks", 8: "VDC_Load", 9: "VDC_GetPosition",
    10: "VDC_SetPosition", 11: "VDC_Discard", 12: "VDC_Flush", 13: "VDC_Snapshot",
    14: "VDC_MountSnapshot", 15: "VDC_PrepareToFreeze", 16: "VDC_FileInfoBegin",
    17: "VDC_FileInfoEnd", 18: "VDC_GetError", 19: "VDC_Complete",
}


def test_command_codes() -> None:
    """§6.2: VDC_* values 1..19, nothing else."""
    assert {int(c): c.name for c in CommandCode} == COMMAND_CODES
    assert codes.DATA_COMMANDS == {CommandCode.VDC_Read, CommandCode.VDC_Write}  # §6.3


FEATURES = {
    "VDF_Removable": 0x00000001, "VDF_Rewind": 0x00000002, "VDF_Position": 0x00000010,
    "VDF_SkipBlocks": 0x00000020, "VDF_ReversePosition": 0x00000040, "VDF_Discard": 0x00000080,
    "VDF_FileMarks": 0x00000100, "VDF_RandomAccess": 0x00000200,
    "VDF_SnapshotPrepare": 0x00000400, "VDF_EnumFrozenFiles": 0x00000800,
    "VDF_VSSWriter": 0x00001000, "VDF_RequestComplete": 0x00002000,
    "VDF_WriteMedia": 0x00010000, "VDF_ReadMedia": 0x00020000,
    "VDF_CompleteEnabled": 0x00040000, "VDF_LatchStats": 0x80000000,
}


def test_feature_bits() -> None:
    """§5: every VDF_* bit and the model composites."""
    assert {f.name: int(f) for f in Feature} == FEATURES
    assert codes.VDF_LikePipe == 0
    assert codes.VDF_LikeTape == 0x173
    assert codes.VDF_LikeTape == (FEATURES["VDF_FileMarks"] | FEATURES["VDF_Removable"]
                                  | FEATURES["VDF_Rewind"] | FEATURES["VDF_Position"]
                                  | FEATURES["VDF_SkipBlocks"] | FEATURES["VDF_ReversePosition"])
    assert codes.VDF_LikeDisk == 0x200 == FEATURES["VDF_RandomAccess"]
    # Direction bits are set only by the server (§5 "server" column).
    assert int(codes.SERVER_FEATURES) == 0x00010000 | 0x00020000 | 0x00040000
    assert int(codes.CLIENT_FEATURES) & int(codes.SERVER_FEATURES) == 0


WIN32 = {
    "ERROR_SUCCESS": 0, "ERROR_INVALID_HANDLE": 6, "ERROR_ARENA_TRASHED": 7,
    "ERROR_BAD_ENVIRONMENT": 10, "ERROR_HANDLE_EOF": 38, "ERROR_HANDLE_DISK_FULL": 39,
    "ERROR_NOT_SUPPORTED": 50, "ERROR_DISK_FULL": 112, "ERROR_OPERATION_ABORTED": 995,
    "ERROR_END_OF_MEDIA": 1100, "ERROR_FILEMARK_DETECTED": 1101, "ERROR_NO_DATA_DETECTED": 1104,
    "ERROR_IO_DEVICE": 1117, "ERROR_EOM_OVERFLOW": 1129, "ERROR_NO_SYSTEM_RESOURCES": 1450,
}


def test_win32_codes() -> None:
    """§6.5: the Win32 completion codes of the protocol (hex column cross-checked)."""
    assert {w.name: int(w) for w in Win32} == WIN32
    assert Win32.ERROR_OPERATION_ABORTED == 0x3E3
    assert Win32.ERROR_IO_DEVICE == 0x45D
    assert Win32.ERROR_NO_SYSTEM_RESOURCES == 0x5AA


def test_send_failure_completion_codes() -> None:
    """§3 SendCommand: a failed send completes synchronously with these Win32 codes."""
    m = states.SEND_FAILURE_COMPLETION
    assert m[HResult.VD_E_QUEUE_FULL] == 1450
    assert m[HResult.VD_E_IO_ERROR] == 1117
    assert m[HResult.VD_E_PROTOCOL] == 6
    assert m[HResult.VD_E_ABORT] == 995


def test_vdwhence_and_limits() -> None:
    """§6.1 VDWhence; INFINITE is the Windows DWORD; maxIODepth is always 4 (§4.1)."""
    assert {w.name: int(w) for w in VDWhence} == {"VDC_Beginning": 0, "VDC_Current": 1,
                                                  "VDC_End": 2}
    assert INFINITE == 0xFFFFFFFF
    assert codes.MAX_IO_DEPTH == 4
    assert codes.MAX_DEVICES == 64
    assert codes.MAX_TRANSFER_SIZE == 4 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# §4.1 VDConfig: eleven uint32 fields, 44 bytes, little-endian, header order.

VDCONFIG_FIELDS = ["device_count", "features", "prefix_zone_size", "alignment",
                   "soft_file_mark_block_size", "eom_warning_size", "server_timeout",
                   "block_size", "max_io_depth", "max_transfer_size", "buffer_area_size"]


def test_vdconfig_layout() -> None:
    """§4.1: 44 bytes; field k at offset 4k, in header order."""
    assert VDConfig.SIZE == 44
    assert [a.name for a in attrs.fields(VDConfig)] == VDCONFIG_FIELDS
    cfg = VDConfig(*range(1, 12))
    raw = cfg.pack()
    assert len(raw) == 44
    assert raw == b"".join(struct.pack("<I", i) for i in range(1, 12))
    assert struct.unpack_from("<I", raw, 28)[0] == cfg.block_size == 8
    assert VDConfig().pack() == bytes(44)


@given(st.tuples(*[U32] * 11))
@settings(max_examples=300, deadline=None, database=None)
def test_vdconfig_round_trip(values: tuple[int, ...]) -> None:
    """§4.1: pack/unpack is lossless for every uint32 value of every field."""
    cfg = VDConfig(*values)
    raw = cfg.pack()
    assert raw == struct.pack("<11I", *values)
    assert VDConfig.unpack(raw) == cfg
    assert VDConfig.unpack(memoryview(raw)) == cfg
    assert VDConfig.unpack(bytearray(raw)) == cfg


@pytest.mark.parametrize("field", VDCONFIG_FIELDS)
@pytest.mark.parametrize("bad", [-1, 1 << 32, 2**40, True, 1.0, "1", None])
def test_vdconfig_rejects_out_of_range(field: str, bad: object) -> None:
    """§4.1: every field is an unsigned 32-bit int."""
    with pytest.raises(ValueError, match=field):
        VDConfig(**{field: bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        VDConfig().evolve(**{field: bad})  # type: ignore[arg-type]


def test_vdconfig_boundaries_and_frozen() -> None:
    cfg = VDConfig(device_count=0xFFFFFFFF, features=0)
    assert cfg.device_count == 0xFFFFFFFF
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.device_count = 1  # type: ignore[misc]


@pytest.mark.parametrize("length", [0, 1, 40, 43, 45, 48, 88])
def test_vdconfig_unpack_rejects_wrong_length(length: int) -> None:
    with pytest.raises(ValueError):
        VDConfig.unpack(bytes(length))


# ---------------------------------------------------------------------------------------------
# check_client_config: what Create returns for the client's VDConfig (§2.1, §1.8, §5).

NS = HResult.VD_E_NOTSUPPORTED
F = Feature


@pytest.mark.parametrize(("cfg", "expected"), [
    # deviceCount 1..64 (§1.8 [D]; §12 item 19)
    (VDConfig(device_count=0), NS),
    (VDConfig(device_count=65), NS),
    (VDConfig(device_count=0xFFFFFFFF), NS),
    (VDConfig(device_count=1), HResult.NOERROR),
    (VDConfig(device_count=64), HResult.NOERROR),
    # server-output bits set by the client (§5 direction column)
    (VDConfig(device_count=1, features=F.VDF_WriteMedia), NS),
    (VDConfig(device_count=1, features=F.VDF_ReadMedia), NS),
    (VDConfig(device_count=1, features=F.VDF_CompleteEnabled), NS),
    (VDConfig(device_count=1, features=codes.VDF_LikeTape | F.VDF_ReadMedia), NS),
    # undocumented model combinations (§5 rules)
    (VDConfig(device_count=1, features=F.VDF_FileMarks), NS),
    (VDConfig(device_count=1, features=F.VDF_Position), NS),
    (VDConfig(device_count=1, features=codes.VDF_LikeTape | F.VDF_RandomAccess), NS),
    (VDConfig(device_count=1, features=codes.VDF_LikeTape & ~F.VDF_Removable), NS),
    (VDConfig(device_count=1, features=F.VDF_RandomAccess | F.VDF_Rewind), NS),
    # documented models, with their options
    (VDConfig(device_count=1, features=codes.VDF_LikePipe), HResult.NOERROR),
    (VDConfig(device_count=1, features=F.VDF_Removable), HResult.NOERROR),
    (VDConfig(device_count=1, features=F.VDF_Discard), HResult.NOERROR),
    (VDConfig(device_count=1, features=F.VDF_RequestComplete), HResult.NOERROR),
    (VDConfig(device_count=1, features=F.VDF_Removable | F.VDF_Discard
              | F.VDF_RequestComplete), HResult.NOERROR),
    (VDConfig(device_count=8, features=codes.VDF_LikeTape), HResult.NOERROR),
    (VDConfig(device_count=1, features=codes.VDF_LikeTape | F.VDF_Discard
              | F.VDF_RequestComplete), HResult.NOERROR),
    (VDConfig(device_count=2, features=codes.VDF_LikeDisk), HResult.NOERROR),
    (VDConfig(device_count=1, features=codes.VDF_LikeDisk | F.VDF_Removable), HResult.NOERROR),
    (VDConfig(device_count=1, features=codes.VDF_LikeDisk | F.VDF_Removable | F.VDF_Discard
              | F.VDF_RequestComplete), HResult.NOERROR),
    (VDConfig(device_count=1, features=F.VDF_SnapshotPrepare), HResult.NOERROR),
    # alignment: a power of two up to 64 KiB [I]
    (VDConfig(device_count=1, alignment=1024), HResult.NOERROR),
    (VDConfig(device_count=1, alignment=1000), NS),
    (VDConfig(device_count=1, alignment=1 << 17), NS),
], ids=lambda v: (f"n{v.device_count}-f{v.features:#x}-a{v.alignment}"
                  if isinstance(v, VDConfig) else hresult_name(v)))
def test_check_client_config(cfg: VDConfig, expected: int) -> None:
    """§2.1: Create returns VD_E_NOTSUPPORTED for a configuration it cannot honour."""
    assert check_client_config(cfg) == expected


def test_device_models() -> None:
    """§5: pipe[+Removable], tape, disk[+Removable]; options do not change the model."""
    dm = codes.device_model
    assert dm(0) is codes.DeviceModel.PIPE
    assert dm(F.VDF_Removable | F.VDF_Discard) is codes.DeviceModel.PIPE
    assert dm(codes.VDF_LikeTape | F.VDF_RequestComplete) is codes.DeviceModel.TAPE
    assert dm(codes.VDF_LikeDisk | F.VDF_Removable) is codes.DeviceModel.DISK
    assert dm(F.VDF_Rewind) is None


# ---------------------------------------------------------------------------------------------
# Frames (vdisim/transport/frames.py): 12-byte header <4sHHI + a fixed-layout payload.

CFG2 = VDConfig(device_count=2, features=F.VDF_WriteMedia, block_size=512, max_io_depth=4,
                max_transfer_size=65536, buffer_area_size=1 << 20)

SAMPLE_FRAMES: list[frames.Frame] = [
    frames.Hello(frames.Role.ENGINE, frames.PROTOCOL_VERSION, 4242, bytes(range(16))),
    frames.Hello(frames.Role.SECONDARY, 7, 0xFFFFFFFF, b"\xff" * 16),
    frames.Welcome(int(HResult.NOERROR), 2, False),
    frames.Welcome(int(HResult.VD_E_ABORT), 5, True),
    frames.Configure(CFG2, "vdisim-0123456789abcdef-b1f", 3 << 20, ("{SET}", "{SET}1")),
    frames.Configure(VDConfig(device_count=1), "s", 0, ("é名",)),
    frames.Command(0, 1, CommandCode.VDC_Write, 65536, 0, 131072, 3),
    frames.Command(63, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, (1 << 64) - 1, (1 << 64) - 1,
                   0xFFFFFFFF),
    frames.Completion(1, 9, 0, 4096, 123),
    frames.Completion(2, 10, int(Win32.ERROR_IO_DEVICE), 0, 0, generated=True),
    frames.CloseDevice(5),
    frames.Abort(int(frames.AbortReason.CLIENT_CLOSE_WITH_DEVICES_OPEN)),
    frames.ServerClose(),
    frames.Goodbye(),
    frames.Event(frames.EventCall.GET_COMMAND, -1, int(HResult.VD_E_CLOSE), 1, 2, 3, -4, 5),
    frames.Event(frames.EventCall.MAP_BUFFER_HANDLE, 7, 0, 0xFFFFFFFF, 0, 0, 1 << 62, 0),
    frames.OpenDeviceReq("{SET}2"),
    frames.OpenDeviceReply(int(HResult.VD_E_OPEN), frames.NO_DEVICE),
]

FRAME_TYPES = {
    frames.Hello: FrameType.HELLO, frames.Welcome: FrameType.WELCOME,
    frames.Configure: FrameType.CONFIGURE, frames.Command: FrameType.COMMAND,
    frames.Completion: FrameType.COMPLETION, frames.CloseDevice: FrameType.CLOSE_DEVICE,
    frames.Abort: FrameType.ABORT, frames.ServerClose: FrameType.SERVER_CLOSE,
    frames.Event: FrameType.EVENT, frames.OpenDeviceReq: FrameType.OPEN_DEVICE_REQ,
    frames.OpenDeviceReply: FrameType.OPEN_DEVICE_REPLY, frames.Goodbye: FrameType.GOODBYE,
}


def split(data: bytes) -> tuple[FrameType, int, bytes]:
    ftype, flags, length = frames.parse_header(data[:frames.HEADER.size])
    payload = data[frames.HEADER.size:]
    assert length == len(payload)
    return ftype, flags, payload


def round_trip(frame: frames.Frame) -> frames.Frame:
    return frames.decode(*split(frame.encode()))


def test_every_frame_type_has_a_sample() -> None:
    assert set(FRAME_TYPES.values()) == set(FrameType)
    assert {type(f) for f in SAMPLE_FRAMES} == set(FRAME_TYPES)


@pytest.mark.parametrize("frame", SAMPLE_FRAMES, ids=lambda f: type(f).__name__)
def test_frame_round_trip(frame: frames.Frame) -> None:
    data = frame.encode()
    assert data[:4] == frames.MAGIC
    ftype, _flags, _payload = split(data)
    assert ftype is FRAME_TYPES[type(frame)]
    assert round_trip(frame) == frame


def test_frames_round_trip_through_a_real_stream() -> None:
    """All frames back to back over a socketpair, read by the channel's stream parser."""
    a, b = socket.socketpair()
    tx, rx = Channel(a), Channel(b)
    try:
        tx.send(b"".join(f.encode() for f in SAMPLE_FRAMES))
        got = [rx.recv_frame(5.0) for _ in SAMPLE_FRAMES]
        assert got == SAMPLE_FRAMES
    finally:
        tx.close()
        rx.close()


@given(dev=st.integers(0, 0xFFFF), cid=U32, code=U32, size=U32,
       pos=st.integers(0, (1 << 64) - 1), off=st.integers(0, (1 << 64) - 1), bid=U32,
       gen=st.booleans())
@settings(max_examples=200, deadline=None, database=None)
def test_command_and_completion_round_trip(dev: int, cid: int, code: int, size: int, pos: int,
                                           off: int, bid: int, gen: bool) -> None:
    cmd = frames.Command(dev, cid, code, size, pos, off, bid)
    assert round_trip(cmd) == cmd
    comp = frames.Completion(dev, cid, code, size, pos, gen)
    assert round_trip(comp) == comp


@given(names=st.lists(st.text(st.characters(blacklist_categories=["Cs"]), min_size=1,
                              max_size=40).filter(lambda s: len(s.encode()) <= 255),
                      min_size=1, max_size=64, unique=True))
@settings(max_examples=100, deadline=None, database=None)
def test_configure_device_names_round_trip(names: list[str]) -> None:
    frame = frames.Configure(VDConfig(device_count=len(names)), "seg", 1, tuple(names))
    assert round_trip(frame) == frame


FIXED_SIZE = [f for f in SAMPLE_FRAMES
              if not isinstance(f, frames.Configure | frames.OpenDeviceReq)]


@pytest.mark.parametrize("frame", FIXED_SIZE, ids=lambda f: type(f).__name__)
def test_decode_rejects_wrong_payload_length(frame: frames.Frame) -> None:
    ftype, flags, payload = split(frame.encode())
    with pytest.raises(FrameError):
        frames.decode(ftype, flags, payload + b"\0")
    if payload:
        for cut in (0, len(payload) - 1):
            with pytest.raises(FrameError):
                frames.decode(ftype, flags, payload[:cut])


def test_decode_rejects_short_variable_payloads() -> None:
    data = SAMPLE_FRAMES[4].encode()
    ftype, flags, payload = split(data)
    for cut in (0, 10, 43, 44 + 64 + 8 + 3):
        with pytest.raises(FrameError):
            frames.decode(ftype, flags, payload[:cut])
    with pytest.raises(FrameError):
        frames.decode(FrameType.OPEN_DEVICE_REQ, 0, b"")
    with pytest.raises(FrameError):
        frames.decode(FrameType.OPEN_DEVICE_REQ, 0, b"\x01\x00")


def test_parse_header_rejects_bad_magic_unknown_type_and_oversize() -> None:
    good = frames.Abort(1).encode()
    assert frames.parse_header(good[:12]) == (FrameType.ABORT, 0, 4)
    with pytest.raises(FrameError, match="magic"):
        frames.parse_header(b"VDI2" + good[4:12])
    with pytest.raises(FrameError, match="magic"):
        frames.parse_header(bytes(12))
    for t in (0, 13, 99, 0xFFFF):
        with pytest.raises(FrameError, match="unknown frame type"):
            frames.parse_header(frames.HEADER.pack(frames.MAGIC, t, 0, 0))
    frames.parse_header(frames.HEADER.pack(frames.MAGIC, FrameType.ABORT, 0, frames.MAX_PAYLOAD))
    for n in (frames.MAX_PAYLOAD + 1, 0xFFFFFFFF):
        with pytest.raises(FrameError, match="exceeds"):
            frames.parse_header(frames.HEADER.pack(frames.MAGIC, FrameType.ABORT, 0, n))


def test_stream_parser_rejects_garbage() -> None:
    """A peer sending a bad header makes the receiving channel raise FrameError."""
    a, b = socket.socketpair()
    tx, rx = Channel(a), Channel(b)
    try:
        tx.send(b"XXXX" + bytes(8))
        with pytest.raises(FrameError):
            rx.recv_frame(5.0)
    finally:
        tx.close()
        rx.close()


def _names(*names: bytes) -> bytes:
    return b"".join(struct.pack("<H", len(n)) + n for n in names)


def _configure_payload(count: int, names: bytes, segment: bytes = b"seg",
                       cfg: VDConfig | None = None) -> bytes:
    cfg = cfg or VDConfig(device_count=count)
    return struct.pack("<44s64sQHH", cfg.pack(), segment, 0, count, 0) + names


def test_configure_payload_helper_matches_encoder() -> None:
    frame = frames.Configure(VDConfig(device_count=2), "seg", 0, ("a", "bc"))
    assert split(frame.encode())[2] == _configure_payload(2, _names(b"a", b"bc"))


@pytest.mark.parametrize(("payload", "why"), [
    (_configure_payload(2, _names(b"a")), "truncated"),
    (_configure_payload(2, _names(b"a", b"a")), "duplicate"),
    (_configure_payload(1, _names(b"")), "length"),
    (_configure_payload(1, _names(b"x" * 256)), "length"),
    (_configure_payload(1, struct.pack("<H", 5) + b"ab"), "length"),
    (_configure_payload(1, _names(b"\xff\xfe")), "UTF-8"),
    (_configure_payload(1, _names(b"a") + b"\0"), "trailing"),
    (_configure_payload(1, _names(b"a"), cfg=VDConfig(device_count=2)), "device count"),
    (_configure_payload(0, b""), "device count"),
    (_configure_payload(65, _names(*[b"%d" % i for i in range(65)]),
                        cfg=VDConfig(device_count=65)), "device count"),
    (_configure_payload(1, _names(b"a"), segment=b""), "segment"),
    (_configure_payload(1, _names(b"a"), segment=b"a/b"), "segment"),
    (_configure_payload(1, _names(b"a"), segment=b"\xff"), "segment"),
], ids=lambda v: v.replace(" ", "_") if isinstance(v, str) else "payload")
def test_configure_rejects_bad_device_name_lists(payload: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        frames.decode(FrameType.CONFIGURE, 0, payload)


@pytest.mark.parametrize("payload", [
    struct.pack("<H", 1) + _names(b""),
    struct.pack("<H", 1) + _names(b"x" * 300),
    struct.pack("<H", 1) + _names(b"\xc3"),
    struct.pack("<H", 1) + _names(b"a") + b"z",
])
def test_open_device_req_rejects_bad_names(payload: bytes) -> None:
    with pytest.raises(FrameError):
        frames.decode(FrameType.OPEN_DEVICE_REQ, 0, payload)


def test_decode_rejects_bad_enum_fields_and_stray_payloads() -> None:
    hello = bytearray(split(SAMPLE_FRAMES[0].encode())[2])
    hello[0] = 9  # role
    with pytest.raises(FrameError, match="role"):
        frames.decode(FrameType.HELLO, 0, bytes(hello))
    event = bytearray(split(SAMPLE_FRAMES[14].encode())[2])
    event[0:2] = struct.pack("<H", 77)  # call
    with pytest.raises(FrameError, match="event call"):
        frames.decode(FrameType.EVENT, 0, bytes(event))
    for t in (FrameType.SERVER_CLOSE, FrameType.GOODBYE):
        with pytest.raises(FrameError):
            frames.decode(t, 0, b"\0")


# ---------------------------------------------------------------------------------------------
# docs/states.md is generated from vdisim/protocol/states.py and must not drift.


def test_states_doc_is_the_generated_output() -> None:
    r = subprocess.run([sys.executable, "-m", "vdisim.protocol.states"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=True)
    doc = (ROOT / "docs" / "states.md").read_text(encoding="utf-8")
    assert r.stdout == doc, "docs/states.md is stale: run `python -m vdisim.protocol.states`"
    assert states.render_markdown() == doc


def test_client_table_is_complete() -> None:
    """§2.11: every call has a cell in every state, and every lookup of a cell's own
    conditions answers (the client test module exercises each of them)."""
    for state in states.ClientState:
        assert set(states.CLIENT_TABLE[state]) == set(states.ClientCall)
        for call, cell in states.CLIENT_TABLE[state].items():
            assert cell
            for cond, tr in cell.items():
                assert states.client_transition(state, call, cond) is tr
