#!/usr/bin/env python3
"""A standalone ``--exec`` client: what a backup tool written against vdisim's client library
looks like when the harness runs it as a program.

    vdisim run backup-plain --exec 'python -m conformance.harness.clients.exec_example {context}'
    vdisim check-client --exec 'python path/to/exec_example.py {context}'

The harness writes the case's context as JSON (docs/client-harness.md) and replaces
``{context}`` with its path.  This script reads that JSON with nothing but :mod:`json` (a
program in another language would do the same), creates the virtual device set, issues the
statement on its own connection to the engine, serves every device on its own thread with files
in ``media_dir`` (pipe model: ``stripe<i>.vbak``), and exits 0 only if the statement succeeded.

It covers what most real tools do -- BACKUP and RESTORE on pipe devices, VDC_Complete, EOF,
ClearError, unknown commands, abort -- and declares exactly that to the harness::

    --capabilities '{"operations": ["backup", "restore", "verifyonly", "headeronly",
                     "filelistonly", "labelonly"], "complete": true}'
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from vdisim.client import VirtualDevice, VirtualDeviceSet
from vdisim.engine.connection import Connection
from vdisim.protocol.codes import CommandCode, Feature, HResult, Win32
from vdisim.protocol.records import VDConfig

CAPABILITIES = {"operations": ["backup", "restore", "verifyonly", "headeronly",
                               "filelistonly", "labelonly"],
                "multi_device": True, "complete": True, "snapshot": False, "tape": False,
                "disk": False, "restore": True}


def serve(dev: VirtualDevice, path: str, writing: bool, timeout_ms: int,
          failed: threading.Event) -> None:
    """One device: Write appends to the file, Read reads it back; EOF as a short count."""
    with open(path, "wb" if writing else "rb") as f:
        while True:
            hr, cmd = dev.get_command(timeout_ms)
            if hr == HResult.VD_E_TIMEOUT:
                continue  # a slow server is not an error (§2.4)
            if cmd is None:
                return  # VD_E_CLOSE: done; VD_E_ABORT: the operation is over
            code, nbytes = Win32.ERROR_SUCCESS, 0
            try:
                if cmd.command_code == CommandCode.VDC_Write and cmd.buffer is not None:
                    nbytes = f.write(cmd.buffer)
                elif cmd.command_code == CommandCode.VDC_Read and cmd.buffer is not None:
                    nbytes = f.readinto(cmd.buffer)  # type: ignore[attr-defined]
                    if nbytes < cmd.size:
                        code = Win32.ERROR_HANDLE_EOF
                elif cmd.command_code in (CommandCode.VDC_Flush, CommandCode.VDC_Complete):
                    f.flush()
                    os.fsync(f.fileno())  # acknowledged means durable (§6.4)
                elif cmd.command_code != CommandCode.VDC_ClearError:
                    code = Win32.ERROR_NOT_SUPPORTED  # anything else, unknown codes too
            except OSError:
                code = Win32.ERROR_DISK_FULL if writing else Win32.ERROR_IO_DEVICE
            if dev.complete_command(cmd, code, nbytes, 0) == HResult.VD_E_ABORT:
                failed.set()
                return


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: exec_example.py CONTEXT.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        ctx: dict[str, Any] = json.load(f)
    devices: list[str] = list(ctx["devices"])
    timeouts: dict[str, int] = dict(ctx.get("timeouts") or {})
    media_dir: str = ctx["media_dir"]
    os.makedirs(media_dir, exist_ok=True)
    features = 0
    if "VDF_RequestComplete" in (ctx.get("features") or ()):
        features |= Feature.VDF_RequestComplete
    server_timeout = int((ctx.get("extra") or {}).get("server_timeout_ms") or 0)

    vds = VirtualDeviceSet()
    hr = vds.create(ctx["set_name"], VDConfig(device_count=len(devices), features=features,
                                              server_timeout=server_timeout),
                    ctx.get("instance"))
    if hr != HResult.NOERROR:
        print(f"Create failed: 0x{hr:08X}", file=sys.stderr)
        return 1
    outcome: dict[str, Any] = {}

    def statement() -> None:
        try:
            with Connection(ctx["engine_address"]) as conn:
                outcome["result"] = conn.execute(ctx["statement"])
        except Exception as exc:  # the engine went away
            outcome["error"] = exc

    sql = threading.Thread(target=statement, daemon=True)
    sql.start()
    limit = time.monotonic() + timeouts.get("case_s", 60)
    slice_ms = max(1, min(200, timeouts.get("get_configuration_ms", 200)))
    while True:  # short waits; give up as soon as the statement has ended (§1.6 step 6)
        hr, cfg = vds.get_configuration(slice_ms)
        if hr != HResult.VD_E_TIMEOUT or not sql.is_alive() or time.monotonic() > limit:
            break
    failed = threading.Event()
    if hr == HResult.NOERROR and cfg is not None:
        writing = bool(cfg.features & Feature.VDF_WriteMedia)
        workers = []
        for i, name in enumerate(devices):
            hr, dev = vds.open_device(name)
            if dev is None:
                vds.signal_abort()
                failed.set()
                break
            path = os.path.join(media_dir, f"stripe{i}.vbak")
            w = threading.Thread(target=serve, daemon=True, args=(
                dev, path, writing, timeouts.get("get_command_ms", 1000), failed))
            w.start()
            workers.append(w)
        case_end = time.monotonic() + timeouts.get("case_s", 60)
        for w in workers:
            w.join(max(0.0, case_end - time.monotonic()))
            if w.is_alive():  # never hang: give up on our own, and say so (§2.6)
                vds.signal_abort()
                failed.set()
                w.join(5.0)
    vds.close()  # after VD_E_CLOSE on every device, or after the abort
    sql.join(timeouts.get("case_s", 60))
    result = outcome.get("result")
    ok = result is not None and result.ok and not failed.is_set()
    print("success" if ok else f"failure: {result.error_numbers if result else outcome}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
