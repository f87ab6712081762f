"""Command round trip: SendCommand -> GetCommand -> CompleteCommand -> the engine sees it.

A server-side set (``ServerVirtualDeviceSet``, the engine's half) runs in a child process and
sends ``VDC_Flush`` commands one at a time; this process's client does GetCommand /
CompleteCommand.  The child times SendCommand until the command's completion routine runs on
its completion agent (the moment "the engine sees the completion").  The first 10 % of the
samples are dropped as warm-up.

With ``trace=True`` every hop is timestamped (``time.monotonic_ns``, the same clock in both
processes): engine SendCommand -> client hub has the frame -> GetCommand returns ->
CompleteCommand has sent -> engine completion routine.  The hub timestamp comes from a wrapper
around the client's ``Channel.read_available`` installed for the run (benchmark-side only).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.baselines import summarize
from vdisim.client import VirtualDeviceSet
from vdisim.protocol import VDConfig
from vdisim.protocol.codes import HResult
from vdisim.transport import channel as channel_mod

GET_TIMEOUT_MS = 60_000


def _child(name: str, n: int) -> None:
    import threading

    from vdisim.engine.server_vds import ServerCommand, ServerVirtualDeviceSet
    from vdisim.protocol.codes import CommandCode, Feature

    s = ServerVirtualDeviceSet()
    if s.open(name) != HResult.NOERROR:
        raise SystemExit("open failed")
    s.begin_configuration(Feature.VDF_WriteMedia, 512, 0, 65536)
    s.request_buffers(65536, 0, 1)
    if s.end_configuration() != HResult.NOERROR:
        raise SystemExit("end_configuration failed")
    _hr, dev = s.open_device()
    assert dev is not None
    agent = threading.Thread(target=s.execute_completion_agent, daemon=True)
    agent.start()
    done = threading.Event()
    seen = [0]

    def routine(_c: ServerCommand) -> None:
        seen[0] = time.monotonic_ns()
        done.set()

    sent: list[int] = []
    got: list[int] = []
    cpu0 = _cpu()
    user0 = _user()
    for _ in range(n):
        done.clear()
        t0 = time.monotonic_ns()
        dev.send_command(ServerCommand(CommandCode.VDC_Flush, completion_routine=routine))
        if not done.wait(10):
            raise SystemExit("no completion within 10 s")
        sent.append(t0)
        got.append(seen[0])
    cpu = _cpu() - cpu0
    user = _user() - user0
    dev.close_device()
    s.close()
    agent.join(5)
    s.dispose()
    sys.stdout.write(json.dumps({"sent": sent, "seen": got, "cpu_s": cpu, "user_s": user}))


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _user() -> float:
    return os.times().user


@contextmanager
def _hub_clock(stamps: list[int], sends: list[int]) -> Iterator[None]:
    """Record when the client's hub has read frames off the engine's socket, and when the
    client is about to write to it."""
    orig = channel_mod.Channel.read_available
    orig_send = channel_mod.Channel.send

    def wrapped(self: channel_mod.Channel) -> list[Any]:
        out = orig(self)
        if out:
            stamps.append(time.monotonic_ns())
        return out

    def wrapped_send(self: channel_mod.Channel, data: bytes = b"") -> None:
        sends.append(time.monotonic_ns())
        orig_send(self, data)

    channel_mod.Channel.read_available = wrapped  # type: ignore[method-assign]
    channel_mod.Channel.send = wrapped_send  # type: ignore[method-assign]
    try:
        yield
    finally:
        channel_mod.Channel.read_available = orig  # type: ignore[method-assign]
        channel_mod.Channel.send = orig_send  # type: ignore[method-assign]


def vdisim_roundtrip(n: int, *, trace: bool = False) -> dict[str, Any]:
    """Median/p99 of the command round trip in microseconds (and hops with ``trace``)."""
    name = "bnrt-" + uuid.uuid4().hex[:16]
    vds = VirtualDeviceSet()
    if vds.create(name, VDConfig(device_count=1)) != HResult.NOERROR:
        raise RuntimeError("Create failed")
    child = subprocess.Popen([sys.executable, "-m", "benchmarks.roundtrip", name, str(n)],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    hub: list[int] = []
    sends: list[int] = []
    got: list[int] = []
    try:
        with _hub_clock(hub, sends) if trace else _null():
            hr, _ = vds.get_configuration(GET_TIMEOUT_MS)
            if hr != HResult.NOERROR:
                raise RuntimeError(f"GetConfiguration: 0x{hr:08x}")
            hr, dev = vds.open_device(name)
            if dev is None:
                raise RuntimeError(f"OpenDevice: 0x{hr:08x}")
            hub.clear()
            sends.clear()
            cpu0 = _cpu()
            user0 = _user()
            while True:
                hr, cmd = dev.get_command(GET_TIMEOUT_MS)
                if cmd is None:
                    break
                got.append(time.monotonic_ns())
                dev.complete_command(cmd, 0, 0, 0)
            client_cpu = _cpu() - cpu0
            client_user = _user() - user0
    finally:
        vds.close()
        out, _ = child.communicate(timeout=120)
    data = json.loads(out)
    sent, seen = data["sent"], data["seen"]
    rt = [(b - a) / 1000 for a, b in zip(sent, seen, strict=True)]
    result: dict[str, Any] = {"n": n, **summarize(rt),
                              "client_cpu_us_per_rt": client_cpu / n * 1e6,
                              "client_user_us_per_rt": client_user / n * 1e6,
                              "engine_cpu_us_per_rt": data["cpu_s"] / n * 1e6,
                              "engine_user_us_per_rt": data["user_s"] / n * 1e6}
    if trace and len(hub) >= n and len(got) >= n and len(sends) >= n:
        hops: dict[str, list[float]] = {
            "engine SendCommand -> client hub has read the frame": [],
            "hub has the frame -> GetCommand returns": [],
            "GetCommand returns -> client writes the completion": [],
            "client writes the completion -> engine completion routine": []}
        hub_iter, send_iter = iter(hub), iter(sends)
        h = next(hub_iter)
        w = next(send_iter)
        skip = n // 10
        for i in range(n):
            while h < sent[i]:  # the hub's first read after SendCommand
                h = next(hub_iter, sent[i])
            while w < got[i]:  # the first write after GetCommand returned
                w = next(send_iter, got[i])
            if i < skip:
                continue
            hops["engine SendCommand -> client hub has read the frame"].append(
                (h - sent[i]) / 1000)
            hops["hub has the frame -> GetCommand returns"].append((got[i] - h) / 1000)
            hops["GetCommand returns -> client writes the completion"].append(
                (w - got[i]) / 1000)
            hops["client writes the completion -> engine completion routine"].append(
                (seen[i] - w) / 1000)
        result["hops_median_us"] = {k: round(statistics.median(v), 1)
                                    for k, v in hops.items() if v}
    return result


@contextmanager
def _null() -> Iterator[None]:
    yield


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
