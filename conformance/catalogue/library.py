"""The VDI library and server rules (issue 3): every documented rule as data.

Three groups:

* ``CT-*``: one rule per cell of the amended client state table (spec §2.11 with the
  amendments of §1.8 / §11.2-§11.4; docs/states.md), including the method-page rows
  OpenInSecondary, GetBufferHandle and MapBufferHandle, plus one rule per condition of a cell
  whose conditions answer differently (``CT-ACTIVE-GET_COMMAND-TIMEOUT``);
* ``ST-*``: server transitions (§3: documented columns, recovered fragments, method pages;
  reconstructed cells are [I] and at most SHOULD);
* the rules of the method pages, the abort model (§8), the IO-ERROR protocol (§6.6),
  VDC_Complete (§6.4), serverTimeOut (§4), transfer sizes (§1.10) and completion codes (§6.4).

Statements, levels and sources of the cell rules are generated from the independent model's
cells (``conformance.model``), so the text and the check cannot drift apart.  Every rule is
judged by ``conformance.judge`` (``check="model"``) and has a negative example
(``conformance.negative``) keyed by its ID.
"""

from __future__ import annotations

from conformance import model as m
from conformance.rules import Level, Party, Rule

__all__ = ["RULES"]

_REF = "docs/relational-databases/backup-restore/vdi-reference/"
_SPEC2005 = "https://documentation.help/MS-SQL-Server-Virtual-Backup/"
PAGES: dict[str, str] = {
    "CREATE": _REF + "iclientvirtualdeviceset2-createex.md",
    "GET_CONFIGURATION": _REF + "iclientvirtualdeviceset2-getconfiguration.md",
    "OPEN_DEVICE": _REF + "iclientvirtualdeviceset2-opendevice.md",
    "GET_COMMAND": _REF + "iclientvirtualdevice-getcommand.md",
    "COMPLETE_COMMAND": _REF + "iclientvirtualdevice-completecommand.md",
    "SIGNAL_ABORT": _REF + "iclientvirtualdeviceset2-signalabort.md",
    "CLOSE": _REF + "iclientvirtualdeviceset2-close.md",
    "OPEN_IN_SECONDARY": _REF + "iclientvirtualdeviceset2-openinsecondaryex.md",
    "GET_BUFFER_HANDLE": _REF + "iclientvirtualdeviceset2-getbufferhandle.md",
    "MAP_BUFFER_HANDLE": _REF + "iclientvirtualdeviceset2-mapbufferhandle.md",
    "CLIENT_TRANSITIONS": _SPEC2005 + "vdi2005_7tyr.htm",
    "SERVER_TRANSITIONS": _SPEC2005 + "vdi2005_0s1f.htm",
    "SEND_COMMAND": _REF + "iservervirtualdevice-sendcommand.md",
    "CLOSE_DEVICE": _REF + "iservervirtualdevice-closedevice.md",
    "ABNORMAL": _SPEC2005 + "vdi2005_50oe.htm",
    "NORMAL": _SPEC2005 + "vdi2005_34tq.htm",
    "ERRORS": _SPEC2005 + "vdi2005_66hz.htm",
    "GENERAL": _SPEC2005 + "vdi2005_3zjn.htm",
    "CONFIG": _SPEC2005 + "vdi2005_5pke.htm",
    "VDCONFIG": _SPEC2005 + "vdi2005_5nqd.htm",
    "ACTIVE": _SPEC2005 + "vdi2005_3oit.htm",
    "KB3188454": "https://support.microsoft.com/en-us/help/3188454",
    "BACKUP": "docs/t-sql/statements/backup-transact-sql.md",
    "SERVER_CLOSE": _REF + "iservervirtualdeviceset2-close.md",
    "SERVER_SIGNAL_ABORT": _REF + "iservervirtualdeviceset2-signalabort.md",
}

_STATE_TEXT = {"DNE": "DNE", "CONFIGURABLE": "Configurable", "INITIALIZING": "Initializing",
               "ACTIVE": "Active", "NORMALLY_TERMINATED": "Normally Terminated",
               "ABORT": "Abort", "CONNECTED": "Connected"}
_CALL_TEXT = {"CREATE": "Create/CreateEx", "GET_CONFIGURATION": "GetConfiguration",
              "OPEN_DEVICE": "OpenDevice", "GET_COMMAND": "GetCommand",
              "COMPLETE_COMMAND": "CompleteCommand", "SIGNAL_ABORT": "SignalAbort",
              "CLOSE": "Close", "OPEN_IN_SECONDARY": "OpenInSecondary[Ex]",
              "GET_BUFFER_HANDLE": "GetBufferHandle", "MAP_BUFFER_HANDLE": "MapBufferHandle",
              "OPEN": "Open", "BEGIN_CONFIGURATION": "BeginConfiguration",
              "REQUEST_BUFFERS": "RequestBuffers", "END_CONFIGURATION": "EndConfiguration",
              "ALLOCATE_BUFFER": "AllocateBuffer", "SEND_COMMAND": "SendCommand",
              "CLOSE_DEVICE": "CloseDevice"}
_COND_TEXT = {"OK": "", "TIMEOUT": " when the timeout elapses",
              "ABORTED": " when an abort arrives while it waits",
              "BAD_CONFIG": " with an invalid deviceCount",
              "BAD_NAME": " with a name that is not valid / not a device of the set",
              "NAME_IN_USE": " when another live set has the name",
              "BAD_INSTANCE": " with a machine\\instance name",
              "ALREADY_OPEN": " for a device already open",
              "ALL_OPEN": " once every device is open",
              "DEVICE_CLOSED": " after the server closed this device",
              "LAST_DEVICE_CLOSED": " after the server closed the last open device",
              "NOT_OUTSTANDING": " for a command not outstanding on this device (e.g. twice)",
              "DEVICES_OPEN": " while devices are still open",
              "NOT_READY": " before the primary's CreateEx + GetConfiguration, or for no set",
              "INVALID_ARG": " with an invalid argument", "NO_SET": " for a name with no set",
              "IO_ERROR": " on a device in IO-ERROR"}

_SECTIONS = {"CREATE": "§2.1", "GET_CONFIGURATION": "§2.2", "OPEN_DEVICE": "§2.3",
             "GET_COMMAND": "§2.4", "COMPLETE_COMMAND": "§2.5", "SIGNAL_ABORT": "§2.6",
             "CLOSE": "§2.7", "OPEN_IN_SECONDARY": "§2.8", "GET_BUFFER_HANDLE": "§2.9",
             "MAP_BUFFER_HANDLE": "§2.9"}


def _level(source: str) -> Level:
    return Level.MUST if source in ("D", "H") else Level.SHOULD


def _codes(hrs: frozenset[int]) -> str:
    return " or ".join(m.hr_name(h) for h in sorted(hrs))


def _client_cell_rule(state: str, call: str, cond: str) -> Rule:
    cell = m.client_cell(state, call, cond)
    nxt = f", the object moves to {_STATE_TEXT[cell.next]}" if cell.next else ""
    section = "§2.11" if call not in ("OPEN_IN_SECONDARY", "GET_BUFFER_HANDLE",
                                      "MAP_BUFFER_HANDLE") else _SECTIONS[call]
    page = PAGES["CLIENT_TRANSITIONS"] if section == "§2.11" else PAGES[call]
    rid = m.ct_rule(state, call, cond)
    return Rule(id=rid, area="client-table", level=_level(cell.source), binds=Party.LIBRARY,
                section=section, source=cell.source, page=page,
                statement=f"{_CALL_TEXT[call]} in {_STATE_TEXT[state]}{_COND_TEXT.get(cond, '')}"
                          f" returns {_codes(cell.hrs)}{nxt}.",
                check="model", negative=rid)


def _client_table_rules() -> list[Rule]:
    out: list[Rule] = []
    for state in m.CLIENT_STATES:
        for call in m.CLIENT_CALLS:
            out.append(_client_cell_rule(state, call, "OK"))
            for st, c, cond in sorted(m.CT_COND_RULES):
                if (st, c) == (state, call):
                    out.append(_client_cell_rule(state, call, cond))
    return out


def _server_rules() -> list[Rule]:
    out: list[Rule] = []
    for rid in sorted(m.ST_RULES):
        parts = rid.split("-")
        state = {"NT": "NORMALLY_TERMINATED"}.get(parts[1], parts[1])
        call = parts[2]
        cond = parts[3] if len(parts) > 3 else "OK"
        if call == "CLOSE_DEVICE" and cond == "OK" and state == "ACTIVE":
            cells = [m.server_cell(state, call, "OK"),
                     m.server_cell(state, call, "LAST_DEVICE_CLOSED")]
            text = ("CloseDevice in Active returns NOERROR (the set moves to Normally "
                    "Terminated once every device is closed); the client's GetCommand on it "
                    "then returns VD_E_CLOSE.")
            source = "I"
        else:
            cell = m.server_cell(state, call, cond)
            cells = [cell]
            nxt = f", the server set moves to {_STATE_TEXT[cell.next]}" if cell.next else ""
            text = (f"Server {_CALL_TEXT.get(call, call)} in {_STATE_TEXT[state]}"
                    f"{_COND_TEXT.get(cond, '')} returns {_codes(cell.hrs)}{nxt}.")
            source = cell.source
        if rid == "ST-ACTIVE-SEND_COMMAND-IO_ERROR":
            text = ("Server SendCommand of a command other than ClearError on a device in "
                    "IO-ERROR returns vdisim's VD_E_IO_ERROR (0x80770011; the header defines "
                    "no value).")
        if rid == "ST-ACTIVE-CLOSE-DEVICES_OPEN":
            text += " It does SignalAbort processing: the client sees the abort."
        del cells
        page = PAGES["SEND_COMMAND"] if call == "SEND_COMMAND" else PAGES[
            "CLOSE_DEVICE"] if call == "CLOSE_DEVICE" else PAGES["SERVER_TRANSITIONS"]
        out.append(Rule(id=rid, area="server", level=_level(source), binds=Party.SERVER,
                        section="§3", source=source, page=page, statement=text, check="model",
                        negative=rid))
    out.append(Rule(id="ST-OTHER-CELLS", area="server", level=Level.SHOULD, binds=Party.SERVER,
                    section="§3", source="I", page=PAGES["SERVER_TRANSITIONS"],
                    statement="Every other server call answers as the §3 table and method "
                              "pages say (columns after Initializing reconstructed).",
                    check="model", negative="ST-OTHER-CELLS"))
    out.append(Rule(id=m.R_SRV_STATE, area="server", level=Level.SHOULD, binds=Party.SERVER,
                    section="§3", source="I", page=PAGES["SERVER_TRANSITIONS"],
                    statement="The server set's observable state follows its calls (Close "
                              "returns it to DNE).", check="model", negative=m.R_SRV_STATE))
    return out


def _r(rid: str, area: str, level: str, binds: Party, section: str, source: str, page: str,
       statement: str) -> Rule:
    return Rule(id=rid, area=area, level=Level(level), binds=binds, section=section,
                source=source, page=PAGES.get(page, page), statement=statement, check="model",
                negative=rid)


L, S, C = Party.LIBRARY, Party.SERVER, Party.CLIENT

_OTHERS: list[Rule] = [
    # -- Close (§2.7) -------------------------------------------------------------------------
    _r(m.R_CREATE_AGAIN, "close", "MUST", L, "§2.7", "D", "CLOSE",
       "After Close returns, Create/CreateEx on the same object starts a new set (NOERROR)."),
    _r(m.R_OPEN_RELEASES, "close", "MUST", L, "§2.7", "D", "CLOSE",
       "Close that returns VD_E_OPEN still releases the set: the object is back in DNE and "
       "Create with the same name returns NOERROR."),
    _r(m.R_OPEN_ABORTS, "close", "MUST", L, "§2.7", "D", "CLOSE",
       "Close with devices still open internally triggers SignalAbort: the server's set enters "
       "Abort and its outstanding commands complete with ERROR_OPERATION_ABORTED."),
    _r(m.R_OPEN_SIGNALS, "close", "SHOULD", L, "§2.7", "I", "CLOSE",
       "Close returning VD_E_OPEN signals the abort to the server itself (not merely by "
       "disappearing): a backend that reports abort reasons names the client's Close "
       "(vdisim: abort_reason 3)."),
    _r(m.R_DEVICES_INVALID, "close", "MUST", L, "§2.7", "D", "CLOSE",
       "Close invalidates every device interface: a device used afterwards fails (never "
       "NOERROR, never a command)."),
    _r(m.R_RELEASES, "close", "MUST", L, "§2.7", "D", "CLOSE",
       "Once client and server have closed, nothing of the set survives (shared memory, "
       "sockets, files)."),
    _r(m.R_WAIT_CLOSE, "close", "MUST", C, "§2.7", "D", "CLOSE",
       "On a set ending normally the client waits for VD_E_CLOSE on each of its devices "
       "before it calls Close."),
    _r(m.R_ABNORMAL_CLOSE, "abort", "MUST", L, "§2.7", "D", "CLOSE",
       "After abnormal termination no VD_E_CLOSE is expected: Close (once buffer activity "
       "stopped) returns NOERROR although devices never saw VD_E_CLOSE."),
    # -- GetCommand / OpenDevice / configuration ---------------------------------------------
    _r(m.R_RETURNS_COMMAND, "get-command", "MUST", L, "§2.4", "D", "GET_COMMAND",
       "GetCommand returns the next command the server queued on this device, with the "
       "server's command code, size and position."),
    _r(m.R_AFTER_VD_E_CLOSE, "get-command", "SHOULD", L, "§2.4", "I", "GET_COMMAND",
       "GetCommand on a device that already returned VD_E_CLOSE (other devices still open) "
       "returns VD_E_CLOSE again or VD_E_PROTOCOL, never a command."),
    _r(m.R_NULL_DEVICE, "open-device", "MUST", L, "§2.3", "D", "OPEN_DEVICE",
       "A failed OpenDevice returns no device interface (*ppVirtualDevice = NULL)."),
    _r(m.R_CONFIG, "configuration", "MUST", L, "§2.2", "D", "GET_CONFIGURATION",
       "GetConfiguration copies the configuration the server chose: the features with the "
       "direction bit, blockSize and maxTransferSize of BeginConfiguration, the client's "
       "deviceCount."),
    _r(m.R_IODEPTH, "configuration", "MUST", L, "§4.1", "D", "VDCONFIG",
       "GetConfiguration returns maxIODepth = 4 (deprecated field, always 4)."),
    _r(m.R_CONFIG_BLOCK, "transfer", "MUST", S, "§4.1", "D", "VDCONFIG",
       "The server's blockSize is a power of two from 512 to 65536."),
    _r(m.R_CONFIG_MTS, "transfer", "MUST", S, "§4.1", "D", "BACKUP",
       "The server's maxTransferSize is a multiple of 64 KiB, at most 4 MiB."),
    # -- CompleteCommand / completion codes ----------------------------------------------------
    _r(m.R_REACHES, "complete-command", "MUST", L, "§2.5", "D", "COMPLETE_COMMAND",
       "CompleteCommand's completion code, bytes transferred and position reach the server's "
       "completion routine unchanged; a command the client did not complete is not completed."),
    _r(m.R_AT_MOST_ONCE, "complete-command", "MUST", L, "§2.5", "D", "COMPLETE_COMMAND",
       "A command completes once: the server never sees a second, different completion."),
    _r(m.R_SEND_CALLBACK, "completion-codes", "MUST", S, "§3", "D", "SEND_COMMAND",
       "A SendCommand that fails calls the completion routine synchronously: VD_E_PROTOCOL -> "
       "ERROR_INVALID_HANDLE (6), VD_E_ABORT -> ERROR_OPERATION_ABORTED (995), queue full -> "
       "ERROR_NO_SYSTEM_RESOURCES (1450)."),
    # -- abort model (§8) ---------------------------------------------------------------------
    _r(m.R_CLIENT_ABORT_995, "signal-abort", "MUST", L, "§2.6", "D", "SIGNAL_ABORT",
       "After the client's SignalAbort the server's set is in Abort and every uncompleted "
       "command completes toward the server with ERROR_OPERATION_ABORTED (995)."),
    _r(m.R_SERVER_ABORT_995, "abort", "MUST", S, "§3", "D", "SERVER_SIGNAL_ABORT",
       "After the server's SignalAbort every outstanding command completes with "
       "ERROR_OPERATION_ABORTED."),
    _r(m.R_IGNORED, "abort", "MUST", L, "§8.2", "D", "ABNORMAL",
       "A completion the client records after the abort is ignored: the server keeps "
       "ERROR_OPERATION_ABORTED."),
    _r(m.R_CLIENT_GONE, "abort", "MUST", S, "§8.1", "D", "ABNORMAL",
       "The death (or early departure) of the primary client aborts the server's set; its "
       "outstanding commands complete with ERROR_OPERATION_ABORTED."),
    _r(m.R_SERVER_DEATH, "abort", "MUST", L, "§8.1", "D", "ABNORMAL",
       "The death of the server process is detected: a waiting client call returns "
       "VD_E_ABORT."),
    _r(m.R_SERVER_CLOSE_ABORTS, "abort", "MUST", L, "§3", "D", "SERVER_CLOSE",
       "A server Close while devices are open does SignalAbort processing: a waiting client "
       "call returns VD_E_ABORT."),
    # -- IO-ERROR protocol (§6.6) ----------------------------------------------------------------
    _r(m.R_IOERR_QUEUED, "io-error", "MUST", L, "§6.6", "D", "ERRORS",
       "After a non-success completion, commands queued but not delivered on that device "
       "complete with ERROR_IO_DEVICE (1117) and are never delivered."),
    _r(m.R_IOERR_REJECT, "io-error", "MUST", S, "§6.6", "D", "ERRORS",
       "While a device is in IO-ERROR every new command but ClearError is rejected at once: "
       "SendCommand fails and the completion routine runs with ERROR_IO_DEVICE (1117)."),
    _r(m.R_IOERR_HELD, "io-error", "MUST", L, "§6.6", "D", "ERRORS",
       "ClearError is not delivered by GetCommand until the client completed every command "
       "outstanding when the error happened."),
    _r(m.R_IOERR_RESUMES, "io-error", "MUST", S, "§6.6", "D", "ERRORS",
       "Once ClearError completed with success the device is Active again: the next command "
       "is accepted (NOERROR) and delivered."),
    _r(m.R_IOERR_NOT_ABORT, "io-error", "MUST", S, "§8.1", "D", "ABNORMAL",
       "An error completion is not an abort: the server's set stays Active."),
    # -- VDC_Complete (§6.4, KB3188454) ------------------------------------------------------------
    _r(m.R_COMPLETE_DELIVERED, "complete", "MUST", L, "§6.4", "D", "KB3188454",
       "A VDC_Complete the server sends reaches the client's GetCommand like any command."),
    _r(m.R_COMPLETE_FAILS, "complete", "MUST", L, "§6.4", "D", "KB3188454",
       "The client may fail VDC_Complete: its completion code reaches the server unchanged "
       "(so the backup fails)."),
    _r(m.R_COMPLETE_ONLY_IF, "complete", "MUST", S, "§5", "D", "KB3188454",
       "The server sends VDC_Complete only when the client asked for VDF_RequestComplete and "
       "GetConfiguration returned VDF_CompleteEnabled."),
    # -- serverTimeOut and waits (§4, §8.4) -------------------------------------------------------
    _r(m.R_TIMEOUT_ABORTS, "timeout", "MUST", S, "§4.1", "D", "CONFIG",
       "With serverTimeOut > 0, two timeout intervals with requests pending and none "
       "completing abort the operation (outstanding commands complete with 995, the client "
       "sees VD_E_ABORT)."),
    _r(m.R_TIMEOUT_ZERO, "timeout", "MUST", S, "§4.1", "D", "CONFIG",
       "serverTimeOut = 0 is infinite: a command the client holds is not completed or "
       "aborted by the server meanwhile."),
    _r(m.R_CALL_RETURNS, "timeout", "MUST", L, "§8.2", "D", "ABNORMAL",
       "Every wait returns: within its timeout, and an INFINITE wait on abort or the peer's "
       "death."),
    # -- transfers (§1.10) -----------------------------------------------------------------------
    _r(m.R_TRANSFER_BLOCK, "transfer", "MUST", S, "§1.10", "D", "ACTIVE",
       "Every Read/Write transfer is an integral multiple of the set's blockSize."),
    _r(m.R_TRANSFER_MAX, "transfer", "MUST", S, "§1.10", "D", "ACTIVE",
       "No Read/Write transfer exceeds the set's maxTransferSize."),
    # -- the wire ----------------------------------------------------------------------------------
    _r(m.R_WIRE, "server", "SHOULD", L, "§1.2", "I", "GENERAL",
       "The client library never sends the engine anything the protocol does not allow (the "
       "engine records no wire violation)."),
]

RULES: tuple[Rule, ...] = tuple(_client_table_rules() + _server_rules() + _OTHERS)
