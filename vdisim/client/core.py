"""The machinery behind one open set in a client process (primary or secondary).

One :class:`SetCore` exists from Create / OpenInSecondary until Close.  A *hub* thread owns the
sockets: it accepts the engine and secondaries (primary), reads frames, queues commands per
device, relays between the engine and secondaries, and turns EOF of the engine or the primary
into abort.  API calls (``vdisim.client.api``) run on the caller's threads and wait on the core's
condition variable with a deadline; every wait also wakes on abort and on peer death.

Decisions are looked up in :mod:`vdisim.protocol.states`; this module only gathers the facts
(the *condition*) a lookup needs.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable

from vdisim import deviations, hooks
from vdisim.protocol import codes, states
from vdisim.protocol.codes import CommandCode, HResult, Win32
from vdisim.protocol.records import VDConfig
from vdisim.protocol.states import ClientState, DeviceEvent, DeviceState
from vdisim.transport import frames, naming
from vdisim.transport.bufferarea import AreaError, BufferArea
from vdisim.transport.channel import Channel, PeerGone, peer_uid
from vdisim.transport.frames import AbortReason, EventCall, Role
from vdisim.transport.segments import Segment, SegmentError, remove_when_dead

LogFn = Callable[[str], None]
_KNOWN_CODES = frozenset(int(c) for c in CommandCode)


def _default_log(msg: str) -> None:
    if os.environ.get("VDISIM_DEBUG"):
        print(f"vdisim[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


class DeviceSlot:
    """Client-side view of one device of the set."""

    __slots__ = ("close_pending", "close_seen", "index", "name", "opened", "opened_here",
                 "outstanding", "owner", "queue", "state")

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.state = DeviceState.ACTIVE
        self.opened = False  # opened by any process of the set
        self.opened_here = False  # opened through this core
        self.owner: Channel | None = None  # secondary holding it (primary's view)
        self.queue: collections.deque[frames.Command] = collections.deque()
        self.outstanding: dict[int, object] = {}  # cmd_id -> api.Command
        self.close_pending = False  # server sent CloseDevice
        self.close_seen = False  # GetCommand returned VD_E_CLOSE

    def has_deliverable(self) -> bool:
        if not self.queue:
            return False
        head = self.queue[0]
        # §6.6.3: in IO-ERROR, ClearError waits for every outstanding completion.
        return not (head.code == CommandCode.VDC_ClearError
                    and self.state is DeviceState.IO_ERROR and bool(self.outstanding)
                    and not deviations.active("clearerror-before-completions"))

    def next_deliverable(self) -> frames.Command | None:
        return self.queue.popleft() if self.has_deliverable() else None


class SetCore:
    def __init__(self, *, role: str, name: str, instance: str, key: str, token: bytes,
                 requested: VDConfig, log: LogFn | None = None) -> None:
        self.role = role  # "primary" | "secondary"
        self.name = name
        self.instance = instance
        self.key = key
        self.token = token
        self.requested = requested
        self.log = log or _default_log
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.state = ClientState.CONFIGURABLE
        self.abort_reason: int | None = None
        self.config: VDConfig | None = None  # final configuration from the engine
        self.configured = False
        self.primary_configured = False  # primary's GetConfiguration succeeded (§1.9)
        self.devices: list[DeviceSlot] = []
        self.by_name: dict[str, DeviceSlot] = {}
        self.area: BufferArea | None = None
        self.upstream: Channel | None = None
        self.upstream_done = False  # engine sent SERVER_CLOSE / we said goodbye
        self.secondaries: list[Channel] = []
        self.pre_events: list[bytes] = []
        self.control: Segment | None = None
        self.listener: socket.socket | None = None
        self.socket_path: str | None = None
        self.views: list[memoryview] = []  # mapped handles, released at Close
        self.open_reply: frames.OpenDeviceReply | None = None
        self.closing = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._pending: dict[Channel, str] = {}  # accepted, waiting for HELLO
        self.hub: threading.Thread | None = None
        # An ABORT for the engine that the hub sends once it has relayed what the secondaries
        # had already sent (see abort); the lock orders it against Close's GOODBYE.
        self._abort_up: bytes | None = None
        self._abort_up_lock = threading.Lock()

    # ------------------------------------------------------------------ hub thread
    def start_hub(self) -> None:
        self.hub = threading.Thread(target=self._hub_main, name=f"vdisim-hub-{self.key}",
                                    daemon=True)
        if hooks.ACTIVE:
            hooks.adopt(self.hub, "hub")
        self.hub.start()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _hub_main(self) -> None:
        if hooks.ACTIVE:
            hooks.point("client.hub.start", role=self.role)
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        if self.listener is not None:
            sel.register(self.listener, selectors.EVENT_READ, "listen")
        registered: set[Channel] = set()
        try:
            while not self.closing:
                # Forget channels closed since the last round (a refused HELLO, a secondary's
                # GOODBYE): their fd number may already belong to a newly accepted socket.
                for ch in [c for c in registered if c.closed]:
                    with contextlib.suppress(KeyError, ValueError):
                        sel.unregister(ch.sock)
                    registered.discard(ch)
                for ch in self._channels():
                    if ch not in registered and not ch.closed:
                        sel.register(ch.sock, selectors.EVENT_READ, ch)
                        registered.add(ch)
                if hooks.ACTIVE:
                    hooks.wait_io("client.hub.select", [k.fd for k in sel.get_map().values()])
                for key, _ in sel.select(timeout=0 if hooks.ACTIVE else None):
                    tag = key.data
                    if tag == "wake":
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 4096)
                        self._send_abort_up()
                    elif tag == "listen":
                        self._accept()
                    elif isinstance(tag, Channel):
                        if tag.closed:  # closed earlier in this round (see _send_abort_up)
                            continue
                        try:
                            batch = tag.read_available()
                        except (PeerGone, frames.FrameError) as exc:
                            if isinstance(exc, frames.FrameError):
                                self.log(f"malformed frame from peer: {exc}")
                            sel.unregister(tag.sock)
                            registered.discard(tag)
                            self._peer_gone(tag, malformed=isinstance(exc, frames.FrameError))
                            continue
                        for frame in batch:
                            if hooks.ACTIVE:
                                hooks.point("client.hub.frame", frame=type(frame).__name__)
                            self._dispatch(tag, frame)
        except Exception as exc:  # a bug here must not hang the user: abort the set
            self.log(f"hub failed: {exc!r}")
            self.abort(AbortReason.LIBRARY_ERROR, notify_peers=True)
        finally:
            sel.close()
            if hooks.ACTIVE:
                hooks.exit()

    def _channels(self) -> list[Channel]:
        with self.lock:
            out = list(self._pending)
            if self.upstream is not None:
                out.append(self.upstream)
            out.extend(self.secondaries)
            return out

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        uid = peer_uid(sock)
        if uid is not None and uid != os.geteuid():
            self.log(f"refused connection from uid {uid}")
            sock.close()
            return
        with self.lock:
            self._pending[Channel(sock)] = "hello"

    # ------------------------------------------------------------------ frame handling
    def _dispatch(self, ch: Channel, frame: frames.Frame) -> None:
        if ch in self._pending:
            self._handshake(ch, frame)
        elif ch is self.upstream:
            self._from_upstream(frame)
        else:
            self._from_secondary(ch, frame)

    def _handshake(self, ch: Channel, frame: frames.Frame) -> None:
        with self.lock:
            del self._pending[ch]
        if not isinstance(frame, frames.Hello) or frame.token != self.token:
            self.log("connection without a valid HELLO refused")
            ch.close()
            return
        if frame.version != frames.PROTOCOL_VERSION:
            ch.send_quietly(frames.Welcome(HResult.VD_E_NOTSUPPORTED, 0, False).encode())
            ch.close()
            return
        if frame.role is Role.ENGINE:
            with self.lock:
                refuse = self.upstream is not None or self.state is ClientState.DNE
                if not refuse:
                    self.upstream = ch
                    pending, self.pre_events = self.pre_events, []
                    aborted = self.state is ClientState.ABORT
            if refuse:
                ch.send_quietly(frames.Welcome(HResult.VD_E_PROTOCOL, 0, False).encode())
                ch.close()
                return
            ch.send_quietly(frames.Welcome(HResult.NOERROR, 0, aborted).encode()
                            + b"".join(pending)
                            + (frames.Abort(self.abort_reason or 0).encode() if aborted else b""))
            return
        # secondary
        with self.lock:
            if self.state is ClientState.ABORT:
                status = HResult.VD_E_ABORT
            elif not self.primary_configured or self.config is None or self.area is None:
                status = HResult.VD_E_PROTOCOL
            else:
                status = HResult.NOERROR
                self.secondaries.append(ch)
            cfg = self.config
            seg = self.area.segment.name if self.area else ""
            names = tuple(d.name for d in self.devices)
            area_size = self.area.size if self.area else 0
        reply = frames.Welcome(status, 0, status == HResult.VD_E_ABORT).encode()
        if status == HResult.NOERROR and cfg is not None:
            reply += frames.Configure(cfg, seg, area_size, names).encode()
        ch.send_quietly(reply)
        if status != HResult.NOERROR:
            ch.close()

    def _from_upstream(self, frame: frames.Frame) -> None:
        if isinstance(frame, frames.Command):
            self._on_command(frame)
        elif isinstance(frame, frames.Configure):
            self._on_configure(frame)
        elif isinstance(frame, frames.CloseDevice):
            self._on_close_device(frame.device)
        elif isinstance(frame, frames.Abort):
            self.abort(frame.reason, notify_peers=False, broadcast=True)
        elif isinstance(frame, frames.ServerClose):
            self._on_server_close()
        elif isinstance(frame, frames.Welcome):
            pass  # secondary: already consumed during attach
        elif isinstance(frame, frames.OpenDeviceReply):
            with self.cond:
                self.open_reply = frame
                self.cond.notify_all()
        else:
            self.log(f"unexpected {type(frame).__name__} from upstream ignored")

    def _on_configure(self, frame: frames.Configure) -> None:
        cfg = frame.config
        problem = None
        if cfg.device_count != self.requested.device_count:
            problem = "engine configured a different device count"
        elif frame.segment.rpartition("-b")[0] != f"{naming.PREFIX}{self.key}":
            problem = "buffer segment does not belong to this set"
        area = None
        if problem is None:
            try:
                seg = Segment.attach(frame.segment)
                area = BufferArea(seg)
                if area.token != self.token:
                    seg.close()
                    raise AreaError("buffer area token mismatch")
            except (SegmentError, AreaError) as exc:
                problem = f"cannot map the buffer area: {exc}"
        if problem is not None:
            # Like libsqlvdi's TriggerAbort when the shared memory is unusable (§11.1).
            self.log(problem)
            self.abort(AbortReason.LIBRARY_ERROR, notify_peers=True)
            return
        assert area is not None
        with self.cond:
            self.area = area
            self.config = cfg
            self.devices = [DeviceSlot(i, n) for i, n in enumerate(frame.device_names)]
            self.by_name = {d.name: d for d in self.devices}
            self.configured = True
            self.cond.notify_all()

    def _valid_command(self, f: frames.Command) -> str | None:
        if not 0 <= f.device < len(self.devices):
            return f"command for unknown device {f.device}"
        if f.code not in _KNOWN_CODES:
            return None  # unknown codes are delivered: clients answer ERROR_NOT_SUPPORTED (§6.4)
        if f.code in codes.DATA_COMMANDS:
            cfg = self.config
            if self.area is None or cfg is None:
                return "data command before configuration"
            if f.size > cfg.max_transfer_size:
                return f"transfer of {f.size} bytes exceeds maxTransferSize"
            if not self.area.check_reference(f.buffer_id, f.buffer_offset, f.size):
                return (f"buffer reference id={f.buffer_id} offset={f.buffer_offset} "
                        f"size={f.size} is outside the buffer area")
        return None

    def _on_command(self, f: frames.Command) -> None:
        problem = self._valid_command(f)
        if problem is not None:
            self.log(f"rejected command from engine: {problem}")
            self.abort(AbortReason.LIBRARY_ERROR, notify_peers=True)
            return
        dev = self.devices[f.device]
        forward_to: Channel | None = None
        reject = False
        reject_code = 0
        with self.cond:
            if dev.owner is not None:
                forward_to = dev.owner
            else:
                event = (DeviceEvent.SEND_CLEAR_ERROR if f.code == CommandCode.VDC_ClearError
                         else DeviceEvent.SEND)
                tr = states.device_transition(dev.state, event)
                dev.state = tr.next
                if tr.action in (states.DeviceAction.ACCEPT,
                                 states.DeviceAction.HOLD_UNTIL_DRAINED):
                    dev.queue.append(f)
                    self.cond.notify_all()
                else:
                    reject = True
                    reject_code = (Win32.ERROR_IO_DEVICE
                                   if tr.action is states.DeviceAction.REJECT_IO_DEVICE
                                   else Win32.ERROR_INVALID_HANDLE)
        if forward_to is not None:
            forward_to.send_quietly(f.encode())
        elif reject:
            # §6.6.3: a command that reaches a device in IO-ERROR is never delivered.
            self.send_up(frames.encode_completion(f.device, f.cmd_id, reject_code, 0,
                                                  0, generated=True))

    def _on_close_device(self, index: int) -> None:
        if not 0 <= index < len(self.devices):
            self.log(f"CloseDevice for unknown device {index} ignored")
            return
        dev = self.devices[index]
        with self.cond:
            dev.close_pending = True
            if deviations.active("race-closedevice-drops-queued"):  # planted race bug (fuzz)
                dev.queue.clear()
            dev.state = states.device_transition(dev.state, DeviceEvent.CLOSE).next
            owner = dev.owner
            self.cond.notify_all()
        if owner is not None:
            owner.send_quietly(frames.CloseDevice(index).encode())

    def _on_server_close(self) -> None:
        with self.cond:
            self.upstream_done = True
            # Finished only if the set was configured and every device closed (§1.8); a
            # server Close before that ends the operation abnormally.
            unfinished = not (self.configured and self.devices
                              and all(d.close_pending for d in self.devices))
            terminated = self.state in (ClientState.NORMALLY_TERMINATED, ClientState.ABORT,
                                        ClientState.DNE)
        if unfinished and not terminated:
            # Server Close with devices open does SignalAbort processing (§3 Close).
            self.abort(AbortReason.SERVER_CLOSE_WITH_DEVICES_OPEN, notify_peers=False,
                       broadcast=True)

    def _from_secondary(self, ch: Channel, frame: frames.Frame) -> None:
        if isinstance(frame, frames.Completion | frames.Event):
            if isinstance(frame, frames.Event):
                self._note_relayed_event(frame)
            self.send_up(frame.encode())
        elif isinstance(frame, frames.OpenDeviceReq):
            self._secondary_open(ch, frame.name)
        elif isinstance(frame, frames.Abort):
            self.abort(frame.reason, notify_peers=True, exclude=ch)
        elif isinstance(frame, frames.Goodbye):
            with self.lock:
                if ch in self.secondaries:
                    self.secondaries.remove(ch)
            ch.close()
        else:
            self.log(f"unexpected {type(frame).__name__} from a secondary ignored")

    def _note_relayed_event(self, ev: frames.Event) -> None:
        if (ev.call is EventCall.GET_COMMAND and ev.hresult == HResult.VD_E_CLOSE
                and 0 <= ev.device < len(self.devices)):
            with self.cond:
                self.devices[ev.device].close_seen = True
                self._maybe_normally_terminated()

    def _secondary_open(self, ch: Channel, name: str) -> None:
        queued: list[frames.Command] = []
        with self.cond:
            hr, dev = self.claim_device(name)
            if hr == HResult.NOERROR and dev is not None:
                dev.owner = ch
                queued = list(dev.queue)
                dev.queue.clear()
                closed = dev.close_pending
        reply = frames.OpenDeviceReply(hr, dev.index if dev else frames.NO_DEVICE).encode()
        if hr == HResult.NOERROR and dev is not None:
            reply += b"".join(f.encode() for f in queued)
            if closed:
                reply += frames.CloseDevice(dev.index).encode()
        ch.send_quietly(reply)

    # ------------------------------------------------------------------ shared helpers
    def claim_device(self, name: str) -> tuple[int, DeviceSlot | None]:
        """The OpenDevice condition for ``name`` (caller holds the lock)."""
        dev = self.by_name.get(name) if isinstance(name, str) else None
        if dev is None:
            return (HResult.VD_E_OPEN if self.devices and all(d.opened for d in self.devices)
                    else HResult.VD_E_INVALID), None
        if dev.opened:
            if all(d.opened for d in self.devices):
                return HResult.VD_E_OPEN, None
            return HResult.VD_E_PROTOCOL, None
        dev.opened = True
        return HResult.NOERROR, dev

    def _maybe_normally_terminated(self) -> None:
        if (self.state is ClientState.ACTIVE and self.devices
                and all(d.close_seen for d in self.devices)):
            self.state = ClientState.NORMALLY_TERMINATED

    def send_up(self, data: bytes) -> bool:
        ch = self.upstream
        if ch is None:
            return False
        return ch.send_quietly(data)

    def report(self, call: EventCall, device: int, hr: int, a: int = 0, b: int = 0, c: int = 0,
               *, defer: bool = False) -> None:
        """Send an EVENT frame for an API call (the client's trace on the wire)."""
        data = frames.encode_event(call, device, hr, a, b, os.getpid(), c, time.monotonic_ns())
        with self.lock:
            ch = self.upstream
            if ch is None:
                if self.role == "primary":
                    self.pre_events.append(data)
                return
        if defer:
            ch.defer(data)
        else:
            ch.send_quietly(data)

    def abort(self, reason: int, *, notify_peers: bool, broadcast: bool = True,
              exclude: Channel | None = None) -> None:
        """Enter Abort (§8.2): wake every waiter; tell the engine and the secondaries."""
        with self.cond:
            if self.state in (ClientState.DNE, ClientState.ABORT):
                return  # closed, or already aborted: abort is idempotent (§2.6)
            self.abort_reason = reason
            self.state = ClientState.ABORT
            if not deviations.active("race-abort-forgets-waiter"):  # planted race bug (fuzz)
                self.cond.notify_all()
            secondaries = list(self.secondaries)
            up = self.upstream
        data = frames.Abort(reason).encode()
        if notify_peers and up is not None:
            hub = self.hub
            if secondaries and hub is not None and hub.is_alive() and not self.closing:
                # A secondary's CompleteCommand returned NOERROR once its completion was on
                # the socket to this process; the hub relays it to the engine when it reads
                # it.  The ABORT must not overtake it (§8.2 ignores only completions made
                # after the abort), so the hub relays what the secondaries have sent, then
                # sends the ABORT (found by the fuzzer's secondary-death race, docs/fuzz.md).
                with self._abort_up_lock:
                    self._abort_up = data
                if threading.current_thread() is hub:
                    self._send_abort_up()
                else:
                    # SignalAbort returns once the ABORT is on the wire, as before (real VDI
                    # sets the abort in shared memory before it returns).
                    self._wake()
                    self._await_abort_up(hub, up)
            else:
                up.send_quietly(data)
        if broadcast:
            for ch in secondaries:
                if ch is not exclude:
                    ch.send_quietly(data)

    def _await_abort_up(self, hub: threading.Thread, up: Channel) -> None:
        """Wait (bounded) until the hub has sent the pending ABORT; past the bound, send it
        from here."""
        with self.cond:
            clock = hooks.monotonic if hooks.ACTIVE else time.monotonic
            deadline = clock() + ABORT_RELAY_WAIT_S
            while self._abort_up is not None and hub.is_alive() and not self.closing:
                remaining = deadline - clock()
                if remaining <= 0:
                    break
                if hooks.ACTIVE:
                    hooks.wait(self.cond, deadline, "client.abort.relay")
                else:
                    self.cond.wait(remaining)
        with self._abort_up_lock:  # (waits for a relay in progress to finish)
            data, self._abort_up = self._abort_up, None
        if data is not None:
            up.send_quietly(data)

    def _send_abort_up(self) -> None:
        """(hub thread) Relay every frame the secondaries have already sent, then send the
        pending ABORT to the engine."""
        with self._abort_up_lock:
            data, self._abort_up = self._abort_up, None
            if data is None:
                return
            with self.lock:
                secondaries = list(self.secondaries)
            for ch in secondaries:
                # What is already there, in at most 16 reads of 64 KiB: far more than a
                # secondary can have queued before the abort, and bounded, because a secondary
                # spinning on GetCommand keeps its socket readable with EVENT frames.
                for _ in range(16):
                    if ch.closed:
                        break
                    try:
                        if not select.select([ch.sock], [], [], 0)[0]:
                            break
                        batch = ch.read_available()
                    except (OSError, ValueError, PeerGone, frames.FrameError):
                        break  # the hub's own read reports it
                    if not batch:
                        break
                    for frame in batch:
                        self._dispatch(ch, frame)
            self.send_up(data)
        with self.cond:
            self.cond.notify_all()  # the caller of abort waits for this (_await_abort_up)

    def _peer_gone(self, ch: Channel, *, malformed: bool = False) -> None:
        ch.close()
        with self.cond:
            if ch in self._pending:
                del self._pending[ch]
                return
            if ch in self.secondaries:
                # §1.9: VDI does not notice a secondary's death; the primary must SignalAbort.
                self.secondaries.remove(ch)
                self.log("a secondary process disconnected")
                return
            is_up = ch is self.upstream
            done = self.upstream_done or self.state in (ClientState.NORMALLY_TERMINATED,
                                                        ClientState.DNE)
            segment = self.area.segment.name if self.area else None
        if not is_up:
            return
        if not done or malformed:
            self.log("engine connection lost: aborting the set" if self.role == "primary"
                     else "primary connection lost: aborting")
            self.abort(AbortReason.PEER_DIED if not malformed else AbortReason.LIBRARY_ERROR,
                       notify_peers=False, broadcast=True)
        if segment and self.role == "primary":  # the engine died: remove its buffer area
            threading.Thread(target=remove_when_dead, args=(segment,), daemon=True,
                             name="vdisim-dead-engine-cleanup").start()

    # ------------------------------------------------------------------ waiting
    def wait(self, predicate: Callable[[], bool], timeout_ms: int) -> bool:
        """Wait (caller holds the lock) until predicate() or abort/DNE; False on timeout."""
        deadline = deadline_from_ms(timeout_ms)
        while not predicate():
            if self.state in (ClientState.ABORT, ClientState.DNE):
                return True
            if hooks.ACTIVE:
                if deadline is not None and deadline - hooks.monotonic() <= 0:
                    return False
                hooks.wait(self.cond, deadline, "client.wait")
                continue
            if deadline is None:
                self.cond.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.cond.wait(remaining)
        return True

    # ------------------------------------------------------------------ teardown
    def shutdown(self) -> None:
        """Release every resource of the set (Close).  Idempotent, never raises."""
        with self.cond:
            self.closing = True
            self.state = ClientState.DNE
            self.cond.notify_all()
            up = self.upstream
            secondaries = list(self.secondaries)
            pending = list(self._pending)
            for d in self.devices:
                for cmd in d.outstanding.values():
                    release = getattr(cmd, "_release", None)
                    if release is not None:
                        release()
                d.outstanding.clear()
                d.queue.clear()
            views, self.views = self.views, []
        with self._abort_up_lock:  # an ABORT the hub has not sent yet goes before GOODBYE
            pending_abort, self._abort_up = self._abort_up, None
        if up is not None and pending_abort is not None:
            up.send_quietly(pending_abort)
        if (up is not None and not up.send_quietly(frames.Goodbye().encode())
                and self.role == "primary" and self.area is not None and not self.upstream_done):
            # The engine is gone and the hub may not have read its EOF yet (a failed send
            # noticed it first): remove the dead engine's buffer area here (§8.1).
            threading.Thread(target=remove_when_dead, args=(self.area.segment.name,),
                             daemon=True, name="vdisim-dead-engine-cleanup").start()
        self._wake()
        if self.hub is not None and self.hub is not threading.current_thread():
            if hooks.ACTIVE:
                hooks.join(self.hub, 5.0)
            self.hub.join(timeout=5.0)
        for ch in [*secondaries, *pending] + ([up] if up is not None else []):
            ch.close()
        for v in views:
            with contextlib.suppress(Exception):
                v.release()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.close()
        if self.socket_path:
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
        if self.area is not None:
            self.area.segment.close()
        if self.control is not None:
            self.control.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


#: How long a primary's abort waits for its hub to relay the secondaries' frames and send the
#: ABORT before it sends the ABORT itself (seconds).
ABORT_RELAY_WAIT_S = 5.0


def deadline_from_ms(timeout_ms: int) -> float | None:
    """None = wait forever (INFINITE or negative, §2.2); else a monotonic deadline."""
    if timeout_ms < 0 or timeout_ms >= codes.INFINITE:
        return None
    return hooks.monotonic() + timeout_ms / 1000.0
