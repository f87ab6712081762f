"""``vdisim demo``: back up a demo database over VDI to files, restore it, verify it.

Starts a private engine process, creates a synthetic database, runs the bundled reference
client (vdisim/refclient.py) for BACKUP over two devices into files, then RESTOREs from those
files into a new database and compares the two byte for byte.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from typing import TextIO

from vdisim import refclient
from vdisim.engine import Engine


class ProgressBar:
    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(1, total)
        self.done = 0
        self.lock = threading.Lock()
        self.out = stream or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self._last = -1

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            pct = min(100, self.done * 100 // self.total)
            if pct == self._last or (not self.tty and pct % 25):
                return
            self._last = pct
            bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
            end = "\r" if self.tty and pct < 100 else "\n"
            print(f"  {self.label:8} [{bar}] {pct:3d}%", end=end, file=self.out, flush=True)


def run_demo(seed: int = 0, size_mb: int = 256, devices: int = 2) -> int:
    media_dir = tempfile.mkdtemp(prefix="vdisim-demo-")
    print(f"vdisim demo: {size_mb} MiB database, {devices} virtual devices, media in {media_dir}")
    try:
        with Engine.start(seed=seed) as engine:
            conn = engine.connect()
            conn.execute(f"CREATE DATABASE demo WITH SIZE_MB = {size_mb}, SEED = {seed}",
                         check=True)
            conn.execute("EXEC sp_vdisim_workload 'demo', 1000", check=True)
            source = conn.execute("EXEC sp_vdisim_checksum 'demo'").rowsets[0].rows[0][1]
            size = size_mb * 1024 * 1024
            options = "MAXTRANSFERSIZE = 1048576, BUFFERCOUNT = 8, CHECKSUM, STATS = 25"

            bar = ProgressBar("backup", size)
            t0 = time.monotonic()
            b = refclient.backup(conn, "demo", media_dir, devices=devices, options=options,
                                 on_bytes=bar.add)
            t_backup = time.monotonic() - t0
            if not b.ok:
                print("BACKUP failed:\n" + (b.result.text() if b.result else "\n".join(b.log)))
                return 1
            _print_messages(b)

            bar = ProgressBar("restore", b.bytes)
            t0 = time.monotonic()
            r = refclient.restore(conn, "demo_restored", media_dir, devices=devices,
                                  options="CHECKSUM, STATS = 25", on_bytes=bar.add)
            t_restore = time.monotonic() - t0
            if not r.ok:
                print("RESTORE failed:\n" + (r.result.text() if r.result else "\n".join(r.log)))
                return 1
            _print_messages(r)
            restored = conn.execute("EXEC sp_vdisim_checksum 'demo_restored'").rowsets[0].rows[0][1]
            conn.close()
        mib = b.bytes / 1048576
        print(f"backup:  {mib:.1f} MiB in {t_backup:.2f} s ({mib / t_backup:.0f} MiB/s), "
              f"{len(b.devices)} devices, files: {sum(_file_sizes(media_dir))} bytes on disk")
        print(f"restore: {r.bytes / 1048576:.1f} MiB in {t_restore:.2f} s "
              f"({r.bytes / 1048576 / t_restore:.0f} MiB/s)")
        if restored != source:
            print(f"restore NOT verified: sha256 {restored} != {source}")
            return 1
        print(f"restore verified: sha256 {source[:16]}... identical")
        return 0
    finally:
        shutil.rmtree(media_dir, ignore_errors=True)


def _print_messages(report: refclient.ClientReport) -> None:
    assert report.result is not None
    for m in report.result.messages:
        if m.number in (3014,):
            print(f"  {m.text}")


def _file_sizes(d: str) -> list[int]:
    return [os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)]
