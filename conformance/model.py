"""The independent model of documented VDI behaviour.

Written from the spec digest (``/work/shared/spec/vdi-spec.md``), never from
``vdisim.protocol``: the numeric constants below are transcribed from spec §5, §6.2, §6.5 and
§7, the client cells from §2.1-§2.11 (with the amendments §1.8, §11.2-§11.4 argue for), the
server cells from §3 (documented columns, recovered fragments and the method pages; the rest
reconstructed, marked [I]).  ``tests/test_model.py`` diffs these cells against vdisim's own
tables and the constants against ``vdisim.protocol.codes``: a wrong cell in either shows up.

Two layers:

* :func:`client_cell` / :func:`server_cell`: pure ``(state, call, condition) -> Cell`` (the
  HRESULTs the documentation allows, the next state, the rule that states it);
* :class:`World`: a whole conversation (client objects, the client-side set, the scripted
  server set, and the events in flight between them).  :meth:`World.candidates` lists what a
  correct implementation may answer to a step, with the rule each part of the answer is judged
  by; the judge (``conformance.judge``) picks the candidate the observation matches.

Events travel between the sides asynchronously (sockets in vdisim, shared memory elsewhere): a
client call may or may not already see what the server did just before.  The model keeps the
events not yet known to have arrived and offers one candidate per prefix of them; a *waiting*
call whose timeout is at least :data:`SYNC_MS` must see everything sent before it started.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------------
# Constants, transcribed from the spec (not imported from vdisim).

FACILITY = 0x77  # §7: VD_ERROR(code) = MAKE_HRESULT(1, 0x77, code)


def vd_error(code: int) -> int:
    return 0x80000000 | (FACILITY << 16) | code


NOERROR = 0x00000000
VD_E_NOTOPEN = 0x80770002
VD_E_TIMEOUT = 0x80770003
VD_E_ABORT = 0x80770004
VD_E_SECURITY = 0x80770005
VD_E_INVALID = 0x80770006
VD_E_INSTANCE_NAME = 0x80770007
VD_E_NOTSUPPORTED = 0x80770009
VD_E_MEMORY = 0x8077000A
VD_E_UNEXPECTED = 0x8077000B
VD_E_PROTOCOL = 0x8077000C
VD_E_OPEN = 0x8077000D
VD_E_CLOSE = 0x8077000E
VD_E_BUSY = 0x8077000F
E_ACCESSDENIED = 0x80070005
ERROR_ALREADY_EXISTS = 183
#: §7 / §11.12: VD_E_QUEUE_FULL and VD_E_IO_ERROR have no public value.  vdisim's private
#: choices (the next free codes of the facility) are accepted as such, by [I] rules only.
VD_E_QUEUE_FULL_VDISIM = vd_error(16)
VD_E_IO_ERROR_VDISIM = vd_error(17)

HRESULTS: dict[str, int] = {
    "NOERROR": NOERROR, "VD_E_NOTOPEN": VD_E_NOTOPEN, "VD_E_TIMEOUT": VD_E_TIMEOUT,
    "VD_E_ABORT": VD_E_ABORT, "VD_E_SECURITY": VD_E_SECURITY, "VD_E_INVALID": VD_E_INVALID,
    "VD_E_INSTANCE_NAME": VD_E_INSTANCE_NAME, "VD_E_NOTSUPPORTED": VD_E_NOTSUPPORTED,
    "VD_E_MEMORY": VD_E_MEMORY, "VD_E_UNEXPECTED": VD_E_UNEXPECTED,
    "VD_E_PROTOCOL": VD_E_PROTOCOL, "VD_E_OPEN": VD_E_OPEN, "VD_E_CLOSE": VD_E_CLOSE,
    "VD_E_BUSY": VD_E_BUSY,
}


def hresult_from_win32(code: int) -> int:
    """§7: HRESULT_FROM_WIN32."""
    return 0 if code == 0 else 0x80070000 | (code & 0xFFFF)


def hr_name(hr: int | None) -> str:
    if hr is None:
        return "none"
    for k, v in HRESULTS.items():
        if v == hr:
            return k
    return f"0x{hr & 0xFFFFFFFF:08X}"


# §6.2 command codes [H]
COMMANDS: dict[str, int] = {
    "VDC_Read": 1, "VDC_Write": 2, "VDC_ClearError": 3, "VDC_Rewind": 4, "VDC_WriteMark": 5,
    "VDC_SkipMarks": 6, "VDC_SkipBlocks": 7, "VDC_Load": 8, "VDC_GetPosition": 9,
    "VDC_SetPosition": 10, "VDC_Discard": 11, "VDC_Flush": 12, "VDC_Snapshot": 13,
    "VDC_MountSnapshot": 14, "VDC_PrepareToFreeze": 15, "VDC_FileInfoBegin": 16,
    "VDC_FileInfoEnd": 17, "VDC_GetError": 18, "VDC_Complete": 19,
}
VDC_READ, VDC_WRITE, VDC_CLEAR_ERROR, VDC_FLUSH, VDC_COMPLETE = 1, 2, 3, 12, 19
DATA_COMMANDS = frozenset({VDC_READ, VDC_WRITE})

# §6.5 Win32 completion codes [H/O]
WIN32: dict[str, int] = {
    "ERROR_SUCCESS": 0, "ERROR_INVALID_HANDLE": 6, "ERROR_ARENA_TRASHED": 7,
    "ERROR_BAD_ENVIRONMENT": 10, "ERROR_HANDLE_EOF": 38, "ERROR_HANDLE_DISK_FULL": 39,
    "ERROR_NOT_SUPPORTED": 50, "ERROR_DISK_FULL": 112, "ERROR_OPERATION_ABORTED": 995,
    "ERROR_END_OF_MEDIA": 1100, "ERROR_FILEMARK_DETECTED": 1101, "ERROR_NO_DATA_DETECTED": 1104,
    "ERROR_IO_DEVICE": 1117, "ERROR_EOM_OVERFLOW": 1129, "ERROR_NO_SYSTEM_RESOURCES": 1450,
}
ERROR_SUCCESS, ERROR_INVALID_HANDLE, ERROR_OPERATION_ABORTED = 0, 6, 995
ERROR_IO_DEVICE, ERROR_NO_SYSTEM_RESOURCES = 1117, 1450

# §5 feature bits [H]
FEATURES: dict[str, int] = {
    "VDF_Removable": 0x1, "VDF_Rewind": 0x2, "VDF_Position": 0x10, "VDF_SkipBlocks": 0x20,
    "VDF_ReversePosition": 0x40, "VDF_Discard": 0x80, "VDF_FileMarks": 0x100,
    "VDF_RandomAccess": 0x200, "VDF_SnapshotPrepare": 0x400, "VDF_EnumFrozenFiles": 0x800,
    "VDF_VSSWriter": 0x1000, "VDF_RequestComplete": 0x2000, "VDF_WriteMedia": 0x10000,
    "VDF_ReadMedia": 0x20000, "VDF_CompleteEnabled": 0x40000, "VDF_LatchStats": 0x80000000,
}
VDF_LIKE_PIPE, VDF_LIKE_TAPE, VDF_LIKE_DISK = 0x0, 0x173, 0x200
VDF_REMOVABLE, VDF_REQUEST_COMPLETE = 0x1, 0x2000
VDF_WRITE_MEDIA, VDF_READ_MEDIA, VDF_COMPLETE_ENABLED = 0x10000, 0x20000, 0x40000
_SERVER_BITS = VDF_WRITE_MEDIA | VDF_READ_MEDIA | VDF_COMPLETE_ENABLED
_OPTIONS = 0x80 | 0x400 | 0x800 | 0x1000 | 0x2000 | 0x80000000

MAX_DEVICES = 64  # §1.8 [D]
MAX_IO_DEPTH = 4  # §4.1 [D]
MIN_BLOCK, MAX_BLOCK, TRANSFER_UNIT, MAX_TRANSFER = 512, 65536, 65536, 4 * 1024 * 1024

#: A wait of at least this many milliseconds sees every event sent before the call began.
SYNC_MS = 1000
#: Completion codes (§6.3) a server SendCommand failure hands its completion routine (§3).
SEND_FAILURE_CODE = {VD_E_ABORT: ERROR_OPERATION_ABORTED, VD_E_PROTOCOL: ERROR_INVALID_HANDLE,
                     VD_E_IO_ERROR_VDISIM: ERROR_IO_DEVICE,
                     VD_E_QUEUE_FULL_VDISIM: ERROR_NO_SYSTEM_RESOURCES,
                     VD_E_INVALID: ERROR_INVALID_HANDLE}


def documented_features(features: int) -> bool:
    """§5 rules: pipe[+Removable], tape, disk[+Removable], each with options; no server bits."""
    if features & _SERVER_BITS:
        return False
    model = features & ~_OPTIONS & 0xFFFFFFFF
    return model in (VDF_LIKE_PIPE, VDF_REMOVABLE, VDF_LIKE_TAPE, VDF_LIKE_DISK,
                     VDF_LIKE_DISK | VDF_REMOVABLE)


def _pow2(n: Any) -> bool:
    return isinstance(n, int) and n > 0 and n & (n - 1) == 0


def server_configuration_ok(features: int, block_size: int, alignment: int,
                            max_transfer_size: int) -> bool:
    """§3 BeginConfiguration / §4.2: blockSize a power of two 512..64 KiB; alignment 0 or a
    power of two >= blockSize <= 64 KiB; maxTransferSize a multiple of 64 KiB <= 4 MiB; the
    features carry a direction bit."""
    return (_pow2(block_size) and MIN_BLOCK <= block_size <= MAX_BLOCK
            and (alignment == 0 or (_pow2(alignment) and block_size <= alignment <= MAX_BLOCK))
            and isinstance(max_transfer_size, int) and 0 < max_transfer_size <= MAX_TRANSFER
            and max_transfer_size % TRANSFER_UNIT == 0
            and bool(features & (VDF_WRITE_MEDIA | VDF_READ_MEDIA)))


# ---------------------------------------------------------------------------------------------
# The cells.

CLIENT_STATES = ("DNE", "CONFIGURABLE", "INITIALIZING", "ACTIVE", "NORMALLY_TERMINATED", "ABORT")
CLIENT_CALLS = ("CREATE", "GET_CONFIGURATION", "OPEN_DEVICE", "GET_COMMAND", "COMPLETE_COMMAND",
                "SIGNAL_ABORT", "CLOSE", "OPEN_IN_SECONDARY", "GET_BUFFER_HANDLE",
                "MAP_BUFFER_HANDLE")
SERVER_STATES = ("DNE", "CONNECTED", "CONFIGURABLE", "INITIALIZING", "ACTIVE",
                 "NORMALLY_TERMINATED", "ABORT")
SERVER_CALLS = ("OPEN", "GET_CONFIGURATION", "BEGIN_CONFIGURATION", "REQUEST_BUFFERS",
                "QUERY_AVAILABLE_BUFFERS", "END_CONFIGURATION", "OPEN_DEVICE",
                "EXECUTE_COMPLETION_AGENT", "ALLOCATE_BUFFER", "FREE_BUFFER", "SEND_COMMAND",
                "CLOSE_DEVICE", "SIGNAL_ABORT", "CLOSE")
SHORT = {"NORMALLY_TERMINATED": "NT"}


@dataclass(frozen=True)
class Cell:
    hrs: frozenset[int]
    next: str | None = None  # None: state unchanged
    source: str = "D"  # spec tag of the weakest fact the cell rests on


def _c(*hrs: int, next: str | None = None, source: str = "D") -> Cell:
    return Cell(frozenset(hrs), next, source)


P, A, OK = VD_E_PROTOCOL, VD_E_ABORT, NOERROR

#: (state, call, condition) cells that have a condition-specific rule; others share the
#: cell's rule.  Condition names: OK, TIMEOUT, ABORTED, BAD_CONFIG, BAD_NAME, NAME_IN_USE,
#: NO_MEMORY, ALREADY_OPEN, ALL_OPEN, DEVICE_CLOSED, LAST_DEVICE_CLOSED, NOT_OUTSTANDING,
#: DEVICES_OPEN, NOT_READY, INVALID_ARG, QUEUE_FULL, IO_ERROR, NO_SET, BAD_INSTANCE.
CT_COND_RULES: frozenset[tuple[str, str, str]] = frozenset({
    ("DNE", "CREATE", "BAD_CONFIG"), ("DNE", "CREATE", "BAD_NAME"),
    ("DNE", "CREATE", "NAME_IN_USE"), ("DNE", "CREATE", "BAD_INSTANCE"),
    ("DNE", "OPEN_IN_SECONDARY", "ABORTED"), ("DNE", "OPEN_IN_SECONDARY", "NOT_READY"),
    ("CONFIGURABLE", "GET_CONFIGURATION", "TIMEOUT"),
    ("CONFIGURABLE", "GET_CONFIGURATION", "ABORTED"),
    ("INITIALIZING", "OPEN_DEVICE", "BAD_NAME"), ("INITIALIZING", "OPEN_DEVICE", "ALREADY_OPEN"),
    ("INITIALIZING", "OPEN_DEVICE", "ALL_OPEN"),
    ("INITIALIZING", "MAP_BUFFER_HANDLE", "INVALID_ARG"),
    ("ACTIVE", "OPEN_DEVICE", "ALREADY_OPEN"), ("ACTIVE", "OPEN_DEVICE", "ALL_OPEN"),
    ("ACTIVE", "OPEN_DEVICE", "BAD_NAME"),
    ("ACTIVE", "GET_COMMAND", "TIMEOUT"), ("ACTIVE", "GET_COMMAND", "DEVICE_CLOSED"),
    ("ACTIVE", "GET_COMMAND", "LAST_DEVICE_CLOSED"), ("ACTIVE", "GET_COMMAND", "ABORTED"),
    ("ACTIVE", "COMPLETE_COMMAND", "NOT_OUTSTANDING"),
    ("ACTIVE", "COMPLETE_COMMAND", "DEVICE_CLOSED"),
    ("ACTIVE", "CLOSE", "DEVICES_OPEN"),
    ("ACTIVE", "GET_BUFFER_HANDLE", "INVALID_ARG"), ("ACTIVE", "MAP_BUFFER_HANDLE", "INVALID_ARG"),
    ("NORMALLY_TERMINATED", "GET_BUFFER_HANDLE", "INVALID_ARG"),
    ("NORMALLY_TERMINATED", "MAP_BUFFER_HANDLE", "INVALID_ARG"),
    ("ABORT", "GET_BUFFER_HANDLE", "INVALID_ARG"), ("ABORT", "MAP_BUFFER_HANDLE", "INVALID_ARG"),
})


def ct_rule(state: str, call: str, cond: str = "OK") -> str:
    """The rule ID that judges the client cell (state, call, condition)."""
    st = SHORT.get(state, state)
    if (state, call, cond) in CT_COND_RULES:
        return f"CT-{st}-{call}-{cond}"
    return f"CT-{st}-{call}"


def client_cell(state: str, call: str, cond: str = "OK") -> Cell:
    """The documented answer of a client call (§2.11 amended; method pages §2.1-§2.9)."""
    if call == "SIGNAL_ABORT":  # §2.6: PROTOCOL in DNE, idempotent in Abort
        if state == "DNE":
            return _c(P)
        return _c(OK) if state == "ABORT" else _c(OK, next="ABORT")
    if call == "CLOSE":  # §2.7
        if state == "DNE":
            return _c(P)
        if state == "ACTIVE" and cond == "DEVICES_OPEN":
            return _c(VD_E_OPEN, next="DNE")  # §2.7 / §11.4 (amended)
        return _c(OK, next="DNE")
    if call == "CREATE":  # §2.1
        if state != "DNE":
            return _c(P)
        return {
            "BAD_CONFIG": _c(VD_E_NOTSUPPORTED),
            # §1.3: any character but backslash; the code is not documented [I]
            "BAD_NAME": _c(VD_E_INVALID, VD_E_NOTSUPPORTED, P, source="I"),
            # §2.1 / §11.5: a name collision with another process's set is undocumented [I]
            "NAME_IN_USE": _c(P, hresult_from_win32(ERROR_ALREADY_EXISTS), source="I"),
            "NO_MEMORY": _c(VD_E_MEMORY, source="H"),
            "BAD_INSTANCE": _c(VD_E_INSTANCE_NAME, source="O"),
        }.get(cond, _c(OK, next="CONFIGURABLE"))
    if call == "OPEN_IN_SECONDARY":  # §2.8
        if state != "DNE":
            return _c(P)
        return {"ABORTED": _c(A), "NOT_READY": _c(P)}.get(cond, _c(OK, next="INITIALIZING"))
    if call in ("GET_BUFFER_HANDLE", "MAP_BUFFER_HANDLE"):  # §2.9
        if state == "DNE":
            return _c(P)
        if state == "CONFIGURABLE":  # no buffer exists yet; "set not open" is PROTOCOL [I]
            return _c(VD_E_INVALID, P, source="I")
        return _c(VD_E_INVALID) if cond == "INVALID_ARG" else _c(OK)
    if state == "ABORT":
        return _c(P) if call == "CREATE" else _c(A)
    if call == "GET_CONFIGURATION":  # §2.2
        if state == "DNE":
            return _c(P)
        if state == "CONFIGURABLE":
            return {"TIMEOUT": _c(VD_E_TIMEOUT), "ABORTED": _c(A, next="ABORT")}.get(
                cond, _c(OK, next="INITIALIZING"))
        return _c(OK)
    if call == "OPEN_DEVICE":  # §2.3, §11.2
        if state not in ("INITIALIZING", "ACTIVE"):
            return _c(P)
        other = {"ALREADY_OPEN": _c(P), "ALL_OPEN": _c(VD_E_OPEN), "BAD_NAME": _c(VD_E_INVALID)}
        if cond in other:
            return other[cond]
        return _c(OK, next="ACTIVE") if state == "INITIALIZING" else _c(OK)
    if call == "GET_COMMAND":  # §2.4, §1.8
        if state != "ACTIVE":
            return _c(P)
        return {"TIMEOUT": _c(VD_E_TIMEOUT), "DEVICE_CLOSED": _c(VD_E_CLOSE),
                "LAST_DEVICE_CLOSED": _c(VD_E_CLOSE, next="NORMALLY_TERMINATED"),
                "ABORTED": _c(A, next="ABORT")}.get(cond, _c(OK))
    if call == "COMPLETE_COMMAND":  # §2.5
        if state != "ACTIVE":
            return _c(P)
        return {"NOT_OUTSTANDING": _c(VD_E_INVALID), "DEVICE_CLOSED": _c(P)}.get(cond, _c(OK))
    raise KeyError(f"no client call {call!r}")


def st_rule(state: str, call: str, cond: str = "OK") -> str:
    """The rule ID that judges the server cell (state, call, condition)."""
    st = SHORT.get(state, state)
    with_cond = f"ST-{st}-{call}-{cond}"
    if with_cond in ST_RULES:
        return with_cond
    plain = f"ST-{st}-{call}"
    return plain if plain in ST_RULES else "ST-OTHER-CELLS"


#: The server cells that have a rule of their own (the rest: ST-OTHER-CELLS).
ST_RULES: frozenset[str] = frozenset({
    "ST-DNE-OPEN", "ST-DNE-OPEN-NO_SET", "ST-DNE-GET_CONFIGURATION", "ST-DNE-BEGIN_CONFIGURATION",
    "ST-DNE-REQUEST_BUFFERS", "ST-DNE-END_CONFIGURATION", "ST-DNE-OPEN_DEVICE",
    "ST-DNE-ALLOCATE_BUFFER", "ST-DNE-SIGNAL_ABORT", "ST-DNE-CLOSE",
    "ST-CONNECTED-GET_CONFIGURATION", "ST-CONNECTED-BEGIN_CONFIGURATION",
    "ST-CONNECTED-BEGIN_CONFIGURATION-INVALID_ARG", "ST-CONNECTED-END_CONFIGURATION",
    "ST-CONNECTED-SIGNAL_ABORT", "ST-CONNECTED-CLOSE",
    "ST-CONFIGURABLE-GET_CONFIGURATION", "ST-CONFIGURABLE-BEGIN_CONFIGURATION",
    "ST-CONFIGURABLE-REQUEST_BUFFERS", "ST-CONFIGURABLE-END_CONFIGURATION",
    "ST-CONFIGURABLE-OPEN_DEVICE", "ST-CONFIGURABLE-ALLOCATE_BUFFER",
    "ST-CONFIGURABLE-SIGNAL_ABORT", "ST-CONFIGURABLE-CLOSE",
    "ST-INITIALIZING-GET_CONFIGURATION", "ST-INITIALIZING-BEGIN_CONFIGURATION",
    "ST-INITIALIZING-REQUEST_BUFFERS", "ST-INITIALIZING-END_CONFIGURATION",
    "ST-INITIALIZING-OPEN_DEVICE", "ST-INITIALIZING-ALLOCATE_BUFFER",
    "ST-INITIALIZING-SIGNAL_ABORT", "ST-INITIALIZING-CLOSE",
    "ST-ACTIVE-GET_CONFIGURATION", "ST-ACTIVE-BEGIN_CONFIGURATION", "ST-ACTIVE-REQUEST_BUFFERS",
    "ST-ACTIVE-OPEN_DEVICE", "ST-ACTIVE-OPEN_DEVICE-ALL_OPEN", "ST-ACTIVE-SEND_COMMAND",
    "ST-ACTIVE-SEND_COMMAND-IO_ERROR", "ST-ACTIVE-SEND_COMMAND-DEVICE_CLOSED",
    "ST-ACTIVE-CLOSE_DEVICE", "ST-ACTIVE-CLOSE_DEVICE-DEVICE_CLOSED", "ST-ACTIVE-SIGNAL_ABORT",
    "ST-ACTIVE-CLOSE-DEVICES_OPEN",
    "ST-NT-GET_CONFIGURATION", "ST-NT-REQUEST_BUFFERS", "ST-NT-SEND_COMMAND",
    "ST-NT-CLOSE_DEVICE", "ST-NT-CLOSE",
    "ST-ABORT-GET_CONFIGURATION", "ST-ABORT-BEGIN_CONFIGURATION", "ST-ABORT-REQUEST_BUFFERS",
    "ST-ABORT-SEND_COMMAND", "ST-ABORT-CLOSE_DEVICE", "ST-ABORT-SIGNAL_ABORT", "ST-ABORT-CLOSE",
})


def server_cell(state: str, call: str, cond: str = "OK") -> Cell:
    """The documented answer of a server call (§3 table, recovered fragments, method pages;
    the Connected / later columns are reconstructed where the text is silent: [I])."""
    D, INF = "D", "I"
    if state == "DNE":
        if call == "OPEN":
            return _c(VD_E_INVALID) if cond == "NO_SET" else _c(OK, next="CONNECTED")
        return _c(P)
    if call == "OPEN":  # "Must be first call"; PROTOCOL in every later state [D]
        return _c(P, source=D if state != "CONNECTED" else INF)
    if call == "SIGNAL_ABORT":
        if state == "ABORT":
            return _c(OK, source=INF)
        return _c(OK, next="ABORT", source=D if state in ("CONFIGURABLE", "INITIALIZING") else INF)
    if call == "CLOSE":
        if state == "ACTIVE" and cond == "DEVICES_OPEN":
            return _c(P, next="DNE")  # §3 Close: PROTOCOL, with SignalAbort processing
        return _c(OK, next="DNE",
                  source=D if state in ("CONFIGURABLE", "INITIALIZING", "ABORT") else INF)
    if call == "EXECUTE_COMPLETION_AGENT":
        if state in ("CONNECTED", "CONFIGURABLE"):
            return _c(P, source=D if state == "CONFIGURABLE" else INF)
        if state == "INITIALIZING":
            return _c(OK, next="ACTIVE")
        return _c(OK, source=INF)  # runs, or returns at once after abort
    if call == "GET_CONFIGURATION":
        if state == "ABORT":
            return _c(A)
        return _c(OK, source=INF if state == "CONNECTED" else D)
    if state == "ABORT":
        # The table fragments say PROTOCOL for Open/BeginConfiguration/RequestBuffers in the
        # terminated states, the method pages list VD_E_ABORT: both are documented answers.
        if call in ("BEGIN_CONFIGURATION", "REQUEST_BUFFERS", "QUERY_AVAILABLE_BUFFERS",
                    "END_CONFIGURATION", "OPEN_DEVICE", "ALLOCATE_BUFFER"):
            return _c(A, P, source=D if call != "OPEN_DEVICE" else INF)
        if call == "FREE_BUFFER":  # optional before Close [I]
            return _c(OK, VD_E_INVALID, source=INF) if cond != "INVALID_ARG" else _c(
                VD_E_INVALID, source=INF)
        return _c(A)  # SendCommand (§8.2, §3 failure 995), CloseDevice (§3)
    if call == "BEGIN_CONFIGURATION":
        if state != "CONNECTED":
            return _c(P)
        if cond == "INVALID_ARG":  # bad arguments: the code is undocumented [I]
            return _c(VD_E_INVALID, P, VD_E_NOTSUPPORTED, source=INF)
        return _c(OK, next="CONFIGURABLE")
    if call in ("REQUEST_BUFFERS", "QUERY_AVAILABLE_BUFFERS"):
        if state in ("CONNECTED", "NORMALLY_TERMINATED"):
            return _c(P, source=INF if state == "CONNECTED" else D)
        if cond == "INVALID_ARG":
            return _c(VD_E_INVALID, P, source=INF)
        if cond == "NO_MEMORY":
            return _c(VD_E_MEMORY)
        return _c(OK)
    if call == "END_CONFIGURATION":
        if state != "CONFIGURABLE":
            return _c(P, source=D if state in ("CONNECTED", "INITIALIZING") else INF)
        return _c(VD_E_MEMORY) if cond == "NO_MEMORY" else _c(OK, next="INITIALIZING")
    if call == "OPEN_DEVICE":
        if state in ("CONNECTED", "CONFIGURABLE"):
            return _c(P, source=D if state == "CONFIGURABLE" else INF)
        if state == "NORMALLY_TERMINATED":
            return _c(VD_E_OPEN, P, source=INF)
        if cond == "ALL_OPEN":
            return _c(VD_E_OPEN)
        return _c(OK, next="ACTIVE") if state == "INITIALIZING" else _c(OK)
    if call in ("ALLOCATE_BUFFER", "FREE_BUFFER"):
        if state in ("CONNECTED", "CONFIGURABLE"):
            return _c(P, source=D if state == "CONFIGURABLE" else INF)
        if cond == "INVALID_ARG":
            return _c(VD_E_INVALID)
        if state == "NORMALLY_TERMINATED":
            return _c(P, OK, source=INF) if call == "ALLOCATE_BUFFER" else _c(OK, source=INF)
        if cond == "NO_MEMORY" and call == "ALLOCATE_BUFFER":
            return _c(VD_E_MEMORY)
        return _c(OK, source=D if state == "INITIALIZING" else INF)
    if call == "SEND_COMMAND":
        if state != "ACTIVE":
            return _c(P, source=INF if state in ("CONNECTED", "NORMALLY_TERMINATED") else D)
        return {"QUEUE_FULL": _c(VD_E_QUEUE_FULL_VDISIM, source=INF),
                "IO_ERROR": _c(VD_E_IO_ERROR_VDISIM, source=INF),
                "DEVICE_CLOSED": _c(P),
                "INVALID_ARG": _c(VD_E_INVALID, P, source=INF)}.get(cond, _c(OK))
    if call == "CLOSE_DEVICE":
        if state in ("CONNECTED", "CONFIGURABLE", "INITIALIZING"):
            return _c(P, source=INF if state == "CONNECTED" else D)
        if state == "NORMALLY_TERMINATED" or cond == "DEVICE_CLOSED":
            return _c(VD_E_CLOSE)
        if cond == "LAST_DEVICE_CLOSED":
            return _c(OK, next="NORMALLY_TERMINATED", source=INF)
        return _c(OK, source=INF)  # §11.11: NOERROR on success presumably
    raise KeyError(f"no server call {call!r}")


DEVICE_STATES = ("ACTIVE", "IO_ERROR", "CLOSED")
DEVICE_EVENTS = ("SEND", "SEND_CLEAR_ERROR", "COMPLETE_OK", "COMPLETE_ERROR", "CLEAR_ERROR_OK",
                 "CLEAR_ERROR_FAILED", "CLOSE")


def device_cell(state: str, event: str) -> tuple[str, str]:
    """(action, next state) of a device under the IO-ERROR protocol (§6.6 [D])."""
    if state == "CLOSED":  # CloseDevice: sends fail (device not active), completions noted
        if event in ("SEND", "SEND_CLEAR_ERROR"):
            return "REJECT_CLOSED", "CLOSED"
        return ("ALREADY_CLOSED" if event == "CLOSE" else "NOTE"), "CLOSED"
    if event == "CLOSE":  # 6.6.5: instead of ClearError the server may close the device
        return "ACCEPT", "CLOSED"
    if state == "ACTIVE":
        if event in ("COMPLETE_ERROR", "CLEAR_ERROR_FAILED"):  # 6.6.1 and 6.6.3
            return "FAIL_QUEUED", "IO_ERROR"
        return ("ACCEPT" if event.startswith("SEND") else "NOTE"), "ACTIVE"
    # IO-ERROR
    if event == "SEND":  # 6.6.2: rejected at once with ERROR_IO_DEVICE
        return "REJECT_IO_DEVICE", "IO_ERROR"
    if event == "SEND_CLEAR_ERROR":  # 6.6.3: held until the outstanding commands complete
        return "HOLD_UNTIL_DRAINED", "IO_ERROR"
    if event == "CLEAR_ERROR_OK":  # 6.6.4: Active again
        return "NOTE", "ACTIVE"
    return "NOTE", "IO_ERROR"


def send_failure_code(hr: int) -> int:
    return SEND_FAILURE_CODE.get(hr, ERROR_INVALID_HANDLE)


# ---------------------------------------------------------------------------------------------
# Rule IDs judged by the world model beside the cells (the catalogue describes each).

R_CREATE_AGAIN = "CLOSE-CREATE-AGAIN"
R_OPEN_RELEASES = "CLOSE-VD_E_OPEN-RELEASES"
R_OPEN_ABORTS = "CLOSE-VD_E_OPEN-ABORTS"
R_DEVICES_INVALID = "CLOSE-DEVICES-INVALID"
R_RELEASES = "CLOSE-RELEASES-RESOURCES"
R_WAIT_CLOSE = "CLOSE-WAIT-FOR-VD_E_CLOSE"
R_ABNORMAL_CLOSE = "ABORT-CLOSE-WITHOUT-VD_E_CLOSE"
R_RETURNS_COMMAND = "GET_COMMAND-RETURNS-SENT-COMMAND"
R_AFTER_VD_E_CLOSE = "GET_COMMAND-AFTER-VD_E_CLOSE"
R_NULL_DEVICE = "OPEN_DEVICE-NULL-ON-FAILURE"
R_CONFIG = "CONFIG-SERVER-CHOICES"
R_IODEPTH = "CONFIG-MAXIODEPTH-4"
R_REACHES = "COMPLETE_COMMAND-REACHES-SERVER"
R_CLIENT_ABORT_995 = "SIGNAL_ABORT-COMPLETES-995"
R_SERVER_ABORT_995 = "ABORT-SERVER-SIGNAL-995"
R_IGNORED = "ABORT-COMPLETION-IGNORED"
R_CLIENT_GONE = "ABORT-CLIENT-GONE"
R_SERVER_DEATH = "ABORT-SERVER-DEATH"
R_SERVER_CLOSE_ABORTS = "ABORT-SERVER-CLOSE-DEVICES-OPEN"
R_IOERR_QUEUED = "IOERR-QUEUED-1117"
R_IOERR_REJECT = "IOERR-SEND-REJECTED"
R_IOERR_HELD = "IOERR-CLEARERROR-HELD"
R_IOERR_RESUMES = "IOERR-CLEARERROR-RESUMES"
R_IOERR_NOT_ABORT = "IOERR-NOT-ABORT"
R_SEND_CALLBACK = "CODES-SEND-FAILURE-CALLBACK"
R_COMPLETE_DELIVERED = "COMPLETE-DELIVERED"
R_COMPLETE_FAILS = "COMPLETE-FAILURE-REACHES-SERVER"
R_COMPLETE_ONLY_IF = "COMPLETE-ONLY-IF-ENABLED"
R_TIMEOUT_ABORTS = "TIMEOUT-SERVER-ABORTS"
R_TIMEOUT_ZERO = "TIMEOUT-ZERO-INFINITE"
R_CALL_RETURNS = "TIMEOUT-CALL-RETURNS"
R_TRANSFER_BLOCK = "TRANSFER-BLOCK-MULTIPLE"
R_TRANSFER_MAX = "TRANSFER-MAX-SIZE"
R_CONFIG_BLOCK = "CONFIG-BLOCKSIZE-RANGE"
R_CONFIG_MTS = "CONFIG-MAXTRANSFER-RANGE"
R_AT_MOST_ONCE = "COMPLETE-COMMAND-AT-MOST-ONCE"
R_WIRE = "SERVER-NO-WIRE-VIOLATIONS"
R_SRV_STATE = "ST-STATE-OBSERVED"
R_OPEN_SIGNALS = "CLOSE-VD_E_OPEN-SIGNALS-ABORT"
#: vdisim's wire value for "the client closed with devices open" (docs/wire.md, ABORT frame);
#: only a backend that reports abort reasons (the sim's scripted server) is judged on it [I].
VDISIM_REASON_CLIENT_CLOSE = 3

# ---------------------------------------------------------------------------------------------
# The conversation.


@dataclass
class CDev:
    """One device of the client-side set, as the client library knows it."""

    index: int
    name: str
    opened_by: str | None = None
    close_pending: bool = False
    close_seen: bool = False
    queue: list[int] = field(default_factory=list)  # server command keys not yet delivered
    outstanding: list[int] = field(default_factory=list)  # delivered, not completed
    io_error: bool = False


@dataclass
class CSet:
    """The client-side set (what the library of the primary and its secondaries share)."""

    id: int
    name: str
    instance: str | None
    primary: str
    alive: bool = True  # the primary has not closed it
    configured: bool = False
    config: dict[str, int] | None = None
    devs: list[CDev] = field(default_factory=list)
    primary_configured: bool = False  # the primary's GetConfiguration succeeded
    aborted: bool = False
    abort_cause: str = ""
    abort_with_devices_open: bool = False
    down: list[tuple[Any, ...]] = field(default_factory=list)  # server -> client, in order
    seen: int = 0  # how many of ``down`` the library is known to have processed
    up: list[tuple[Any, ...]] = field(default_factory=list)  # client -> server, in order
    handles: dict[int, tuple[str, int]] = field(default_factory=dict)  # sym -> (actor, cmd)
    server_used: bool = False
    server_gone: bool = False  # the server closed the set (or died)
    #: queued commands an error completion may or may not have failed (the device's
    #: CloseDevice was in flight: a closed device notes completions, §6.6 reconstructed)
    maybe_failed: set[int] = field(default_factory=set)
    requested: dict[str, int] = field(default_factory=dict)


@dataclass
class CCmd:
    key: int  # server command key
    cs: int
    device: int
    code: int
    size: int
    position: int
    completed: bool = False


@dataclass
class Actor:
    name: str
    state: str = "DNE"
    cs: int | None = None
    role: str = ""
    devices: dict[int, tuple[int, int]] = field(default_factory=dict)  # sym -> (cs id, index)
    cmds: dict[int, CCmd] = field(default_factory=dict)
    closed_how: str = ""  # "", "ok", "open": how this object's last Close answered
    lagged_abort: bool = False  # another client object aborted the set; maybe not seen yet
    dead: bool = False


@dataclass
class SCmd:
    key: int
    device: int
    code: int
    size: int
    position: int
    done: bool = False
    code_out: int = -1
    bytes_out: int = 0
    pos_out: int = 0
    cause: str = ""  # the rule that explains the completion
    client_tried_after_abort: bool = False
    sent_ok: bool = True
    seen_done: tuple[int, int] | None = None  # first completion the server reported


@dataclass
class SDev:
    index: int
    opened: bool = False
    closed: bool = False
    io_error: bool = False
    recovered: bool = False


@dataclass
class Srv:
    state: str = "DNE"
    cs: int | None = None
    up_seen: int = 0
    features: int = 0
    block_size: int = 0
    alignment: int = 0
    mts: int = 0
    names: list[str] = field(default_factory=list)
    devices: list[SDev] = field(default_factory=list)
    dev_syms: dict[int, int] = field(default_factory=dict)  # sym -> index
    cmds: dict[int, SCmd] = field(default_factory=dict)
    buffers: dict[int, int] = field(default_factory=dict)  # sym -> size
    agent: bool = False
    server_timeout: int = 0
    state_cause: str = ""  # rule that made the current state what it is
    abort_cause: str = ""
    dead: bool = False


@dataclass
class Check:
    """One judged part of an answer: ``key`` is ``hr`` or ``out.<field>[.<field>]``."""

    rule: str
    key: str
    allowed: frozenset[Any]
    expected: Any  # what a correct implementation answers (for expected traces)
    what: str = ""
    pred: Callable[[Any], bool] | None = None  # instead of ``allowed`` when set
    bad: Any = None  # a value ``pred`` refuses (to build negative examples)

    def ok(self, value: Any) -> bool:
        if self.pred is not None:
            try:
                return bool(self.pred(value))
            except (TypeError, ValueError):
                return False
        return _norm(value) in {_norm(v) for v in self.allowed}


def _norm(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_norm(x) for x in v)
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return int(v)
    return v


@dataclass
class Candidate:
    world: World
    checks: list[Check]
    finish: Callable[[World, Any], None] | None = None
    blocked: bool = False  # a wait that would still be waiting in this view
    preferred: bool = False

    @property
    def hrs(self) -> frozenset[int] | None:
        for c in self.checks:
            if c.key == "hr":
                return frozenset(int(h) for h in c.allowed)
        return None


def get_out(out: dict[str, Any], key: str) -> tuple[bool, Any]:
    """(present, value) of ``out.<a>.<b>`` in an observation's ``out``."""
    cur: Any = out
    for part in key.split(".")[1:]:
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


class World:
    """The state of a whole conversation, from the model's point of view."""

    def __init__(self, *, opaque_server: bool = False) -> None:
        self.opaque = opaque_server
        self.actors = {"client": Actor("client"), "secondary": Actor("secondary")}
        self.sets: dict[int, CSet] = {}
        self.next_set = 1
        self.srv = Srv()
        self.n_send = 0
        self.srv_gen = 0

    def clone(self) -> World:
        """A copy sharing nothing mutable with this world (hand-written: deepcopy is slow)."""
        w = copy.copy(self)
        w.actors = {k: _copy_actor(a) for k, a in self.actors.items()}
        w.sets = {k: _copy_set(cs) for k, cs in self.sets.items()}
        w.srv = _copy_srv(self.srv)
        return w

    # -- helpers -------------------------------------------------------------------------
    def cset(self, actor: Actor) -> CSet | None:
        return self.sets.get(actor.cs) if actor.cs is not None else None

    def live_set(self, name: Any, instance: Any) -> CSet | None:
        for cs in self.sets.values():
            if cs.alive and cs.name == name and _inst(cs.instance) == _inst(instance):
                return cs
        return None

    def srv_set(self) -> CSet | None:
        return self.sets.get(self.srv.cs) if self.srv.cs is not None else None

    def attached(self, cs: CSet) -> list[Actor]:
        return [a for a in self.actors.values() if a.cs == cs.id and not a.dead]

    # -- events arriving at the client library -----------------------------------------------
    def deliver_down(self, cs: CSet, n: int, actor: str = "") -> None:
        """The library processes the next ``n`` server events, as seen by the client object
        ``actor`` (other objects of the set may learn of an abort later)."""
        for ev in cs.down[cs.seen:cs.seen + n]:
            self._apply_down(cs, ev, actor)
        cs.seen = min(len(cs.down), cs.seen + n)

    def _apply_down(self, cs: CSet, ev: tuple[Any, ...], actor: str = "") -> None:
        kind = ev[0]
        if kind == "config":
            cs.configured = True
            cs.config = dict(ev[1])
            cs.devs = [CDev(i, n) for i, n in enumerate(ev[2])]
        elif kind == "cmd":
            key, dev = ev[1], ev[2]
            if cs.aborted or not 0 <= dev < len(cs.devs):
                return
            d = cs.devs[dev]
            scmd = self.srv.cmds.get(key)
            code = scmd.code if scmd else 0
            if d.io_error and code != VDC_CLEAR_ERROR:
                cs.up.append(("complete", key, ERROR_IO_DEVICE, 0, 0, True, R_IOERR_QUEUED))
            else:
                d.queue.append(key)
        elif kind == "closedev":
            if 0 <= ev[1] < len(cs.devs):
                cs.devs[ev[1]].close_pending = True
        elif kind == "abort":
            self._client_abort(cs, str(ev[1]), notify=False, by=self.actors.get(actor))
        elif kind == "srvclose":
            finished = bool(ev[1])
            if not finished:
                self._client_abort(cs, R_SERVER_CLOSE_ABORTS, notify=False,
                                   by=self.actors.get(actor))

    def _client_abort(self, cs: CSet, cause: str, *, notify: bool,
                      by: Actor | None = None) -> None:
        if cs.aborted:
            return
        cs.aborted = True
        cs.abort_cause = cause
        cs.abort_with_devices_open = any(d.opened_by and not d.close_seen for d in cs.devs)
        for a in self.attached(cs):
            if a.state in ("DNE", "ABORT"):
                continue
            if a is by:
                a.state = "ABORT"
            else:
                a.lagged_abort = True
        if notify:
            cs.up.append(("abort", cause))

    # -- events arriving at the server -----------------------------------------------------
    def deliver_up(self, n: int) -> None:
        cs = self.srv_set()
        if cs is None:
            return
        for ev in cs.up[self.srv.up_seen:self.srv.up_seen + n]:
            self._apply_up(ev)
        self.srv.up_seen = min(len(cs.up), self.srv.up_seen + n)

    def _apply_up(self, ev: tuple[Any, ...]) -> None:
        s = self.srv
        kind = ev[0]
        if kind == "complete":
            _k, key, code, nbytes, pos, generated, cause = ev
            c = s.cmds.get(key)
            if c is None or c.done or s.state == "ABORT":
                return
            c.done, c.code_out, c.pos_out = True, code, pos
            c.bytes_out = min(nbytes, c.size) if c.code in DATA_COMMANDS else nbytes
            c.cause = cause
            if c.code == VDC_COMPLETE and cause == R_REACHES:
                c.cause = R_COMPLETE_FAILS
            dev = s.devices[c.device] if 0 <= c.device < len(s.devices) else None
            if dev is not None and not generated:
                if code != ERROR_SUCCESS:
                    dev.io_error = True
                    if s.state == "ACTIVE":
                        s.state_cause = R_IOERR_NOT_ABORT
                elif c.code == VDC_CLEAR_ERROR:
                    if dev.io_error:
                        dev.recovered = True
                    dev.io_error = False
        elif kind == "abort":
            self._server_abort(str(ev[1]), notify=False)
        elif kind == "gone":
            if s.state not in ("NORMALLY_TERMINATED", "DNE", "ABORT"):
                self._server_abort(R_CLIENT_GONE, notify=False)

    def _server_abort(self, cause: str, *, notify: bool) -> None:
        s = self.srv
        if s.state in ("ABORT", "DNE"):
            return
        s.state = "ABORT"
        s.state_cause = cause
        s.abort_cause = cause
        for c in s.cmds.values():
            if not c.done:
                c.done, c.code_out, c.bytes_out, c.cause = True, ERROR_OPERATION_ABORTED, 0, cause
        cs = self.srv_set()
        if notify and cs is not None:
            cs.down.append(("abort", cause))

    def watchdog_possible(self) -> bool:
        s = self.srv
        return (not self.opaque and s.server_timeout > 0 and s.state == "ACTIVE" and s.agent
                and any(not c.done for c in s.cmds.values() if c.sent_ok))

    # -- candidates ----------------------------------------------------------------------------
    def candidates(self, step: Any) -> list[Candidate]:
        """Every answer a correct implementation may give to ``step`` now."""
        actor, call, args = step.actor, step.call, dict(step.args)
        if actor in ("client", "secondary"):
            return self._client_candidates(actor, call, args)
        if actor == "server":
            return self._server_candidates(call, args)
        if actor == "harness":
            return self._harness_candidates(call, args)
        return []

    def _views_client(self, actor: str) -> list[tuple[World, bool]]:
        """One world per prefix of the events in flight (and per possible abort by another
        client object or by the serverTimeOut watchdog); True marks the view where
        everything already sent has arrived and nothing spontaneous happened."""
        a = self.actors[actor]
        cs = self.cset(a)
        pending = len(cs.down) - cs.seen if cs is not None else 0
        out: list[tuple[World, bool]] = []
        for k in range(pending + 1):
            for lag in ((False, True) if a.lagged_abort else (False,)):
                for dog in ((False, True) if self.watchdog_possible() else (False,)):
                    w = self.clone()
                    wa = w.actors[actor]
                    wcs = w.cset(wa)
                    if dog:
                        w._server_abort(R_TIMEOUT_ABORTS, notify=True)
                    if wcs is not None:
                        w.deliver_down(wcs, k + (1 if dog and k == pending else 0), actor)
                    if lag:
                        wa.lagged_abort = False
                        if wa.state not in ("DNE", "ABORT"):
                            wa.state = "ABORT"
                    out.append((w, k == pending and lag == a.lagged_abort and not dog))
        return out

    def _client_candidates(self, actor: str, call: str, args: dict[str, Any]) -> list[Candidate]:
        a0 = self.actors[actor]
        if a0.dead:
            return []
        cands: list[Candidate] = []
        for w, preferred in self._views_client(actor):
            for c in w._client_call(actor, call, args, committed=a0.state):
                c.preferred = preferred
                if preferred:
                    c.blocked = False  # everything sent has arrived: the wait times out
                cands.append(c)
        return cands

    # .. client calls in one view ..............................................................
    def _client_call(self, actor: str, call: str, args: dict[str, Any],
                     committed: str) -> list[Candidate]:
        a = self.actors[actor]
        cs = self.cset(a)
        st = a.state
        fn = getattr(self, f"_c_{call}", None)
        if fn is None:
            return []
        result: list[Candidate] = fn(a, cs, st, args, committed)
        return result

    def _cand(self, rule: str, hrs: Iterable[int], *, finish: Callable[[World, Any], None] | None
              = None, checks: Iterable[Check] = (), blocked: bool = False,
              what: str = "") -> Candidate:
        hs = frozenset(hrs)
        exp = min(hs) if NOERROR not in hs else NOERROR
        return Candidate(self, [Check(rule, "hr", hs, exp, what), *checks], finish, blocked)

    def _cell(self, state: str, call: str, cond: str, *, rule: str | None = None,
              finish: Callable[[World, Any], None] | None = None,
              checks: Iterable[Check] = (), blocked: bool = False) -> Candidate:
        cell = client_cell(state, call, cond)
        return self._cand(rule or ct_rule(state, call, cond), cell.hrs, finish=finish,
                          checks=checks, blocked=blocked,
                          what=f"{call} in {state} ({cond})")

    def _c_create(self, a: Actor, cs: CSet | None, st: str, args: dict[str, Any],
                  committed: str) -> list[Candidate]:
        if st != "DNE":
            return [self._cell(st, "CREATE", "OK")]
        name, inst, cfg = args.get("name"), args.get("instance"), args.get("config") or {}
        if inst is not None and (not isinstance(inst, str) or "\\" in inst):
            return [self._cell(st, "CREATE", "BAD_INSTANCE")]
        if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
            return [self._cell(st, "CREATE", "BAD_NAME")]
        count = cfg.get("device_count", 0) if isinstance(cfg, dict) else 0
        if not isinstance(count, int) or not 1 <= count <= MAX_DEVICES:
            return [self._cell(st, "CREATE", "BAD_CONFIG")]
        if self.live_set(name, inst) is not None:
            return [self._cell(st, "CREATE", "NAME_IN_USE")]
        rule = {"ok": R_CREATE_AGAIN, "open": R_OPEN_RELEASES}.get(a.closed_how,
                                                                  ct_rule("DNE", "CREATE"))

        def created(w: World, _obs: Any) -> None:
            wa = w.actors[a.name]
            sid = w.next_set
            w.next_set += 1
            w.sets[sid] = CSet(sid, name, inst, a.name,
                               requested={k: int(v) for k, v in cfg.items()
                                          if isinstance(v, int)})
            wa.cs, wa.state, wa.role, wa.lagged_abort = sid, "CONFIGURABLE", "primary", False

        ok = self._cand(rule, [NOERROR], finish=created, what="Create in DNE")
        out = [ok]
        features = cfg.get("features", 0)
        if isinstance(features, int) and not documented_features(features):
            # §5: undocumented combinations may be refused (VD_E_NOTSUPPORTED) [I]
            out = [self._cand(rule, [NOERROR, VD_E_NOTSUPPORTED], finish=lambda w, o: (
                created(w, o) if o.hr == NOERROR else None), what="Create in DNE")]
        return out

    def _config_checks(self, cs: CSet) -> list[Check]:
        checks: list[Check] = []
        cfg = cs.config or {}
        for key in ("features", "block_size", "max_transfer_size", "device_count"):
            if key in cfg and not self.opaque:
                checks.append(Check(R_CONFIG, f"out.config.{key}", frozenset({cfg[key]}),
                                    cfg[key], f"GetConfiguration's {key}"))
        checks.append(Check(R_IODEPTH, "out.config.max_io_depth", frozenset({MAX_IO_DEPTH}),
                            MAX_IO_DEPTH, "GetConfiguration's maxIODepth"))
        if self.opaque:
            checks.append(Check(R_CONFIG_BLOCK, "out.config.block_size", frozenset(),
                                cfg.get("block_size", MIN_BLOCK), "BLOCKSIZE",
                                pred=lambda v: _pow2(v) and MIN_BLOCK <= v <= MAX_BLOCK,
                                bad=1000))
            checks.append(Check(R_CONFIG_MTS, "out.config.max_transfer_size", frozenset(),
                                cfg.get("max_transfer_size", TRANSFER_UNIT), "MAXTRANSFERSIZE",
                                pred=lambda v: isinstance(v, int) and 0 < v <= MAX_TRANSFER
                                and v % TRANSFER_UNIT == 0, bad=100000))
        return checks

    def _c_get_configuration(self, a: Actor, cs: CSet | None, st: str, args: dict[str, Any],
                             committed: str) -> list[Candidate]:
        timeout = args.get("timeout_ms", 0)
        if st == "ABORT" and committed == "CONFIGURABLE":
            return [self._cell("CONFIGURABLE", "GET_CONFIGURATION", "ABORTED",
                               finish=lambda w, o: None)]
        if st != "CONFIGURABLE" or cs is None:
            checks = self._config_checks(cs) if cs is not None and st not in (
                "DNE", "ABORT") and cs.configured else []
            return [self._cell(st, "GET_CONFIGURATION", "OK", checks=checks)]
        if cs.configured:
            def got(w: World, _obs: Any) -> None:
                wa = w.actors[a.name]
                wa.state = "INITIALIZING"
                wcs = w.cset(wa)
                if wcs is not None and wa.role == "primary":
                    wcs.primary_configured = True
            return [self._cell(st, "GET_CONFIGURATION", "OK", finish=got,
                               checks=self._config_checks(cs))]
        blocked = _waits(timeout)
        return [self._cell(st, "GET_CONFIGURATION", "TIMEOUT", blocked=blocked)]

    def _c_open_device(self, a: Actor, cs: CSet | None, st: str, args: dict[str, Any],
                       committed: str) -> list[Candidate]:
        null = [Check(R_NULL_DEVICE, "out.device", frozenset({None}), None,
                      "the device interface of a failed OpenDevice")]
        if st not in ("INITIALIZING", "ACTIVE") or cs is None:
            return [self._cell(st, "OPEN_DEVICE", "OK", checks=null)]
        name = args.get("name")
        names = [d.name for d in cs.devs]
        if name not in names:
            cand = self._cell(st, "OPEN_DEVICE", "BAD_NAME", checks=null)
            if all(d.opened_by for d in cs.devs):  # both apply; precedence undocumented [I]
                cand.checks[0].allowed = frozenset({VD_E_INVALID, VD_E_OPEN})
            return [cand]
        if all(d.opened_by for d in cs.devs):
            return [self._cell(st, "OPEN_DEVICE", "ALL_OPEN", checks=null)]
        d = cs.devs[names.index(name)]
        if d.opened_by:
            return [self._cell(st, "OPEN_DEVICE", "ALREADY_OPEN", checks=null)]

        def opened(w: World, obs: Any) -> None:
            wa = w.actors[a.name]
            wcs = w.cset(wa)
            assert wcs is not None
            wcs.devs[d.index].opened_by = a.name
            wa.state = "ACTIVE"
            sym = obs.out.get("device") if obs is not None else None
            if isinstance(sym, int):
                wa.devices[sym] = (wcs.id, d.index)
            else:
                wa.devices[_next_sym(wa.devices)] = (wcs.id, d.index)

        return [self._cell(st, "OPEN_DEVICE", "OK", finish=opened)]

    def _device(self, a: Actor, args: dict[str, Any]) -> tuple[bool, CDev | None]:
        """(stale, device) for the ``device`` argument of a client step."""
        ref = a.devices.get(args.get("device"))  # type: ignore[arg-type]
        if ref is None:
            return False, None
        cs = self.cset(a)
        if cs is None or ref[0] != cs.id:
            return True, None
        return False, cs.devs[ref[1]]

    def _stale(self, st: str, call: str) -> Candidate:
        if st in ("DNE", "CONFIGURABLE", "INITIALIZING", "NORMALLY_TERMINATED"):
            return self._cell(st, call, "OK")
        return self._cand(R_DEVICES_INVALID, [VD_E_PROTOCOL, VD_E_INVALID, VD_E_NOTOPEN,
                                              VD_E_CLOSE, VD_E_ABORT],
                          what=f"{call} on a device of a closed set")

    def _c_device_after_close(self, a: Actor, cs: CSet | None, st: str, args: dict[str, Any],
                              committed: str) -> list[Candidate]:
        stale, _d = self._device(a, args)
        if not stale:
            return []
        return [self._cand(R_DEVICES_INVALID, [VD_E_PROTOCOL, VD_E_INVALID, VD_E_NOTOPEN,
                                               VD_E_CLOSE, VD_E_ABORT],
                           what="a device interface used after Close")]

    def _c_get_command(self, a: Actor, cs: CSet | None, st: str, args: dict[str, Any],
                       committed: str) -> list[Candidate]:
        stale, d = self._device(a, args)
        if stale:
            return [self._stale(st, "GET_COMMAND")]
        if d is None or cs is None:
            return []
        timeout = args.get("timeout_ms", 0)
        if st == "ABORT":
            if committed == "ACTIVE":
                rule = (cs.abort_cause if cs.abort_cause in (
                    R_SERVER_DEATH, R_TIMEOUT_ABORTS, R_SERVER_CLOSE_ABORTS) else None)
                return [self._cell("ACTIVE", "GET_COMMAND", "ABORTED", rule=rule)]
            return [self._cell(st, "GET_COMMAND", "OK")]
        if st != "ACTIVE":
            return [self._cell(st, "GET_COMMAND", "OK")]
        if d.close_seen:
            return [self._cand(R_AFTER_VD_E_CLOSE, [VD_E_CLOSE, VD_E_PROTOCOL],
                               what="GetCommand after VD_E_CLOSE on that device")]
        key = _deliverable(d)
        alternatives: list[Candidate] = []
        if key is not None and key in cs.maybe_failed:
            alt = self.clone()
            acs = alt.sets[cs.id]
            acs.devs[d.index].queue.remove(key)
            acs.maybe_failed.discard(key)
            acs.up.append(("complete", key, ERROR_IO_DEVICE, 0, 0, True, R_IOERR_QUEUED))
            alternatives = alt._c_get_command(alt.actors[a.name], acs, st, args, committed)
        if key is not None:
            sc = self.srv.cmds.get(key)
            checks = []
            rule = R_COMPLETE_DELIVERED if sc is not None and sc.code == VDC_COMPLETE else \
                R_RETURNS_COMMAND
            if sc is not None:
                for f, v in (("code", sc.code), ("size", sc.size), ("position", sc.position)):
                    checks.append(Check(rule, f"out.{f}", frozenset({v}), v,
                                        f"the {f} of the command the server sent"))
            if self.opaque and sc is not None:
                checks.extend(_server_command_checks(cs, sc))

            def got(w: World, obs: Any, key: int = key, dix: int = d.index) -> None:
                wa = w.actors[a.name]
                wcs = w.cset(wa)
                assert wcs is not None
                dev = wcs.devs[dix]
                if key in dev.queue:
                    dev.queue.remove(key)
                dev.outstanding.append(key)
                wcs.maybe_failed.discard(key)
                s = w.srv.cmds.get(key)
                sym = obs.out.get("command") if obs is not None else None
                if not isinstance(sym, int):
                    sym = _next_sym(wa.cmds)
                wa.cmds[sym] = CCmd(key, wcs.id, dix, s.code if s else 0, s.size if s else 0,
                                    s.position if s else 0)

            return [self._cell(st, "GET_COMMAND", "OK", finish=got, checks=checks),
                    *alternatives]
        if d.close_pending:
            others = [x for x in cs.devs if x is not d and x.opened_by
                      and (a.role == "primary" or x.opened_by == a.name)]
            last = all(x.close_seen for x in others)
            cond = "LAST_DEVICE_CLOSED" if last else "DEVICE_CLOSED"

            def closed(w: World, _obs: Any, dix: int = d.index, last: bool = last) -> None:
                wa = w.actors[a.name]
                wcs = w.cset(wa)
                assert wcs is not None
                wcs.devs[dix].close_seen = True
                if last:
                    wa.state = "NORMALLY_TERMINATED"

            return [self._cell(st, "GET_COMMAND", cond, finish=closed)]
        held = bool(d.queue) and _held_clear_error(self, d)
        rule = R_IOERR_HELD if held else None
        return [self._cell(st, "GET_COMMAND", "TIMEOUT", rule=rule, blocked=_waits(timeout))]

    def _c_complete_command(self, a: Actor, cs: CSet | None, st: str, args: dict[str, Any],
                            committed: str) -> list[Candidate]:
        stale, d = self._device(a, args)
        if stale:
            return [self._stale(st, "COMPLETE_COMMAND")]
        if d is None or cs is None:
            return []
        c = a.cmds.get(args.get("command"))  # type: ignore[arg-type]
        if st == "ABORT":
            def tried(w: World, _obs: Any) -> None:
                if c is not None and not c.completed:
                    sc = w.srv.cmds.get(c.key)
                    if sc is not None:
                        sc.client_tried_after_abort = True
            return [self._cell(st, "COMPLETE_COMMAND", "OK", finish=tried)]
        if st != "ACTIVE":
            return [self._cell(st, "COMPLETE_COMMAND", "OK")]
        if d.close_seen:
            return [self._cell(st, "COMPLETE_COMMAND", "DEVICE_CLOSED")]
        code = args.get("code", args.get("completion_code", 0))
        nbytes = args.get("bytes", args.get("bytes_transferred", 0))
        pos = args.get("position", 0)
        if (c is None or c.completed or c.cs != cs.id or c.device != d.index
                or not isinstance(code, int) or not 0 <= code <= 0xFFFFFFFF):
            return [self._cell(st, "COMPLETE_COMMAND", "NOT_OUTSTANDING")]

        def completed(w: World, _obs: Any, c: CCmd = c, dix: int = d.index) -> None:
            wa = w.actors[a.name]
            wcs = w.cset(wa)
            assert wcs is not None
            wc = wa.cmds[args["command"]]
            wc.completed = True
            dev = wcs.devs[dix]
            if c.key in dev.outstanding:
                dev.outstanding.remove(c.key)
            wcs.up.append(("complete", c.key, code, nbytes, pos, False, R_REACHES))
            closing = any(ev[0] == "closedev" and ev[1] == dix
                          for ev in wcs.down[wcs.seen:])
            if code != ERROR_SUCCESS and dev.close_pending:
                pass  # a closed device notes completions: queued commands still delivered
            elif code != ERROR_SUCCESS:  # §6.6: IO-ERROR; queued commands fail with 1117
                dev.io_error = not closing
                keep = []
                for k in dev.queue:
                    s = w.srv.cmds.get(k)
                    if s is not None and s.code == VDC_CLEAR_ERROR:
                        keep.append(k)
                    elif closing:  # the CloseDevice may have reached the library first
                        keep.append(k)
                        wcs.maybe_failed.add(k)
                    else:
                        wcs.up.append(("complete", k, ERROR_IO_DEVICE, 0, 0, True,
                                       R_IOERR_QUEUED))
                dev.queue = keep
            elif c.code == VDC_CLEAR_ERROR:
                dev.io_error = False

        return [self._cell(st, "COMPLETE_COMMAND", "OK", finish=completed)]

    def _c_signal_abort(self, a: Actor, cs: CSet | None, st: str, args: dict[str, Any],
                        committed: str) -> list[Candidate]:
        def aborted(w: World, _obs: Any) -> None:
            wa = w.actors[a.name]
            wcs = w.cset(wa)
            if wcs is not None and st != "ABORT":
                w._client_abort(wcs, R_CLIENT_ABORT_995, notify=True, by=wa)
                wa.state = "ABORT"
        return [self._cell(st, "SIGNAL_ABORT", "OK", finish=aborted)]

    def _c_close(self, a: Actor, cs: CSet | None, st: str, args: dict[str, Any],
                 committed: str) -> list[Candidate]:
        if cs is None or st == "DNE":
            return [self._cell(st, "CLOSE", "OK")]
        def holder_attached(d: CDev) -> bool:
            h = self.actors.get(d.opened_by or "")
            return h is not None and h.cs == cs.id and not h.dead
        own = [d for d in cs.devs if d.opened_by == a.name and not d.close_seen]
        others = [d for d in cs.devs if d.opened_by and d.opened_by != a.name
                  and not d.close_seen and a.role == "primary" and holder_attached(d)]
        detached = [d for d in cs.devs if d.opened_by and d.opened_by != a.name
                    and not d.close_seen and a.role == "primary" and not holder_attached(d)]
        cond = "DEVICES_OPEN" if st == "ACTIVE" and (own or others) else "OK"
        extra: list[Check] = []
        srv_all_closed = (not self.opaque and self.srv.cs == cs.id and bool(self.srv.devices)
                          and all(x.closed for x in self.srv.devices) and not cs.aborted)
        if (st == "ACTIVE" and srv_all_closed and own) or st == "NORMALLY_TERMINATED":
            extra.append(Check(R_WAIT_CLOSE, "step", frozenset({True}), not own,
                               "the client collects VD_E_CLOSE on every device before Close"))
        rule = None
        if st == "ABORT" and cs.abort_with_devices_open:
            rule = R_ABNORMAL_CLOSE
        how = "open" if cond == "DEVICES_OPEN" else "ok"

        def closed(w: World, _obs: Any) -> None:
            wa = w.actors[a.name]
            wcs = w.cset(wa)
            assert wcs is not None
            if cond == "DEVICES_OPEN":
                w._client_abort(wcs, R_OPEN_ABORTS, notify=True, by=wa)
            if wa.role == "primary":
                wcs.alive = False
                wcs.up.append(("gone",))
                for other in w.attached(wcs):
                    if other is not wa and other.state not in ("DNE", "ABORT"):
                        other.lagged_abort = True
            wa.state, wa.cs, wa.role, wa.closed_how = "DNE", None, "", how
            wa.lagged_abort = False

        out = [self._cell(st, "CLOSE", cond, rule=rule, finish=closed, checks=extra)]
        if st == "ACTIVE" and not own and (others or detached):
            # Only other client objects' devices are open: whether the primary already knows
            # they closed or died is timing (their VD_E_CLOSE / death reaches it later) [I].
            alt = "OK" if cond == "DEVICES_OPEN" else "DEVICES_OPEN"

            def closed_alt(w: World, obs: Any, alt: str = alt) -> None:
                nonlocal cond, how
                cond, how = alt, "open" if alt == "DEVICES_OPEN" else "ok"
                closed(w, obs)
            out.append(self._cell(st, "CLOSE", alt, rule=rule, finish=closed_alt))
        return out

    def _c_open_in_secondary(self, a: Actor, cs: CSet | None, st: str, args: dict[str, Any],
                             committed: str) -> list[Candidate]:
        if st != "DNE":
            return [self._cell(st, "OPEN_IN_SECONDARY", "OK")]
        target = self.live_set(args.get("name"), args.get("instance"))
        in_flight = target.down[target.seen:] if target is not None else []
        maybe_aborted = target is not None and (target.aborted or any(
            ev[0] == "abort" or (ev[0] == "srvclose" and not ev[1]) for ev in in_flight))
        if target is None or not target.primary_configured:
            cand = self._cell(st, "OPEN_IN_SECONDARY", "NOT_READY")
            if maybe_aborted:  # both apply; precedence undocumented
                cand.checks[0].allowed = frozenset({VD_E_PROTOCOL, VD_E_ABORT})
            return [cand]
        if target.aborted:
            cand = self._cell(st, "OPEN_IN_SECONDARY", "ABORTED")
            if target.server_gone:  # aborted and its server gone: "no set" applies too [I]
                cand.checks[0].allowed = frozenset({VD_E_ABORT, VD_E_PROTOCOL})
            return [cand]

        def attached(w: World, obs: Any, sid: int = target.id) -> None:
            if obs is not None and obs.hr != NOERROR:
                return
            wa = w.actors[a.name]
            wa.cs, wa.state, wa.role, wa.lagged_abort = sid, "INITIALIZING", "secondary", False

        out = [self._cell(st, "OPEN_IN_SECONDARY", "OK", finish=attached)]
        if target.server_gone or any(d.close_pending for d in target.devs) or any(
                d.closed for d in self.srv.devices if self.srv.cs == target.id):
            # The operation is ending: whether a late secondary may still attach is not
            # documented [I].
            out[0].checks[0].allowed = frozenset({NOERROR, VD_E_PROTOCOL})
        prim = self.actors[target.primary]
        if maybe_aborted or prim.lagged_abort or any(x.lagged_abort
                                                     for x in self.attached(target)):
            out.append(self._cell(st, "OPEN_IN_SECONDARY", "ABORTED"))
        return out

    def _c_get_buffer_handle(self, a: Actor, cs: CSet | None, st: str, args: dict[str, Any],
                             committed: str) -> list[Candidate]:
        if st in ("DNE", "CONFIGURABLE") or cs is None:
            return [self._cell(st, "GET_BUFFER_HANDLE", "OK")]
        c = a.cmds.get(args.get("command"))  # type: ignore[arg-type]
        if c is None or c.completed or c.cs != cs.id or c.code not in DATA_COMMANDS:
            return [self._cell(st, "GET_BUFFER_HANDLE", "INVALID_ARG")]

        def got(w: World, obs: Any) -> None:
            wcs = w.cset(w.actors[a.name])
            sym = obs.out.get("handle") if obs is not None else None
            if wcs is not None:
                if not isinstance(sym, int):
                    sym = _next_sym(wcs.handles)
                wcs.handles[sym] = (a.name, int(args["command"]))

        return [self._cell(st, "GET_BUFFER_HANDLE", "OK", finish=got)]

    def _c_map_buffer_handle(self, a: Actor, cs: CSet | None, st: str, args: dict[str, Any],
                             committed: str) -> list[Candidate]:
        if st in ("DNE", "CONFIGURABLE") or cs is None:
            return [self._cell(st, "MAP_BUFFER_HANDLE", "OK")]
        ref = cs.handles.get(args.get("handle"))  # type: ignore[arg-type]
        if ref is None:
            return [self._cell(st, "MAP_BUFFER_HANDLE", "INVALID_ARG")]
        owner = self.actors[ref[0]]
        c = owner.cmds.get(ref[1])
        cand = self._cell(st, "MAP_BUFFER_HANDLE", "OK")
        if c is None or c.completed:  # the buffer was given back since: undocumented [I]
            cand.checks[0].allowed = frozenset({NOERROR, VD_E_INVALID})
        return [cand]

    # .. server calls .........................................................................
    def _server_candidates(self, call: str, args: dict[str, Any]) -> list[Candidate]:
        if self.opaque:
            return []
        base = self.clone()
        bcs = base.srv_set()
        if bcs is not None:  # the library processes what reached it without a client call
            base.deliver_down(bcs, len(bcs.down) - bcs.seen)
        cs = base.srv_set()
        pending = len(cs.up) - base.srv.up_seen if cs is not None else 0
        cands: list[Candidate] = []
        for j in range(pending + 1):
            for dog in ((False, True) if self.watchdog_possible() else (False,)):
                w = base.clone()
                w.deliver_up(j)
                if dog:
                    w._server_abort(R_TIMEOUT_ABORTS, notify=True)
                fn = getattr(w, f"_s_{call}", None)
                if fn is None:
                    return []
                for c in fn(args, j == pending and not dog):
                    c.preferred = j == pending and not dog
                    cands.append(c)
        return cands

    def _scell(self, call: str, cond: str = "OK", *, rule: str | None = None,
               finish: Callable[[World, Any], None] | None = None,
               checks: Iterable[Check] = (), allowed: Iterable[int] | None = None) -> Candidate:
        state = self.srv.state
        cell = server_cell(state, call, cond)
        nxt = cell.next
        cause = rule or st_rule(state, call, cond)

        def fin(w: World, obs: Any) -> None:
            if nxt is not None:
                w.srv.state = nxt
                w.srv.state_cause = cause
            if finish is not None:
                finish(w, obs)

        hrs = frozenset(allowed) if allowed is not None else cell.hrs
        return self._cand(cause, hrs, finish=fin, checks=checks,
                          what=f"server {call} in {state} ({cond})")

    def _s_open(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        # The scripting API disposes of the previous server set first (a fresh server object).
        if self.srv.state != "DNE":
            self._srv_close_effects()
        target = self.live_set(args.get("name"), args.get("instance"))
        if target is None:
            return [self._scell("OPEN", "NO_SET")]

        def opened(w: World, _obs: Any, sid: int = target.id) -> None:
            w.srv = Srv(state="CONNECTED", cs=sid, state_cause="ST-DNE-OPEN")
            w.sets[sid].server_used = True
            w.srv_gen += 1

        allowed = [NOERROR, VD_E_INVALID] if target.server_used else None
        return [self._scell("OPEN", "OK", finish=opened, allowed=allowed)]

    def _s_get_configuration(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        return [self._scell("GET_CONFIGURATION")]

    def _s_begin_configuration(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        if self.srv.state != "CONNECTED":
            return [self._scell("BEGIN_CONFIGURATION")]
        cs = self.srv_set()
        assert cs is not None
        f, b, al, m = (args.get("features", 0), args.get("block_size", 0),
                       args.get("alignment", 0), args.get("max_transfer_size", 0))
        count = int(cs.requested.get("device_count", 1))
        names = args.get("device_names") or [cs.name] + [f"{cs.name}{i}" for i in range(1, count)]
        ok = (server_configuration_ok(f, b, al, m) and len(names) == count
              and names[0] == cs.name and len(set(names)) == count)
        if not ok:
            return [self._scell("BEGIN_CONFIGURATION", "INVALID_ARG")]

        def begun(w: World, _obs: Any) -> None:
            s = w.srv
            s.features, s.block_size, s.alignment, s.mts = f, b, al or b, m
            s.names = list(names)
            s.server_timeout = int(cs.requested.get("server_timeout", 0))

        return [self._scell("BEGIN_CONFIGURATION", finish=begun)]

    def _s_request_buffers(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        size, al, count = args.get("size", 0), args.get("alignment", 0), args.get("count", 0)
        ok = (isinstance(size, int) and size > 0 and isinstance(count, int) and count > 0
              and (al == 0 or _pow2(al)))
        return [self._scell("REQUEST_BUFFERS", "OK" if ok else "INVALID_ARG")]

    def _s_end_configuration(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        if self.srv.state != "CONFIGURABLE":
            return [self._scell("END_CONFIGURATION")]

        def ended(w: World, _obs: Any) -> None:
            s = w.srv
            cs = w.srv_set()
            assert cs is not None
            s.devices = [SDev(i) for i in range(len(s.names))]
            cfg = dict(cs.requested)
            cfg.update(features=s.features, block_size=s.block_size, max_io_depth=MAX_IO_DEPTH,
                       max_transfer_size=s.mts)
            cs.down.append(("config", cfg, list(s.names)))

        return [self._scell("END_CONFIGURATION", finish=ended)]

    def _s_open_device(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        s = self.srv
        if s.state not in ("INITIALIZING", "ACTIVE"):
            return [self._scell("OPEN_DEVICE", checks=[Check(
                R_NULL_DEVICE, "out.device", frozenset({None}), None,
                "the device of a failed server OpenDevice")])]
        name = args.get("name")
        free = [d for d in s.devices if not d.opened and (name is None or s.names[d.index] == name)]
        if not free:
            return [self._scell("OPEN_DEVICE", "ALL_OPEN")]
        d = free[0]

        def opened(w: World, obs: Any, ix: int = d.index) -> None:
            w.srv.devices[ix].opened = True
            sym = obs.out.get("device") if obs is not None else None
            w.srv.dev_syms[sym if isinstance(sym, int) else _next_sym(w.srv.dev_syms)] = ix

        return [self._scell("OPEN_DEVICE", finish=opened)]

    def _s_start_agent(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        def started(w: World, _obs: Any) -> None:
            w.srv.agent = True
            if w.srv.state == "INITIALIZING":
                w.srv.state = "ACTIVE"
        return [Candidate(self, [], started)]

    def _s_allocate_buffer(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        size, al = args.get("size", 0), args.get("alignment", 0)
        ok = isinstance(size, int) and size > 0 and isinstance(al, int) and (al == 0 or _pow2(al))
        cond = "OK" if ok else "INVALID_ARG"

        def got(w: World, obs: Any) -> None:
            sym = obs.out.get("buffer") if obs is not None else None
            if obs is not None and obs.hr == NOERROR:
                w.srv.buffers[sym if isinstance(sym, int) else _next_sym(w.srv.buffers)] = size

        allowed = None
        if ok and self.srv.state in ("INITIALIZING", "ACTIVE"):
            allowed = [NOERROR, VD_E_MEMORY]  # the area is finite (§3 AllocateBuffer)
        return [self._scell("ALLOCATE_BUFFER", cond, finish=got, allowed=allowed)]

    def _s_send_command(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        s = self.srv
        ix = s.dev_syms.get(args.get("device"))  # type: ignore[arg-type]
        code = args.get("code", 0)
        size, pos = args.get("size", 0), args.get("position", 0)
        bsym = args.get("buffer")
        cond = "OK"
        dev = s.devices[ix] if ix is not None and 0 <= ix < len(s.devices) else None
        if s.state == "ACTIVE":
            if dev is None:
                return []
            if dev.closed:
                cond = "DEVICE_CLOSED"
            elif code in DATA_COMMANDS and (bsym not in s.buffers or not isinstance(size, int)
                                            or size <= 0 or size > s.buffers[bsym]
                                            or size > s.mts):
                cond = "INVALID_ARG"
            elif dev.io_error and code != VDC_CLEAR_ERROR:
                cond = "IO_ERROR"
        key_holder: dict[str, int] = {}

        def sent(w: World, obs: Any) -> None:
            sym = obs.out.get("command") if obs is not None else None
            key = sym if isinstance(sym, int) else w.n_send
            w.n_send = max(w.n_send, key + 1)
            key_holder["k"] = key
            hr = obs.hr if obs is not None else NOERROR
            sc = SCmd(key, ix if ix is not None else -1, code, size, pos)
            w.srv.cmds[key] = sc
            if hr == NOERROR and w.srv.state == "ACTIVE":
                wdev = w.srv.devices[sc.device]
                wdev.recovered = False
                wcs = w.srv_set()
                if wcs is not None:
                    wcs.down.append(("cmd", key, sc.device))
            else:
                sc.sent_ok = False
                sc.done, sc.code_out, sc.bytes_out = True, send_failure_code(
                    hr if hr is not None else VD_E_PROTOCOL), 0
                sc.cause = R_IOERR_REJECT if hr == VD_E_IO_ERROR_VDISIM else R_SEND_CALLBACK

        cell = server_cell(s.state, "SEND_COMMAND", cond)
        checks = []
        if NOERROR not in cell.hrs:
            code_rule = R_IOERR_REJECT if cond == "IO_ERROR" else R_SEND_CALLBACK
            codes = frozenset(send_failure_code(h) for h in cell.hrs)
            if cond == "IO_ERROR":
                codes = frozenset({ERROR_IO_DEVICE})
            checks.append(Check(code_rule, "out.completion_code", codes, min(codes),
                                "the completion a failed SendCommand hands its routine"))
        rule = None
        if cond == "OK" and s.state == "ACTIVE" and dev is not None and dev.recovered:
            rule = R_IOERR_RESUMES
        if cond == "IO_ERROR":  # documented: rejected (§6.6); the value is vdisim's [I]
            return [self._scell("SEND_COMMAND", cond, finish=sent, checks=checks)]
        return [self._scell("SEND_COMMAND", cond, rule=rule, finish=sent, checks=checks)]

    def _s_wait_completion(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        s = self.srv
        c = s.cmds.get(args.get("command"))  # type: ignore[arg-type]
        if c is None:
            return []
        timeout = args.get("timeout_ms", 0)
        checks: list[Check] = []
        if c.done:
            cause = c.cause
            if c.code_out == ERROR_OPERATION_ABORTED and c.client_tried_after_abort:
                cause = R_IGNORED
            exp = {"done": True, "completion_code": c.code_out}
            if c.cause in (R_REACHES, R_COMPLETE_FAILS):
                exp["bytes_transferred"] = c.bytes_out
                exp["position"] = c.pos_out
            for k, v in exp.items():
                checks.append(Check(cause, f"out.{k}", frozenset({v}), v,
                                    f"the server's {k} of command #{c.key}"))
            if c.seen_done is not None:
                checks = [Check(R_AT_MOST_ONCE, f"out.{k}", frozenset({v}), v,
                                "a command completes once") for k, v in
                          (("done", True), ("completion_code", c.seen_done[0]))]

            def seen(w: World, obs: Any, key: int = c.key) -> None:
                wc = w.srv.cmds[key]
                if wc.seen_done is None and obs is not None and obs.out.get("done"):
                    wc.seen_done = (obs.out.get("completion_code"),
                                    obs.out.get("bytes_transferred"))
            return [Candidate(self, checks, seen)]
        # not done in this view
        cs = self.srv_set()
        extra: list[Candidate] = []
        if cs is not None and c.key in cs.maybe_failed:
            alt = self.clone()
            ac = alt.srv.cmds[c.key]
            ac.done, ac.code_out, ac.bytes_out, ac.cause = True, ERROR_IO_DEVICE, 0, R_IOERR_QUEUED
            alt.sets[cs.id].maybe_failed.discard(c.key)
            for q in alt.sets[cs.id].devs:
                if c.key in q.queue:
                    q.queue.remove(c.key)
            extra = alt._s_wait_completion(args, full)
        rule = R_TIMEOUT_ZERO if s.server_timeout == 0 and _waits(timeout) else R_REACHES
        blocked = _waits(timeout) and not full
        if (s.server_timeout > 0 and isinstance(timeout, int) and s.state == "ACTIVE"
                and (timeout < 0 or timeout >= 2 * s.server_timeout + SYNC_MS)):
            rule, blocked = R_TIMEOUT_ABORTS, True  # the watchdog must have fired
        return [Candidate(self, [Check(rule, "out.done", frozenset({False}), False,
                                       f"command #{c.key} completes only when the client "
                                       "completes it (or on abort)")], None, blocked), *extra]

    def _s_close_device(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        s = self.srv
        ix = s.dev_syms.get(args.get("device"))  # type: ignore[arg-type]
        if ix is None or not 0 <= ix < len(s.devices):
            return []
        dev = s.devices[ix]
        if s.state != "ACTIVE":
            return [self._scell("CLOSE_DEVICE")]
        if dev.closed:
            return [self._scell("CLOSE_DEVICE", "DEVICE_CLOSED")]
        last = all(d.closed for d in s.devices if d is not dev)
        cond = "LAST_DEVICE_CLOSED" if last else "OK"

        def closed(w: World, _obs: Any) -> None:
            w.srv.devices[ix].closed = True
            wcs = w.srv_set()
            if wcs is not None:
                wcs.down.append(("closedev", ix))

        return [self._scell("CLOSE_DEVICE", cond, rule=st_rule("ACTIVE", "CLOSE_DEVICE"),
                            finish=closed)]

    def _s_signal_abort(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        def aborted(w: World, _obs: Any) -> None:
            w._server_abort(R_SERVER_ABORT_995, notify=True)
        if self.srv.state in ("DNE", "ABORT"):
            return [self._scell("SIGNAL_ABORT")]
        cell = server_cell(self.srv.state, "SIGNAL_ABORT")
        return [self._cand(st_rule(self.srv.state, "SIGNAL_ABORT"), cell.hrs, finish=aborted,
                           what=f"server SignalAbort in {self.srv.state}")]

    def _srv_close_effects(self) -> None:
        s = self.srv
        cs = self.srv_set()
        if s.state != "DNE":
            devices_open = s.state == "ACTIVE" and any(not d.closed for d in s.devices)
            if devices_open:
                self._server_abort(R_SERVER_CLOSE_ABORTS, notify=True)
            elif cs is not None and s.state != "ABORT":
                finished = bool(s.devices) and all(d.closed for d in s.devices)
                cs.down.append(("srvclose", finished))
            if cs is not None:
                cs.server_gone = True
        self.srv = Srv(state_cause="ST-CLOSE")

    def _s_close(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        s = self.srv
        if s.state == "DNE":
            return [self._scell("CLOSE")]
        cond = "DEVICES_OPEN" if s.state == "ACTIVE" and any(
            not d.closed for d in s.devices) else "OK"
        cell = server_cell(s.state, "CLOSE", cond)
        return [self._cand(st_rule(s.state, "CLOSE", cond), cell.hrs,
                           finish=lambda w, _o: w._srv_close_effects(),
                           what=f"server Close in {s.state} ({cond})")]

    def _s_state(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        s = self.srv
        rule = s.state_cause or R_SRV_STATE
        if rule.startswith("ST-") and rule not in ST_RULES:
            rule = R_SRV_STATE
        checks = [Check(rule, "out.state", frozenset({s.state}), s.state,
                        "the server set's state")]
        if s.state == "ABORT" and s.abort_cause == R_OPEN_ABORTS:
            checks.append(Check(R_OPEN_SIGNALS, "out.abort_reason",
                                frozenset({VDISIM_REASON_CLIENT_CLOSE}),
                                VDISIM_REASON_CLIENT_CLOSE,
                                "why the server set aborted (vdisim: the client's Close)"))
        checks.append(Check(R_WIRE, "out.violations", frozenset({()}), (),
                            "protocol violations the engine saw on the wire"))
        return [Candidate(self, checks)]

    def _s_die(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        return [Candidate(self, [], lambda w, _o: w._server_died())]

    def _s_free_buffer(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        ok = args.get("buffer") in self.srv.buffers
        return [self._scell("FREE_BUFFER", "OK" if ok else "INVALID_ARG")]

    def _s_read_buffer(self, args: dict[str, Any], full: bool) -> list[Candidate]:
        return [Candidate(self, [])]

    def _server_died(self) -> None:
        cs = self.srv_set()
        if cs is not None and self.srv.state != "DNE":
            # The library notices the server's death (§8.1); a set the client has not
            # finished yet (devices whose VD_E_CLOSE it has not collected) is aborted.
            cs.down.append(("abort", R_SERVER_DEATH))
            cs.server_gone = True
        self.srv = Srv(state_cause="ST-CLOSE", dead=True)

    # .. harness ...........................................................................
    def _harness_candidates(self, call: str, args: dict[str, Any]) -> list[Candidate]:
        if call == "kill_server":
            return [Candidate(self.clone(), [], lambda w, _o: w._server_died(), preferred=True)]
        if call == "kill_client":
            def killed(w: World, _obs: Any) -> None:
                a = w.actors["client"]
                cs = w.cset(a)
                if cs is not None:
                    cs.alive = False
                    cs.up.append(("gone",))
                a.dead, a.state, a.cs = True, "DNE", None
            return [Candidate(self.clone(), [], killed, preferred=True)]
        if call == "kill_secondary":
            def gone(w: World, _obs: Any) -> None:
                w.actors["secondary"].dead = True
            return [Candidate(self.clone(), [], gone, preferred=True)]
        if call == "sleep_virtual":
            return [Candidate(self.clone(), [], preferred=True)]
        if call == "leak_check":
            closed = (all(a.state == "DNE" for a in self.actors.values())
                      and self.srv.state == "DNE")
            if not closed:
                return [Candidate(self.clone(), [], preferred=True)]
            return [Candidate(self.clone(), [Check(R_RELEASES, "out.leaks", frozenset({()}), (),
                                                   "objects left behind once both sides "
                                                   "closed")], preferred=True)]
        return []


# -- helpers ----------------------------------------------------------------------------------


def _copy_actor(a: Actor) -> Actor:
    n = copy.copy(a)
    n.devices = dict(a.devices)
    n.cmds = {k: copy.copy(c) for k, c in a.cmds.items()}
    return n


def _copy_set(cs: CSet) -> CSet:
    n = copy.copy(cs)
    n.config = dict(cs.config) if cs.config is not None else None
    n.devs = []
    for d in cs.devs:
        nd = copy.copy(d)
        nd.queue, nd.outstanding = list(d.queue), list(d.outstanding)
        n.devs.append(nd)
    n.down, n.up = list(cs.down), list(cs.up)
    n.handles, n.requested = dict(cs.handles), dict(cs.requested)
    n.maybe_failed = set(cs.maybe_failed)
    return n


def _copy_srv(s: Srv) -> Srv:
    n = copy.copy(s)
    n.names = list(s.names)
    n.devices = [copy.copy(d) for d in s.devices]
    n.dev_syms, n.buffers = dict(s.dev_syms), dict(s.buffers)
    n.cmds = {k: copy.copy(c) for k, c in s.cmds.items()}
    return n


def _inst(instance: Any) -> str:
    return (instance or "MSSQLSERVER").upper() if isinstance(instance, str) or instance is None \
        else repr(instance)


def _waits(timeout: Any) -> bool:
    """A wait long enough to see everything already sent (or an infinite one)."""
    if not isinstance(timeout, int) or isinstance(timeout, bool):
        return False
    return timeout < 0 or timeout >= SYNC_MS


def _next_sym(d: dict[int, Any]) -> int:
    return max(d, default=-1) + 1


def _held_clear_error(w: World, d: CDev) -> bool:
    head = w.srv.cmds.get(d.queue[0]) if d.queue else None
    return head is not None and head.code == VDC_CLEAR_ERROR and bool(d.outstanding)


def _deliverable(d: CDev) -> int | None:
    """The command GetCommand delivers next on ``d`` (§6.6: ClearError waits until every
    outstanding command of the device is completed)."""
    if not d.queue:
        return None
    if d.io_error and d.outstanding:
        return None
    return d.queue[0]


def opaque_hypotheses(w: World, obs: Any) -> list[World]:
    """Without a scripted server, the server may have configured, sent a command, closed a
    device or aborted at any moment: the worlds in which it did what ``obs`` suggests."""
    step = obs.step
    a = w.actors.get(step.actor)
    cs = w.cset(a) if a is not None else None
    if a is None or cs is None:
        return []
    out: list[World] = []
    h = w.clone()
    h._client_abort(h.sets[cs.id], "opaque", notify=False, by=h.actors[step.actor])
    out.append(h)
    cfg = obs.out.get("config")
    if step.call == "get_configuration" and not cs.configured and isinstance(cfg, dict):
        h = w.clone()
        count = int(cfg.get("device_count", 1) or 1)
        names = [cs.name] + [f"{cs.name}{i}" for i in range(1, count)]
        hs = h.sets[cs.id]
        hs.down.append(("config", dict(cfg), names))
        out.append(h)
    ref = a.devices.get(step.args.get("device"))
    if step.call == "get_command" and ref is not None and ref[0] == cs.id:
        if obs.hr == NOERROR:
            h = w.clone()
            key = 1_000_000 + h.n_send
            h.n_send += 1
            h.srv.cmds[key] = SCmd(key, ref[1], int(obs.out.get("code", 0) or 0),
                                   int(obs.out.get("size", 0) or 0),
                                   int(obs.out.get("position", 0) or 0))
            h.sets[cs.id].down.append(("cmd", key, ref[1]))
            out.append(h)
        if obs.hr == VD_E_CLOSE:
            h = w.clone()
            h.sets[cs.id].down.append(("closedev", ref[1]))
            out.append(h)
    return out


def _server_command_checks(cs: CSet, sc: SCmd) -> list[Check]:
    """What a real server's command must look like (judged without a scripted server)."""
    cfg = cs.config or {}
    bs = int(cfg.get("block_size", 0) or 0)
    mts = int(cfg.get("max_transfer_size", 0) or 0)
    feats = int(cfg.get("features", 0) or 0)
    req = int(cs.requested.get("features", 0) or 0)
    out: list[Check] = []
    if sc.code in DATA_COMMANDS and bs:
        out.append(Check(R_TRANSFER_BLOCK, "out.size", frozenset(), sc.size,
                         f"a transfer size (BLOCKSIZE {bs})",
                         pred=lambda v: isinstance(v, int) and v > 0 and v % bs == 0,
                         bad=bs + 1))
    if sc.code in DATA_COMMANDS and mts:
        out.append(Check(R_TRANSFER_MAX, "out.size", frozenset(), sc.size,
                         f"a transfer size (MAXTRANSFERSIZE {mts})",
                         pred=lambda v: isinstance(v, int) and v <= mts, bad=mts * 2))
    if sc.code == VDC_COMPLETE:
        enabled = bool(feats & VDF_COMPLETE_ENABLED) and bool(req & VDF_REQUEST_COMPLETE)
        out.append(Check(R_COMPLETE_ONLY_IF, "out.code", frozenset(), sc.code,
                         "VDC_Complete only after VDF_RequestComplete / VDF_CompleteEnabled",
                         pred=lambda v: v != VDC_COMPLETE or enabled, bad=VDC_COMPLETE))
    return out
