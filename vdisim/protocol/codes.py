"""Every numeric constant of the VDI protocol, with its header value.

Sources (spec = ../shared/spec/vdi-spec.md): HRESULTs §7 [H] (vdierror.h), command codes §6.2 [H]
(vdi.h), feature bits §5 [H], Win32 completion codes §6.5 [H/O] (winerror.h), VDWhence §6.1 [H].
HRESULTs are canonical as *unsigned* 32-bit ints (the Windows view); the Linux library returns the
same bit pattern as a signed ``int`` -- use :func:`to_signed` / :func:`to_unsigned`.
"""

from __future__ import annotations

import enum


def _vd_error(code: int) -> int:
    """MAKE_HRESULT(SEVERITY_ERROR, FACILITY 0x77, code) (§7 [H])."""
    return (1 << 31) | (0x77 << 16) | code


class HResult(enum.IntEnum):
    """VDI return codes (§7).  Values are the unsigned 32-bit HRESULT bit patterns."""

    NOERROR = 0x00000000
    VD_E_NOTOPEN = _vd_error(2)  # 0x80770002 object was not open
    VD_E_TIMEOUT = _vd_error(3)  # 0x80770003 API waited and the timeout elapsed
    VD_E_ABORT = _vd_error(4)  # 0x80770004 abort: only termination is possible
    VD_E_SECURITY = _vd_error(5)  # 0x80770005 failed to create security environment
    VD_E_INVALID = _vd_error(6)  # 0x80770006 invalid parameter
    VD_E_INSTANCE_NAME = _vd_error(7)  # 0x80770007 instance name not recognised
    VD_E_NOTSUPPORTED = _vd_error(9)  # 0x80770009 requested configuration invalid
    VD_E_MEMORY = _vd_error(10)  # 0x8077000A out of memory
    VD_E_UNEXPECTED = _vd_error(11)  # 0x8077000B unexpected internal error
    VD_E_PROTOCOL = _vd_error(12)  # 0x8077000C call not valid in this state
    VD_E_OPEN = _vd_error(13)  # 0x8077000D all devices are open
    VD_E_CLOSE = _vd_error(14)  # 0x8077000E object is now closed
    VD_E_BUSY = _vd_error(15)  # 0x8077000F resource busy
    # §7/§11.12: VD_E_QUEUE_FULL and VD_E_IO_ERROR are named by the server SendCommand page but
    # have no public value.  vdisim gives them the next free codes of the facility; they never
    # reach a client (server-side SendCommand only).  [I]
    VD_E_QUEUE_FULL = _vd_error(16)  # 0x80770010 vdisim-private value
    VD_E_IO_ERROR = _vd_error(17)  # 0x80770011 vdisim-private value


NOERROR = HResult.NOERROR
VD_E_NOTOPEN = HResult.VD_E_NOTOPEN
VD_E_TIMEOUT = HResult.VD_E_TIMEOUT
VD_E_ABORT = HResult.VD_E_ABORT
VD_E_SECURITY = HResult.VD_E_SECURITY
VD_E_INVALID = HResult.VD_E_INVALID
VD_E_INSTANCE_NAME = HResult.VD_E_INSTANCE_NAME
VD_E_NOTSUPPORTED = HResult.VD_E_NOTSUPPORTED
VD_E_MEMORY = HResult.VD_E_MEMORY
VD_E_UNEXPECTED = HResult.VD_E_UNEXPECTED
VD_E_PROTOCOL = HResult.VD_E_PROTOCOL
VD_E_OPEN = HResult.VD_E_OPEN
VD_E_CLOSE = HResult.VD_E_CLOSE
VD_E_BUSY = HResult.VD_E_BUSY
VD_E_QUEUE_FULL = HResult.VD_E_QUEUE_FULL
VD_E_IO_ERROR = HResult.VD_E_IO_ERROR

# Other HRESULTs a VDI client can see (§7).
E_ACCESSDENIED = 0x80070005


def hresult_from_win32(code: int) -> int:
    """HRESULT_FROM_WIN32 (§7): 0x8007xxxx for a Win32 error, 0 stays 0."""
    return 0 if code == 0 else (0x80070000 | (code & 0xFFFF))


def to_signed(hr: int) -> int:
    """The Linux view of an HRESULT: the same 32 bits as a signed int (§10, §11.25)."""
    hr &= 0xFFFFFFFF
    return hr - (1 << 32) if hr & 0x80000000 else hr


def to_unsigned(hr: int) -> int:
    """The canonical unsigned 32-bit view of an HRESULT given signed or unsigned."""
    return hr & 0xFFFFFFFF


def failed(hr: int) -> bool:
    """FAILED(hr): the severity bit is set."""
    return bool(to_unsigned(hr) & 0x80000000)


def hresult_name(hr: int) -> str:
    """A readable name for any HRESULT: 'VD_E_ABORT', 'NOERROR', or '0x80070002'."""
    hr = to_unsigned(hr)
    try:
        return HResult(hr).name
    except ValueError:
        return f"0x{hr:08X}"


class CommandCode(enum.IntEnum):
    """VDC_* command codes (§6.2 [H])."""

    VDC_Read = 1
    VDC_Write = 2
    VDC_ClearError = 3
    VDC_Rewind = 4
    VDC_WriteMark = 5
    VDC_SkipMarks = 6
    VDC_SkipBlocks = 7
    VDC_Load = 8
    VDC_GetPosition = 9
    VDC_SetPosition = 10
    VDC_Discard = 11
    VDC_Flush = 12
    VDC_Snapshot = 13
    VDC_MountSnapshot = 14
    VDC_PrepareToFreeze = 15
    VDC_FileInfoBegin = 16
    VDC_FileInfoEnd = 17
    VDC_GetError = 18
    VDC_Complete = 19


#: Commands that carry a data buffer (§6.3).
DATA_COMMANDS = frozenset({CommandCode.VDC_Read, CommandCode.VDC_Write})


class Feature(enum.IntFlag):
    """VDF_* feature bits (§5 [H])."""

    VDF_Removable = 0x00000001
    VDF_Rewind = 0x00000002
    VDF_Position = 0x00000010
    VDF_SkipBlocks = 0x00000020
    VDF_ReversePosition = 0x00000040
    VDF_Discard = 0x00000080
    VDF_FileMarks = 0x00000100
    VDF_RandomAccess = 0x00000200
    VDF_SnapshotPrepare = 0x00000400
    VDF_EnumFrozenFiles = 0x00000800
    VDF_VSSWriter = 0x00001000
    VDF_RequestComplete = 0x00002000
    VDF_WriteMedia = 0x00010000
    VDF_ReadMedia = 0x00020000
    VDF_CompleteEnabled = 0x00040000
    VDF_LatchStats = 0x80000000


#: Device models (§5): composite masks.
VDF_LikePipe = 0x00000000
VDF_LikeTape = 0x00000173  # FileMarks|Removable|Rewind|Position|SkipBlocks|ReversePosition
VDF_LikeDisk = 0x00000200  # RandomAccess

#: Bits a client may set in VDConfig.features (everything but the server-output bits).
CLIENT_FEATURES = (
    Feature.VDF_Removable | Feature.VDF_Rewind | Feature.VDF_Position | Feature.VDF_SkipBlocks
    | Feature.VDF_ReversePosition | Feature.VDF_Discard | Feature.VDF_FileMarks
    | Feature.VDF_RandomAccess | Feature.VDF_SnapshotPrepare | Feature.VDF_EnumFrozenFiles
    | Feature.VDF_VSSWriter | Feature.VDF_RequestComplete | Feature.VDF_LatchStats
)
#: Bits only the server sets (§5 "server" direction).
SERVER_FEATURES = Feature.VDF_WriteMedia | Feature.VDF_ReadMedia | Feature.VDF_CompleteEnabled

#: Bits that are not part of the positioning model (§5 rules: options on top of a model).
_MODEL_OPTIONS = (
    Feature.VDF_Discard | Feature.VDF_SnapshotPrepare | Feature.VDF_RequestComplete
    | Feature.VDF_EnumFrozenFiles | Feature.VDF_VSSWriter | Feature.VDF_LatchStats
)


class DeviceModel(enum.Enum):
    PIPE = "pipe"
    TAPE = "tape"
    DISK = "disk"


def device_model(features: int) -> DeviceModel | None:
    """The positioning model a feature mask selects, or None for an undocumented combination.

    Documented combinations (§5 rules): pipe[+Removable], tape, disk[+Removable], each with
    optional Discard; SnapshotPrepare / RequestComplete are orthogonal options (§5, §9).
    """
    model_bits = int(features) & ~int(_MODEL_OPTIONS) & ~int(SERVER_FEATURES)
    if model_bits in (VDF_LikePipe, int(Feature.VDF_Removable)):
        return DeviceModel.PIPE
    if model_bits == VDF_LikeTape:
        return DeviceModel.TAPE
    if model_bits in (VDF_LikeDisk, VDF_LikeDisk | int(Feature.VDF_Removable)):
        return DeviceModel.DISK
    return None


class Win32(enum.IntEnum):
    """Win32 completion codes the protocol uses (§6.5 [H/O])."""

    ERROR_SUCCESS = 0
    ERROR_INVALID_HANDLE = 6
    ERROR_ARENA_TRASHED = 7
    ERROR_BAD_ENVIRONMENT = 10
    ERROR_HANDLE_EOF = 38
    ERROR_HANDLE_DISK_FULL = 39
    ERROR_NOT_SUPPORTED = 50
    ERROR_DISK_FULL = 112
    ERROR_OPERATION_ABORTED = 995
    ERROR_END_OF_MEDIA = 1100
    ERROR_FILEMARK_DETECTED = 1101
    ERROR_NO_DATA_DETECTED = 1104
    ERROR_IO_DEVICE = 1117
    ERROR_EOM_OVERFLOW = 1129
    ERROR_NO_SYSTEM_RESOURCES = 1450


class VDWhence(enum.IntEnum):
    """Whence values carried in ``size`` of a random-access VDC_SetPosition (§6.1 [H])."""

    VDC_Beginning = 0
    VDC_Current = 1
    VDC_End = 2


#: Timeout meaning "wait forever" (Windows INFINITE); any negative timeout also waits forever
#: (the Linux convention, §2.2, §10).
INFINITE = 0xFFFFFFFF

#: Limits (§1.8, §4.1, §4.2 [D]).
MAX_DEVICES = 64
MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 65536
TRANSFER_UNIT = 65536
MAX_TRANSFER_SIZE = 4 * 1024 * 1024
MAX_IO_DEPTH = 4  # VDConfig.maxIODepth is always returned as 4 (§4.1 [D])
