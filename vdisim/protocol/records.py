"""Binary records of the VDI interface: VDConfig (§4.1) and the command structures (§6.1).

``VDConfig`` is the 44-byte C struct of eleven uint32 fields, packed little-endian with no padding
(§4.1 [H]).  The C layouts of ``VDC_Command`` / ``VDS_Command`` are given for implementations that
share memory with C code (the libsqlvdi shim); vdisim's own wire frames are in
:mod:`vdisim.transport.frames`.
"""

from __future__ import annotations

import struct
from typing import Any

import attrs

from vdisim.protocol import codes
from vdisim.protocol.codes import HResult

_U32 = 0xFFFFFFFF


def _u32(_inst: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U32:
        raise ValueError(f"VDConfig.{attribute.name} must be an unsigned 32-bit int, got {value!r}")


VDCONFIG_STRUCT = struct.Struct("<11I")
assert VDCONFIG_STRUCT.size == 44


@attrs.frozen(slots=True)
class VDConfig:
    """The configuration record (§4.1).  Field names follow the header, in snake case."""

    device_count: int = attrs.field(default=0, validator=_u32)
    features: int = attrs.field(default=0, validator=_u32)
    prefix_zone_size: int = attrs.field(default=0, validator=_u32)
    alignment: int = attrs.field(default=0, validator=_u32)
    soft_file_mark_block_size: int = attrs.field(default=0, validator=_u32)
    eom_warning_size: int = attrs.field(default=0, validator=_u32)
    server_timeout: int = attrs.field(default=0, validator=_u32)
    block_size: int = attrs.field(default=0, validator=_u32)
    max_io_depth: int = attrs.field(default=0, validator=_u32)
    max_transfer_size: int = attrs.field(default=0, validator=_u32)
    buffer_area_size: int = attrs.field(default=0, validator=_u32)

    SIZE = VDCONFIG_STRUCT.size

    def pack(self) -> bytes:
        return VDCONFIG_STRUCT.pack(*attrs.astuple(self))

    @classmethod
    def unpack(cls, data: bytes | memoryview) -> VDConfig:
        if len(data) != VDCONFIG_STRUCT.size:
            raise ValueError(f"VDConfig is {VDCONFIG_STRUCT.size} bytes, got {len(data)}")
        return cls(*VDCONFIG_STRUCT.unpack(data))

    def evolve(self, **changes: int) -> VDConfig:
        return attrs.evolve(self, **changes)


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


#: Largest prefix zone vdisim accepts (not documented; [I]).
MAX_PREFIX_ZONE = 1 << 20


def check_client_config(cfg: VDConfig) -> HResult:
    """What Create/CreateEx returns for the client's requested configuration (§2.1, §4.1, §5).

    NOERROR or VD_E_NOTSUPPORTED.  The documented rule is only "a field invalid/unsupported";
    the concrete checks below are vdisim's reading of §4.1/§5 and are listed in docs/states.md.
    """
    if not 1 <= cfg.device_count <= codes.MAX_DEVICES:  # §1.8 [D] 1..64
        return HResult.VD_E_NOTSUPPORTED
    if cfg.features & int(codes.SERVER_FEATURES):  # server-output bits set by a client [I]
        return HResult.VD_E_NOTSUPPORTED
    if codes.device_model(cfg.features) is None:  # undocumented model combination (§5) [I]
        return HResult.VD_E_NOTSUPPORTED
    if cfg.alignment and (not _power_of_two(cfg.alignment) or cfg.alignment > 65536):
        return HResult.VD_E_NOTSUPPORTED  # alignment is a power of two <= 64 KiB [I]
    if cfg.prefix_zone_size > MAX_PREFIX_ZONE:
        return HResult.VD_E_NOTSUPPORTED
    return HResult.NOERROR


def check_server_configuration(features: int, block_size: int, alignment: int,
                               max_transfer_size: int) -> HResult:
    """Server BeginConfiguration argument rules (§3 [D]): blockSize a power of two 512..64 KiB;
    alignment 0 or a power of two >= blockSize and <= 64 KiB; maxTransferSize a multiple of
    64 KiB up to 4 MiB; features carry at least one direction bit."""
    if not _power_of_two(block_size) or not codes.MIN_BLOCK_SIZE <= block_size <= 65536:
        return HResult.VD_E_INVALID
    if alignment and (not _power_of_two(alignment) or not block_size <= alignment <= 65536):
        return HResult.VD_E_INVALID
    if (max_transfer_size <= 0 or max_transfer_size % codes.TRANSFER_UNIT
            or max_transfer_size > codes.MAX_TRANSFER_SIZE):
        return HResult.VD_E_INVALID
    direction = codes.Feature.VDF_WriteMedia | codes.Feature.VDF_ReadMedia
    if not features & int(direction):
        return HResult.VD_E_INVALID
    return HResult.NOERROR


# C layouts (§6.1 [H]), x86-64, for the native shim and docs/wire.md.
VDC_COMMAND_LINUX = struct.Struct("<iiqQ")  # commandCode, size, position, buffer pointer: 24 B
VDS_COMMAND_LINUX = struct.Struct("<iiqqQQQiI")  # 56 bytes
assert VDC_COMMAND_LINUX.size == 24 and VDS_COMMAND_LINUX.size == 56
