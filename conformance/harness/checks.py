"""Judging a client from one case's record: the wire log the engine kept, the statement's
outcome, what the client said about it, and the verification restores.

A *case record* is a JSON object (it is what a replay file and a report's wire-log page hold)::

    {"case": "gen-7-3", "kind": "backup" | "restore",
     "spec": {...}, "plan": {...}, "context": {...},        # what was asked
     "client": {"believed_ok": true | false | null, "exit": 0, "hung": false,
                "stacks": "", "output": "", "seconds": 0.4},
     "engine_died": false,
     "collected": {"issued": true, "statement": "...", "mismatch": "", "finished": true,
                   "outcome": {"ok": true, "state": "ok", "errors": []},
                   "wire": {"entries": [...], "written": {"0": n}, "read": {...},
                            "written_sha256": {...}, "read_sha256": {...},
                            "flush_offsets": {...}, "buffer_violations": [...],
                            "snapshots": 1}},
     "verify": {"ok": true, "read": {...}, "read_sha256": {...}, "note": ""} | null,
     "snapshot_verify": {...} | null,      # restore through the client from the media as
                                          # copied at the last Flush / Complete acknowledgement
     "setup_written": {"0": n} | null}     # restore cases: bytes per device in the backup

Each check returns ``None`` when the rule is not exercised by the case, ``[]`` when it held,
or the violations.  Check functions are named by the catalogue (``Rule.check``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conformance.report import Violation
from vdisim.protocol.codes import CommandCode, Feature, HResult, Win32
from vdisim.transport.frames import AbortReason, EventCall

Record = dict[str, Any]
Check = Callable[[Record], list[Violation] | None]

EOF_CODES = (Win32.ERROR_HANDLE_EOF, Win32.ERROR_NO_DATA_DETECTED, Win32.ERROR_FILEMARK_DETECTED)
KNOWN_COMMANDS = frozenset(int(c) for c in CommandCode) - {16, 17, 18}


class Wire:
    """Indexes over a record's wire log."""

    def __init__(self, rec: Record) -> None:
        col = rec.get("collected") or {}
        self.wire: dict[str, Any] = col.get("wire") or {}
        self.entries: list[dict[str, Any]] = list(self.wire.get("entries") or [])
        self.cmds: dict[int, dict[str, Any]] = {}
        self.done: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.aborts: list[int] = []
        self.delivered: set[int] = set()
        for i, e in enumerate(self.entries):
            k = e.get("k")
            if k == "cmd":
                self.cmds[int(e["id"])] = {**e, "i": i}
            elif k == "done":
                self.done[int(e["id"])] = {**e, "i": i}
            elif k == "event":
                self.events.append({**e, "i": i})
                if e["call"] == EventCall.GET_COMMAND and e["hr"] == HResult.NOERROR:
                    self.delivered.add(int(e["c"]))
            elif k == "abort":
                self.aborts.append(int(e["reason"]))

    def events_of(self, call: EventCall) -> list[dict[str, Any]]:
        return [e for e in self.events if e["call"] == call]

    @property
    def first_abort(self) -> int | None:
        return self.aborts[0] if self.aborts else None

    def create_features(self) -> int | None:
        ev = self.events_of(EventCall.CREATE)
        return int(ev[0]["b"]) if ev else None


def _wire(rec: Record) -> Wire | None:
    col = rec.get("collected")
    if not col or not col.get("issued") or rec.get("engine_died"):
        return None
    return Wire(rec)


def _v(rule: str, msg: str, rec: Record, **details: Any) -> Violation:
    return Violation(rule, f"{rec.get('case', '?')}: {msg}", None, details)


def _client(rec: Record) -> dict[str, Any]:
    return dict(rec.get("client") or {})


def _hung(rec: Record) -> bool:
    return bool(_client(rec).get("hung"))


def _faults(rec: Record) -> list[dict[str, Any]]:
    return list((rec.get("plan") or {}).get("faults") or [])


def _outcome_ok(rec: Record) -> bool | None:
    if rec.get("engine_died"):
        return False
    col = rec.get("collected") or {}
    if not col.get("issued"):
        return None
    out = col.get("outcome")
    return None if out is None else bool(out.get("ok"))


def fails_before_open(rec: Record) -> bool:
    """The statement fails before the server opens the set (the client's GetConfiguration
    never returns NOERROR)."""
    return any(f["kind"] == "fail_open" for f in _faults(rec))


# ------------------------------------------------------------------------------ checks

def statement_issued(rec: Record) -> list[Violation] | None:
    """CLIENT-STATEMENT-ISSUED: the client issued exactly the statement it was given."""
    if rec.get("engine_died"):
        return None
    col = rec.get("collected") or {}
    if not col.get("issued"):
        return [_v("CLIENT-STATEMENT-ISSUED", "the client never issued its statement", rec)]
    if col.get("mismatch"):
        return [_v("CLIENT-STATEMENT-ISSUED", str(col["mismatch"]), rec,
                   statement=col.get("statement"))]
    return []


def complete_once(rec: Record) -> list[Violation] | None:
    """CLIENT-COMPLETE-ONCE: no command completed twice (or a command never delivered)."""
    w = _wire(rec)
    if w is None or not w.delivered:
        return None
    out = []
    for e in w.events_of(EventCall.COMPLETE_COMMAND):
        if e["hr"] == HResult.VD_E_INVALID:
            out.append(_v("CLIENT-COMPLETE-ONCE", f"CompleteCommand of command {e['c']} on "
                          f"device {e['dev']} returned VD_E_INVALID (completed twice or never "
                          "delivered)", rec, entry=e["i"]))
    return out


def completion_code(rec: Record) -> list[Violation] | None:
    """CLIENT-COMPLETION-CODE-WIN32: completion codes are Win32 codes, not HRESULTs."""
    w = _wire(rec)
    if w is None or not w.done:
        return None
    out = []
    for d in w.done.values():
        if not d.get("gen") and int(d["result"]) > 0xFFFF:
            out.append(_v("CLIENT-COMPLETION-CODE-WIN32", f"command {d['id']} "
                          f"({_cname(d['code'])}) completed with 0x{int(d['result']):08X}, "
                          "not a Win32 error code", rec, entry=d["i"]))
    return out


def bytes_within_size(rec: Record) -> list[Violation] | None:
    """CLIENT-BYTES-WITHIN-SIZE: bytes_transferred never above the command's size."""
    w = _wire(rec)
    if w is None:
        return None
    out = []
    seen = False
    for d in w.done.values():
        cmd = w.cmds.get(int(d["id"]))
        if cmd is None or cmd["code"] not in (CommandCode.VDC_Read, CommandCode.VDC_Write):
            continue
        seen = True
        if int(d["bytes"]) > int(cmd["size"]):
            out.append(_v("CLIENT-BYTES-WITHIN-SIZE", f"{_cname(cmd['code'])} command "
                          f"{d['id']}: bytes_transferred {d['bytes']} > size {cmd['size']}",
                          rec, entry=d["i"]))
    return out if seen else None


def _digest_gap(rec: Record, ver: dict[str, Any]) -> str | None:
    """Why the bytes a verification restore read differ from the bytes written, or None."""
    wire = (rec.get("collected") or {}).get("wire") or {}
    if not ver.get("ok"):
        return f"restoring through the same client failed: {ver.get('note', '')}".strip()
    if ver.get("compare", True):
        for dev, digest in (wire.get("written_sha256") or {}).items():
            got = (ver.get("read_sha256") or {}).get(dev)
            if got != digest:
                n_w = (wire.get("written") or {}).get(dev, 0)
                n_r = (ver.get("read") or {}).get(dev, 0)
                return (f"device {dev}: the restore read back {n_r} bytes that differ from "
                        f"the {n_w} bytes acknowledged on Write")
    return None


def _finalised_at_flush(rec: Record, ver: dict[str, Any]) -> bool:
    """The restore read exactly what had been written by some mid-stream Flush: the client
    stopped keeping data at a Flush."""
    wire = (rec.get("collected") or {}).get("wire") or {}
    written = wire.get("written") or {}
    for dev, offsets in (wire.get("flush_offsets") or {}).items():
        n_r = (ver.get("read") or {}).get(dev)
        if n_r is not None and n_r < written.get(dev, 0) and n_r in offsets:
            return True
    return False


def _complete_enabled(rec: Record) -> bool:
    w = Wire(rec)
    feats = w.create_features()
    plan = rec.get("plan") or {}
    return (feats is not None and bool(feats & Feature.VDF_RequestComplete)
            and plan.get("complete_supported", True) and plan.get("operation") == "backup")


def _mid_flush(rec: Record) -> bool:
    return bool((rec.get("plan") or {}).get("flush_every"))


def write_kept(rec: Record) -> list[Violation] | None:
    """CLIENT-WRITE-KEPT: what the client acknowledged on Write comes back, byte for byte,
    when the harness restores through the same client."""
    ver = rec.get("verify")
    if rec.get("kind") != "backup" or not ver or ver.get("hung"):
        return None  # a verification restore that hangs proves nothing about the backup
    gap = _digest_gap(rec, ver)
    if gap is None:
        return []
    if _complete_enabled(rec) and _mid_flush(rec) and _finalised_at_flush(rec, ver):
        return []  # CLIENT-COMPLETE-FINALISE names this loss
    return [_v("CLIENT-WRITE-KEPT", gap, rec)]


def complete_finalise(rec: Record) -> list[Violation] | None:
    """CLIENT-COMPLETE-FINALISE: with VDC_Complete enabled a Flush is not the end: data
    written after a Flush is kept and the backup is finalised at Complete."""
    w = _wire(rec)
    if w is None or rec.get("kind") != "backup" or not _complete_enabled(rec) \
            or not _mid_flush(rec):
        return None
    out = []
    flushed = False
    for e in w.entries:
        if e.get("k") == "done" and e["code"] == CommandCode.VDC_Flush and e["result"] == 0:
            flushed = True
        elif (flushed and e.get("k") == "done" and e["code"] == CommandCode.VDC_Write
              and not e.get("gen") and e["result"] != Win32.ERROR_SUCCESS
              and e["result"] != Win32.ERROR_OPERATION_ABORTED):
            out.append(_v("CLIENT-COMPLETE-FINALISE", f"Write {e['id']} after an "
                          f"acknowledged Flush failed with {e['result']}: the client ended "
                          "the backup at a Flush although VDC_Complete is enabled", rec))
            break
    ver = rec.get("verify")
    if not out and ver and _digest_gap(rec, ver) and _finalised_at_flush(rec, ver):
        out.append(_v("CLIENT-COMPLETE-FINALISE", "the restore returns only the data written "
                      "before a mid-stream Flush: the client finalised the backup at a Flush "
                      "although VDC_Complete is enabled", rec))
    return out


def flush_durable(rec: Record) -> list[Violation] | None:
    """CLIENT-FLUSH-DURABLE: at a Flush / Complete acknowledgement the earlier Writes are in
    the media as another process sees it (data in the OS page cache counts)."""
    snap = rec.get("snapshot_verify")
    if rec.get("kind") != "backup" or not snap or snap.get("hung"):
        return None
    ver = rec.get("verify")
    if ver and _digest_gap(rec, ver):
        return []  # the data never reached the media at all: CLIENT-WRITE-KEPT
    gap = _digest_gap(rec, snap)
    if gap is None:
        return []
    return [_v("CLIENT-FLUSH-DURABLE", "the media as copied right after the last "
               f"Flush/Complete acknowledgement does not hold the acknowledged data: {gap}",
               rec)]


def _read_past_end(rec: Record, w: Wire) -> list[dict[str, Any]]:
    """Read commands that start at or after the end of the device's data (pipe model)."""
    setup = rec.get("setup_written") or {}
    ctx = rec.get("context") or {}
    if rec.get("kind") != "restore" or not setup or ctx.get("device_model", "pipe") != "pipe":
        return []
    at: dict[int, int] = {}
    out = []
    for cid in sorted(w.cmds):
        cmd = w.cmds[cid]
        if cmd["code"] != CommandCode.VDC_Read:
            continue
        dev = int(cmd["dev"])
        end = int(setup.get(str(dev), -1))
        start = at.get(dev, 0)
        if end >= 0 and start >= end:
            out.append(cmd)
        d = w.done.get(cid)
        if d is not None and d["result"] in (0, *EOF_CODES):
            at[dev] = start + min(int(d["bytes"]), int(cmd["size"]))
    return out


def read_eof(rec: Record) -> list[Violation] | None:
    """CLIENT-READ-EOF: a Read at the end of the data is answered with ERROR_HANDLE_EOF or
    ERROR_NO_DATA_DETECTED and a short count -- never a hang, never success with nothing."""
    w = _wire(rec)
    if w is None:
        return None
    past = _read_past_end(rec, w)
    if not past:
        return None
    out = []
    for cmd in past:
        d = w.done.get(int(cmd["id"]))
        if d is None:
            if _hung(rec):  # (its GetCommand event may still sit in the client's buffer)
                out.append(_v("CLIENT-READ-EOF", f"Read {cmd['id']} at the end of the data "
                              "was never completed: the client hangs at end of data", rec))
            continue
        if d.get("gen") or d["result"] == Win32.ERROR_OPERATION_ABORTED:
            continue
        if d["result"] not in EOF_CODES or int(d["bytes"]) >= int(cmd["size"]):
            out.append(_v("CLIENT-READ-EOF", f"Read {cmd['id']} at the end of the data "
                          f"completed with {d['result']} and {d['bytes']} bytes (expected "
                          "ERROR_HANDLE_EOF / ERROR_NO_DATA_DETECTED and a short count)", rec))
    return out


def clear_error(rec: Record) -> list[Violation] | None:
    """CLIENT-CLEARERROR: ClearError is answered, normally with success."""
    w = _wire(rec)
    if w is None:
        return None
    clears = [c for c in w.cmds.values() if c["code"] == CommandCode.VDC_ClearError
              and int(c["id"]) in w.delivered]
    if not clears:
        return None
    out = []
    for c in clears:
        d = w.done.get(int(c["id"]))
        if d is None:
            if _hung(rec):
                out.append(_v("CLIENT-CLEARERROR", f"ClearError {c['id']} was never "
                              "completed", rec))
        elif not d.get("gen") and d["result"] not in (Win32.ERROR_SUCCESS,
                                                       Win32.ERROR_OPERATION_ABORTED):
            out.append(_v("CLIENT-CLEARERROR", f"ClearError {c['id']} completed with "
                          f"{d['result']}", rec))
    return out


def unknown_not_supported(rec: Record) -> list[Violation] | None:
    """CLIENT-UNKNOWN-NOT-SUPPORTED: an unknown command is answered ERROR_NOT_SUPPORTED."""
    w = _wire(rec)
    if w is None:
        return None
    unknown = [c for c in w.cmds.values() if int(c["code"]) not in KNOWN_COMMANDS
               and int(c["id"]) in w.delivered]
    if not unknown:
        return None
    out = []
    for c in unknown:
        d = w.done.get(int(c["id"]))
        if d is None or d.get("gen") or d["result"] == Win32.ERROR_OPERATION_ABORTED:
            continue
        if d["result"] != Win32.ERROR_NOT_SUPPORTED:
            out.append(_v("CLIENT-UNKNOWN-NOT-SUPPORTED", f"unknown command code {c['code']} "
                          f"completed with {d['result']}, not ERROR_NOT_SUPPORTED (50)", rec))
    return out


def close_after_end(rec: Record) -> list[Violation] | None:
    """CLIENT-CLOSE-AFTER-END: Close only after VD_E_CLOSE on every device or after abort."""
    w = _wire(rec)
    if w is None or not w.delivered:
        return None
    if AbortReason.CLIENT_CLOSE_WITH_DEVICES_OPEN in w.aborts or any(
            e["hr"] == HResult.VD_E_OPEN for e in w.events_of(EventCall.CLOSE)):
        return [_v("CLIENT-CLOSE-AFTER-END", "the client closed the set while devices were "
                   "still open (no VD_E_CLOSE, no abort): Close aborted the operation", rec)]
    return []


def _client_gone_without_abort(rec: Record, w: Wire) -> bool:
    # The client's SignalAbort may be processed after the engine saw its connection break
    # (it exits right after): its SIGNAL_ABORT event anywhere in the log counts.
    return (w.first_abort == AbortReason.PEER_DIED and not _hung(rec)
            and not _client(rec).get("killed") and not w.events_of(EventCall.SIGNAL_ABORT))


def signal_abort_own_failure(rec: Record) -> list[Violation] | None:
    """CLIENT-SIGNAL-ABORT: a client that gives up on its own signals abort (SignalAbort)
    instead of vanishing with the set active."""
    w = _wire(rec)
    if w is None or not w.events:
        return None
    if _client_gone_without_abort(rec, w) and not _timeout_gave_up(rec, w):
        return [_v("CLIENT-SIGNAL-ABORT", "the client went away with the set active, without "
                   "SignalAbort (the server only learned it from the broken connection)", rec)]
    return [] if w.first_abort == AbortReason.CLIENT_SIGNAL_ABORT else None


def buffer_after_completion(rec: Record) -> list[Violation] | None:
    """CLIENT-BUFFER-AFTER-COMPLETE: no buffer use after the command's completion."""
    w = _wire(rec)
    if w is None or not w.done:
        return None
    return [_v("CLIENT-BUFFER-AFTER-COMPLETE", m, rec)
            for m in (w.wire.get("buffer_violations") or [])[:5]]


def _stalled(rec: Record) -> bool:
    return any(f["kind"] == "stall" for f in _faults(rec))


def _timeout_gave_up(rec: Record, w: Wire) -> bool:
    if not _stalled(rec):
        return False
    timeouts = [e for e in w.events_of(EventCall.GET_COMMAND) if e["hr"] == HResult.VD_E_TIMEOUT]
    if not timeouts:
        return False
    gave_up = (w.first_abort in (AbortReason.CLIENT_SIGNAL_ABORT, AbortReason.PEER_DIED)
               and not _hung(rec))
    return gave_up


def timeout_not_fatal(rec: Record) -> list[Violation] | None:
    """CLIENT-TIMEOUT-NOT-FATAL: VD_E_TIMEOUT from a merely slow server is not a failure."""
    w = _wire(rec)
    if w is None or not _stalled(rec) or any(f["kind"] != "stall" for f in _faults(rec)):
        return None
    if _timeout_gave_up(rec, w):
        return [_v("CLIENT-TIMEOUT-NOT-FATAL", "the client gave up after VD_E_TIMEOUT while "
                   "the server was only slow (stalled, serverTimeOut 0)", rec)]
    return []


def getconfig_no_hang(rec: Record) -> list[Violation] | None:
    """CLIENT-GETCONFIG-NO-HANG: a statement that fails before the set is opened does not
    leave the client waiting in GetConfiguration."""
    if not fails_before_open(rec) or rec.get("engine_died"):
        return None
    if _hung(rec):
        return [_v("CLIENT-GETCONFIG-NO-HANG", "the statement failed before the server opened "
                   "the set and the client still waits (GetConfiguration)", rec,
                   stacks=_client(rec).get("stacks", "")[:4000])]
    return []


def devices_concurrent(rec: Record) -> list[Violation] | None:
    """CLIENT-DEVICES-CONCURRENT: every device is served while the others wait."""
    w = _wire(rec)
    n = len((rec.get("context") or {}).get("devices") or ())
    if w is None or n < 2:
        return None
    if not _hung(rec):
        return []
    starved = sorted({int(c["dev"]) for c in w.cmds.values()
                      if int(c["id"]) not in w.delivered and int(c["id"]) not in w.done})
    if starved:
        return [_v("CLIENT-DEVICES-CONCURRENT", f"hang with commands never fetched on device(s) "
                   f"{starved}: the client does not serve its devices independently", rec)]
    return []


def _hang_attributed(rec: Record) -> bool:
    w = _wire(rec)
    if fails_before_open(rec):
        return True
    if w is None:
        return False
    return bool(read_eof(rec) or devices_concurrent(rec) or clear_error(rec))


def no_hang(rec: Record) -> list[Violation] | None:
    """CLIENT-NO-HANG: the client ends (the watchdog turns a hang into this verdict)."""
    if rec.get("client") is None:
        return None
    if _hung(rec) and not _hang_attributed(rec):
        return [_v("CLIENT-NO-HANG", f"the client did not end within "
                   f"{_client(rec).get('limit_s', '?')} s", rec,
                   stacks=_client(rec).get("stacks", "")[:4000])]
    return []


def success_agrees(rec: Record) -> list[Violation] | None:
    """CLIENT-SUCCESS-AGREES: the client's reported success agrees with the statement."""
    c = _client(rec)
    if not c or c.get("hung") or c.get("believed_ok") is None:
        return None
    ok = _outcome_ok(rec)
    if ok is None:
        return None
    if bool(c["believed_ok"]) != ok:
        said = "success" if c["believed_ok"] else "failure"
        real = "succeeded" if ok else "failed"
        return [_v("CLIENT-SUCCESS-AGREES", f"the client reported {said} but the statement "
                   f"{real}", rec, errors=(rec.get("collected") or {}).get("outcome"))]
    return []


CHECKS: dict[str, Check] = {
    "statement_issued": statement_issued,
    "complete_once": complete_once,
    "completion_code": completion_code,
    "bytes_within_size": bytes_within_size,
    "write_kept": write_kept,
    "complete_finalise": complete_finalise,
    "flush_durable": flush_durable,
    "read_eof": read_eof,
    "clear_error": clear_error,
    "unknown_not_supported": unknown_not_supported,
    "close_after_end": close_after_end,
    "signal_abort_own_failure": signal_abort_own_failure,
    "buffer_after_completion": buffer_after_completion,
    "timeout_not_fatal": timeout_not_fatal,
    "getconfig_no_hang": getconfig_no_hang,
    "devices_concurrent": devices_concurrent,
    "no_hang": no_hang,
    "success_agrees": success_agrees,
}


def judge(rec: Record, rule_ids: list[str] | None = None
          ) -> tuple[list[Violation], list[str]]:
    """Run every client rule's check on ``rec``: (violations, IDs of rules that held)."""
    from conformance.catalogue.client import RULES

    violations: list[Violation] = []
    held: list[str] = []
    for rule in RULES:
        if rule_ids is not None and rule.id not in rule_ids:
            continue
        res = CHECKS[rule.check](rec)
        if res is None:
            continue
        if res:
            violations.extend(res)
        else:
            held.append(rule.id)
    return violations, held


def _cname(code: int) -> str:
    try:
        return CommandCode(int(code)).name
    except ValueError:
        return f"command {code}"
