"""The machine's own limits, measured with the same sizes and the same consumer work.

Every baseline runs between this process (the *consumer*, which reads each buffer into a
private scratch buffer and discards it -- exactly what the vdisim client does in the stream
benchmarks) and a child process (the *producer*, which copies each buffer from a source held
in memory -- exactly what the engine does with database pages):

- ``ring``: a shared-memory ring of ``count`` slots of ``size`` bytes (a ``memfd`` mapped by
  both processes, the same kind of tmpfs memory as ``/dev/shm``) with the transport's
  signalling: a 52-byte COMMAND-sized frame per buffer on a connected AF_UNIX stream socket,
  a 36-byte COMPLETION-sized frame back, one ``send`` per frame, frames parsed with ``struct``.
- ``pipe``: ``os.pipe`` -- the producer ``os.write``\\ s ``size``-byte chunks, the consumer
  ``readinto``\\ s its scratch buffer.
- ``unix``: an AF_UNIX stream socket pair, ``sendall`` / ``recv_into``.
- ``pingpong``: one 52-byte frame there and a 36-byte frame back over an AF_UNIX stream
  socket (the signalling primitive the command path uses), one at a time.
- ``wire_pingpong``: vdisim's own frames and ``Channel`` with one thread per side (a
  COMMAND there; two EVENTs and the COMPLETION back): the round trip without vdisim's threads.
- ``spin_pingpong``: the same with a shared-memory sequence word: the waiter spins on the word
  for a bounded time, then blocks on the socket (the wait the ``VDISIM_WAIT=spin`` mode uses).

The producer runs as ``python -m benchmarks.baselines`` (a fresh interpreter, no fork).
"""

from __future__ import annotations

import collections
import mmap
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from typing import Any

CMD = struct.Struct("<4sHHIHHIIIQQII")  # header + COMMAND payload: 52 bytes
COMP = struct.Struct("<4sHHIHHIIIQ")  # header + COMPLETION payload: 36 bytes
MAGIC = b"VDI1"
END = 0xFFFFFFFF
SEQ = struct.Struct("<Q")
LAST_CPU_US_PER_RT = [0.0]  # this process's CPU per round trip in the last pingpong()


def _source(nbytes: int) -> bytearray:
    """Source data the producer copies from (like pages already in the engine's memory)."""
    src = bytearray(nbytes)
    pattern = bytes(range(256)) * 16
    for i in range(0, nbytes, len(pattern)):
        src[i:i + len(pattern)] = pattern[:nbytes - i]
    return src


CHILD_DEADLINE_S = 600.0  # a baseline child still running after this is killed


def _spawn(args: list[str], fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    """Start a producer child.  A watchdog kills it after CHILD_DEADLINE_S, so a hung child
    ends every blocking read of the parent with EOF instead of hanging the suite."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.baselines", *args],
                            pass_fds=fds, stdin=subprocess.DEVNULL)
    timer = threading.Timer(CHILD_DEADLINE_S, proc.kill)
    timer.daemon = True
    timer.start()
    _WATCHDOGS[proc.pid] = timer
    return proc


_WATCHDOGS: dict[int, threading.Timer] = {}


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("producer went away")
        out += chunk
    return bytes(out)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    timer = _WATCHDOGS.pop(proc.pid, None)
    if timer is not None:
        timer.cancel()


# ----------------------------------------------------------------------------- streams

def ring(size: int, count: int, total: int, source_bytes: int = 64 << 20) -> float:
    """Bytes/s through a shared-memory ring with socket doorbells (see module doc)."""
    mfd = os.memfd_create("vdisim-bench-ring")
    try:
        os.ftruncate(mfd, size * count)
        area = mmap.mmap(mfd, size * count)
        zero = bytes(min(size * count, 4 << 20))
        for off in range(0, size * count, len(zero)):  # pre-fault, as the transport does
            n = min(len(zero), size * count - off)
            area[off:off + n] = zero[:n]
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        proc = _spawn(["ring", str(child.fileno()), str(mfd), str(size), str(count),
                       str(total), str(source_bytes)], (child.fileno(), mfd))
        child.close()
        view = memoryview(area)
        try:
            elapsed = _ring_consumer(parent, view, size)
        finally:
            view.release()
            parent.close()
            _finish(proc)
        area.close()
    finally:
        os.close(mfd)
    return total / elapsed


def _ring_consumer(sock: socket.socket, view: memoryview, size: int) -> float:
    scratch = memoryview(bytearray(size))
    rbuf = bytearray()
    t0: float | None = None
    fs = CMD.size
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise EOFError("producer went away")
        if t0 is None:
            t0 = time.perf_counter()
        rbuf += chunk
        off = 0
        while len(rbuf) - off >= fs:
            (_m, _t, _f, _l, dev, _x, cid, _code, n, _pos, boff, _bid,
             _p) = CMD.unpack_from(rbuf, off)
            off += fs
            if cid == END:
                return time.perf_counter() - t0
            scratch[:n] = view[boff:boff + n]  # read the buffer, discard it
            sock.sendall(COMP.pack(MAGIC, 5, 0, COMP.size - 12, dev, 0, cid, 0, n, 0))
        del rbuf[:off]


def _ring_producer(sock: socket.socket, mfd: int, size: int, count: int, total: int,
                   source_bytes: int) -> None:
    area = mmap.mmap(mfd, size * count)
    view = memoryview(area)
    src = memoryview(_source(max(source_bytes, size)))
    free = list(range(count))
    inflight: collections.deque[int] = collections.deque()
    rbuf = bytearray()
    sent = done = 0
    cursor = 0
    cid = 0
    while done < total:
        if free and sent < total:
            slot = free.pop()
            n = min(size, total - sent)
            if cursor + n > len(src):
                cursor = 0
            off = slot * size
            view[off:off + n] = src[cursor:cursor + n]
            cursor += n
            cid += 1
            sock.sendall(CMD.pack(MAGIC, 4, 0, CMD.size - 12, 0, 0, cid, 2, n, 0, off, slot + 1, 0))
            sent += n
            inflight.append(slot)
            continue
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise EOFError("consumer went away")
        rbuf += chunk
        off = 0
        while len(rbuf) - off >= COMP.size:
            (_m, _t, _f, _l, _dev, _x, _cid, _code, n, _pos) = COMP.unpack_from(rbuf, off)
            off += COMP.size
            done += n
            free.append(inflight.popleft())  # the consumer completes in order
        del rbuf[:off]
    sock.sendall(CMD.pack(MAGIC, 4, 0, CMD.size - 12, 0, 0, END, 0, 0, 0, 0, 0, 0))
    view.release()
    area.close()


def pipe(size: int, total: int, source_bytes: int = 64 << 20) -> float:
    """Bytes/s through ``os.pipe`` with ``size``-byte writes and reads."""
    r, w = os.pipe()
    proc = _spawn(["pipe", str(w), str(size), str(total), str(source_bytes)], (w,))
    os.close(w)
    try:
        with open(r, "rb", buffering=0) as f:
            elapsed = _stream_consumer(f.readinto, size, total)
    finally:
        _finish(proc)
    return total / elapsed


def unix(size: int, total: int, source_bytes: int = 64 << 20) -> float:
    """Bytes/s through an AF_UNIX stream socket pair."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = _spawn(["unix", str(child.fileno()), str(size), str(total), str(source_bytes)],
                  (child.fileno(),))
    child.close()
    try:
        elapsed = _stream_consumer(parent.recv_into, size, total)
    finally:
        parent.close()
        _finish(proc)
    return total / elapsed


def _stream_consumer(readinto: Any, size: int, total: int) -> float:
    scratch = memoryview(bytearray(size))
    got = 0
    t0: float | None = None
    while got < total:
        n = readinto(scratch)
        if not n:
            raise EOFError("producer went away")
        if t0 is None:
            t0 = time.perf_counter()
        got += n
    assert t0 is not None
    return time.perf_counter() - t0


def _stream_producer(write: Any, size: int, total: int, source_bytes: int) -> None:
    src = memoryview(_source(max(source_bytes, size)))
    sent = cursor = 0
    while sent < total:
        n = min(size, total - sent)
        if cursor + n > len(src):
            cursor = 0
        piece = src[cursor:cursor + n]
        while piece:
            k = write(piece)
            piece = piece[k:]
        cursor += n
        sent += n


# ----------------------------------------------------------------------------- ping-pong

def pingpong(n: int, *, spin_us: float = 0.0) -> list[float]:
    """Round-trip times in microseconds: 52-byte frame there, 36-byte frame back.

    With ``spin_us`` > 0 both sides publish a sequence number in shared memory and the waiter
    spins up to ``spin_us`` on it before blocking on the socket (the doorbell is always sent).
    """
    mfd = os.memfd_create("vdisim-bench-pp")
    os.ftruncate(mfd, 4096)
    area = mmap.mmap(mfd, 4096)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = _spawn(["pingpong", str(child.fileno()), str(mfd), str(n), str(spin_us)],
                  (child.fileno(), mfd))
    child.close()
    times: list[float] = []
    try:
        _recv_exact(parent, 1)  # child ready
        t = os.times()
        cpu0 = t.user + t.system
        req = CMD.pack(MAGIC, 4, 0, CMD.size - 12, 0, 0, 0, 8, 0, 0, 0, 0, 0)
        for i in range(1, n + 1):
            t0 = time.perf_counter_ns()
            parent.sendall(req)
            if spin_us:  # publish after the doorbell: a spinner never blocks on recv
                SEQ.pack_into(area, 0, i)
            _wait_reply(parent, area, 64, i, spin_us, COMP.size)
            times.append((time.perf_counter_ns() - t0) / 1000)
        t = os.times()
        LAST_CPU_US_PER_RT[0] = (t.user + t.system - cpu0) / n * 1e6
    finally:
        parent.close()
        _finish(proc)
        area.close()
        os.close(mfd)
    return times


def _wait_reply(sock: socket.socket, area: mmap.mmap, at: int, seq: int, spin_us: float,
                size: int) -> None:
    if spin_us:
        deadline = time.perf_counter_ns() + int(spin_us * 1000)
        while SEQ.unpack_from(area, at)[0] != seq:
            if time.perf_counter_ns() > deadline:
                break
    # consume the doorbell frame (already there after a successful spin)
    got = 0
    while got < size:
        chunk = sock.recv(size - got)
        if not chunk:
            raise EOFError("peer went away")
        got += len(chunk)


def _pingpong_child(sock: socket.socket, mfd: int, n: int, spin_us: float) -> None:
    area = mmap.mmap(mfd, 4096)
    reply = COMP.pack(MAGIC, 5, 0, COMP.size - 12, 0, 0, 0, 0, 0, 0)
    sock.sendall(b"r")
    for i in range(1, n + 1):
        _wait_reply(sock, area, 0, i, spin_us, CMD.size)
        sock.sendall(reply)
        if spin_us:
            SEQ.pack_into(area, 64, i)
    area.close()


def wire_pingpong(n: int) -> list[float]:
    """Round trips with vdisim's own wire format and ``Channel``, one thread per side: the
    parent sends a COMMAND frame; the child decodes it and answers with what a client sends
    for one command (two EVENT frames and the COMPLETION, one write); the parent decodes until
    the COMPLETION.  What a round trip costs with vdisim's frames but without its threads,
    state tables and API objects."""
    from vdisim.transport import frames
    from vdisim.transport.channel import Channel

    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = _spawn(["wire", str(child.fileno()), str(n)], (child.fileno(),))
    child.close()
    ch = Channel(parent)
    times: list[float] = []
    try:
        _wait_frames(ch, 1)  # the child's ready COMPLETION
        for i in range(1, n + 1):
            t0 = time.perf_counter_ns()
            ch.send(frames.encode_command(0, i, 8, 0, 0, 0, 0))
            _wait_frames(ch, 3)
            times.append((time.perf_counter_ns() - t0) / 1000)
    finally:
        ch.close()
        _finish(proc)
    return times


def _wait_frames(ch: Any, count: int) -> list[Any]:
    import select as _select

    got: list[Any] = []
    while len(got) < count:
        _select.select([ch.sock], [], [], 30.0)
        got += ch.read_available()
    return got


def _wire_child(sock: socket.socket, n: int) -> None:
    from vdisim.transport import frames
    from vdisim.transport.channel import Channel

    ch = Channel(sock)
    ch.send(frames.encode_completion(0, 0, 0, 0, 0))
    pid = os.getpid()
    for _ in range(n):
        (cmd,) = _wait_frames(ch, 1)
        cid = cmd.cmd_id
        ch.send(frames.encode_event(frames.EventCall.GET_COMMAND, 0, 0, 0, 8, pid, cid,
                                    time.monotonic_ns())
                + frames.encode_event(frames.EventCall.COMPLETE_COMMAND, 0, 0, 0, 0, pid, cid,
                                      time.monotonic_ns())
                + frames.encode_completion(0, cid, 0, 0, 0))
    ch.close()


def summarize(times_us: list[float], warmup: float = 0.1) -> dict[str, float]:
    """Median and p99 after dropping the first ``warmup`` fraction of samples."""
    kept = sorted(times_us[int(len(times_us) * warmup):])
    if not kept:
        return {"median_us": float("nan"), "p99_us": float("nan"), "n": 0}
    return {"median_us": statistics.median(kept),
            "p99_us": kept[min(len(kept) - 1, int(len(kept) * 0.99))], "n": len(kept)}


# ----------------------------------------------------------------------------- child

def _child(argv: list[str]) -> None:
    kind = argv[0]
    a = [int(float(x)) for x in argv[1:]]
    if kind == "ring":
        sock = socket.socket(fileno=a[0])
        _ring_producer(sock, a[1], a[2], a[3], a[4], a[5])
        sock.close()
    elif kind == "pipe":
        with open(a[0], "wb", buffering=0) as f:
            _stream_producer(f.write, a[1], a[2], a[3])
    elif kind == "unix":
        sock = socket.socket(fileno=a[0])
        _stream_producer(sock.send, a[1], a[2], a[3])
        sock.close()
    elif kind == "wire":
        _wire_child(socket.socket(fileno=a[0]), a[1])
    elif kind == "pingpong":
        sock = socket.socket(fileno=a[0])
        _pingpong_child(sock, a[1], a[2], float(argv[4]))
        sock.close()
    else:
        raise SystemExit(f"unknown baseline {kind}")


if __name__ == "__main__":
    _child(sys.argv[1:])
