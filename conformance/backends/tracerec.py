"""Trace recording for live mode: the real command stream as a plan the simulator replays.

A :class:`TraceRecorder` sees every client call a native backend makes (``NativeClient``'s
``on_call`` hook) and every statement it starts.  One *session* runs from a successful Create to
Close.  At Close it writes two files to its directory:

* ``NNNN-<operation>.trace.json`` -- what happened: the statement, the final VDConfig, and
  every command delivered and completed (device, code, size, position, completion code, bytes,
  milliseconds since Create), in order;
* ``NNNN-<operation>.plan.json`` -- a vdisim plan (docs/plan.md) with the same shape: operation,
  device count, block size, transfer size, buffer count, number of Flushes, commands sent
  before the data, restore Read sizes, and server-side pauses of 500 ms or more as ``stall``
  faults.  ``vdisim.engine.Plan.loads`` reads it; :func:`replay_devices` renames its devices so
  that it can be run again (``conn.run_plan``) with a fresh set name.

Nothing secret is recorded (no credentials, no data bytes).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from vdisim.engine.plan import Fault, Plan
from vdisim.protocol.codes import CommandCode, Feature
from vdisim.protocol.records import VDConfig

__all__ = ["SessionTrace", "TraceRecorder", "command_shape", "plan_from_trace", "replay_devices"]

TRACE_KIND = "vdisim-live-trace"
STALL_MIN_MS = 500
STALL_MAX_MS = 10_000
_DATA = (int(CommandCode.VDC_Read), int(CommandCode.VDC_Write))
_POSITIONING = (int(CommandCode.VDC_Rewind), int(CommandCode.VDC_GetPosition),
                int(CommandCode.VDC_SetPosition), int(CommandCode.VDC_ClearError))


class SessionTrace:
    """One VDI session of one client object."""

    def __init__(self, name: str, device_count: int, features: int, statement: str | None
                 ) -> None:
        self.name = name
        self.device_count = device_count
        self.features = features
        self.statement = statement
        self.t0 = time.monotonic()
        self.config: VDConfig | None = None
        self.devices: dict[int, str] = {}  # device handle -> name
        self.events: list[dict[str, Any]] = []
        self.ends: dict[int, int] = {}  # device handle -> final GetCommand HRESULT

    def ms(self) -> float:
        return round((time.monotonic() - self.t0) * 1000.0, 3)

    def to_json(self) -> dict[str, Any]:
        return {"kind": TRACE_KIND, "version": 1, "set": self.name,
                "device_count": self.device_count, "features": self.features,
                "statement": self.statement,
                "config": self.config.pack().hex() if self.config else None,
                "devices": {str(k): v for k, v in self.devices.items()},
                "ends": {str(k): v for k, v in self.ends.items()}, "events": self.events}


class TraceRecorder:
    """Collects sessions; thread-safe (one thread per device calls in)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._lock = threading.Lock()
        self._open: dict[int, SessionTrace] = {}  # client id -> session
        self.written: list[tuple[str, str]] = []  # (trace path, plan path)

    def on_statement(self, sql: str) -> None:
        """A statement started: it belongs to the open sessions that have none yet (Create
        comes first, then the statement names the set, live-mode.md §3.1)."""
        with self._lock:
            for s in self._open.values():
                if s.statement is None:
                    s.statement = sql

    def on_call(self, call: str, args: dict[str, Any], hr: int, out: dict[str, Any]) -> None:
        client = int(args.get("client", 0))
        with self._lock:
            s = self._open.get(client)
            if call == "create":
                if hr == 0:
                    self._open[client] = SessionTrace(str(args["name"]),
                                                      int(args["device_count"]),
                                                      int(args["features"]), None)
                return
            if s is None:
                return
            if call == "get_configuration" and hr == 0 and out.get("config"):
                s.config = VDConfig.unpack(bytes.fromhex(out["config"]))
            elif call == "open_device" and hr == 0 and out.get("device") is not None:
                s.devices[int(out["device"])] = str(args["name"])
            elif call == "get_command":
                if hr == 0:
                    s.events.append({"t_ms": s.ms(), "device": args["device"], "op": "command",
                                     "code": out["code"], "size": out["size"],
                                     "position": out["position"]})
                elif hr != 0x80770003:  # VD_E_TIMEOUT is not an end
                    s.ends[int(args["device"])] = hr
            elif call == "complete_command" and hr == 0:
                s.events.append({"t_ms": s.ms(), "device": args["device"], "op": "complete",
                                 "completion": args["code"], "bytes": args["bytes"]})
            elif call == "close":
                del self._open[client]
                self._write(s)

    def _write(self, s: SessionTrace) -> None:
        n = len(self.written) + 1
        try:
            plan: Plan | None = plan_from_trace(s)
        except ValueError:
            plan = None
        op = plan.operation if plan else "session"
        base = os.path.join(self.directory, f"{n:04d}-{op}")
        data = s.to_json()
        data["plan"] = plan.to_json() if plan else None
        with open(base + ".trace.json", "w") as f:
            json.dump(data, f, indent=1)
        plan_path = ""
        if plan is not None:
            plan_path = base + ".plan.json"
            with open(plan_path, "w") as f:
                f.write(plan.dumps())
        self.written.append((base + ".trace.json", plan_path))


def _operation(statement: str | None, features: int) -> tuple[str, str, str | None]:
    """(operation, kind, database) from the statement, else the direction bits."""
    sql = statement or ""
    m = re.match(r"\s*(BACKUP|RESTORE)\s+(DATABASE|LOG|VERIFYONLY|HEADERONLY|FILELISTONLY|"
                 r"LABELONLY)\b\s*(\[[^\]]+\]|\w+)?", sql, re.IGNORECASE)
    if m:
        verb, what, db = m.group(1).upper(), m.group(2).upper(), m.group(3)
        database = db.strip("[]") if db and what in ("DATABASE", "LOG") else None
        kind = "log" if what == "LOG" else ("diff" if "DIFFERENTIAL" in sql.upper() else "full")
        if verb == "BACKUP":
            return "backup", kind, database
        if what in ("DATABASE", "LOG"):
            return "restore", kind, database
        return what.lower(), "full", None
    if features & Feature.VDF_WriteMedia:
        return "backup", "full", None
    if features & Feature.VDF_ReadMedia:
        return "restore", "full", None
    raise ValueError("cannot tell the operation of this session")


def plan_from_trace(s: SessionTrace) -> Plan:
    """A plan with the recorded stream's shape (see the module docstring)."""
    if s.config is None:
        raise ValueError("the session never got its configuration")
    cfg = s.config
    operation, kind, database = _operation(s.statement, cfg.features)
    per_dev: dict[int, list[dict[str, Any]]] = {}
    for e in s.events:
        per_dev.setdefault(int(e["device"]), []).append(e)
    flushes = 0
    optional: list[int] = []
    reads: list[int] = []
    faults: list[Fault] = []
    order = sorted(s.devices)
    for pos, dev in enumerate(order):
        evs = per_dev.get(dev, [])
        cmds = [e for e in evs if e["op"] == "command"]
        flushes = max(flushes, sum(1 for e in cmds if e["code"] == CommandCode.VDC_Flush))
        if pos == 0:
            for e in cmds:
                if e["code"] in _DATA:
                    break
                if e["code"] not in _POSITIONING:
                    optional.append(int(e["code"]))
        reads += [int(e["size"]) for e in cmds if e["code"] == CommandCode.VDC_Read]
        # server-side pauses: a data command delivered long after the previous completion
        last_done: float | None = None
        step = 0
        for e in evs:
            if e["op"] == "complete":
                last_done = float(e["t_ms"])
            elif e["code"] in _DATA:
                if last_done is not None and e["t_ms"] - last_done >= STALL_MIN_MS:
                    faults.append(Fault("stall", device=pos, step=step,
                                        ms=int(min(STALL_MAX_MS, e["t_ms"] - last_done))))
                step += 1
    mts = cfg.max_transfer_size or 65536
    full_reads = reads[:-2] if len(reads) > 2 else []
    read_sizes = "max" if full_reads and all(r == mts for r in full_reads) else "random"
    sql = (s.statement or "").upper()
    names = tuple(s.devices[d] for d in order) or (s.name,)
    plan = Plan(operation=operation, database=database or (  # type: ignore[arg-type]
        "live_trace" if operation in ("backup", "restore") else None),
        devices=names, kind=kind,  # type: ignore[arg-type]
        block_size=cfg.block_size or None, max_transfer_size=mts,
        buffer_count=max(1, min(65536, cfg.buffer_area_size // mts)) if cfg.buffer_area_size
        else None,
        copy_only="COPY_ONLY" in sql, checksum="CHECKSUM" in sql and "NO_CHECKSUM" not in sql,
        compression="COMPRESSION" in sql and "NO_COMPRESSION" not in sql,
        flushes=min(16, flushes) if operation == "backup" else 1,
        read_sizes=read_sizes,  # type: ignore[arg-type]
        optional_commands=tuple(optional), faults=tuple(faults))
    return plan.validate()


def replay_devices(plan: Plan, set_name: str) -> Plan:
    """The plan with its devices renamed after ``set_name`` (``<set>``, ``<set>1``, ...)."""
    import attrs

    names = (set_name, *(f"{set_name}{i}" for i in range(1, len(plan.devices))))
    return attrs.evolve(plan, devices=names)


def command_shape(codes: Sequence[int]) -> list[tuple[int, int]]:
    """A command-code sequence with runs collapsed: [(code, run length), ...]."""
    out: list[tuple[int, int]] = []
    for c in codes:
        if out and out[-1][0] == c:
            out[-1] = (c, out[-1][1] + 1)
        else:
            out.append((int(c), 1))
    return out
