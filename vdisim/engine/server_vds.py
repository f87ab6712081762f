"""The server half of VDI (spec §3): what SQL Server calls, emulated.

``ServerVirtualDeviceSet`` mirrors ``IServerVirtualDeviceSet2`` and ``ServerVirtualDevice``
mirrors ``IServerVirtualDevice``.  Return codes come from the server and device tables of
:mod:`vdisim.protocol.states`.  The completion agent (``execute_completion_agent``) is the only
reader of the client connection once it runs: it invokes each command's completion routine,
records the client's EVENT frames, turns the client's death or abort into abort, and runs the
serverTimeOut watchdog (abort after two intervals with commands pending and none completing, §4.1).

Deviation (documented in docs/wire.md): device names are declared at BeginConfiguration
(``device_names``), because vdisim's client learns them from the CONFIGURE frame.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import attrs

from vdisim import deviations, hooks
from vdisim.protocol import codes, states
from vdisim.protocol.codes import CommandCode, HResult, Win32
from vdisim.protocol.records import VDConfig, check_server_configuration
from vdisim.protocol.states import Cond, DeviceEvent, DeviceState, ServerCall, ServerState
from vdisim.transport import control, frames, naming
from vdisim.transport.bufferarea import Allocator, AreaError
from vdisim.transport.channel import Channel, PeerGone, connect, socket_alive
from vdisim.transport.frames import AbortReason, Role
from vdisim.transport.segments import Segment, SegmentError, remove_when_dead

QUEUE_LIMIT = 4096  # outstanding commands per device before VD_E_QUEUE_FULL [I]

_LIVE: weakref.WeakSet[ServerVirtualDeviceSet] = weakref.WeakSet()


def close_all() -> None:
    """Close every set this process has open (engine shutdown): the clients see abort, the
    buffer areas are unlinked."""
    for vds in list(_LIVE):
        try:
            vds.close()
        except Exception:  # shutting down: keep going
            pass


@attrs.define(eq=False)
class ServerBuffer:
    """A buffer from AllocateBuffer: ``data`` is the data zone, ``prefix`` the client's zone."""

    id: int
    offset: int
    size: int
    data: memoryview
    prefix: memoryview | None = None


@attrs.define(eq=False)
class ServerCommand:
    """``VDS_Command`` (§6.1): inputs set by the server, outputs by the completion."""

    command_code: int
    size: int = 0
    in_position: int = 0
    buffer: ServerBuffer | None = None
    completion_routine: Callable[[ServerCommand], None] | None = None
    completion_context: Any = None
    completion_code: int = -1
    bytes_transferred: int = 0
    out_position: int = 0
    generated: bool = False  # completed by the client library (1117), not the client
    cmd_id: int = 0
    device: int = -1

    @property
    def done(self) -> bool:
        return self.completion_code >= 0


def _remove_dead_client_objects(key: str, inode: int | None = None,
                                grace_s: float = 2.0) -> None:
    """The client went away without Close: if it is dead, remove what it cannot remove any
    more -- its control segment (owner lock free) and its socket file (nothing listening).

    The kernel may report the closed socket a moment before it drops the dead process's owner
    lock, so the lock is polled for ``grace_s`` (on a helper thread); a
    client still holding it after that is alive and keeps its objects.
    """
    if not remove_when_dead(naming.control_segment_name(key), grace_s, inode=inode):
        return  # the client is alive (it only dropped the connection), or a new set has the name
    path = naming.socket_path(key)
    if os.path.exists(path) and not socket_alive(path):
        with contextlib.suppress(OSError):
            os.unlink(path)


class _Device:
    __slots__ = ("index", "name", "opened", "pending", "state")

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.opened = False
        self.state = DeviceState.ACTIVE
        self.pending: dict[int, ServerCommand] = {}


class ServerVirtualDevice:
    def __init__(self, owner: ServerVirtualDeviceSet, dev: _Device) -> None:
        self._owner = owner
        self._dev = dev
        self.name = dev.name
        self.index = dev.index

    def send_command(self, cmd: ServerCommand) -> int:
        """SendCommand (§3): queue a command; on failure the completion routine is called
        synchronously with the matching Win32 code."""
        return self._owner._send(self._dev, cmd)

    def close_device(self) -> int:
        """CloseDevice (§3): the client's next GetCommand on it returns VD_E_CLOSE."""
        return self._owner._close_device(self._dev)

    @property
    def pending(self) -> int:
        return len(self._dev.pending)

    @property
    def state(self) -> DeviceState:
        return self._dev.state


class ServerVirtualDeviceSet:
    def __init__(self, *, on_event: Callable[[frames.Event], None] | None = None,
                 wire_log: Any = None) -> None:
        self.state = ServerState.DNE
        self.wire_log = wire_log  # vdisim.engine.wirelog.WireLog when the harness armed one
        self.lock = threading.RLock()
        self.on_event = on_event
        self.events: list[frames.Event] = []  # the client's API calls, as reported on the wire
        self.violations: list[str] = []  # protocol violations by the client, with detail
        self.abort_reason: int | None = None
        self.client_closed = False
        self._dead_client_cleanup = False  # removal of a dead client's objects scheduled
        self.name: str | None = None
        self.requested: VDConfig | None = None
        self.config: VDConfig | None = None
        self._ch: Channel | None = None
        self._key = ""
        self._token = b""
        self._devices: list[_Device] = []
        self._device_names: tuple[str, ...] = ()
        self._requests: list[tuple[int, int, int]] = []
        self._segment: Segment | None = None
        self._alloc: Allocator | None = None
        self._buffers: dict[int, ServerBuffer] = {}
        self._next_id = 1
        self._agent_running = False
        self._agent_busy = False  # the agent is between its select() and the end of a batch
        self._last_progress = hooks.monotonic()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._final: tuple[int, int, int, int] = (0, 0, 0, 0)

    # ------------------------------------------------------------------ table helpers
    def _tr(self, call: ServerCall, cond: Cond = Cond.OK) -> states.Transition:
        return states.server_transition(self.state, call, cond)

    def _apply(self, tr: states.Transition) -> int:
        if tr.next is not None:
            self.state = tr.next  # type: ignore[assignment]
        return int(tr.hr)

    # ------------------------------------------------------------------ Open
    def open(self, set_name: str, instance: str | None = None, timeout_s: float = 5.0) -> int:
        """Open (§3): attach to the client's set by name.  VD_E_INVALID if no such set."""
        with self.lock:
            if self.state is not ServerState.DNE:
                return self._apply(self._tr(ServerCall.OPEN))
            ch = self._connect(set_name, instance, timeout_s)
            if ch is None:
                return self._apply(self._tr(ServerCall.OPEN, Cond.NO_SET))
            self._ch = ch
            self.name = set_name
            hr = self._apply(self._tr(ServerCall.OPEN))
            _LIVE.add(self)
        self._drain()
        return hr

    def _connect(self, set_name: Any, instance: Any, timeout_s: float) -> Channel | None:
        if not naming.valid_set_name(set_name) or not naming.valid_instance(instance):
            return None
        key = naming.set_key(instance, set_name)
        try:
            seg = Segment.attach(naming.control_segment_name(key))
        except SegmentError:
            return None
        try:
            info = control.read(seg)
        except control.ControlError:
            return None
        finally:
            self._control_inode = seg.inode
            seg.close()
        if info.name != set_name:
            return None
        try:
            ch = Channel(connect(naming.socket_path(key), timeout=timeout_s))
        except OSError:
            return None
        try:
            ch.send(frames.Hello(Role.ENGINE, frames.PROTOCOL_VERSION, os.getpid(),
                                 info.token).encode())
            welcome = ch.recv_frame(timeout_s)
        except (PeerGone, TimeoutError, frames.FrameError):
            ch.close()
            return None
        if not isinstance(welcome, frames.Welcome) or welcome.status != HResult.NOERROR:
            ch.close()
            return None
        self._key, self._token, self.requested = key, info.token, info.config
        return ch

    # ------------------------------------------------------------------ configuration
    def get_configuration(self) -> tuple[int, VDConfig | None]:
        """GetConfiguration (§3): the client's requested VDConfig."""
        self._drain()
        with self.lock:
            hr = self._apply(self._tr(ServerCall.GET_CONFIGURATION))
            return hr, (self.requested if hr == HResult.NOERROR else None)

    def begin_configuration(self, features: int, block_size: int, alignment: int,
                            max_transfer_size: int, timeout_ms: int = 0,
                            device_names: tuple[str, ...] | list[str] | None = None) -> int:
        """BeginConfiguration (§3, header parameter order §11.1)."""
        self._drain()
        with self.lock:
            if self.state is not ServerState.CONNECTED:
                return self._apply(self._tr(ServerCall.BEGIN_CONFIGURATION))
            assert self.requested is not None and self.name is not None
            count = self.requested.device_count
            names = tuple(device_names) if device_names is not None else tuple(
                [self.name] + [f"{self.name}{i}" for i in range(1, count)])
            ok = (check_server_configuration(features, block_size, alignment,
                                             max_transfer_size) == HResult.NOERROR
                  and len(names) == count and names[0] == self.name
                  and len(set(names)) == count and all(naming.valid_set_name(n) for n in names))
            tr = self._tr(ServerCall.BEGIN_CONFIGURATION, Cond.OK if ok else Cond.INVALID_ARG)
            if ok:
                self._final = (features, block_size, alignment or block_size, max_transfer_size)
                self._device_names = names
            return self._apply(tr)

    def request_buffers(self, size: int, alignment: int, count: int) -> int:
        """RequestBuffers (§3): declare ``count`` buffers of ``size`` data bytes."""
        self._drain()
        with self.lock:
            ok = size > 0 and count > 0 and (alignment == 0 or alignment & (alignment - 1) == 0)
            if self.state is ServerState.CONFIGURABLE and ok:
                self._requests.append((size, alignment, count))
            cond = Cond.OK if ok else Cond.INVALID_ARG
            return self._apply(self._tr(ServerCall.REQUEST_BUFFERS, cond))

    def end_configuration(self) -> int:
        """EndConfiguration (§3): allocate the buffer area; the client's GetConfiguration
        returns.  VD_E_MEMORY (state stays Configurable) when the area cannot be reserved."""
        self._drain()
        with self.lock:
            if self.state is not ServerState.CONFIGURABLE:
                return self._apply(self._tr(ServerCall.END_CONFIGURATION))
            assert self.requested is not None and self._ch is not None
            features, block, align, mts = self._final
            req = self.requested
            requests = self._requests or [(mts, align, req.device_count)]
            size, capacity = Allocator.area_size(
                [(s, max(a, align, req.alignment), c) for s, a, c in requests],
                req.prefix_zone_size)
            seg = self._create_area(size)
            if seg is None:
                return self._apply(self._tr(ServerCall.END_CONFIGURATION, Cond.NO_MEMORY))
            try:
                self._alloc = Allocator(seg, capacity, req.prefix_zone_size, self._token)
            except AreaError:
                seg.close()
                return self._apply(self._tr(ServerCall.END_CONFIGURATION, Cond.NO_MEMORY))
            self._segment = seg
            self.config = req.evolve(features=features, block_size=block,
                                     max_io_depth=codes.MAX_IO_DEPTH, max_transfer_size=mts,
                                     buffer_area_size=min(size - self._alloc.data_offset,
                                                          0xFFFFFFFF))
            self._devices = [_Device(i, n) for i, n in enumerate(self._device_names)]
            frame = frames.Configure(self.config, seg.name, size, self._device_names).encode()
            hr = self._apply(self._tr(ServerCall.END_CONFIGURATION))
        if not self._ch.send_quietly(frame):
            self._send_failed()
        return hr

    def _create_area(self, size: int) -> Segment | None:
        for _ in range(8):
            gen = int.from_bytes(os.urandom(2), "little")
            try:
                return Segment.create(naming.buffer_segment_name(self._key, gen), size,
                                      reserve=True, prefault=True)
            except SegmentError as exc:
                if not exc.exists:
                    return None
        return None

    def query_available_buffers(self, size: int, alignment: int) -> tuple[int, int]:
        with self.lock:
            hr = self._apply(self._tr(ServerCall.QUERY_AVAILABLE_BUFFERS))
            if hr != HResult.NOERROR or self._alloc is None:
                return hr, 0
            free = sum(n for _s, n in self._alloc._free)
            return hr, free // max(1, size + self._alloc.prefix_zone + alignment)

    # ------------------------------------------------------------------ devices
    def open_device(self, name: str | None = None) -> tuple[int, ServerVirtualDevice | None]:
        """OpenDevice (§3): the next unopened device (or the named one); VD_E_OPEN after."""
        self._drain()
        with self.lock:
            if self.state not in (ServerState.INITIALIZING, ServerState.ACTIVE):
                return self._apply(self._tr(ServerCall.OPEN_DEVICE)), None
            candidates = [d for d in self._devices if not d.opened
                          and (name is None or d.name == name)]
            if not candidates:
                return self._apply(self._tr(ServerCall.OPEN_DEVICE, Cond.ALL_OPEN)), None
            dev = candidates[0]
            dev.opened = True
            hr = self._apply(self._tr(ServerCall.OPEN_DEVICE))
            return hr, ServerVirtualDevice(self, dev)

    def _send(self, dev: _Device, cmd: ServerCommand) -> int:
        fail_code = None
        arm_watchdog = False
        with self.lock:
            state = self.state
            if state is not ServerState.ACTIVE:
                hr = int(self._tr(ServerCall.SEND_COMMAND, Cond.ANY).hr)
            else:
                cond = self._send_cond(dev, cmd)
                hr = int(self._tr(ServerCall.SEND_COMMAND, cond).hr)
                if cond is Cond.OK:
                    is_clear = cmd.command_code == CommandCode.VDC_ClearError
                    ev = DeviceEvent.SEND_CLEAR_ERROR if is_clear else DeviceEvent.SEND
                    dev.state = states.device_transition(dev.state, ev).next
                    cmd.cmd_id = self._next_id
                    self._next_id = (self._next_id % 0xFFFFFFFE) + 1
                    cmd.device = dev.index
                    cmd.completion_code = -1
                    # (dev.pending first: O(1) while this device has commands out)
                    if not dev.pending and not any(d.pending for d in self._devices):
                        self._last_progress = hooks.monotonic()
                        arm_watchdog = bool(self.config and self.config.server_timeout)
                    dev.pending[cmd.cmd_id] = cmd
                    if self.wire_log is not None:
                        self.wire_log.command(dev.index, cmd.cmd_id, cmd.command_code,
                                              cmd.size, cmd.in_position)
                    buf = cmd.buffer
                    data = frames.encode_command(dev.index, cmd.cmd_id, cmd.command_code,
                                                 cmd.size, cmd.in_position,
                                                 buf.offset if buf else 0,
                                                 buf.id if buf else 0)
            if hr != HResult.NOERROR:
                fail_code = states.SEND_FAILURE_COMPLETION.get(hr, Win32.ERROR_INVALID_HANDLE)
        if fail_code is not None:
            if self.wire_log is not None:
                self.wire_log.command_failed(dev.index, cmd.command_code, int(fail_code))
            cmd.completion_code = int(fail_code)
            cmd.bytes_transferred = 0
            if cmd.completion_routine is not None:
                cmd.completion_routine(cmd)
            return hr
        if arm_watchdog:  # the agent may sleep without a deadline: let it arm serverTimeOut
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"w")
        assert self._ch is not None
        if not self._ch.send_quietly(data):
            self._send_failed()
        return hr

    def _send_failed(self) -> None:
        """A send to the client failed: it is gone.  What it sent before leaving (an ABORT
        after its own SignalAbort, EVENT frames) is still readable: take it first, so the
        abort has the client's reason; then the client's death aborts the set (PEER_DIED)."""
        if self._agent_running:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"g")  # the agent reads the rest, then sees EOF
            return
        self._drain()
        self._abort(AbortReason.PEER_DIED, notify=False)

    def _send_cond(self, dev: _Device, cmd: ServerCommand) -> Cond:
        if not isinstance(cmd, ServerCommand) or not isinstance(cmd.command_code, int):
            return Cond.INVALID_ARG
        if cmd.command_code in (CommandCode.VDC_Read, CommandCode.VDC_Write):
            buf = cmd.buffer
            if (buf is None or self._buffers.get(buf.id) is not buf or cmd.size <= 0
                    or cmd.size > buf.size or self.config is None
                    or cmd.size > self.config.max_transfer_size):
                return Cond.INVALID_ARG
        is_clear = cmd.command_code == CommandCode.VDC_ClearError
        tr = states.device_transition(dev.state, DeviceEvent.SEND_CLEAR_ERROR if is_clear
                                      else DeviceEvent.SEND)
        if tr.action is states.DeviceAction.REJECT_IO_DEVICE:
            return Cond.IO_ERROR
        if tr.action is states.DeviceAction.REJECT_CLOSED:
            return Cond.DEVICE_CLOSED
        if len(dev.pending) >= QUEUE_LIMIT:
            return Cond.QUEUE_FULL
        return Cond.OK

    def _close_device(self, dev: _Device) -> int:
        self._drain()
        with self.lock:
            if self.state is not ServerState.ACTIVE:
                return self._apply(self._tr(ServerCall.CLOSE_DEVICE, Cond.ANY))
            if dev.state is DeviceState.CLOSED:
                return self._apply(self._tr(ServerCall.CLOSE_DEVICE, Cond.DEVICE_CLOSED))
            dev.state = states.device_transition(dev.state, DeviceEvent.CLOSE).next
            last = all(d.state is DeviceState.CLOSED for d in self._devices)
            hr = self._apply(self._tr(ServerCall.CLOSE_DEVICE,
                                      Cond.LAST_DEVICE_CLOSED if last else Cond.OK))
        assert self._ch is not None
        if self.wire_log is not None:
            self.wire_log.close_device(dev.index)
        self._ch.send_quietly(frames.CloseDevice(dev.index).encode())
        return hr

    # ------------------------------------------------------------------ buffers
    def allocate_buffer(self, size: int, alignment: int = 0) -> tuple[int, ServerBuffer | None]:
        """AllocateBuffer (§3): ``size`` excludes the prefix zone; alignment a power of 2."""
        with self.lock:
            ok = (isinstance(size, int) and size > 0 and isinstance(alignment, int)
                  and alignment >= 0 and alignment & (alignment - 1) == 0)
            if not ok:
                return self._apply(self._tr(ServerCall.ALLOCATE_BUFFER, Cond.INVALID_ARG)), None
            tr = self._tr(ServerCall.ALLOCATE_BUFFER)
            if tr.hr != HResult.NOERROR or self._alloc is None or self._segment is None:
                return self._apply(tr), None
            assert self.requested is not None
            align = max(alignment, self._final[2], self.requested.alignment, 1)
            got = self._alloc.allocate(size, align)
            if got is None:
                return self._apply(self._tr(ServerCall.ALLOCATE_BUFFER, Cond.NO_MEMORY)), None
            bid, off = got
            buf = self._segment.buf
            pz = self._alloc.prefix_zone
            prefix = buf[off - pz:off] if pz else None
            sb = ServerBuffer(bid, off, size, buf[off:off + size], prefix)
            self._buffers[bid] = sb
            return self._apply(tr), sb

    def free_buffer(self, buffer: ServerBuffer) -> int:
        with self.lock:
            ok = (isinstance(buffer, ServerBuffer) and self._buffers.get(buffer.id) is buffer
                  and self._alloc is not None and not any(
                      c.buffer is buffer for d in self._devices for c in d.pending.values()))
            tr = self._tr(ServerCall.FREE_BUFFER, Cond.OK if ok else Cond.INVALID_ARG)
            if ok and tr.hr == HResult.NOERROR and self._alloc is not None:
                del self._buffers[buffer.id]
                self._alloc.free(buffer.id)
                for v in (buffer.data, buffer.prefix):
                    if v is not None:
                        v.release()
            return self._apply(tr)

    def is_shared_buffer(self, buffer: object) -> bool:
        return isinstance(buffer, ServerBuffer) and self._buffers.get(buffer.id) is buffer

    # ------------------------------------------------------------------ completion agent
    def execute_completion_agent(self) -> int:
        """ExecuteCompletionAgent (§3): run completions until Close or SignalAbort."""
        with self.lock:
            hr = self._apply(self._tr(ServerCall.EXECUTE_COMPLETION_AGENT))
            if hr != HResult.NOERROR or self.state is ServerState.ABORT:
                return hr
            self._agent_running = True
            ch = self._ch
        try:
            while ch is not None:
                with self.lock:
                    if self.state in (ServerState.ABORT, ServerState.DNE):
                        break
                    timeout = self._watchdog_timeout()
                if hooks.ACTIVE:
                    hooks.point("engine.agent.idle", owner=self)
                try:
                    r, _, _ = select.select([ch.sock.fileno(), self._wake_r], [], [], timeout)
                except (OSError, ValueError):
                    break
                self._agent_busy = True
                if hooks.ACTIVE:
                    hooks.point("engine.agent.busy", owner=self)
                if self._wake_r in r:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 4096)
                if ch.sock.fileno() in r and not self._read(ch):
                    break
                self._agent_busy = False
                self._check_watchdog()
        finally:
            with self.lock:
                self._agent_running = False
                self._agent_busy = False
            if hooks.ACTIVE:
                hooks.point("engine.agent.exit", owner=self)
        return HResult.NOERROR

    def _watchdog_timeout(self) -> float | None:
        cfg = self.config
        if cfg is None or not cfg.server_timeout or not any(d.pending for d in self._devices):
            return None
        limit = 2 * cfg.server_timeout / 1000.0
        return max(0.0, self._last_progress + limit - hooks.monotonic()) + 0.001

    def _check_watchdog(self) -> None:
        with self.lock:
            cfg = self.config
            fire = (cfg is not None and cfg.server_timeout > 0 and self.state is ServerState.ACTIVE
                    and any(d.pending for d in self._devices)
                    and hooks.monotonic() - self._last_progress > 2 * cfg.server_timeout / 1000.0)
        if fire:
            self._abort(AbortReason.SERVER_TIMEOUT, notify=True)

    def _read(self, ch: Channel) -> bool:
        """Process what the client sent; False when the connection is gone."""
        try:
            batch = ch.read_available()
        except (PeerGone, frames.FrameError) as exc:
            if isinstance(exc, frames.FrameError):
                self.violations.append(f"malformed frame from client: {exc}")
            self._client_gone()
            return False
        for frame in batch:
            self._handle(frame)
        return True

    @property
    def agent_running(self) -> bool:
        """ExecuteCompletionAgent is reading the client's connection."""
        return self._agent_running

    def settle(self, timeout: float = 2.0) -> bool:
        """Wait until everything the client had sent when this was called (frames, and the
        end of its connection) has been processed, by the agent if it runs, here otherwise.
        True when settled, False at the deadline.  For observers (the scripting API's
        ``state``): a client's Close has returned once its bytes are in the socket, but the
        engine notices them a moment later, and an observation must not depend on that."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            ch = self._ch
            if not self._agent_running:
                self._drain()
                return True
            # The order matters: the agent sets busy before it reads and clears it after the
            # batch (and a lost connection's abort) is processed, so "nothing left to read"
            # followed by "not busy" means everything that had arrived is processed.
            if ch is None or ch.closed:
                drained = True
            else:
                try:
                    drained = not select.select([ch.sock], [], [], 0)[0]
                except (OSError, ValueError):
                    drained = True  # closed under us: the agent is handling it
            if drained and not self._agent_busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)  # polling a condition with a deadline, not a fixed settle time
            delay = min(delay * 2, 0.01)

    def _drain(self) -> None:
        """Process frames already waiting (used before the agent runs)."""
        ch = self._ch
        if ch is None or self._agent_running or ch.closed:
            return
        for frame in ch.take_buffered():  # frames that came with the handshake's WELCOME
            self._handle(frame)
        while True:
            try:
                r, _, _ = select.select([ch.sock], [], [], 0)
            except (OSError, ValueError):
                return
            if not r or not self._read(ch):
                return

    def _handle(self, frame: frames.Frame) -> None:
        if isinstance(frame, frames.Completion):
            self._on_completion(frame)
        elif isinstance(frame, frames.Event):
            self.events.append(frame)
            if self.wire_log is not None:
                self.wire_log.event(int(frame.call), frame.device, frame.hresult, frame.a,
                                    frame.b, frame.c)
            if self.on_event is not None:
                self.on_event(frame)
        elif isinstance(frame, frames.Abort):
            self._abort(frame.reason, notify=False)
        elif isinstance(frame, frames.Goodbye):
            self.client_closed = True
        else:
            self.violations.append(f"unexpected {type(frame).__name__} from client")

    def _on_completion(self, f: frames.Completion) -> None:
        with self.lock:
            if not 0 <= f.device < len(self._devices):
                self.violations.append(f"completion for unknown device {f.device}")
                return
            dev = self._devices[f.device]
            cmd = dev.pending.pop(f.cmd_id, None)
            if cmd is None and deviations.active("race-complete-after-abort"):
                cmd = getattr(self, "_race_victims", {}).pop((f.device, f.cmd_id), None)
            if cmd is None:
                if hooks.ACTIVE:  # ignored: not outstanding (after an abort: too late)
                    hooks.point("engine.completion.late", set=self.name, device=f.device,
                                cmd=f.cmd_id, code=f.code, generated=f.generated)
                if self.state is not ServerState.ABORT:
                    self.violations.append(f"completion of command {f.cmd_id} that is not "
                                           f"outstanding on device {f.device}")
                return
            nbytes = f.bytes_transferred
            if self.wire_log is not None:
                self.wire_log.completion(f.device, f.cmd_id, f.code, nbytes, f.position,
                                         f.generated)
            is_data = cmd.command_code in (CommandCode.VDC_Read, CommandCode.VDC_Write)
            if is_data and nbytes > cmd.size:
                self.violations.append(f"bytes_transferred {nbytes} > size {cmd.size} "
                                       f"(command {f.cmd_id})")
                nbytes = cmd.size
            is_clear = cmd.command_code == CommandCode.VDC_ClearError
            if not f.generated:
                ev = states.completion_event(is_clear, f.code)
                dev.state = states.device_transition(dev.state, ev).next
            cmd.completion_code = f.code
            cmd.bytes_transferred = nbytes
            cmd.out_position = f.position
            cmd.generated = f.generated
            self._last_progress = hooks.monotonic()
        if hooks.ACTIVE:
            hooks.point("engine.completion", set=self.name, device=f.device, cmd=f.cmd_id,
                        code=f.code, generated=f.generated)
        if cmd.completion_routine is not None:
            cmd.completion_routine(cmd)

    def _client_gone(self) -> None:
        ch = self._ch
        if ch is not None:
            ch.close()
        with self.lock:
            done = self.state in (ServerState.NORMALLY_TERMINATED, ServerState.DNE)
        if not done:
            # §1.9 / §8.1: death of the primary client is noticed and aborts the set.
            self._abort(AbortReason.PEER_DIED, notify=False)
        self._clean_up_after_client()

    def _clean_up_after_client(self) -> None:
        """The client's connection failed: if the client died (no GOODBYE), remove its
        control segment and socket, which it cannot remove any more (once, off-thread)."""
        with self.lock:
            if self._dead_client_cleanup or self.client_closed or not self._key:
                return
            self._dead_client_cleanup = True
            key = self._key
        threading.Thread(target=_remove_dead_client_objects,
                         args=(key, getattr(self, "_control_inode", None)),
                         name="vdisim-dead-client-cleanup", daemon=True).start()

    # ------------------------------------------------------------------ abort / close
    def signal_abort(self) -> int:
        """SignalAbort (§3): outstanding commands complete with ERROR_OPERATION_ABORTED."""
        with self.lock:
            hr = int(self._tr(ServerCall.SIGNAL_ABORT).hr)
        if hr == HResult.NOERROR:
            self._abort(AbortReason.SERVER_SIGNAL_ABORT, notify=True)
        return hr

    def _abort(self, reason: int, *, notify: bool) -> None:
        with self.lock:
            if self.state in (ServerState.ABORT, ServerState.DNE):
                return
            self.state = ServerState.ABORT
            self.abort_reason = reason
            victims = [c for d in self._devices for c in d.pending.values()]
            if deviations.active("race-complete-after-abort"):  # planted race bug (fuzz)
                self._race_victims = {(c.device, c.cmd_id): c for c in victims}
            for d in self._devices:
                d.pending.clear()
            ch = self._ch
        if self.wire_log is not None:
            self.wire_log.abort(int(reason))
            for c in victims:
                self.wire_log.aborted_command(c.device, c.cmd_id, c.command_code)
        if reason == AbortReason.PEER_DIED:
            self._clean_up_after_client()
        if notify and ch is not None:
            ch.send_quietly(frames.Abort(reason).encode())
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"a")
        for cmd in victims:
            cmd.completion_code = (Win32.ERROR_SUCCESS
                                   if deviations.active("abort-completion-not-995")
                                   else Win32.ERROR_OPERATION_ABORTED)
            cmd.bytes_transferred = 0
            if hooks.ACTIVE:
                hooks.point("engine.completion", set=self.name, device=cmd.device,
                            cmd=cmd.cmd_id, code=cmd.completion_code, generated=False)
            if cmd.completion_routine is not None:
                cmd.completion_routine(cmd)

    def close(self) -> int:
        """Close (§3): release everything.  With devices still open: VD_E_PROTOCOL, after
        SignalAbort processing."""
        with self.lock:
            if self.state is ServerState.DNE:
                return self._apply(self._tr(ServerCall.CLOSE))
            devices_open = self.state is ServerState.ACTIVE and any(
                d.state is not DeviceState.CLOSED for d in self._devices)
            tr = self._tr(ServerCall.CLOSE, Cond.DEVICES_OPEN if devices_open else Cond.OK)
        if devices_open:
            self._abort(AbortReason.SERVER_CLOSE_WITH_DEVICES_OPEN, notify=True)
        with self.lock:
            self.state = ServerState.DNE
            ch, self._ch = self._ch, None
            seg, self._segment = self._segment, None
            buffers, self._buffers = list(self._buffers.values()), {}
        if ch is not None:
            if self.wire_log is not None:
                self.wire_log.close()
            ch.send_quietly(frames.ServerClose().encode())
            ch.close()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"c")
        for b in buffers:
            for v in (b.data, b.prefix):
                if v is not None:
                    with contextlib.suppress(Exception):
                        v.release()
        if seg is not None:
            seg.close()
        return int(tr.hr)

    def dispose(self) -> None:
        """Close if needed and free the wake-up pipe (not part of the VDI interface)."""
        if self.state is not ServerState.DNE:
            self.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def die(self) -> None:
        """Scripting aid: end this process at once, as a crash would (no cleanup)."""
        os._exit(137)
