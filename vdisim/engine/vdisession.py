"""One statement's VDI conversation, from the engine's side (spec §1.7).

``VdiSession`` opens the client's set, configures it from the plan, opens the devices, runs the
completion agent, and gives the operation code two ways to talk to a device:
:meth:`DeviceLink.call` (send one command, wait for its completion) and a pipelined window
(:meth:`DeviceLink.submit` / :meth:`DeviceLink.reap`).  Faults of the plan fire here.  Failures
become SQL Server errors (§8.3).
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from collections.abc import Callable

from vdisim import deviations
from vdisim.engine import sqlerrors, wirelog
from vdisim.engine.plan import Fault, Plan
from vdisim.engine.server_vds import ServerBuffer, ServerCommand, ServerVirtualDeviceSet
from vdisim.engine.sqlerrors import SqlError, SqlMessage, message
from vdisim.protocol import codes
from vdisim.protocol.codes import CommandCode, Feature, HResult, Win32, hresult_name
from vdisim.protocol.records import VDConfig
from vdisim.protocol.states import ServerState

WIN32_TEXT = {
    0: "The operation completed successfully.",
    6: "The handle is invalid.",
    38: "Reached the end of the file.",
    50: "The request is not supported.",
    112: "There is not enough space on the disk.",
    995: "The I/O operation has been aborted because of either a thread exit or an "
         "application request.",
    1100: "The physical end of the tape has been reached.",
    1101: "A tape access reached a filemark.",
    1104: "No more data is on the tape.",
    1117: "The request could not be performed because of an I/O device error.",
    1129: "Physical end of tape encountered.",
    1450: "Insufficient system resources exist to complete the requested service.",
}


def os_error(code: int) -> str:
    return f"{code}({WIN32_TEXT.get(code, 'Unknown error.')})"


class StatementCancelled(Exception):
    pass


class DeviceLink:
    """The engine's handle on one device: sends commands, collects completions."""

    def __init__(self, session: VdiSession, index: int, device: object) -> None:
        self.session = session
        self.index = index
        self.dev = device
        self.name = session.plan.devices[index]
        self.done: queue.SimpleQueue[ServerCommand] = queue.SimpleQueue()
        self.in_flight = 0
        self.steps = 0  # data commands sent (fault step counter)

    def _routine(self, cmd: ServerCommand) -> None:
        self.done.put(cmd)

    def submit(self, code: int, size: int = 0, position: int = 0,
               buffer: ServerBuffer | None = None, context: object = None) -> ServerCommand:
        """Send one command without waiting.  A send failure still completes it (the
        completion routine runs synchronously, §3)."""
        if code in (CommandCode.VDC_Read, CommandCode.VDC_Write):
            self.session.fire_faults(self.index, self.steps)
            self.steps += 1
        log = self.session.wire_log
        if log is not None and code == CommandCode.VDC_Write and buffer is not None:
            log.data_written(self.index, buffer.data[:size])
        cmd = ServerCommand(code, size, position, buffer, self._routine, context)
        self.in_flight += 1
        self.dev.send_command(cmd)  # type: ignore[attr-defined]
        return cmd

    def reap(self) -> ServerCommand:
        """Wait for the next completion on this device (never forever: abort and
        cancellation wake it; a silent client is ended by serverTimeOut or by the client's
        death)."""
        while True:
            try:
                cmd = self.done.get(timeout=0.2)
            except queue.Empty:
                self.session.check_cancel()
                continue
            self.in_flight -= 1
            return cmd

    def call(self, code: int, size: int = 0, position: int = 0,
             buffer: ServerBuffer | None = None) -> ServerCommand:
        self.submit(code, size, position, buffer)
        return self.reap()

    def drain(self) -> list[ServerCommand]:
        out = []
        while self.in_flight:
            out.append(self.reap())
        return out

    def clear_error(self) -> int:
        """§6.6: after an error completion, ClearError (delivered once all outstanding
        commands are completed)."""
        self.drain()
        if self.session.aborted:
            return Win32.ERROR_OPERATION_ABORTED
        return self.call(CommandCode.VDC_ClearError).completion_code

    def close(self) -> int:
        return int(self.dev.close_device())  # type: ignore[attr-defined]


class VdiSession:
    def __init__(self, plan: Plan, *, write_media: bool, label: str,
                 cancel: threading.Event, emit: Callable[[SqlMessage], None],
                 event_log: list[str] | None = None) -> None:
        self.plan = plan
        self.write_media = write_media
        self.label = label
        self.cancel = cancel
        self.emit = emit
        # The client harness's per-statement wire log, when it armed this statement.
        self.wire_log = wirelog.current()
        self.set = ServerVirtualDeviceSet(on_event=self._on_event, wire_log=self.wire_log)
        self.links: list[DeviceLink] = []
        self.buffers: queue.SimpleQueue[ServerBuffer] | wirelog.PatternPool = (
            queue.SimpleQueue() if self.wire_log is None
            else wirelog.PatternPool(self.wire_log, lambda: self.aborted))
        self.config: VDConfig | None = None
        self.requested: VDConfig | None = None
        self.agent: threading.Thread | None = None
        self.event_log = event_log
        self._fired: set[int] = set()
        self.complete_enabled = False

    # ---------------------------------------------------------------- set-up
    @property
    def aborted(self) -> bool:
        return self.set.state is ServerState.ABORT

    @property
    def model(self) -> codes.DeviceModel:
        assert self.requested is not None
        return codes.device_model(self.requested.features) or codes.DeviceModel.PIPE

    def _on_event(self, ev: object) -> None:
        if self.event_log is not None:
            self.event_log.append(repr(ev))

    def _device_error(self, where: str, text: str) -> SqlError:
        dev = self.plan.devices[0]
        return SqlError([SqlMessage(18210, 16, 1, f"{where}: failure on backup device '{dev}'. "
                                                  f"Operating system error {text}."),
                         self.terminating()])

    def terminating(self) -> SqlMessage:
        return message(3013, self.label)

    def open(self) -> None:
        """Open, configure, open devices, start the agent.  Raises SqlError (§8.3)."""
        plan = self.plan
        name = plan.devices[0]
        for f in plan.faults:
            if f.kind == "fail_open":
                raise self._open_failure(name)
        hr = self.set.open(name)
        if hr != HResult.NOERROR:
            raise self._open_failure(name)
        if any(f.kind == "abort" and f.step == -1 for f in plan.faults):
            self.set.signal_abort()
        hr, req = self.set.get_configuration()
        if hr != HResult.NOERROR or req is None:
            raise self._device_error("BackupVirtualDeviceSet::Initialize",
                                     os_error(Win32.ERROR_OPERATION_ABORTED))
        self.requested = req
        if req.device_count != len(plan.devices):
            self.set.signal_abort()
            raise SqlError([SqlMessage(
                3205 if req.device_count > len(plan.devices) else 18210, 16, 1,
                f"BackupVirtualDeviceSet::Initialize: the virtual device set '{name}' declares "
                f"{req.device_count} devices but the statement names {len(plan.devices)}."),
                self.terminating()])
        direction = Feature.VDF_WriteMedia if self.write_media else Feature.VDF_ReadMedia
        features = (req.features & int(codes.CLIENT_FEATURES)) | int(direction)
        if (self.write_media and req.features & Feature.VDF_RequestComplete
                and plan.complete_supported):
            features |= Feature.VDF_CompleteEnabled  # §5 KB3188454 handshake
            self.complete_enabled = True
        elif self.write_media and deviations.active("complete-unrequested"):
            self.complete_enabled = True  # planted: Complete sent though not requested
        bs = plan.effective_block_size
        align = max(bs, req.alignment or 0)
        if align > 65536:
            self.set.signal_abort()
            raise self._device_error("BackupVirtualDeviceSet::Initialize",
                                     "0x80770009(requested alignment not supported)")
        mts = plan.effective_max_transfer
        hr = self.set.begin_configuration(features, bs, align, mts, 10_000,
                                          device_names=plan.devices)
        if hr != HResult.NOERROR:
            raise self._device_error("BackupVirtualDeviceSet::Initialize",
                                     f"0x{hr:08x}({hresult_name(hr)})")
        count = plan.effective_buffer_count
        self.set.request_buffers(mts, align, count)
        if any(f.kind == "fail_allocation" for f in plan.faults):
            hr = HResult.VD_E_MEMORY
        else:
            hr = self.set.end_configuration()
        if hr != HResult.NOERROR:
            # Like §8.3 "AllocateBuffer: failure ... 995": the server aborts the set.
            self.set.signal_abort()
            code = "0x8007000e(Not enough memory resources are available to complete this " \
                   "operation.)" if hr == HResult.VD_E_MEMORY else f"0x{hr:08x}"
            raise SqlError([SqlMessage(18210, 16, 1, "BackupVirtualDeviceSet::SetBufferParms: "
                                       f"Request large buffers failure on backup device "
                                       f"'{name}'. Operating system error {code}."),
                            self.terminating()])
        self.config = self.set.config
        for _ in plan.devices:
            hr, dev = self.set.open_device()
            if dev is None:
                raise self._device_error("BackupVirtualDeviceSet::Initialize",
                                         f"0x{hr:08x}({hresult_name(hr)})")
            self.links.append(DeviceLink(self, len(self.links), dev))
        for _ in range(count):
            hr, buf = self.set.allocate_buffer(mts, align)
            if buf is None:
                break
            self.buffers.put(buf)
        self.agent = threading.Thread(target=self.set.execute_completion_agent,
                                      name="vdisim-completion-agent", daemon=True)
        self.agent.start()

    def _open_failure(self, name: str) -> SqlError:
        """§1.4, §8.3: no set of that name -> 18210 with 0x80070002, then 3013."""
        return SqlError([SqlMessage(18210, 16, 1, "BackupVirtualDeviceSet::Initialize: Open "
                                    f"failure on backup device '{name}'. Operating system "
                                    "error 0x80070002(The system cannot find the file "
                                    "specified.)."),
                         self.terminating()])

    # ---------------------------------------------------------------- faults & cancel
    def fire_faults(self, device: int, step: int) -> None:
        for i, f in enumerate(self.plan.faults):
            if i in self._fired or f.device != device or f.step != step:
                continue
            self._fired.add(i)
            self._fire(f)

    def _fire(self, f: Fault) -> None:
        if f.kind == "abort":
            self.set.signal_abort()
        elif f.kind == "close_device":
            self.links[f.device].close()
        elif f.kind == "die":
            os._exit(137)
        elif f.kind == "stall":
            deadline = time.monotonic() + f.ms / 1000.0
            while time.monotonic() < deadline:
                self.check_cancel()
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        elif f.kind == "statement_error":
            self.set.signal_abort()
            number = f.number or 3013
            template = sqlerrors.CATALOGUE.get(number, (16, "Injected failure."))[1]
            text = re.sub(r"\{[^}]*\}", "?", template)  # fields unknown for an injected error
            raise SqlError([SqlMessage(number, 16, 1, text), self.terminating()])

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            self.set.signal_abort()
            raise StatementCancelled(self.label)

    # ---------------------------------------------------------------- end
    def finish(self, ok: bool) -> None:
        """Close every device (normal end) or abort, then close the set."""
        if isinstance(self.buffers, wirelog.PatternPool):
            self.buffers.check_all()  # a buffer written after its command's completion
        if ok and not self.aborted:
            for link in self.links:
                link.close()
        elif not self.aborted:
            self.set.signal_abort()
        self.set.close()
        if self.agent is not None:
            self.agent.join(timeout=5.0)
        self.set.dispose()

    def abort_error(self, link: DeviceLink, what: str, code: int) -> SqlError:
        """The messages SQL Server prints when a device fails (§8.3)."""
        dev = link.name
        if self.write_media:
            msgs = [SqlMessage(18210, 16, 1, f"BackupMedium::ReportIoError: write failure on "
                                             f"backup device '{dev}'. Operating system error "
                                             f"{os_error(code)}."),
                    message(3202, dev, os_error(code)), message(3271, dev, os_error(code))]
        else:
            msgs = [SqlMessage(18210, 16, 1, f"BackupMedium::ReportIoError: read failure on "
                                             f"backup device '{dev}'. Operating system error "
                                             f"{os_error(code)}."),
                    message(3203, dev, os_error(code))]
        if what:
            msgs.insert(0, SqlMessage(18210, 16, 1, f"BackupVirtualDeviceFile::{what}: failure "
                                                    f"on backup device '{dev}'. Operating "
                                                    f"system error {os_error(code)}."))
        return SqlError([*msgs, self.terminating()])
