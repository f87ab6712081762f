#!/usr/bin/env python3
"""An ``--exec`` client of the client harness that issues its statement through a real SQL
Server driver (pytds) on the context's ``tds_address``, not through vdisim's Python API: a
backup tool pointed at vdisim's TDS endpoint (docs/tds.md).  The VDI side is the one of
conformance/harness/clients/exec_example.py (pipe devices, files in ``media_dir``).

    vdisim run backup-plain restore-plain \\
        --exec 'python tests/tds_drivers/harness_pytds_client.py {context}'
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import pytds

from conformance.harness.clients.exec_example import serve
from vdisim.client import VirtualDeviceSet
from vdisim.protocol.codes import Feature, HResult
from vdisim.protocol.records import VDConfig


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        ctx: dict[str, Any] = json.load(f)
    if not ctx.get("tds_address"):
        print("the harness gave no tds_address", file=sys.stderr)
        return 2
    host, _, port = str(ctx["tds_address"]).rpartition(":")
    devices: list[str] = list(ctx["devices"])
    timeouts: dict[str, int] = dict(ctx.get("timeouts") or {})
    media_dir: str = ctx["media_dir"]
    os.makedirs(media_dir, exist_ok=True)
    features = Feature.VDF_RequestComplete if "VDF_RequestComplete" in (
        ctx.get("features") or ()) else 0
    vds = VirtualDeviceSet()
    if vds.create(ctx["set_name"], VDConfig(device_count=len(devices), features=features),
                  ctx.get("instance")) != HResult.NOERROR:
        return 1
    outcome: dict[str, Any] = {}

    def statement() -> None:
        try:
            with pytds.connect(server=host, port=int(port), user="sa", password="x",
                               autocommit=True, login_timeout=15) as conn:
                cur = conn.cursor()
                cur.execute(ctx["statement"])
                while cur.description or cur.nextset():
                    if cur.description:
                        cur.fetchall()
                        if not cur.nextset():
                            break
                outcome["ok"] = True
        except Exception as exc:  # the statement failed: the driver says why
            outcome["error"] = exc

    sql = threading.Thread(target=statement, daemon=True)
    sql.start()
    limit = time.monotonic() + timeouts.get("case_s", 60)
    while True:
        hr, cfg = vds.get_configuration(200)
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
            w = threading.Thread(target=serve, daemon=True, args=(
                dev, os.path.join(media_dir, f"stripe{i}.vbak"), writing,
                timeouts.get("get_command_ms", 1000), failed))
            w.start()
            workers.append(w)
        for w in workers:
            w.join(max(0.0, limit - time.monotonic()))
            if w.is_alive():
                vds.signal_abort()
                failed.set()
                w.join(5.0)
    vds.close()
    sql.join(timeouts.get("case_s", 60))
    ok = bool(outcome.get("ok")) and not failed.is_set()
    print("success" if ok else f"failure: {outcome.get('error')!r}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
