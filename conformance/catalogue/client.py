"""Rules binding a VDI *client* (the backup tool), judged by the client harness (issue 4,
docs/client-harness.md) from the wire log the engine keeps and the case's outcome.

Levels follow the spec digest's tags: [D]/[H] may be MUST; [S]/[O]/[I] at most SHOULD.  Each rule
names its check (a function of :mod:`conformance.harness.checks`) and a negative example in
:data:`NEGATIVE_EXAMPLES`: a recorded case (wire log + outcome) that the check must flag, and no
other client rule may flag (tests/test_harness.py).
"""

from __future__ import annotations

import copy
from typing import Any

from conformance.rules import Level, Party, Rule
from vdisim.protocol.codes import CommandCode, Feature, HResult
from vdisim.transport.frames import AbortReason, EventCall

PAGE = "docs/relational-databases/backup-restore/vdi-reference/"


def _r(id: str, level: Level, section: str, source: str, page: str, statement: str,
       check: str) -> Rule:
    return Rule(id, "client", level, Party.CLIENT, section, source, PAGE + page, statement,
                check, negative=id)


M, S = Level.MUST, Level.SHOULD

RULES: tuple[Rule, ...] = (
    _r("CLIENT-STATEMENT-ISSUED", M, "§1.6", "D", "reference-virtual-device-interface",
       "The client starts the BACKUP/RESTORE statement naming its virtual devices (step 5); "
       "it issues the statement it was asked to run, not another one.", "statement_issued"),
    _r("CLIENT-COMPLETE-ONCE", M, "§2.5", "D", "iclientvirtualdevice-completecommand",
       "Every command is completed exactly once (CompleteCommand on a command that is not "
       "outstanding returns VD_E_INVALID).", "complete_once"),
    _r("CLIENT-COMPLETION-CODE-WIN32", M, "§2.5", "D", "iclientvirtualdevice-completecommand",
       "dwCompletionCode is a Win32 error code (ERROR_SUCCESS, ERROR_HANDLE_EOF, ...), not an "
       "HRESULT.", "completion_code"),
    _r("CLIENT-BYTES-WITHIN-SIZE", M, "§2.5", "D", "iclientvirtualdevice-completecommand",
       "dwBytesTransferred is the number of bytes actually moved: never above the command's "
       "size.", "bytes_within_size"),
    _r("CLIENT-WRITE-KEPT", M, "§6.4", "D", "vdc-command",
       "Data acknowledged on VDC_Write is stored: restoring through the same client returns it "
       "byte for byte.", "write_kept"),
    _r("CLIENT-FLUSH-DURABLE", M, "§6.4", "D", "vdc-command",
       "VDC_Flush (and VDC_Complete) make all earlier writes durable before the client "
       "acknowledges them: right after the acknowledgement the media, as another process "
       "sees it, holds the data (the harness cannot see below the OS page cache).",
       "flush_durable"),
    _r("CLIENT-COMPLETE-FINALISE", M, "§6.4", "D", "vdc-command",
       "With VDC_Complete enabled a VDC_Flush is not the end of the backup (Flush may arrive "
       "several times); the client keeps later data and finalises at VDC_Complete.",
       "complete_finalise"),
    _r("CLIENT-READ-EOF", M, "§6.4", "D", "vdc-command",
       "A Read at the end of the data completes with ERROR_HANDLE_EOF or ERROR_NO_DATA_DETECTED "
       "and a short count (never success with nothing, never a hang).", "read_eof"),
    _r("CLIENT-CLEARERROR", S, "§6.6", "D", "vdc-command",
       "After an error completion the client answers VDC_ClearError, normally with "
       "ERROR_SUCCESS.", "clear_error"),
    _r("CLIENT-UNKNOWN-NOT-SUPPORTED", M, "§6.4", "D", "vdc-command",
       "A command the client cannot perform (unknown or undocumented code) completes with "
       "ERROR_NOT_SUPPORTED.", "unknown_not_supported"),
    _r("CLIENT-CLOSE-AFTER-END", M, "§2.7", "D", "iclientvirtualdeviceset2-close",
       "Close only after VD_E_CLOSE on every device, or after abort (Close with devices open "
       "returns VD_E_OPEN and aborts the operation).", "close_after_end"),
    _r("CLIENT-SIGNAL-ABORT", S, "§8.4", "S", "iclientvirtualdeviceset2-signalabort",
       "A client that fails on its own calls SignalAbort so the server ends at once (samples "
       "do; it should not just vanish with the set active).", "signal_abort_own_failure"),
    _r("CLIENT-BUFFER-AFTER-COMPLETE", M, "§8.2", "D", "iclientvirtualdevice-completecommand",
       "Once a command is completed its buffer belongs to the server: the client does not "
       "touch it again (the engine fills it with a pattern and checks it before reuse).",
       "buffer_after_completion"),
    _r("CLIENT-TIMEOUT-NOT-FATAL", S, "§2.4", "I", "iclientvirtualdevice-getcommand",
       "VD_E_TIMEOUT from GetCommand only says no command came in time; on a merely slow "
       "server (serverTimeOut 0) the client keeps waiting instead of giving up.",
       "timeout_not_fatal"),
    _r("CLIENT-GETCONFIG-NO-HANG", S, "§1.6", "S", "iclientvirtualdeviceset2-getconfiguration",
       "The client waits for GetConfiguration in slices and checks the statement: when it "
       "failed before the set was opened, the client gives up instead of waiting forever.",
       "getconfig_no_hang"),
    _r("CLIENT-DEVICES-CONCURRENT", S, "§1.8", "I", "reference-virtual-device-interface",
       "The server addresses devices independently (one thread each): the client serves every "
       "device without waiting on another one (no starvation).", "devices_concurrent"),
    _r("CLIENT-NO-HANG", S, "§8.5", "I", "reference-virtual-device-interface",
       "The client ends: whatever the server does, it does not hang (the watchdog reports "
       "thread stacks and the wire log).", "no_hang"),
    _r("CLIENT-SUCCESS-AGREES", S, "§1.6", "S", "reference-virtual-device-interface",
       "The client's reported success agrees with the statement's outcome: VD_E_CLOSE alone "
       "does not prove the backup succeeded (step 10).", "success_agrees"),
)


# ----------------------------------------------------------------------- negative examples
# Recorded cases (JSON, the case-record format of conformance.harness.checks), reduced to
# what matters; each is flagged by exactly its rule.

_FEATS = int(Feature.VDF_RequestComplete)


def _ev(call: EventCall, dev: int = -1, hr: int = 0, a: int = 0, b: int = 0,
        c: int = 0) -> dict[str, Any]:
    return {"k": "event", "call": int(call), "dev": dev, "hr": int(hr), "a": a, "b": b, "c": c,
            "t": 0.0}


def _cmd(cid: int, code: int, size: int = 0, dev: int = 0) -> list[dict[str, Any]]:
    return [{"k": "cmd", "dev": dev, "id": cid, "code": int(code), "size": size, "pos": 0,
             "t": 0.0},
            _ev(EventCall.GET_COMMAND, dev, 0, 1000, int(code), cid)]


def _done(cid: int, code: int, result: int = 0, nbytes: int = 0,
          dev: int = 0) -> list[dict[str, Any]]:
    return [_ev(EventCall.COMPLETE_COMMAND, dev, 0, result, nbytes, cid),
            {"k": "done", "dev": dev, "id": cid, "code": int(code), "result": result,
             "bytes": nbytes, "pos": 0, "gen": False, "t": 0.0}]


W, F, C = CommandCode.VDC_Write, CommandCode.VDC_Flush, CommandCode.VDC_Complete


def good_backup() -> dict[str, Any]:
    """A correct one-device backup: Write, Flush, Complete, CloseDevice; restore verified."""
    entries = [_ev(EventCall.CREATE, -1, 0, 1, _FEATS), _ev(EventCall.GET_CONFIGURATION),
               _ev(EventCall.OPEN_DEVICE, 0),
               *_cmd(1, W, 65536), *_done(1, W, 0, 65536),
               *_cmd(2, F), *_done(2, F), *_cmd(3, C), *_done(3, C),
               {"k": "close_device", "dev": 0, "t": 0.0}, {"k": "close", "t": 0.0}]
    return {"case": "negative", "kind": "backup", "spec": {},
            "plan": {"operation": "backup", "devices": ["S"], "faults": [], "flush_every": 0,
                     "complete_supported": True},
            "context": {"devices": ["S"], "device_model": "pipe"},
            "client": {"believed_ok": True, "exit": 0, "hung": False, "killed": False,
                       "stacks": "", "output": "", "seconds": 0.1},
            "engine_died": False,
            "collected": {"issued": True, "statement": "BACKUP ...", "mismatch": "",
                          "finished": True, "outcome": {"ok": True, "state": "ok",
                                                        "errors": []},
                          "wire": {"entries": entries, "written": {"0": 65536},
                                   "read": {}, "written_sha256": {"0": "aa"},
                                   "read_sha256": {}, "flush_offsets": {"0": [65536]},
                                   "buffer_violations": [], "snapshots": 1}},
            "verify": {"ok": True, "read": {"0": 65536}, "read_sha256": {"0": "aa"},
                       "note": ""},
            "snapshot_verify": {"ok": True, "read": {"0": 65536}, "read_sha256": {"0": "aa"},
                                "note": ""},
            "setup_written": None}


def _failed(rec: dict[str, Any], believed: bool = False) -> dict[str, Any]:
    rec["collected"]["outcome"] = {"ok": False, "state": "error", "errors": [3013]}
    rec["client"]["believed_ok"] = believed
    rec["client"]["exit"] = 0 if believed else 1
    rec["verify"] = rec["snapshot_verify"] = None
    return rec


def _entries(rec: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = rec["collected"]["wire"]["entries"]
    return out


def _negative(rule: str) -> dict[str, Any]:
    rec = good_backup()
    rec["case"] = f"negative:{rule}"
    ents = _entries(rec)
    wire = rec["collected"]["wire"]
    if rule == "CLIENT-STATEMENT-ISSUED":
        rec["collected"] = {"issued": False, "statement": None, "mismatch": "",
                            "finished": False, "outcome": None, "wire": {"entries": []}}
        rec["client"]["believed_ok"] = False
        rec["verify"] = rec["snapshot_verify"] = None
    elif rule == "CLIENT-COMPLETE-ONCE":
        ents.insert(5, _ev(EventCall.COMPLETE_COMMAND, 0, HResult.VD_E_INVALID, 0, 65536, 1))
    elif rule == "CLIENT-COMPLETION-CODE-WIN32":
        for e in ents:
            if e["k"] == "done" and e["id"] == 2:
                e["result"] = int(HResult.VD_E_ABORT)
    elif rule == "CLIENT-BYTES-WITHIN-SIZE":
        for e in ents:
            if e["k"] == "done" and e["id"] == 1:
                e["bytes"] = 65536 + 512
    elif rule == "CLIENT-WRITE-KEPT":
        rec["verify"] = {"ok": True, "read": {"0": 65024}, "read_sha256": {"0": "bb"},
                         "note": ""}
    elif rule == "CLIENT-FLUSH-DURABLE":
        rec["snapshot_verify"] = {"ok": False, "read": {"0": 0}, "read_sha256": {},
                                  "note": "RESTORE failed (3013)"}
    elif rule == "CLIENT-COMPLETE-FINALISE":
        rec["plan"]["flush_every"] = 1
        tail = ents[5:]
        del ents[5:]
        ents.extend([*_cmd(4, F), *_done(4, F), *_cmd(5, W, 65536),
                     *_done(5, W, 1117, 0), *tail])
        _failed(rec)
    elif rule == "CLIENT-READ-EOF":
        r = CommandCode.VDC_Read
        rec["kind"] = "restore"
        rec["plan"]["operation"] = "restore"
        rec["setup_written"] = {"0": 65536}
        ents[:] = [_ev(EventCall.CREATE), _ev(EventCall.GET_CONFIGURATION),
                   _ev(EventCall.OPEN_DEVICE, 0), *_cmd(1, r, 65536), *_done(1, r, 0, 65536),
                   *_cmd(2, r, 512), *_done(2, r, 0, 0),
                   {"k": "close_device", "dev": 0, "t": 0.0}]
        rec["verify"] = rec["snapshot_verify"] = None
    elif rule == "CLIENT-CLEARERROR":
        tail = ents[5:]
        del ents[5:]
        ents.extend([*_cmd(4, CommandCode.VDC_ClearError), *_done(4, 3, 31), *tail])
    elif rule == "CLIENT-UNKNOWN-NOT-SUPPORTED":
        ents[3:3] = [*_cmd(9, 99), *_done(9, 99, 0)]
    elif rule == "CLIENT-CLOSE-AFTER-END":
        del ents[7:]
        ents.append({"k": "abort", "reason": int(AbortReason.CLIENT_CLOSE_WITH_DEVICES_OPEN),
                     "t": 0.0})
        _failed(rec)
    elif rule == "CLIENT-SIGNAL-ABORT":
        del ents[7:]
        ents.append({"k": "abort", "reason": int(AbortReason.PEER_DIED), "t": 0.0})
        _failed(rec)
    elif rule == "CLIENT-BUFFER-AFTER-COMPLETE":
        wire["buffer_violations"] = ["buffer 3 changed at byte 0 while the engine owned it"]
    elif rule == "CLIENT-TIMEOUT-NOT-FATAL":
        rec["plan"]["faults"] = [{"kind": "stall", "device": 0, "step": 1, "ms": 3000,
                                  "number": 0}]
        del ents[7:]
        ents.extend([_ev(EventCall.GET_COMMAND, 0, HResult.VD_E_TIMEOUT, 1000),
                     _ev(EventCall.SIGNAL_ABORT),
                     {"k": "abort", "reason": int(AbortReason.CLIENT_SIGNAL_ABORT), "t": 0.0}])
        _failed(rec)
    elif rule == "CLIENT-GETCONFIG-NO-HANG":
        rec["plan"]["faults"] = [{"kind": "fail_open", "device": 0, "step": -1, "ms": 0,
                                  "number": 0}]
        ents[:] = [{"k": "note", "msg": "statement issued", "t": 0.0}]
        _failed(rec)
        rec["client"].update(hung=True, killed=True, believed_ok=None, exit=None,
                             stacks="Thread 0x1 (most recent call first):\n  get_configuration")
    elif rule == "CLIENT-DEVICES-CONCURRENT":
        rec["plan"]["devices"] = rec["context"]["devices"] = ["S", "S1"]
        del ents[7:]
        ents.append({"k": "cmd", "dev": 1, "id": 4, "code": int(W), "size": 65536, "pos": 0,
                     "t": 0.0})
        _failed(rec)
        rec["client"].update(hung=True, killed=True, believed_ok=None, exit=None)
    elif rule == "CLIENT-NO-HANG":
        del ents[5:]
        ents.extend(_cmd(2, F))
        _failed(rec)
        rec["client"].update(hung=True, killed=True, believed_ok=None, exit=None)
    elif rule == "CLIENT-SUCCESS-AGREES":
        _failed(rec, believed=True)
    else:  # pragma: no cover - every rule has an example
        raise KeyError(rule)
    return rec


NEGATIVE_EXAMPLES: dict[str, dict[str, Any]] = {r.id: _negative(r.id) for r in RULES}


def negative_example(rule_id: str) -> dict[str, Any]:
    """A fresh copy of the negative example of ``rule_id``."""
    return copy.deepcopy(NEGATIVE_EXAMPLES[rule_id])
