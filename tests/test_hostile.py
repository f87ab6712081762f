"""Hostile peers: a fake engine on the client's control socket, a hostile client talking to the
real engine, and a /dev/shm too small for the buffer area.

Spec references: §1.2 (shared memory + control channel), §1.4 (how the server finds the set),
§3 (EndConfiguration / RequestBuffers VD_E_MEMORY), §8.1 (library-internal failure aborts the
set), §8.2 (blocked calls return VD_E_ABORT), §8.3 / §11.1 (a Linux shm failure: the statement
fails, the client's OpenDevice returns 0x80770004).

The rule under test: whatever a peer sends, the library never raises, never touches memory
outside the set's buffer area, and turns anything it cannot accept into abort (or a refused
connection); nothing is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vdisim.client import VirtualDeviceSet
from vdisim.engine import Connection, Engine
from vdisim.protocol.codes import INFINITE, CommandCode, Feature, HResult, Win32
from vdisim.protocol.records import VDConfig
from vdisim.protocol.states import ClientState
from vdisim.transport import control, frames, naming
from vdisim.transport.bufferarea import Allocator
from vdisim.transport.channel import Channel, PeerGone, connect
from vdisim.transport.frames import AbortReason, FrameType, Role
from vdisim.transport.segments import Segment

from .conftest import Blocked, shm_entries, wait_blocked, wait_until

# A hub thread that dies of an exception would be a failure even if the API looked fine.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

OK = HResult.NOERROR
ABORT = HResult.VD_E_ABORT
MTS = 65536
WRITE_MEDIA = int(Feature.VDF_WriteMedia)


# ------------------------------------------------------------------------------ helpers


def key_of(name: str) -> str:
    return naming.set_key(None, name)


def objects_of(name: str) -> list[str]:
    key = key_of(name)
    out = [e for e in shm_entries() if e.startswith(f"{naming.PREFIX}{key}-")]
    if os.path.exists(naming.socket_path(key)):
        out.append(naming.socket_path(key))
    return out


def raw_connect(name: str) -> socket.socket:
    s = connect(naming.socket_path(key_of(name)))
    s.settimeout(5.0)
    return s


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until EOF; returns what the peer sent before closing (fails on a timeout)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def new_name() -> str:
    return "{" + str(uuid.uuid4()).upper() + "}"


class FakeEngine:
    """Plays the engine's side of the wire by hand, with the set's real token."""

    def __init__(self, name: str, token: bytes | None = None) -> None:
        self.name = name
        self.key = key_of(name)
        seg = Segment.attach(naming.control_segment_name(self.key))
        try:
            self.info = control.read(seg)
        finally:
            seg.close()
        self.token = self.info.token if token is None else token
        self.ch = Channel(raw_connect(name))
        self.areas: list[Segment] = []
        self.buffer: tuple[int, int] | None = None  # (id, data offset) of a valid buffer
        self.config: VDConfig | None = None

    def hello(self, version: int = frames.PROTOCOL_VERSION) -> frames.Frame:
        self.ch.send(frames.Hello(Role.ENGINE, version, os.getpid(), self.token).encode())
        return self.ch.recv_frame(5.0)

    def expect(self, kind: type, timeout: float = 5.0) -> Any:
        """The next frame of ``kind`` (EVENT frames, the client's trace, are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.ch.recv_frame(max(0.0, deadline - time.monotonic()))
            if isinstance(f, kind):
                return f
            assert isinstance(f, frames.Event), f"unexpected {f!r}"

    def make_area(self, token: bytes | None = None, generation: int = 0xBEEF) -> Segment:
        """A buffer area named like this set's, laid out as the engine would."""
        size, capacity = Allocator.area_size([(MTS, 512, 2)], 0)
        seg = Segment.create(naming.buffer_segment_name(self.key, generation), size)
        self.areas.append(seg)
        alloc = Allocator(seg, capacity, 0, self.token if token is None else token)
        got = alloc.allocate(MTS, 512)
        assert got is not None
        self.buffer = got
        return seg

    def configure(self, segment: str, area_size: int) -> None:
        self.config = self.info.config.evolve(
            features=WRITE_MEDIA, block_size=512, max_io_depth=4, max_transfer_size=MTS,
            buffer_area_size=area_size)
        self.ch.send(frames.Configure(self.config, segment, area_size, (self.name,)).encode())

    def command(self, device: int = 0, cmd_id: int = 1, code: int = CommandCode.VDC_Write,
                size: int = MTS, offset: int | None = None, buffer_id: int | None = None) -> bytes:
        assert self.buffer is not None
        bid, off = self.buffer
        return frames.Command(device, cmd_id, code, size, 0, off if offset is None else offset,
                              bid if buffer_id is None else buffer_id).encode()

    def close(self) -> None:
        self.ch.close()
        for seg in self.areas:
            seg.close()


@pytest.fixture
def client(set_name: str) -> Iterator[VirtualDeviceSet]:
    vds = VirtualDeviceSet()
    assert vds.create(set_name, VDConfig(device_count=1)) == OK
    yield vds
    if vds.state is not ClientState.DNE:
        vds.close()


@pytest.fixture
def fake(set_name: str, client: VirtualDeviceSet) -> Iterator[FakeEngine]:
    fe = FakeEngine(set_name)
    yield fe
    fe.close()


def real_engine_configures(conn: Connection, vds: VirtualDeviceSet, name: str) -> None:
    """A real engine can still open and configure the set, and the client sees it."""
    s = conn.script()
    assert s.open(name) == OK
    assert s.get_configuration()[0] == OK
    assert s.begin_configuration(WRITE_MEDIA, 512, 512, MTS) == OK
    assert s.end_configuration() == OK
    hr, cfg = vds.get_configuration(5000)
    assert hr == OK and cfg is not None
    assert cfg.features & WRITE_MEDIA and cfg.max_transfer_size == MTS
    assert vds.close() == OK
    assert s.close() == OK


# ------------------------------------------------------------------------------ fake engine
#                                                                (no token / bad handshake)

BAD_MAGIC_HELLO = (frames.HEADER.pack(b"XDI1", FrameType.HELLO, 0, 24)
                   + frames.Hello(Role.ENGINE, 1, 1, b"\0" * 16).encode()[12:])
GARBAGE: dict[str, bytes] = {
    "garbage": bytes(range(256)) * 4,
    "bad_magic": BAD_MAGIC_HELLO,
    "wrong_token": frames.Hello(Role.ENGINE, frames.PROTOCOL_VERSION, os.getpid(),
                                b"\x5a" * frames.TOKEN_SIZE).encode(),
    "huge_length": frames.HEADER.pack(frames.MAGIC, FrameType.HELLO, 0, frames.MAX_PAYLOAD + 1),
    "unknown_type": frames.HEADER.pack(frames.MAGIC, 200, 0, 0),
    "short_hello": frames.HEADER.pack(frames.MAGIC, FrameType.HELLO, 0, 3) + b"abc",
    "command_first": frames.Command(0, 1, CommandCode.VDC_Write, MTS, 0, 0, 1).encode(),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_fake_engine_without_token_is_refused(conn: Connection, set_name: str,
                                              client: VirtualDeviceSet, kind: str) -> None:
    """§1.2 / §1.4: only a peer presenting the set's token gets in.  Garbage, a bad magic, an
    oversized or unknown frame or a HELLO with a wrong token: the client closes that
    connection without a reply, stays Configurable, and a real engine still configures it."""
    sock = raw_connect(set_name)
    idle = raw_connect(set_name)  # a silent connection does not block the real engine
    try:
        sock.sendall(GARBAGE[kind])
        assert closed_by_peer(sock) == b""  # refused: not even a WELCOME
        assert client.state is ClientState.CONFIGURABLE
        assert client.get_configuration(0) == (HResult.VD_E_TIMEOUT, None)
        real_engine_configures(conn, client, set_name)
    finally:
        sock.close()
        idle.close()


def test_fake_engine_handshake_refusals(fake: FakeEngine, client: VirtualDeviceSet,
                                        conn: Connection, set_name: str) -> None:
    """With the right token: a wrong protocol version is answered VD_E_NOTSUPPORTED, and a
    second engine while one is attached VD_E_PROTOCOL; neither disturbs the set."""
    welcome = fake.hello(version=99)
    assert welcome == frames.Welcome(HResult.VD_E_NOTSUPPORTED, 0, False)
    assert closed_by_peer(fake.ch.sock) == b""
    first = FakeEngine(set_name)
    second = FakeEngine(set_name)
    try:
        assert first.hello() == frames.Welcome(OK, 0, False)
        assert second.hello() == frames.Welcome(HResult.VD_E_PROTOCOL, 0, False)
        assert closed_by_peer(second.ch.sock) == b""
        assert client.state is ClientState.CONFIGURABLE
    finally:
        second.close()
        first.close()  # the attached "engine" leaves: the set is aborted (§8.1)
    assert wait_until(lambda: client.state is ClientState.ABORT, 5.0)
    assert client.get_configuration(0) == (ABORT, None)
    assert client.close() == OK


# ------------------------------------------------------------------------------ hostile engine
#                                                                        (with the right token)


def test_configure_with_another_sets_segment(fake: FakeEngine, client: VirtualDeviceSet,
                                             conn: Connection) -> None:
    """A CONFIGURE naming the buffer area of another (real, configured) set: the client
    refuses to map it and aborts (§8.1 library failure); the other set is untouched."""
    other_name = new_name()
    other = VirtualDeviceSet()
    assert other.create(other_name, VDConfig(device_count=1)) == OK
    s = conn.script()
    try:
        assert s.open(other_name) == OK
        assert s.begin_configuration(WRITE_MEDIA, 512, 512, MTS) == OK
        assert s.end_configuration() == OK
        assert other.get_configuration(5000)[0] == OK
        victim = [e for e in objects_of(other_name)
                  if e.startswith(f"{naming.PREFIX}{key_of(other_name)}-b")]
        assert len(victim) == 1

        assert fake.hello() == frames.Welcome(OK, 0, False)
        blocked = Blocked(lambda: client.get_configuration(INFINITE))
        wait_blocked(client)
        fake.configure(victim[0], 1 << 20)
        assert blocked.join() == (ABORT, None)
        assert fake.expect(frames.Abort) == frames.Abort(AbortReason.LIBRARY_ERROR)
        assert client.open_device(fake.name) == (ABORT, None)
        assert client.close() == OK

        assert other.state is ClientState.INITIALIZING  # the victim still works
        assert s.open_device() == (OK, 0)
        hr, dev = other.open_device(other_name)
        assert hr == OK and dev is not None
        assert s.close_device(0) == OK
        assert dev.get_command(5000) == (HResult.VD_E_CLOSE, None)
        assert other.close() == OK
    finally:
        if other.state is not ClientState.DNE:
            other.close()
        s.close()


def test_configure_with_forged_area(fake: FakeEngine, client: VirtualDeviceSet) -> None:
    """A CONFIGURE naming a segment with this set's name pattern but another token (someone
    else's area): refused, abort."""
    area = fake.make_area(token=b"\x11" * frames.TOKEN_SIZE)
    assert fake.hello() == frames.Welcome(OK, 0, False)
    blocked = Blocked(lambda: client.get_configuration(INFINITE))
    wait_blocked(client)
    fake.configure(area.name, area.size)
    assert blocked.join() == (ABORT, None)
    assert fake.expect(frames.Abort) == frames.Abort(AbortReason.LIBRARY_ERROR)
    assert client.close() == OK


def test_configure_with_missing_segment(fake: FakeEngine, client: VirtualDeviceSet) -> None:
    """A CONFIGURE naming a segment that does not exist: abort, not an exception."""
    assert fake.hello() == frames.Welcome(OK, 0, False)
    fake.configure(naming.buffer_segment_name(fake.key, 0x1234), 1 << 20)
    assert fake.expect(frames.Abort) == frames.Abort(AbortReason.LIBRARY_ERROR)
    assert client.get_configuration(0) == (ABORT, None)
    assert client.close() == OK


def configured(fake: FakeEngine, client: VirtualDeviceSet) -> Any:
    """Bring the client to Active with a well-formed area from the fake engine."""
    area = fake.make_area()
    assert fake.hello() == frames.Welcome(OK, 0, False)
    fake.configure(area.name, area.size)
    hr, cfg = client.get_configuration(5000)
    assert hr == OK and cfg == fake.config
    hr, dev = client.open_device(fake.name)
    assert hr == OK and dev is not None
    return dev


def test_well_formed_fake_engine_works(fake: FakeEngine, client: VirtualDeviceSet) -> None:
    """Control for the hostile cases below (§1.7 server sequence): the same fake engine, well
    behaved, gets its command served and its completion back."""
    dev = configured(fake, client)
    fake.ch.send(fake.command(cmd_id=7))
    hr, cmd = dev.get_command(5000)
    assert hr == OK and cmd is not None and cmd.size == MTS
    cmd.buffer[:3] = b"abc"
    assert dev.complete_command(cmd, Win32.ERROR_SUCCESS, MTS, 0) == OK
    assert fake.expect(frames.Completion) == frames.Completion(0, 7, 0, MTS, 0)
    assert fake.buffer is not None
    off = fake.buffer[1]
    assert bytes(fake.areas[0].buf[off:off + 3]) == b"abc"
    fake.ch.send(frames.CloseDevice(0).encode())
    assert dev.get_command(5000) == (HResult.VD_E_CLOSE, None)
    assert client.close() == OK


HOSTILE_COMMANDS: dict[str, Callable[[FakeEngine], bytes]] = {
    "offset_outside_area": lambda fe: fe.command(offset=fe.areas[0].size + 4096),
    "offset_before_buffer": lambda fe: fe.command(offset=8),  # the area's header
    "size_past_buffer": lambda fe: fe.command(size=2 * MTS),
    "unknown_buffer_id": lambda fe: fe.command(buffer_id=9999),
    "device_99": lambda fe: fe.command(device=99),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_COMMANDS))
def test_hostile_command_aborts(fake: FakeEngine, client: VirtualDeviceSet,
                                attack: str) -> None:
    """A COMMAND the client cannot honour without touching memory outside its buffer area, or
    for a device that does not exist: a blocked GetCommand returns VD_E_ABORT, the engine is
    told (ABORT, library error), and the command is never delivered."""
    dev = configured(fake, client)
    blocked = Blocked(lambda: dev.get_command(INFINITE))
    wait_blocked(client)
    fake.ch.send(HOSTILE_COMMANDS[attack](fake))
    assert blocked.join() == (ABORT, None)
    assert fake.expect(frames.Abort) == frames.Abort(AbortReason.LIBRARY_ERROR)
    assert dev.get_command(0) == (ABORT, None)
    assert client.close() == OK


@pytest.mark.parametrize("when", ["configuring", "active"])
def test_truncated_frame_then_eof(fake: FakeEngine, client: VirtualDeviceSet,
                                  when: str) -> None:
    """Half a frame, then the engine's connection ends (§8.1 engine death): the waiting call
    returns VD_E_ABORT and Close returns NOERROR."""
    if when == "configuring":
        assert fake.hello() == frames.Welcome(OK, 0, False)
        blocked = Blocked(lambda: client.get_configuration(INFINITE))
        area = fake.make_area()
        config = fake.info.config.evolve(features=WRITE_MEDIA, block_size=512,
                                         max_transfer_size=MTS)
        data = frames.Configure(config, area.name, area.size, (fake.name,)).encode()
    else:
        dev = configured(fake, client)
        blocked = Blocked(lambda: dev.get_command(INFINITE))
        data = fake.command()
    wait_blocked(client)
    fake.ch.send(data[:len(data) - 5])
    fake.ch.close()
    assert blocked.join() == (ABORT, None)
    assert client.state is ClientState.ABORT
    assert client.close() == OK


MALFORMED: dict[str, Callable[[FakeEngine], bytes]] = {
    "configure_count_mismatch": lambda fe: frames.HEADER.pack(
        frames.MAGIC, FrameType.CONFIGURE, 0, 44 + 64 + 12 + 3) + VDConfig(
        device_count=1).pack() + b"x".ljust(64, b"\0") + (4096).to_bytes(8, "little")
        + (5).to_bytes(2, "little") + b"\0\0" + b"\x01\0a",
    "command_short_payload": lambda fe: frames.HEADER.pack(
        frames.MAGIC, FrameType.COMMAND, 0, 10) + b"\0" * 10,
    "unknown_frame_type": lambda fe: frames.HEADER.pack(frames.MAGIC, 77, 0, 0),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_frame_from_engine(fake: FakeEngine, client: VirtualDeviceSet,
                                     kind: str) -> None:
    """A frame that does not decode: the client drops the engine and aborts the set (§8.1
    library-internal failure); the waiting GetConfiguration returns VD_E_ABORT (§8.2)."""
    assert fake.hello() == frames.Welcome(OK, 0, False)
    blocked = Blocked(lambda: client.get_configuration(INFINITE))
    wait_blocked(client)
    fake.ch.send(MALFORMED[kind](fake))
    assert blocked.join() == (ABORT, None)
    with pytest.raises((PeerGone, TimeoutError)):
        while True:  # the client hangs up on it (after at most an ABORT/EVENT)
            f = fake.ch.recv_frame(5.0)
            assert isinstance(f, frames.Abort | frames.Event)
    assert client.close() == OK


# ------------------------------------------------------------------------------ hostile client


def test_hostile_completions_are_violations(engine: Engine, conn: Connection,
                                            set_name: str) -> None:
    """A client that sends the engine COMPLETION frames for commands that do not exist, with
    bytes_transferred > size, or for a device out of range: the engine survives, records each
    as a protocol violation, clamps the byte count, and keeps serving the set; a frame that
    does not decode ends the connection (abort)."""
    vds = VirtualDeviceSet()
    assert vds.create(set_name, VDConfig(device_count=1)) == OK
    s = conn.script()
    try:
        assert s.open(set_name) == OK
        assert s.begin_configuration(WRITE_MEDIA, 512, 512, MTS) == OK
        assert s.request_buffers(MTS, 512, 2) == OK
        assert s.end_configuration() == OK
        assert vds.get_configuration(5000)[0] == OK
        assert s.open_device() == (OK, 0)
        s.start_agent()
        hr, dev = vds.open_device(set_name)
        assert hr == OK and dev is not None
        hr, buf = s.allocate_buffer(MTS, fill=b"\x42")
        assert hr == OK
        core = vds._core
        assert core is not None and core.upstream is not None
        up = core.upstream

        hr, h1 = s.send_command(0, CommandCode.VDC_Write, MTS, 0, buf)
        assert hr == OK
        hr, cmd = dev.get_command(5000)
        assert hr == OK and cmd is not None
        real_id = cmd._cmd_id
        up.send(frames.encode_completion(0, 0xDEAD, 0, 0, 0)  # no such command
                + frames.encode_completion(7, real_id, 0, MTS, 0)  # no such device
                + frames.encode_completion(0xFFFF, 1, 0, 0, 0)
                + frames.encode_completion(0, real_id, 0, 3 * MTS, 0)  # > size
                + frames.Command(0, 1, CommandCode.VDC_Write, 0, 0, 0, 0).encode())
        done = s.wait_completion(h1, 5000)
        assert done["done"] is True
        assert (done["completion_code"], done["bytes_transferred"]) == (0, MTS)  # clamped
        want = [f"completion of command {0xDEAD} that is not outstanding on device 0",
                "completion for unknown device 7",
                "completion for unknown device 65535",
                f"bytes_transferred {3 * MTS} > size {MTS} (command {real_id})",
                "unexpected Command from client"]
        assert wait_until(lambda: s.state()["violations"] == want, 5.0), s.state()
        assert engine.proc is not None and engine.proc.poll() is None

        # The set still works: a real round trip after the garbage.
        hr, h2 = s.send_command(0, CommandCode.VDC_Flush)
        assert hr == OK
        hr, flush = dev.get_command(5000)
        assert hr == OK and flush is not None and flush.command_code == CommandCode.VDC_Flush
        assert dev.complete_command(flush, Win32.ERROR_SUCCESS, 0, 0) == OK
        assert s.wait_completion(h2, 5000)["completion_code"] == 0
        assert s.state()["state"] == "ACTIVE"

        # A COMPLETION that does not decode: the engine hangs up and aborts the set.
        hr, h3 = s.send_command(0, CommandCode.VDC_Flush)
        assert hr == OK
        up.send(frames.HEADER.pack(frames.MAGIC, FrameType.COMPLETION, 0, 4) + b"\0" * 4)
        assert s.wait_completion(h3, 5000)["completion_code"] == Win32.ERROR_OPERATION_ABORTED
        st = s.state()
        assert st["state"] == "ABORT" and st["abort_reason"] == AbortReason.PEER_DIED
        assert any(v.startswith("malformed frame from client") for v in st["violations"])
        assert wait_until(lambda: vds.state is ClientState.ABORT, 5.0)
        assert vds.close() == OK
        assert s.close() == OK
        assert engine.proc.poll() is None
        assert conn.execute("SELECT 1 AS alive").rowsets[0].rows[0][0] == 1
    finally:
        if vds.state is not ClientState.DNE:
            vds.close()
        s.close()


# ------------------------------------------------------------------------------ small /dev/shm

SMALL_SHM_SCRIPT = textwrap.dedent("""
    import json, sys, threading, uuid
    from vdisim.client import VirtualDeviceSet
    from vdisim.engine import Engine
    from vdisim.protocol.codes import Feature, HResult
    from vdisim.protocol.records import VDConfig

    def name():
        return "{" + str(uuid.uuid4()).upper() + "}"

    out = {}
    eng = Engine.start()
    try:
        conn = eng.connect()
        assert conn.execute("CREATE DATABASE tiny WITH SIZE_MB = 1").ok
        set_name = name()
        vds = VirtualDeviceSet()
        out["create"] = vds.create(set_name, VDConfig(device_count=1))
        res = {}
        t = threading.Thread(target=lambda: res.setdefault("r", conn.execute(
            f"BACKUP DATABASE tiny TO VIRTUAL_DEVICE = '{set_name}' "
            "WITH MAXTRANSFERSIZE = 4194304, BUFFERCOUNT = 8")))
        t.start()
        while True:
            hr, _ = vds.get_configuration(200)
            if hr != HResult.VD_E_TIMEOUT or not t.is_alive():
                break
        out["get_configuration"] = hr
        out["open_device"] = vds.open_device(set_name)[0]
        t.join(60)
        out["close"] = vds.close()
        r = res["r"]
        out["ok"] = r.ok
        out["errors"] = r.error_numbers
        out["text"] = r.text()

        # The server's own view of the same failure, step by step.
        set2 = name()
        vds2 = VirtualDeviceSet()
        assert vds2.create(set2, VDConfig(device_count=1)) == 0
        s = conn.script()
        out["s_open"] = s.open(set2)
        out["s_begin"] = s.begin_configuration(int(Feature.VDF_WriteMedia), 512, 512, 4194304)
        out["s_request"] = s.request_buffers(4194304, 512, 8)
        out["s_end"] = s.end_configuration()
        out["client_after_end"] = vds2.get_configuration(0)[0]
        out["s_end_again"] = s.end_configuration()
        out["s_abort"] = s.signal_abort()
        out["client_after_abort"] = vds2.get_configuration(5000)[0]
        out["close2"] = vds2.close()
        out["s_close"] = s.close()
        conn.close()
    finally:
        eng.stop()
    import os
    from vdisim.transport.naming import PREFIX
    out["shm_left"] = sorted(e for e in os.listdir("/dev/shm") if e.startswith(PREFIX))
    print(json.dumps(out))
""")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) to mount a 2 MiB /dev/shm in a private "
                           "mount namespace")
def test_dev_shm_too_small(tmp_path: Any) -> None:
    """§3 EndConfiguration -> VD_E_MEMORY when the buffer area cannot be had; §8.3 / §11.1: the
    statement fails (18210 ... 3013) and the client's GetConfiguration / OpenDevice return
    VD_E_ABORT.  Runs in a private mount namespace with a 2 MiB /dev/shm and a 32 MiB area."""
    script = tmp_path / "small_shm.py"
    script.write_text(SMALL_SHM_SCRIPT)
    cmd = ["unshare", "-m", "sh", "-c",
           f"mount -t tmpfs -o size=2m tmpfs /dev/shm && exec {sys.executable} {script}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and "mount" in proc.stderr and "permission" in proc.stderr.lower():
        pytest.skip(f"cannot mount a private /dev/shm here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["create"] == OK
    assert out["ok"] is False
    assert out["errors"][0] == 18210 and out["errors"][-1] == 3013, out["text"]
    assert "0x8007000e" in out["text"]
    assert out["get_configuration"] == ABORT
    assert out["open_device"] == ABORT
    assert out["close"] == OK
    assert out["s_open"] == OK and out["s_begin"] == OK and out["s_request"] == OK
    assert out["s_end"] == HResult.VD_E_MEMORY == 0x8077000A
    assert out["client_after_end"] == HResult.VD_E_TIMEOUT  # still Configurable (§3)
    assert out["s_end_again"] == HResult.VD_E_MEMORY
    assert out["s_abort"] == OK
    assert out["client_after_abort"] == ABORT
    assert out["close2"] == OK and out["s_close"] == OK
    assert out["shm_left"] == []


# ------------------------------------------------------------------------------ process umask


def test_create_never_touches_the_process_umask(set_name: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Create binds the set's socket 0600 without changing the umask: the umask is per
    process, and a library that swaps it races with the program's other threads.  (The old
    code set 0177 around bind; two overlapping Creates could leave it at 0177 for good, and
    every file the program made afterwards was 0600 -- a CI run lost its compiled binaries'
    execute bits that way.)"""
    calls: list[int] = []
    real = os.umask

    def spy(mask: int) -> int:
        calls.append(mask)
        return real(mask)
    monkeypatch.setattr(os, "umask", spy)
    v = VirtualDeviceSet()
    assert v.create(set_name, VDConfig(device_count=1)) == HResult.NOERROR
    try:
        key = naming.set_key(None, set_name)
        assert os.stat(naming.socket_path(key)).st_mode & 0o777 == 0o600
    finally:
        assert v.close() == HResult.NOERROR
    assert calls == []
