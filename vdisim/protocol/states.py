"""The VDI state tables as data (h11 style): client set, server set and device.

Everything that decides a return code or a state change lives here; the client library and the
engine look their answers up instead of re-deriving them, and ``docs/states.md`` is generated from
these tables (:func:`render_markdown`).  No I/O, threads or clocks.

A cell maps a *condition* to a :class:`Transition` (return code, next state).  The caller names
the condition it observed (``OK`` for the normal case, ``TIMEOUT`` when its wait elapsed, ...);
``ANY`` is the fallback.  A lookup miss is a bug in the caller, never a protocol answer.

Sources: client table spec §2.11 [D] amended per §11.2-§11.4 (each amended cell carries its
reason); server table §3 [D] (later columns reconstructed [I]); device table §6.6 [D].
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from vdisim.protocol.codes import HResult, Win32, hresult_from_win32

ERROR_ALREADY_EXISTS = 183


class ClientState(enum.Enum):
    DNE = "DNE"
    CONFIGURABLE = "Configurable"
    INITIALIZING = "Initializing"
    ACTIVE = "Active"
    NORMALLY_TERMINATED = "Normally Terminated"
    ABORT = "Abort"


class ClientCall(enum.Enum):
    CREATE = "Create / CreateEx"
    GET_CONFIGURATION = "GetConfiguration"
    OPEN_DEVICE = "OpenDevice"
    GET_COMMAND = "GetCommand"
    COMPLETE_COMMAND = "CompleteCommand"
    SIGNAL_ABORT = "SignalAbort"
    CLOSE = "Close"
    OPEN_IN_SECONDARY = "OpenInSecondary[Ex]"
    GET_BUFFER_HANDLE = "GetBufferHandle"
    MAP_BUFFER_HANDLE = "MapBufferHandle"


class Cond(enum.Enum):
    """What the caller observed when it made the call."""

    ANY = "any"
    OK = "ok"
    TIMEOUT = "timeout elapsed"
    ABORTED = "abort seen while waiting"
    BAD_CONFIG = "configuration invalid"
    BAD_NAME = "name not valid / not a device of the set"
    NAME_IN_USE = "a live set has this name"
    NO_MEMORY = "memory unobtainable"
    ALREADY_OPEN = "this device already open"
    ALL_OPEN = "every device already open"
    DEVICE_CLOSED = "server closed this device"
    LAST_DEVICE_CLOSED = "server closed this device, the last one still open"
    NOT_OUTSTANDING = "not a command outstanding on this device"
    DEVICES_OPEN = "devices still open"
    NOT_READY = "set missing or not yet configured"
    INVALID_ARG = "argument invalid"
    QUEUE_FULL = "device queue full"
    IO_ERROR = "device in IO-ERROR"
    NO_SET = "no set of that name"
    BAD_INSTANCE = "instance name not recognised"


@attrs.frozen
class Transition:
    hr: int
    next: enum.Enum | None = None  # None: state unchanged
    amended: str | None = None  # why this cell differs from the documented table
    note: str | None = None

    @property
    def result(self) -> str:
        from vdisim.protocol.codes import hresult_name

        return hresult_name(self.hr)


Cell = Mapping[Cond, Transition]
T = Transition
S = ClientState
C = ClientCall
P = HResult.VD_E_PROTOCOL
A = HResult.VD_E_ABORT
OK = HResult.NOERROR

_PROTOCOL: Cell = {Cond.ANY: T(P)}
_ABORT: Cell = {Cond.ANY: T(A)}
_BUFFER_CALL: Cell = {Cond.OK: T(OK), Cond.INVALID_ARG: T(HResult.VD_E_INVALID)}

_OPEN_DEVICE_READY: Cell = {
    Cond.ALREADY_OPEN: T(P),
    Cond.ALL_OPEN: T(HResult.VD_E_OPEN),
    Cond.BAD_NAME: T(HResult.VD_E_INVALID),
}

CLIENT_TABLE: Mapping[ClientState, Mapping[ClientCall, Cell]] = {
    S.DNE: {
        C.CREATE: {
            Cond.OK: T(OK, S.CONFIGURABLE),
            Cond.BAD_CONFIG: T(HResult.VD_E_NOTSUPPORTED),
            Cond.BAD_NAME: T(HResult.VD_E_INVALID, note="empty name, backslash, or too long [I]"),
            Cond.NAME_IN_USE: T(hresult_from_win32(ERROR_ALREADY_EXISTS),
                                note="cross-process name collision is undocumented (§11.5) [I]"),
            Cond.NO_MEMORY: T(HResult.VD_E_MEMORY),
            Cond.BAD_INSTANCE: T(HResult.VD_E_INSTANCE_NAME,
                                 note="a machine\\ prefix or over-long instance name (§1.4, "
                                      "§2.1: returned by CreateEx, checked by clients [H][O])"),
        },
        C.GET_CONFIGURATION: _PROTOCOL,
        C.OPEN_DEVICE: _PROTOCOL,
        C.GET_COMMAND: _PROTOCOL,
        C.COMPLETE_COMMAND: _PROTOCOL,
        C.SIGNAL_ABORT: _PROTOCOL,
        C.CLOSE: _PROTOCOL,
        C.OPEN_IN_SECONDARY: {
            Cond.OK: T(OK, S.INITIALIZING, note="secondary attaches to a configured set (§1.9)"),
            Cond.ABORTED: T(A),
            Cond.NOT_READY: T(P),
        },
        C.GET_BUFFER_HANDLE: _PROTOCOL,
        C.MAP_BUFFER_HANDLE: _PROTOCOL,
    },
    S.CONFIGURABLE: {
        C.CREATE: _PROTOCOL,
        C.GET_CONFIGURATION: {
            Cond.OK: T(OK, S.INITIALIZING),
            Cond.TIMEOUT: T(HResult.VD_E_TIMEOUT),
            Cond.ABORTED: T(A, S.ABORT),
        },
        C.OPEN_DEVICE: _PROTOCOL,
        C.GET_COMMAND: _PROTOCOL,
        C.COMPLETE_COMMAND: _PROTOCOL,
        C.SIGNAL_ABORT: {Cond.ANY: T(OK, S.ABORT)},
        C.CLOSE: {Cond.ANY: T(OK, S.DNE)},
        C.OPEN_IN_SECONDARY: _PROTOCOL,
        C.GET_BUFFER_HANDLE: {Cond.ANY: T(HResult.VD_E_INVALID, note="no buffers exist yet")},
        C.MAP_BUFFER_HANDLE: {Cond.ANY: T(HResult.VD_E_INVALID, note="no buffers exist yet")},
    },
    S.INITIALIZING: {
        C.CREATE: _PROTOCOL,
        C.GET_CONFIGURATION: {Cond.ANY: T(OK)},
        C.OPEN_DEVICE: {Cond.OK: T(OK, S.ACTIVE), **_OPEN_DEVICE_READY},
        C.GET_COMMAND: _PROTOCOL,
        C.COMPLETE_COMMAND: _PROTOCOL,
        C.SIGNAL_ABORT: {Cond.ANY: T(OK, S.ABORT)},
        C.CLOSE: {Cond.ANY: T(OK, S.DNE)},
        C.OPEN_IN_SECONDARY: _PROTOCOL,
        C.GET_BUFFER_HANDLE: _BUFFER_CALL,
        C.MAP_BUFFER_HANDLE: _BUFFER_CALL,
    },
    S.ACTIVE: {
        C.CREATE: _PROTOCOL,
        C.GET_CONFIGURATION: {Cond.ANY: T(OK)},
        C.OPEN_DEVICE: {
            Cond.OK: T(OK, amended="a set of n devices needs n OpenDevice calls; the method page "
                              "loops until VD_E_OPEN (§11.2)"),
            Cond.ALREADY_OPEN: T(P),
            Cond.ALL_OPEN: T(HResult.VD_E_OPEN,
                             amended="benign end of the open loop (§2.3, §11.2)"),
            Cond.BAD_NAME: T(HResult.VD_E_INVALID),
        },
        C.GET_COMMAND: {
            Cond.OK: T(OK),
            Cond.TIMEOUT: T(HResult.VD_E_TIMEOUT),
            Cond.DEVICE_CLOSED: T(HResult.VD_E_CLOSE, amended="VD_E_CLOSE is per device; the set "
                                  "stays Active while other devices are open (§1.8, §11.2)"),
            Cond.LAST_DEVICE_CLOSED: T(HResult.VD_E_CLOSE, S.NORMALLY_TERMINATED,
                                       amended="Normally Terminated once every device of the set "
                                               "has returned VD_E_CLOSE (§1.8)"),
            Cond.ABORTED: T(A, S.ABORT),
        },
        C.COMPLETE_COMMAND: {
            Cond.OK: T(OK),
            Cond.NOT_OUTSTANDING: T(HResult.VD_E_INVALID),
            Cond.DEVICE_CLOSED: T(P, note="device no longer open (§2.5)"),
        },
        C.SIGNAL_ABORT: {Cond.ANY: T(OK, S.ABORT)},
        C.CLOSE: {
            Cond.OK: T(OK, S.DNE),
            Cond.DEVICES_OPEN: T(HResult.VD_E_OPEN, S.DNE,
                                 amended="Close page: VD_E_OPEN with devices open, after an "
                                         "internal SignalAbort, resources still released (§2.7, "
                                         "§11.4)"),
        },
        C.OPEN_IN_SECONDARY: _PROTOCOL,
        C.GET_BUFFER_HANDLE: _BUFFER_CALL,
        C.MAP_BUFFER_HANDLE: _BUFFER_CALL,
    },
    S.NORMALLY_TERMINATED: {
        C.CREATE: _PROTOCOL,
        C.GET_CONFIGURATION: {Cond.ANY: T(OK)},
        C.OPEN_DEVICE: _PROTOCOL,
        C.GET_COMMAND: _PROTOCOL,
        C.COMPLETE_COMMAND: _PROTOCOL,
        C.SIGNAL_ABORT: {Cond.ANY: T(OK, S.ABORT)},
        C.CLOSE: {Cond.ANY: T(OK, S.DNE)},
        C.OPEN_IN_SECONDARY: _PROTOCOL,
        C.GET_BUFFER_HANDLE: _BUFFER_CALL,
        C.MAP_BUFFER_HANDLE: _BUFFER_CALL,
    },
    S.ABORT: {
        C.CREATE: _PROTOCOL,
        C.GET_CONFIGURATION: _ABORT,
        C.OPEN_DEVICE: _ABORT,
        C.GET_COMMAND: _ABORT,
        C.COMPLETE_COMMAND: _ABORT,
        C.SIGNAL_ABORT: {Cond.ANY: T(OK)},
        C.CLOSE: {Cond.ANY: T(OK, S.DNE)},
        C.OPEN_IN_SECONDARY: _PROTOCOL,
        C.GET_BUFFER_HANDLE: _BUFFER_CALL,  # buffers stay valid until Close (§8.2)
        C.MAP_BUFFER_HANDLE: _BUFFER_CALL,
    },
}


def lookup(table: Mapping[enum.Enum, Mapping[enum.Enum, Cell]], state: enum.Enum,
           call: enum.Enum, cond: Cond = Cond.OK) -> Transition:
    cell = table[state][call]
    if cond in cell:
        return cell[cond]
    if Cond.ANY in cell:
        return cell[Cond.ANY]
    raise KeyError(f"no transition for {call} in {state} under {cond}")


def client_transition(state: ClientState, call: ClientCall, cond: Cond = Cond.OK) -> Transition:
    return lookup(CLIENT_TABLE, state, call, cond)  # type: ignore[arg-type]


def is_static(cell: Cell) -> bool:
    """A cell that answers the same whatever the caller observed."""
    return set(cell) == {Cond.ANY}


# --------------------------------------------------------------------------------------------
# Server set (§3)


class ServerState(enum.Enum):
    DNE = "DNE"
    CONNECTED = "Connected"
    CONFIGURABLE = "Configurable"
    INITIALIZING = "Initializing"
    ACTIVE = "Active"
    NORMALLY_TERMINATED = "Normally Terminated"
    ABORT = "Abort"


class ServerCall(enum.Enum):
    OPEN = "Open"
    GET_CONFIGURATION = "GetConfiguration"
    BEGIN_CONFIGURATION = "BeginConfiguration"
    REQUEST_BUFFERS = "RequestBuffers"
    QUERY_AVAILABLE_BUFFERS = "QueryAvailableBuffers"
    END_CONFIGURATION = "EndConfiguration"
    OPEN_DEVICE = "OpenDevice"
    EXECUTE_COMPLETION_AGENT = "ExecuteCompletionAgent"
    ALLOCATE_BUFFER = "AllocateBuffer"
    FREE_BUFFER = "FreeBuffer"
    SEND_COMMAND = "SendCommand"
    CLOSE_DEVICE = "CloseDevice"
    SIGNAL_ABORT = "SignalAbort"
    CLOSE = "Close"


SS = ServerState
SC = ServerCall
_INVALID: Cell = {Cond.OK: T(OK), Cond.INVALID_ARG: T(HResult.VD_E_INVALID)}
_MEMORY_CALL: Cell = {**_INVALID, Cond.NO_MEMORY: T(HResult.VD_E_MEMORY)}
_SEND_ACTIVE: Cell = {
    Cond.OK: T(OK),
    Cond.QUEUE_FULL: T(HResult.VD_E_QUEUE_FULL),
    Cond.IO_ERROR: T(HResult.VD_E_IO_ERROR),
    Cond.DEVICE_CLOSED: T(P),
    Cond.INVALID_ARG: T(HResult.VD_E_INVALID),
}


def _server_row(**cells: Cell) -> dict[ServerCall, Cell]:
    row: dict[ServerCall, Cell] = {c: _PROTOCOL for c in ServerCall}
    row.update({ServerCall[k]: v for k, v in cells.items()})
    return row


_TERMINATE = {"SIGNAL_ABORT": {Cond.ANY: T(OK, SS.ABORT)}, "CLOSE": {Cond.ANY: T(OK, SS.DNE)}}

SERVER_TABLE: Mapping[ServerState, Mapping[ServerCall, Cell]] = {
    SS.DNE: _server_row(OPEN={Cond.OK: T(OK, SS.CONNECTED), Cond.NO_SET: T(HResult.VD_E_INVALID)}),
    SS.CONNECTED: _server_row(
        GET_CONFIGURATION={Cond.ANY: T(OK)},
        BEGIN_CONFIGURATION={Cond.OK: T(OK, SS.CONFIGURABLE),
                             Cond.INVALID_ARG: T(HResult.VD_E_INVALID)},
        **_TERMINATE,
    ),
    SS.CONFIGURABLE: _server_row(
        GET_CONFIGURATION={Cond.ANY: T(OK)},
        REQUEST_BUFFERS=_INVALID,
        QUERY_AVAILABLE_BUFFERS={Cond.ANY: T(OK)},
        END_CONFIGURATION={Cond.OK: T(OK, SS.INITIALIZING),
                           Cond.NO_MEMORY: T(HResult.VD_E_MEMORY)},
        **_TERMINATE,
    ),
    SS.INITIALIZING: _server_row(
        GET_CONFIGURATION={Cond.ANY: T(OK)},
        REQUEST_BUFFERS=_MEMORY_CALL,
        QUERY_AVAILABLE_BUFFERS={Cond.ANY: T(OK)},
        OPEN_DEVICE={Cond.OK: T(OK, SS.ACTIVE)},
        EXECUTE_COMPLETION_AGENT={Cond.ANY: T(OK, SS.ACTIVE)},
        ALLOCATE_BUFFER=_MEMORY_CALL,
        FREE_BUFFER=_INVALID,
        **_TERMINATE,
    ),
    SS.ACTIVE: _server_row(
        GET_CONFIGURATION={Cond.ANY: T(OK)},
        REQUEST_BUFFERS=_MEMORY_CALL,
        QUERY_AVAILABLE_BUFFERS={Cond.ANY: T(OK)},
        OPEN_DEVICE={Cond.OK: T(OK), Cond.ALL_OPEN: T(HResult.VD_E_OPEN)},
        EXECUTE_COMPLETION_AGENT={Cond.ANY: T(OK)},
        ALLOCATE_BUFFER=_MEMORY_CALL,
        FREE_BUFFER=_INVALID,
        SEND_COMMAND=_SEND_ACTIVE,
        CLOSE_DEVICE={Cond.OK: T(OK), Cond.LAST_DEVICE_CLOSED: T(OK, SS.NORMALLY_TERMINATED),
                      Cond.DEVICE_CLOSED: T(HResult.VD_E_CLOSE)},
        SIGNAL_ABORT={Cond.ANY: T(OK, SS.ABORT)},
        CLOSE={Cond.OK: T(OK, SS.DNE),
               Cond.DEVICES_OPEN: T(P, SS.DNE, note="with SignalAbort processing (§3 Close)")},
    ),
    SS.NORMALLY_TERMINATED: _server_row(
        GET_CONFIGURATION={Cond.ANY: T(OK)},
        OPEN_DEVICE={Cond.ANY: T(HResult.VD_E_OPEN)},
        EXECUTE_COMPLETION_AGENT={Cond.ANY: T(OK)},
        FREE_BUFFER=_INVALID,
        CLOSE_DEVICE={Cond.ANY: T(HResult.VD_E_CLOSE)},
        **_TERMINATE,
    ),
    SS.ABORT: {
        **{c: _ABORT for c in ServerCall},
        SC.OPEN: _PROTOCOL,
        SC.FREE_BUFFER: _INVALID,
        SC.EXECUTE_COMPLETION_AGENT: {Cond.ANY: T(OK, note="returns at once")},
        SC.SIGNAL_ABORT: {Cond.ANY: T(OK)},
        SC.CLOSE: {Cond.ANY: T(OK, SS.DNE)},
    },
}


def server_transition(state: ServerState, call: ServerCall, cond: Cond = Cond.OK) -> Transition:
    return lookup(SERVER_TABLE, state, call, cond)  # type: ignore[arg-type]


#: SendCommand failures call the completion routine synchronously with these Win32 codes (§3).
SEND_FAILURE_COMPLETION: Mapping[int, int] = {
    HResult.VD_E_QUEUE_FULL: Win32.ERROR_NO_SYSTEM_RESOURCES,
    HResult.VD_E_IO_ERROR: Win32.ERROR_IO_DEVICE,
    HResult.VD_E_PROTOCOL: Win32.ERROR_INVALID_HANDLE,
    HResult.VD_E_ABORT: Win32.ERROR_OPERATION_ABORTED,
    HResult.VD_E_INVALID: Win32.ERROR_INVALID_HANDLE,
}

# --------------------------------------------------------------------------------------------
# Device (§6.6): the same table is read by the engine (may a command be sent?) and by the
# client library (may a queued command be delivered? which are failed with 1117?).


class DeviceState(enum.Enum):
    ACTIVE = "Active"
    IO_ERROR = "IO-ERROR"
    CLOSED = "Closed"


class DeviceEvent(enum.Enum):
    SEND = "command (not ClearError) sent"
    SEND_CLEAR_ERROR = "ClearError sent"
    COMPLETE_OK = "command completed with ERROR_SUCCESS"
    COMPLETE_ERROR = "command completed with an error code"
    CLEAR_ERROR_OK = "ClearError completed with ERROR_SUCCESS"
    CLEAR_ERROR_FAILED = "ClearError completed with an error code"
    CLOSE = "CloseDevice"


class DeviceAction(enum.Enum):
    ACCEPT = "accept: queue / deliver in order"
    HOLD_UNTIL_DRAINED = "accept, deliver only after every outstanding command is completed"
    FAIL_QUEUED = "accept; queued undelivered commands complete with ERROR_IO_DEVICE"
    REJECT_IO_DEVICE = "reject: completion ERROR_IO_DEVICE (1117), never delivered"
    REJECT_CLOSED = "reject: device closed (VD_E_PROTOCOL / ERROR_INVALID_HANDLE)"
    ALREADY_CLOSED = "already closed (VD_E_CLOSE)"
    NOTE = "noted"


@attrs.frozen
class DeviceTransition:
    action: DeviceAction
    next: DeviceState


DS, DE, DA = DeviceState, DeviceEvent, DeviceAction
DEVICE_TABLE: Mapping[DeviceState, Mapping[DeviceEvent, DeviceTransition]] = {
    DS.ACTIVE: {
        DE.SEND: DeviceTransition(DA.ACCEPT, DS.ACTIVE),
        DE.SEND_CLEAR_ERROR: DeviceTransition(DA.ACCEPT, DS.ACTIVE),
        DE.COMPLETE_OK: DeviceTransition(DA.NOTE, DS.ACTIVE),
        DE.COMPLETE_ERROR: DeviceTransition(DA.FAIL_QUEUED, DS.IO_ERROR),
        DE.CLEAR_ERROR_OK: DeviceTransition(DA.NOTE, DS.ACTIVE),
        DE.CLEAR_ERROR_FAILED: DeviceTransition(DA.FAIL_QUEUED, DS.IO_ERROR),
        DE.CLOSE: DeviceTransition(DA.ACCEPT, DS.CLOSED),
    },
    DS.IO_ERROR: {
        DE.SEND: DeviceTransition(DA.REJECT_IO_DEVICE, DS.IO_ERROR),
        DE.SEND_CLEAR_ERROR: DeviceTransition(DA.HOLD_UNTIL_DRAINED, DS.IO_ERROR),
        DE.COMPLETE_OK: DeviceTransition(DA.NOTE, DS.IO_ERROR),
        DE.COMPLETE_ERROR: DeviceTransition(DA.NOTE, DS.IO_ERROR),
        DE.CLEAR_ERROR_OK: DeviceTransition(DA.NOTE, DS.ACTIVE),
        DE.CLEAR_ERROR_FAILED: DeviceTransition(DA.NOTE, DS.IO_ERROR),
        DE.CLOSE: DeviceTransition(DA.ACCEPT, DS.CLOSED),
    },
    DS.CLOSED: {
        DE.SEND: DeviceTransition(DA.REJECT_CLOSED, DS.CLOSED),
        DE.SEND_CLEAR_ERROR: DeviceTransition(DA.REJECT_CLOSED, DS.CLOSED),
        DE.COMPLETE_OK: DeviceTransition(DA.NOTE, DS.CLOSED),
        DE.COMPLETE_ERROR: DeviceTransition(DA.NOTE, DS.CLOSED),
        DE.CLEAR_ERROR_OK: DeviceTransition(DA.NOTE, DS.CLOSED),
        DE.CLEAR_ERROR_FAILED: DeviceTransition(DA.NOTE, DS.CLOSED),
        DE.CLOSE: DeviceTransition(DA.ALREADY_CLOSED, DS.CLOSED),
    },
}


def device_transition(state: DeviceState, event: DeviceEvent) -> DeviceTransition:
    return DEVICE_TABLE[state][event]


def completion_event(is_clear_error: bool, completion_code: int) -> DeviceEvent:
    ok = completion_code == Win32.ERROR_SUCCESS
    if is_clear_error:
        return DeviceEvent.CLEAR_ERROR_OK if ok else DeviceEvent.CLEAR_ERROR_FAILED
    return DeviceEvent.COMPLETE_OK if ok else DeviceEvent.COMPLETE_ERROR


# --------------------------------------------------------------------------------------------
# Rendering (docs/states.md is generated from the tables above).


def _cell_text(cell: Cell) -> str:
    parts = []
    for cond, tr in cell.items():
        txt = tr.result.replace("VD_E_", "")
        if tr.next is not None:
            txt += f" →{tr.next.value}"
        if cond is not Cond.ANY and cond is not Cond.OK:
            txt = f"{txt} ({cond.value})"
        if tr.amended:
            txt += " **[A]**"
        parts.append(txt)
    return "; ".join(parts)


def _render(table: Mapping[enum.Enum, Mapping[enum.Enum, Cell]], states: list[enum.Enum],
            calls: list[enum.Enum]) -> str:
    lines = ["| Call \\ State | " + " | ".join(str(s.value) for s in states) + " |",
             "|---" * (len(states) + 1) + "|"]
    for call in calls:
        row = [_cell_text(table[s][call]) for s in states]
        lines.append(f"| {call.value} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def render_markdown() -> str:
    out = ["# VDI state tables", "",
           "Generated from `vdisim/protocol/states.py` by `python -m vdisim.protocol.states`;"
           " do not edit by hand.", "",
           "Cells read `RESULT →NextState (condition)`; `VD_E_` is dropped from codes. A cell "
           "marked **[A]** is amended from the documented table (spec §2.11); the reasons are "
           "listed after the table.", "",
           "## Client set (spec §2.11, amended)", "",
           _render(CLIENT_TABLE, list(ClientState), list(ClientCall)),  # type: ignore[arg-type]
           "", "### Amended cells", ""]
    for state, row in CLIENT_TABLE.items():
        for call, cell in row.items():
            for cond, tr in cell.items():
                if tr.amended:
                    out.append(f"- **{call.value} in {state.value}** ({cond.value}) → "
                               f"{tr.result}: {tr.amended}.")
    out += ["", "Notes on cells the documentation leaves open:", ""]
    for state, row in CLIENT_TABLE.items():
        for call, cell in row.items():
            for cond, tr in cell.items():
                if tr.note:
                    out.append(f"- {call.value} in {state.value} ({cond.value}): {tr.note}.")
    out += ["", "## Server set (spec §3; columns after Initializing reconstructed [I])", "",
            _render(SERVER_TABLE, list(ServerState), list(ServerCall)),  # type: ignore[arg-type]
            "", "SendCommand failures call the completion routine synchronously with: "
            + ", ".join(f"{HResult(hr).name} → {code}" for hr, code in
                        SEND_FAILURE_COMPLETION.items()) + ".",
            "", "## Device (spec §6.6, IO-ERROR protocol)", "",
            "| Event \\ State | " + " | ".join(s.value for s in DeviceState) + " |",
            "|---" * (len(DeviceState) + 1) + "|"]
    for ev in DeviceEvent:
        cells = [f"{DEVICE_TABLE[s][ev].action.name} →{DEVICE_TABLE[s][ev].next.value}"
                 for s in DeviceState]
        out.append(f"| {ev.value} | " + " | ".join(cells) + " |")
    out += ["", "Actions:", ""] + [f"- `{a.name}`: {a.value}" for a in DeviceAction]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
