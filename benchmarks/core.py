"""Core measurements for the closing note of the core-simulator issue.

    python benchmarks/core.py throughput [--gib 1] [--mts 1048576]
    python benchmarks/core.py roundtrip [--n 20000]

throughput: BACKUP of an N GiB synthetic database over one virtual device at MAXTRANSFERSIZE
`--mts`; the client reads nothing and completes each Write at once (discarding).  Measured from
the first GetCommand to the last completion, and the statement's own 3014 figure.  Path: pages
already in the engine's memory, page checksums precomputed, one memcpy per byte into shared
memory, no media I/O on the client.

roundtrip: one server-side set in a child process sends VDC_Flush commands one at a time; this
process's client GetCommand/CompleteCommand; the child times SendCommand -> completion routine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from vdisim.client import VirtualDeviceSet
from vdisim.engine import Engine
from vdisim.protocol import VDConfig
from vdisim.protocol.codes import INFINITE, HResult

CHILD = r'''
import json, sys, threading, time
from vdisim.engine.server_vds import ServerVirtualDeviceSet, ServerCommand
from vdisim.protocol.codes import Feature, CommandCode
name, n = sys.argv[1], int(sys.argv[2])
s = ServerVirtualDeviceSet()
assert s.open(name) == 0
s.begin_configuration(Feature.VDF_WriteMedia, 512, 0, 65536)
s.request_buffers(65536, 0, 1)
assert s.end_configuration() == 0
hr, dev = s.open_device()
t = threading.Thread(target=s.execute_completion_agent, daemon=True); t.start()
done = threading.Event()
def cb(c): done.set()
times = []
for i in range(n):
    done.clear()
    t0 = time.perf_counter_ns()
    dev.send_command(ServerCommand(CommandCode.VDC_Flush, completion_routine=cb))
    done.wait(10)
    times.append(time.perf_counter_ns() - t0)
dev.close_device()
s.close(); t.join(5); s.dispose()
print(json.dumps(times))
'''


def roundtrip(n: int) -> dict[str, float]:
    name = "rt-" + uuid.uuid4().hex
    vds = VirtualDeviceSet()
    assert vds.create(name, VDConfig(device_count=1)) == HResult.NOERROR
    child = subprocess.Popen([sys.executable, "-c", CHILD, name, str(n)], stdout=subprocess.PIPE)
    hr, _ = vds.get_configuration(10_000)
    assert hr == HResult.NOERROR, hex(hr)
    hr, dev = vds.open_device(name)
    assert dev is not None
    while True:
        hr, cmd = dev.get_command(INFINITE)
        if cmd is None:
            break
        dev.complete_command(cmd, 0, 0, 0)
    vds.close()
    out, _ = child.communicate(timeout=60)
    times = sorted(json.loads(out))[n // 10:]  # drop the first 10 % as warm-up outliers
    times = json.loads(out)[n // 10:]
    times.sort()
    return {"n": n, "median_us": statistics.median(times) / 1000,
            "p99_us": times[int(len(times) * 0.99)] / 1000}


def throughput(gib: float, mts: int) -> dict[str, Any]:
    size_mb = int(gib * 1024)
    with Engine.start() as eng:
        conn = eng.connect()
        conn.execute(f"CREATE DATABASE big WITH SIZE_MB = {size_mb}", check=True)
        name = "tp-" + uuid.uuid4().hex
        vds = VirtualDeviceSet()
        assert vds.create(name, VDConfig(device_count=1)) == HResult.NOERROR
        res: dict[str, object] = {}
        th = threading.Thread(target=lambda: res.setdefault("r", conn.execute(
            f"BACKUP DATABASE big TO VIRTUAL_DEVICE='{name}' WITH MAXTRANSFERSIZE = {mts}, "
            "BUFFERCOUNT = 8")))
        th.start()
        hr, _cfg = vds.get_configuration(60_000)
        assert hr == HResult.NOERROR, hex(hr)
        hr, dev = vds.open_device(name)
        assert dev is not None
        nbytes = 0
        t0 = None
        while True:
            hr, cmd = dev.get_command(INFINITE)
            if cmd is None:
                break
            if t0 is None:
                t0 = time.perf_counter()
            nbytes += cmd.size if cmd.command_code == 2 else 0
            dev.complete_command(cmd, 0, cmd.size, 0)
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
        vds.close()
        th.join()
        r = res["r"]
        msg = [m.text for m in r.messages if m.number == 3014]  # type: ignore[attr-defined]
    return {"bytes": nbytes, "seconds": elapsed, "GiB_per_s": nbytes / elapsed / 2**30,
            "MB_per_s": nbytes / elapsed / 1e6, "engine_3014": msg[0] if msg else ""}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["throughput", "roundtrip"])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--mts", type=int, default=1 << 20)
    ap.add_argument("--n", type=int, default=20000)
    a = ap.parse_args()
    result = throughput(a.gib, a.mts) if a.what == "throughput" else roundtrip(a.n)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
