"""The VDI client interfaces, one to one (spec §2).

``VirtualDeviceSet`` mirrors ``IClientVirtualDeviceSet2`` / Linux ``ClientVirtualDeviceSet``;
``VirtualDevice`` mirrors ``IClientVirtualDevice``.  Calls without an output return the HRESULT
as an unsigned 32-bit ``int``; calls with an output return ``(hresult, value)`` with ``value``
``None`` on failure.  Timeouts are milliseconds: 0 polls, ``INFINITE`` (0xFFFFFFFF) or any
negative value waits forever -- and still returns on abort and on the engine's death.

Every return code comes from :mod:`vdisim.protocol.states`; every call is reported to the
engine as an EVENT frame (docs/wire.md) so a harness can judge the client from the wire.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Any

from vdisim import deviations, hooks
from vdisim.client.core import DeviceSlot, SetCore
from vdisim.protocol import states
from vdisim.protocol.codes import CommandCode, HResult, Win32
from vdisim.protocol.records import VDConfig, check_client_config
from vdisim.protocol.states import ClientCall, ClientState, Cond
from vdisim.transport import control, frames, naming
from vdisim.transport.bufferarea import AreaError, BufferArea
from vdisim.transport.channel import Channel, PeerGone, connect, listen, socket_alive
from vdisim.transport.frames import AbortReason, EventCall, Role
from vdisim.transport.segments import Segment, SegmentError, remove_if_dead

__all__ = ["Command", "VirtualDevice", "VirtualDeviceSet"]

_U32 = 0xFFFFFFFF


def _timeout(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


class Command:
    """A command returned by GetCommand (the read-only ``VDC_Command``, §6.1).

    ``buffer`` is a memoryview of exactly the command's data zone in shared memory (writable for
    Read commands); ``prefix`` is the client's prefix zone before it (§1.10).  Both are released
    when the command is completed and at Close.
    """

    __slots__ = ("_buffer_id", "_cmd_id", "_core", "_device", "buffer", "command_code",
                 "position", "prefix", "size")

    def __init__(self, core: SetCore, frame: frames.Command) -> None:
        self._core = core
        self._device = frame.device
        self._cmd_id = frame.cmd_id
        self._buffer_id = frame.buffer_id
        self.command_code = frame.code
        self.size = frame.size
        self.position = frame.position
        self.buffer: memoryview | None = None
        self.prefix: memoryview | None = None
        area = core.area
        if frame.buffer_id and area is not None and frame.code in (CommandCode.VDC_Read,
                                                                    CommandCode.VDC_Write):
            off = frame.buffer_offset
            self.buffer = area.buf[off:off + frame.size]
            pz = area.prefix_zone
            if pz:
                self.prefix = area.buf[off - pz:off]

    def _release(self) -> None:
        for view in (self.buffer, self.prefix):
            if view is not None:
                with contextlib.suppress(Exception):
                    view.release()

    @property
    def name(self) -> str:
        try:
            return CommandCode(self.command_code).name
        except ValueError:
            return f"VDC_{self.command_code}"

    def __repr__(self) -> str:
        return (f"<Command {self.name} size={self.size} position={self.position} "
                f"device={self._device} id={self._cmd_id}>")


class VirtualDevice:
    """One device of a set (``IClientVirtualDevice``).  Use it from one thread (§1.5)."""

    def __init__(self, owner: VirtualDeviceSet, core: SetCore, slot: DeviceSlot) -> None:
        self._owner = owner
        self._core = core
        self._slot = slot
        self.name = slot.name
        self.index = slot.index

    def _live_core(self) -> SetCore | None:
        core = self._core
        return core if self._owner._core is core else None

    def get_command(self, timeout_ms: int) -> tuple[int, Command | None]:
        """GetCommand (§2.4): NOERROR with a command, VD_E_TIMEOUT, VD_E_CLOSE, VD_E_ABORT,
        VD_E_PROTOCOL."""
        if hooks.ACTIVE:
            hooks.point("client.get_command", device=self.index)
        core = self._live_core()
        if core is None:  # interface invalid after Close (§2.7)
            if deviations.active("getcommand-protocol-as-abort"):
                return int(HResult.VD_E_ABORT), None
            return int(states.client_transition(ClientState.DNE, ClientCall.GET_COMMAND).hr), None
        t = _timeout(timeout_ms)
        if t is None:
            return int(HResult.VD_E_INVALID), None
        dev = self._slot
        frame: frames.Command | None = None
        with core.cond:
            state = core.state
            if (state is ClientState.ABORT and deviations.active("getcommand-after-abort")
                    and dev.queue):
                frame = dev.queue.popleft()
                hr = int(HResult.NOERROR)
                dev.outstanding[frame.cmd_id] = cmd = Command(core, frame)
            elif state is not ClientState.ACTIVE:
                hr = int(states.client_transition(state, ClientCall.GET_COMMAND, Cond.ANY).hr)
                cond = None
            else:
                def ready() -> bool:
                    return dev.close_pending or dev.has_deliverable()
                got = core.wait(ready, t)
                if core.state is ClientState.ABORT:
                    cond = Cond.ABORTED
                elif core.state is ClientState.DNE:
                    cond = Cond.ABORTED  # closed under us by another thread (misuse)
                else:
                    frame = dev.next_deliverable() if got else None
                    if frame is not None:
                        cond = Cond.OK
                    elif (got and dev.close_pending
                          and not deviations.active("server-close-device-no-close")):
                        dev.close_seen = True
                        others = all(d.close_seen or not d.opened_here for d in core.devices)
                        if core.role == "primary":
                            others = all(d.close_seen or not d.opened for d in core.devices)
                        cond = Cond.LAST_DEVICE_CLOSED if others else Cond.DEVICE_CLOSED
                    else:
                        cond = Cond.TIMEOUT
                tr = states.client_transition(ClientState.ACTIVE, ClientCall.GET_COMMAND, cond)
                if tr.next is not None and core.state is ClientState.ACTIVE:
                    core.state = tr.next  # type: ignore[assignment]
                hr = int(tr.hr)
                if frame is not None:
                    cmd = Command(core, frame)
                    dev.outstanding[frame.cmd_id] = cmd
        result = cmd if frame is not None else None
        if hooks.ACTIVE:
            hooks.point("client.get_command.return", device=dev.index, hr=hr)
        core.report(EventCall.GET_COMMAND, dev.index, hr, t & _U32,
                    frame.code if frame else 0, frame.cmd_id if frame else 0,
                    defer=frame is not None)
        return hr, result

    def complete_command(self, command: Command, completion_code: int,
                         bytes_transferred: int = 0, position: int = 0) -> int:
        """CompleteCommand (§2.5): NOERROR, VD_E_INVALID (not outstanding, e.g. twice),
        VD_E_ABORT, VD_E_PROTOCOL."""
        if hooks.ACTIVE:
            hooks.point("client.complete_command", device=self.index)
        core = self._live_core()
        if core is None:
            return int(states.client_transition(ClientState.DNE, ClientCall.COMPLETE_COMMAND).hr)
        dev = self._slot
        generated: list[frames.Command] = []
        send: bytes | None = None
        cid = getattr(command, "_cmd_id", 0) if isinstance(command, Command) else 0
        valid_args = (isinstance(completion_code, int) and isinstance(bytes_transferred, int)
                      and isinstance(position, int) and 0 <= completion_code <= _U32
                      and 0 <= bytes_transferred <= _U32)
        with core.cond:
            state = core.state
            if state is not ClientState.ACTIVE:
                hr = int(states.client_transition(state, ClientCall.COMPLETE_COMMAND, Cond.ANY).hr)
            else:
                if dev.close_seen:
                    cond = Cond.DEVICE_CLOSED
                elif (not isinstance(command, Command) or command._core is not core
                      or command._device != dev.index or cid not in dev.outstanding
                      or not valid_args):
                    cond = Cond.NOT_OUTSTANDING
                else:
                    cond = Cond.OK
                hr = int(states.client_transition(state, ClientCall.COMPLETE_COMMAND, cond).hr)
                if (cond is Cond.NOT_OUTSTANDING and deviations.active("complete-twice")
                        and isinstance(command, Command) and command._core is core):
                    hr = int(HResult.NOERROR)
                if cond is Cond.OK:
                    del dev.outstanding[cid]
                    command._release()
                    is_clear = command.command_code == CommandCode.VDC_ClearError
                    ev = states.completion_event(is_clear, completion_code)
                    tr = states.device_transition(dev.state, ev)
                    dev.state = tr.next
                    if tr.action is states.DeviceAction.FAIL_QUEUED:
                        keep = [f for f in dev.queue if f.code == CommandCode.VDC_ClearError]
                        generated = [f for f in dev.queue if f.code != CommandCode.VDC_ClearError]
                        dev.queue.clear()
                        dev.queue.extend(keep)
                    send = frames.encode_completion(dev.index, cid, completion_code,
                                                    bytes_transferred, position)
                    core.cond.notify_all()  # a held ClearError may now be deliverable
        core.report(EventCall.COMPLETE_COMMAND, dev.index, hr, completion_code
                    if isinstance(completion_code, int) else 0,
                    bytes_transferred if isinstance(bytes_transferred, int) else 0, cid,
                    defer=True)
        if hooks.ACTIVE:  # the completion is accepted but not yet on the wire
            hooks.point("client.complete_command.send", device=dev.index, hr=hr)
        if send is not None:
            # §6.6.3: commands queued but not delivered when the error happened complete with
            # ERROR_IO_DEVICE; the client never sees them.
            extra = b"".join(frames.encode_completion(f.device, f.cmd_id, Win32.ERROR_IO_DEVICE,
                                                      0, 0, generated=True) for f in generated)
            # A send that fails is not by itself the engine's death: the engine may have closed
            # its set cleanly with this completion unread (its SERVER_CLOSE may still be unread
            # here).  The hub thread reads what the engine sent up to EOF and decides: EOF
            # after SERVER_CLOSE ends the set normally, EOF before it aborts (§1.8, §8.1).
            core.send_up(send + extra)
        return hr


class VirtualDeviceSet:
    """A virtual device set (``IClientVirtualDeviceSet2``), in state DNE when constructed."""

    def __init__(self) -> None:
        self._core: SetCore | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def state(self) -> ClientState:
        core = self._core
        return ClientState.DNE if core is None else core.state

    @property
    def name(self) -> str | None:
        return self._core.name if self._core else None

    def _lookup(self, call: ClientCall, cond: Cond = Cond.ANY) -> int:
        return int(states.client_transition(self.state, call, cond).hr)

    # ------------------------------------------------------------------ Create
    def create(self, name: str, config: VDConfig, instance: str | None = None) -> int:
        """Create / CreateEx (§2.1): make the set findable by name.  Returns NOERROR,
        VD_E_PROTOCOL, VD_E_NOTSUPPORTED, VD_E_INVALID (bad name), VD_E_MEMORY, or
        HRESULT_FROM_WIN32(ERROR_ALREADY_EXISTS) when a live set has this name."""
        if hooks.ACTIVE:
            hooks.point("client.create")
        if self._core is not None:
            if deviations.active("create-twice"):
                return int(HResult.NOERROR)
            return self._lookup(ClientCall.CREATE)
        cond, core = self._create(name, config, instance)
        tr = states.client_transition(ClientState.DNE, ClientCall.CREATE, cond)
        if core is not None:
            self._core = core
            core.report(EventCall.CREATE, -1, tr.hr, config.device_count, config.features)
        return int(tr.hr)

    def _create(self, name: Any, config: Any, instance: Any) -> tuple[Cond, SetCore | None]:
        if not naming.valid_set_name(name):
            return Cond.BAD_NAME, None
        if not naming.valid_instance(instance):
            return Cond.BAD_INSTANCE, None
        if not isinstance(config, VDConfig) or check_client_config(config) != HResult.NOERROR:
            return Cond.BAD_CONFIG, None
        key = naming.set_key(instance, name)
        seg_name = naming.control_segment_name(key)
        sock_path = naming.socket_path(key)
        remove_if_dead(seg_name)  # a dead owner's set may be replaced (stale objects)
        try:
            seg = Segment.create(seg_name, control.SIZE)
        except SegmentError as exc:
            return (Cond.NAME_IN_USE if exc.exists else Cond.NO_MEMORY), None
        token = secrets.token_bytes(frames.TOKEN_SIZE)
        try:
            control.write(seg, name, naming.normalize_instance(instance), token, config)
            if os.path.exists(sock_path):
                if socket_alive(sock_path):
                    seg.close()
                    return Cond.NAME_IN_USE, None
                os.unlink(sock_path)
            listener = listen(sock_path)
        except OSError:
            seg.close()
            return Cond.NO_MEMORY, None
        core = SetCore(role="primary", name=name, instance=naming.normalize_instance(instance),
                       key=key, token=token, requested=config)
        core.control = seg
        core.listener = listener
        core.socket_path = sock_path
        core.start_hub()
        return Cond.OK, core

    # ------------------------------------------------------------------ GetConfiguration
    def get_configuration(self, timeout_ms: int) -> tuple[int, VDConfig | None]:
        """GetConfiguration (§2.2): wait until the server ends configuration."""
        if hooks.ACTIVE:
            hooks.point("client.get_configuration")
        core = self._core
        if core is None:
            if deviations.active("getconfiguration-dne-timeout"):
                return int(HResult.VD_E_TIMEOUT), None
            return self._lookup(ClientCall.GET_CONFIGURATION), None
        t = _timeout(timeout_ms)
        if t is None:
            return int(HResult.VD_E_INVALID), None
        with core.cond:
            state = core.state
            if state is ClientState.CONFIGURABLE:
                got = core.wait(lambda: core.configured, t)
                if core.state in (ClientState.ABORT, ClientState.DNE):
                    cond = Cond.ABORTED
                else:
                    cond = Cond.OK if got and core.configured else Cond.TIMEOUT
            else:
                cond = Cond.ANY
            tr = states.client_transition(state, ClientCall.GET_CONFIGURATION, cond)
            if tr.next is not None and core.state is state:
                core.state = tr.next  # type: ignore[assignment]
            if tr.hr == HResult.NOERROR and core.role == "primary":
                core.primary_configured = True
            cfg = core.config if tr.hr == HResult.NOERROR else None
        core.report(EventCall.GET_CONFIGURATION, -1, tr.hr, t & _U32)
        return int(tr.hr), cfg

    # ------------------------------------------------------------------ OpenDevice
    def open_device(self, name: str) -> tuple[int, VirtualDevice | None]:
        """OpenDevice (§2.3): NOERROR, VD_E_OPEN once all are open, VD_E_PROTOCOL (already
        open / not configured), VD_E_INVALID (not a device of the set), VD_E_ABORT."""
        if hooks.ACTIVE:
            hooks.point("client.open_device")
        core = self._core
        if core is None:
            return self._lookup(ClientCall.OPEN_DEVICE), None
        if core.role == "secondary":
            return self._open_device_secondary(core, name)
        with core.cond:
            state = core.state
            slot = None
            if state in (ClientState.INITIALIZING, ClientState.ACTIVE):
                hr, slot = core.claim_device(name)
                cond = {HResult.NOERROR: Cond.OK, HResult.VD_E_OPEN: Cond.ALL_OPEN,
                        HResult.VD_E_PROTOCOL: Cond.ALREADY_OPEN,
                        HResult.VD_E_INVALID: Cond.BAD_NAME}[HResult(hr)]
                if slot is not None:
                    slot.opened_here = True
            else:
                cond = Cond.ANY
            tr = states.client_transition(state, ClientCall.OPEN_DEVICE, cond)
            if tr.next is not None:
                core.state = tr.next  # type: ignore[assignment]
        core.report(EventCall.OPEN_DEVICE, slot.index if slot else -1, tr.hr)
        if slot is None:
            if cond is Cond.BAD_NAME and deviations.active("opendevice-invalid-name-protocol"):
                return int(HResult.VD_E_PROTOCOL), None
            return int(tr.hr), None
        return int(tr.hr), VirtualDevice(self, core, slot)

    def _open_device_secondary(self, core: SetCore, name: str) -> tuple[int, VirtualDevice | None]:
        with core.cond:
            state = core.state
            if state not in (ClientState.INITIALIZING, ClientState.ACTIVE):
                return self._lookup(ClientCall.OPEN_DEVICE), None
            core.open_reply = None
        try:
            if not isinstance(name, str) or not naming.valid_set_name(name):
                raise ValueError
            sent = core.send_up(frames.OpenDeviceReq(name).encode())
        except ValueError:
            sent = None
        with core.cond:
            if sent is None:
                hr, slot = int(HResult.VD_E_INVALID), None
            else:
                core.wait(lambda: core.open_reply is not None, 10_000)
                reply = core.open_reply
                if core.state is ClientState.ABORT or reply is None:
                    hr, slot = int(HResult.VD_E_ABORT), None
                else:
                    hr = reply.hresult
                    slot = (core.devices[reply.device]
                            if hr == HResult.NOERROR and reply.device < len(core.devices)
                            else None)
            if slot is not None:
                slot.opened = slot.opened_here = True
                if core.state is ClientState.INITIALIZING:
                    core.state = ClientState.ACTIVE
        core.report(EventCall.OPEN_DEVICE, slot.index if slot else -1, hr)
        return hr, (VirtualDevice(self, core, slot) if slot else None)

    # ------------------------------------------------------------------ SignalAbort
    def signal_abort(self) -> int:
        """SignalAbort (§2.6): NOERROR (also when already aborted), VD_E_PROTOCOL in DNE."""
        if hooks.ACTIVE:
            hooks.point("client.signal_abort")
        core = self._core
        if core is None:
            if deviations.active("signal-abort-dne-noerror"):
                return int(HResult.NOERROR)
            return self._lookup(ClientCall.SIGNAL_ABORT)
        tr = states.client_transition(core.state, ClientCall.SIGNAL_ABORT)
        core.report(EventCall.SIGNAL_ABORT, -1, tr.hr)
        if hooks.ACTIVE:
            hooks.point("client.signal_abort.post")
        core.abort(AbortReason.CLIENT_SIGNAL_ABORT, notify_peers=True)
        return int(tr.hr)

    # ------------------------------------------------------------------ Close
    def close(self) -> int:
        """Close (§2.7): NOERROR; VD_E_PROTOCOL when nothing is open; VD_E_OPEN when devices
        are still open -- which signals abort first and still releases everything."""
        if hooks.ACTIVE:
            hooks.point("client.close")
        core = self._core
        if core is None:
            return self._lookup(ClientCall.CLOSE)
        with core.cond:
            state = core.state
            devices_open = state is ClientState.ACTIVE and any(
                d.opened_here and not d.close_seen for d in core.devices)
            if core.role == "primary" and state is ClientState.ACTIVE:
                # A secondary's device counts as open until the server closed it: its
                # VD_E_CLOSE reaches the primary asynchronously (through the EVENT relay).
                devices_open = devices_open or any(
                    d.opened and not d.close_seen and not d.close_pending
                    and d.owner is not None and d.owner in core.secondaries
                    for d in core.devices)
        cond = Cond.DEVICES_OPEN if devices_open else Cond.OK
        tr = states.client_transition(state, ClientCall.CLOSE, cond)
        if devices_open and not deviations.active("close-open-without-abort"):
            core.abort(AbortReason.CLIENT_CLOSE_WITH_DEVICES_OPEN, notify_peers=True)
        hr = int(tr.hr)
        if devices_open and deviations.active("close-noerror-with-open-devices"):
            hr = int(HResult.NOERROR)
        core.report(EventCall.CLOSE, -1, hr)
        self._core = None
        if hooks.ACTIVE:
            hooks.point("client.close.shutdown", hr=hr)
        core.shutdown()
        return hr

    # ------------------------------------------------------------------ OpenInSecondary
    def open_in_secondary(self, name: str, instance: str | None = None) -> int:
        """OpenInSecondary[Ex] (§2.8): attach this process to a set whose primary has done
        Create and GetConfiguration.  NOERROR, VD_E_PROTOCOL, VD_E_ABORT."""
        if hooks.ACTIVE:
            hooks.point("client.open_in_secondary")
        if self._core is not None:
            return self._lookup(ClientCall.OPEN_IN_SECONDARY)
        cond, core = self._attach(name, instance)
        tr = states.client_transition(ClientState.DNE, ClientCall.OPEN_IN_SECONDARY, cond)
        if core is not None:
            core.state = tr.next  # type: ignore[assignment]
            self._core = core
            core.start_hub()
            core.report(EventCall.OPEN_IN_SECONDARY, -1, tr.hr)
        return int(tr.hr)

    def _attach(self, name: Any, instance: Any) -> tuple[Cond, SetCore | None]:
        if not naming.valid_set_name(name) or not naming.valid_instance(instance):
            return Cond.NOT_READY, None
        key = naming.set_key(instance, name)
        try:
            seg = Segment.attach(naming.control_segment_name(key))
        except SegmentError:
            return Cond.NOT_READY, None
        try:
            info = control.read(seg)
        except control.ControlError:
            seg.close()
            return Cond.NOT_READY, None
        finally:
            if not seg.closed:
                seg.close()
        if info.name != name:
            return Cond.NOT_READY, None
        try:
            ch = Channel(connect(naming.socket_path(key)))
        except OSError:
            return Cond.NOT_READY, None
        try:
            ch.send(frames.Hello(Role.SECONDARY, frames.PROTOCOL_VERSION, os.getpid(),
                                 info.token).encode())
            welcome = ch.recv_frame(10.0)
            if not isinstance(welcome, frames.Welcome):
                raise PeerGone("no WELCOME")
            if welcome.status != HResult.NOERROR:
                ch.close()
                return (Cond.ABORTED if welcome.status == HResult.VD_E_ABORT
                        else Cond.NOT_READY), None
            configure = ch.recv_frame(10.0)
            if not isinstance(configure, frames.Configure):
                raise PeerGone("no CONFIGURE")
            seg_b = Segment.attach(configure.segment)
            area = BufferArea(seg_b)
        except (PeerGone, TimeoutError, frames.FrameError, SegmentError, AreaError):
            ch.close()
            return Cond.NOT_READY, None
        core = SetCore(role="secondary", name=name, instance=info.instance, key=key,
                       token=info.token, requested=info.config)
        core.upstream = ch
        core.area = area
        core.config = configure.config
        core.configured = True
        core.devices = [DeviceSlot(i, n) for i, n in enumerate(configure.device_names)]
        core.by_name = {d.name: d for d in core.devices}
        return Cond.OK, core

    # ------------------------------------------------------------------ buffer handles
    def get_buffer_handle(self, command: Command) -> tuple[int, int | None]:
        """GetBufferHandle (§2.9): the process-independent handle of a Read/Write command's
        buffer.  VD_E_INVALID for a command without an outstanding buffer of this set."""
        core = self._core
        if core is None:
            return self._lookup(ClientCall.GET_BUFFER_HANDLE), None
        with core.lock:
            state = core.state
            ok = (isinstance(command, Command) and command._core is core
                  and command._buffer_id != 0 and command.buffer is not None
                  and 0 <= command._device < len(core.devices)
                  and command._cmd_id in core.devices[command._device].outstanding)
        tr = states.client_transition(state, ClientCall.GET_BUFFER_HANDLE,
                                      Cond.OK if ok else Cond.INVALID_ARG)
        handle = command._buffer_id if ok and tr.hr == HResult.NOERROR else None
        core.report(EventCall.GET_BUFFER_HANDLE, -1, tr.hr, handle or 0)
        return int(tr.hr), handle

    def map_buffer_handle(self, handle: int) -> tuple[int, memoryview | None]:
        """MapBufferHandle (§2.9): this process's view of the buffer named by ``handle``."""
        core = self._core
        if core is None:
            return self._lookup(ClientCall.MAP_BUFFER_HANDLE), None
        view = None
        with core.lock:
            state = core.state
            area = core.area
            desc = (area.descriptor(handle) if area is not None and isinstance(handle, int)
                    and not isinstance(handle, bool) else None)
            tr = states.client_transition(state, ClientCall.MAP_BUFFER_HANDLE,
                                          Cond.OK if desc is not None else Cond.INVALID_ARG)
            if tr.hr == HResult.NOERROR and desc is not None and area is not None:
                off, size = desc
                view = area.buf[off:off + size]
                core.views.append(view)
        hr = int(tr.hr)
        if hr == HResult.VD_E_INVALID and deviations.active("map-handle-any"):
            hr = int(HResult.NOERROR)
        core.report(EventCall.MAP_BUFFER_HANDLE, -1, hr,
                    handle if isinstance(handle, int) else 0)
        return hr, view

    # ------------------------------------------------------------------ misc
    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None:
            with contextlib.suppress(Exception):
                self.close()
