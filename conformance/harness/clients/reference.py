"""The reference client: a correct VDI client for the harness (``run(context) -> bool``).

It does what a careful backup tool does (spec §1.6, docs/client.md), with every rule the
harness checks (conformance/catalogue/client.py):

* creates the set ``context.set_name`` for ``context.devices`` with the device model and the
  feature bits the case asks for (``VDF_RequestComplete``, ``VDF_SnapshotPrepare``), and
  ``serverTimeOut`` from ``extra["server_timeout_ms"]``;
* issues ``context.statement`` on its own connection to ``context.engine_address``, on another
  thread (§1.6 step 5);
* waits in GetConfiguration in short slices and gives up as soon as the statement has ended
  (§1.6 step 6: the statement may fail before it opens the set);
* one thread per device (§1.5, §1.8); VD_E_TIMEOUT from GetCommand means "slow server", never
  failure; VD_E_CLOSE and VD_E_ABORT end a device;
* Write data goes to a file per device in ``context.media_dir`` and is durable (fsync) at every
  VDC_Flush and at VDC_Complete; with VDF_CompleteEnabled the backup is final only at
  VDC_Complete (§6.4); Read returns a short count with ERROR_HANDLE_EOF at the end of the data
  (ERROR_FILEMARK_DETECTED at a tape filemark); ClearError succeeds; anything it cannot do
  (unknown codes included) is completed with ERROR_NOT_SUPPORTED (§6.4);
* a full medium (``extra["media_capacity"]`` bytes) fails the Write with ERROR_DISK_FULL
  (ERROR_END_OF_MEDIA on tape) and the bytes that fit (§6.4);
* its own failure (``extra["client_fail_after_writes"]``: the data sink breaks after that many
  Writes) makes it SignalAbort at once (§2.6, §8.1);
* never touches a command's buffer after completing it;
* calls Close only once every device returned VD_E_CLOSE, or after an abort (§2.7, §8.4);
* reports success only if the statement succeeded (§1.6 step 10: VD_E_CLOSE proves nothing).

The class :class:`ReferenceClient` is built from small overridable steps so that each seeded
bug (:mod:`conformance.harness.clients.buggy`) changes exactly one of them.

As a program (the ``--exec`` form): ``python -m conformance.harness.clients.reference
CONTEXT.json``; exit status 0 when the operation succeeded, 1 when not, 2 on a bad context.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from conformance.harness.context import ALL_OPERATIONS, ClientContext, ContextError
from vdisim.client import Command, VirtualDevice, VirtualDeviceSet
from vdisim.engine.connection import Connection, Result
from vdisim.protocol.codes import CommandCode, Feature, HResult, Win32, hresult_name
from vdisim.protocol.records import VDConfig
from vdisim.refclient import (
    MODEL_FEATURES,
    DeviceStats,
    FileMedia,
    Model,
    SnapshotFiles,
    media_paths,
)

__all__ = ["CAPABILITIES", "Medium", "ReferenceClient", "RunReport", "main", "run"]

#: What the reference client claims (conformance.harness.context.Capabilities): everything.
CAPABILITIES: dict[str, Any] = {
    "operations": list(ALL_OPERATIONS), "multi_device": True, "complete": True,
    "snapshot": True, "tape": True, "disk": True, "restore": True,
}

Issue = Callable[[], Result]
CodeBytesPos = tuple[int, int, int]

_SLICE_MS = 200  # GetConfiguration slice: check the statement between slices (§1.6 step 6)
_GRACE_S = 10.0  # statement over, a device still open: how long before aborting


class Medium(FileMedia):
    """One device's medium: a file with the command semantics of its model (refclient), and an
    optional capacity: a Write beyond it stores what fits and fails with ERROR_DISK_FULL, or
    ERROR_END_OF_MEDIA on a tape (removable media, §6.4)."""

    def __init__(self, path: str, model: Model, block_size: int, writing: bool,
                 capacity: int | None = None) -> None:
        super().__init__(path, model, block_size, writing, durable=True)
        self.capacity = capacity

    def write(self, data: memoryview, position: int) -> tuple[int, int]:
        if self.capacity is None:
            return super().write(data, position)
        start = position if self.model == "disk" else self.pos
        room = max(0, self.capacity - start)
        if room >= len(data):
            return super().write(data, position)
        if room:
            super().write(data[:room], position)
        full = Win32.ERROR_END_OF_MEDIA if self.model == "tape" else Win32.ERROR_DISK_FULL
        return full, room


class RunReport:
    """What one run saw, from the client's side (for logs and tests)."""

    def __init__(self, context: ClientContext) -> None:
        self.context = context
        self.result: Result | None = None
        self.statement_error: str | None = None  # the statement raised (engine gone, ...)
        self.create_hr: int | None = None
        self.config_hr: int | None = None
        self.close_hr: int | None = None
        self.devices: list[DeviceStats] = []
        self.own_failure: str | None = None
        self.log: list[str] = []

    @property
    def statement_ok(self) -> bool:
        return self.result is not None and self.result.ok

    def note(self, text: str) -> None:
        self.log.append(text)


class ReferenceClient:
    """One run of the reference client for one context.  ``issue`` replaces the default way of
    running the statement (a new connection to ``context.engine_address`` executing
    ``context.statement``), e.g. ``lambda: conn.run_plan(plan)`` in tests."""

    name = "reference"

    def __init__(self, context: ClientContext, issue: Issue | None = None) -> None:
        self.ctx = context
        self.issue = issue or self._execute
        self.report = RunReport(context)
        self.vds = VirtualDeviceSet()
        self.final: VDConfig | None = None
        self.aborted = threading.Event()  # we signalled abort, or saw VD_E_ABORT
        self._stmt_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._writes = 0
        extra: Mapping[str, Any] = context.extra
        self.capacity: int | None = (int(extra["media_capacity"])
                                     if extra.get("media_capacity") is not None else None)
        self.fail_after: int | None = (int(extra["client_fail_after_writes"])
                                       if extra.get("client_fail_after_writes") is not None
                                       else None)
        files = extra.get("snapshot_files")
        self.snapshot: SnapshotFiles | None = (
            SnapshotFiles([str(f) for f in files], os.path.join(context.media_dir, "snapshot"))
            if files else None)

    # ------------------------------------------------------------------ the statement
    def _execute(self) -> Result:
        with Connection(self.ctx.engine_address) as conn:
            return conn.execute(self.ctx.statement)

    def _statement(self) -> None:
        try:
            self.report.result = self.issue()
        except Exception as exc:  # the engine died, the address is wrong, ...
            self.report.statement_error = f"{type(exc).__name__}: {exc}"

    def statement_running(self) -> bool:
        t = self._stmt_thread
        return t is not None and t.is_alive()

    def deadline_s(self) -> float:
        """The case watchdog (``timeouts.case_s``): nothing in a run waits longer."""
        return float(self.ctx.timeout("case_s"))

    # ------------------------------------------------------------------ configuration
    def features(self) -> int:
        feats = MODEL_FEATURES[self.ctx.device_model]
        for name in self.ctx.features:
            flag = Feature.__members__.get(name)
            if flag is not None and name in ("VDF_RequestComplete", "VDF_SnapshotPrepare",
                                             "VDF_Discard", "VDF_Removable"):
                feats |= int(flag)
        return int(feats)

    def config(self) -> VDConfig:
        timeout = int(self.ctx.extra.get("server_timeout_ms") or 0)
        return VDConfig(device_count=self.ctx.device_count, features=self.features(),
                        server_timeout=timeout)

    def wait_configuration(self) -> tuple[int, VDConfig | None]:
        """GetConfiguration in short slices (at most ``get_configuration_ms`` each); stop as
        soon as the statement has ended (it failed before opening the set), or at the case
        deadline."""
        limit = time.monotonic() + self.deadline_s()
        slice_ms = max(1, min(_SLICE_MS, self.ctx.timeout("get_configuration_ms")))
        while True:
            hr, cfg = self.vds.get_configuration(slice_ms)
            if hr != HResult.VD_E_TIMEOUT:
                return hr, cfg
            if not self.statement_running() or time.monotonic() > limit:
                return hr, None

    # ------------------------------------------------------------------ media
    def media_model(self) -> Model:
        model = self.ctx.device_model
        return model if model in ("pipe", "tape", "disk") else "pipe"

    def open_medium(self, index: int, path: str) -> Medium:
        assert self.final is not None
        writing = bool(self.final.features & Feature.VDF_WriteMedia)  # the server says (§5)
        return Medium(path, self.media_model(), self.final.block_size or 512, writing,
                      self.capacity)

    # ------------------------------------------------------------------ devices
    def serve_all(self, devices: list[tuple[VirtualDevice, Medium, DeviceStats]]) -> None:
        """One thread per device (§1.5); wait for them, aborting if the statement is over and a
        device never ends."""
        threads = [threading.Thread(target=self.serve_device, args=d, daemon=True,
                                    name=f"vdi-{d[2].name}") for d in devices]
        for t in threads:
            t.start()
        self.join_devices(threads)

    def watchdog_s(self) -> float:
        """How long the device threads may run before the client aborts its own set."""
        return self.deadline_s()

    def join_devices(self, threads: list[threading.Thread]) -> None:
        give_up = time.monotonic() + self.watchdog_s()
        for t in threads:
            over_since: float | None = None
            while t.is_alive():
                t.join(0.2)
                if not t.is_alive():
                    break
                now = time.monotonic()
                if not self.statement_running():
                    over_since = over_since or now
                    if now - over_since > _GRACE_S:
                        self.own_failure("statement ended but a device was never closed")
                if now > give_up:
                    self.own_failure("case deadline passed")

    def serve_device(self, dev: VirtualDevice, medium: Medium, stats: DeviceStats) -> None:
        """The command loop of one device (§1.6 step 8)."""
        timeout = self.ctx.timeout("get_command_ms")
        while True:
            hr, cmd = dev.get_command(timeout)
            if hr == HResult.VD_E_TIMEOUT:
                if self.on_timeout(stats):
                    continue
                stats.end = "gave up"
                return
            if cmd is None:
                stats.end = hresult_name(hr)
                if hr == HResult.VD_E_ABORT:
                    self.aborted.set()
                return
            stats.commands[cmd.name] = stats.commands.get(cmd.name, 0) + 1
            outcome = self.perform(cmd, medium, stats)
            if outcome is None:  # our own failure: the set is aborted
                stats.end = "own failure"
                return
            code, nbytes, pos = outcome
            if cmd.command_code in (CommandCode.VDC_Read, CommandCode.VDC_Write):
                stats.bytes += nbytes
            rc = dev.complete_command(cmd, code, nbytes, pos)
            if rc != HResult.NOERROR:
                self.report.note(f"{stats.name}: CompleteCommand({cmd.name}) -> "
                                 f"{hresult_name(rc)}")
                if rc == HResult.VD_E_ABORT:
                    self.aborted.set()
                    stats.end = "VD_E_ABORT"
                    return

    def on_timeout(self, stats: DeviceStats) -> bool:
        """VD_E_TIMEOUT from GetCommand: the server is only slow (§2.4, §8.5).  Keep waiting;
        the set's abort or close ends the wait."""
        return not self.aborted.is_set()

    # ------------------------------------------------------------------ commands
    def perform(self, cmd: Command, medium: Medium, stats: DeviceStats) -> CodeBytesPos | None:
        """Carry out one command; ``(completion code, bytes, position)``, or None after an own
        failure (the set is then aborted and the command is not completed)."""
        code = cmd.command_code
        try:
            if code == CommandCode.VDC_Write and cmd.buffer is not None:
                if self.sink_broken():
                    self.own_failure(f"data sink failed after {self.fail_after} Writes")
                    return None
                return self.write(cmd, medium)
            if code == CommandCode.VDC_Read and cmd.buffer is not None:
                return self.read(cmd, medium)
            if code == CommandCode.VDC_Flush:
                return self.flush(medium), 0, 0
            if code == CommandCode.VDC_Complete:
                return self.complete(medium), 0, 0
            if code == CommandCode.VDC_ClearError:
                return Win32.ERROR_SUCCESS, 0, 0
            return self.other(cmd, medium)
        except OSError as exc:
            self.report.note(f"{stats.name}: {cmd.name}: {exc}")
            return (Win32.ERROR_DISK_FULL if code == CommandCode.VDC_Write
                    else Win32.ERROR_IO_DEVICE), 0, 0

    def sink_broken(self) -> bool:
        with self._lock:
            self._writes += 1
            return self.fail_after is not None and self._writes > self.fail_after

    def write(self, cmd: Command, medium: Medium) -> CodeBytesPos:
        assert cmd.buffer is not None
        rc, n = medium.write(cmd.buffer, cmd.position)
        return rc, n, 0

    def read(self, cmd: Command, medium: Medium) -> CodeBytesPos:
        """Fill the buffer from the medium; at the end of the data a short count with
        ERROR_HANDLE_EOF (ERROR_FILEMARK_DETECTED at a tape filemark)."""
        assert cmd.buffer is not None
        rc, n = medium.read(cmd.buffer, cmd.position)
        return rc, n, 0

    def flush(self, medium: Medium) -> int:
        """Every Write received so far is durable before the Flush is acknowledged (§6.4)."""
        return medium.flush()

    def complete(self, medium: Medium) -> int:
        """VDC_Complete: the backup is final; harden it before acknowledging (§6.4)."""
        return medium.flush()

    def other(self, cmd: Command, medium: Medium) -> CodeBytesPos:
        """Positioning, marks, snapshots; anything else is ERROR_NOT_SUPPORTED (§6.4)."""
        code = cmd.command_code
        assert self.final is not None
        features = self.final.features
        positional = features & (Feature.VDF_Position | Feature.VDF_RandomAccess)
        if code == CommandCode.VDC_GetPosition and positional:
            rc, p = medium.get_position()
            return rc, 0, p
        if code == CommandCode.VDC_SetPosition and positional:
            rc, p = medium.set_position(cmd.position, cmd.size)
            return rc, 0, p
        if code == CommandCode.VDC_Rewind and features & Feature.VDF_Rewind:
            medium.rewind()
            return Win32.ERROR_SUCCESS, 0, 0
        if code == CommandCode.VDC_WriteMark and features & Feature.VDF_FileMarks:
            return medium.write_mark(), 0, 0
        if code == CommandCode.VDC_SkipMarks and features & Feature.VDF_FileMarks:
            return medium.skip_marks(cmd.size), 0, 0
        if code == CommandCode.VDC_PrepareToFreeze and features & Feature.VDF_SnapshotPrepare:
            return Win32.ERROR_SUCCESS, 0, 0
        if code == CommandCode.VDC_Snapshot and self.snapshot is not None:
            medium.flush()  # the metadata stream is complete now (§9)
            return self.snapshot.take(), 0, 0
        if code == CommandCode.VDC_MountSnapshot and self.snapshot is not None:
            return self.snapshot.mount(), 0, 0
        return self.unknown(cmd), 0, 0

    def unknown(self, cmd: Command) -> int:
        """A command this client does not do, known or not (§6.4)."""
        return Win32.ERROR_NOT_SUPPORTED

    # ------------------------------------------------------------------ failure and the end
    def own_failure(self, reason: str) -> None:
        """The client cannot go on: SignalAbort at once (§2.6, §8.1), so the server stops
        and the statement fails with the abort messages."""
        with self._lock:
            if self.report.own_failure is None:
                self.report.own_failure = reason
                self.report.note(f"own failure: {reason}; SignalAbort")
        self.aborted.set()
        self.vds.signal_abort()

    def close(self) -> None:
        """Close once every device returned VD_E_CLOSE, or after an abort (§2.7, §8.4)."""
        self.report.close_hr = self.vds.close()

    def verdict(self) -> bool:
        """Success only when the statement succeeded and we did not fail (§1.6 step 10)."""
        return self.report.statement_ok and self.report.own_failure is None

    # ------------------------------------------------------------------ the run
    def run(self) -> bool:
        ctx = self.ctx
        rep = self.report
        os.makedirs(ctx.media_dir, exist_ok=True)
        rep.create_hr = self.vds.create(ctx.set_name, self.config(), ctx.instance)
        if rep.create_hr != HResult.NOERROR:
            rep.note(f"Create -> {hresult_name(rep.create_hr)}")
            return False
        self._stmt_thread = threading.Thread(target=self._statement, daemon=True,
                                             name="vdi-statement")
        self._stmt_thread.start()
        media: list[Medium] = []
        try:
            hr, final = self.wait_configuration()
            rep.config_hr = hr
            if hr != HResult.NOERROR or final is None:
                # VD_E_TIMEOUT: the statement ended without attaching (or took too long): Close
                # of the Configurable set gives it up (§8.4).  VD_E_ABORT: Close (§8.2).
                rep.note(f"GetConfiguration -> {hresult_name(hr)}")
            else:
                self.final = final
                devices = self.open_devices(media)
                if devices:
                    self.serve_all(devices)
        finally:
            self.close()
            for m in media:
                m.close()
            self.wait_statement()
        if rep.statement_error:
            rep.note(f"statement: {rep.statement_error}")
        elif rep.result is not None and not rep.result.ok:
            rep.note(f"statement failed: {rep.result.error_numbers}")
        return self.verdict()

    def open_devices(self, media: list[Medium]
                     ) -> list[tuple[VirtualDevice, Medium, DeviceStats]]:
        out = []
        paths = media_paths(self.ctx.media_dir, self.ctx.device_count)
        for i, (name, path) in enumerate(zip(self.ctx.devices, paths, strict=True)):
            hr, dev = self.vds.open_device(name)
            if dev is None:
                self.own_failure(f"OpenDevice({name}) -> {hresult_name(hr)}")
                return []
            try:
                medium = self.open_medium(i, path)
            except OSError as exc:
                self.own_failure(f"cannot open the medium {path}: {exc.strerror}")
                return []
            media.append(medium)
            stats = DeviceStats(name)
            self.report.devices.append(stats)
            out.append((dev, medium, stats))
        return out

    def wait_statement(self) -> None:
        t = self._stmt_thread
        if t is not None:
            t.join(self.deadline_s())
            if t.is_alive():
                self.report.note("statement still running at the case deadline")


def run(context: ClientContext) -> bool:
    """The reference client: True when the operation succeeded (docs/client-harness.md)."""
    return ReferenceClient(context).run()


def main(argv: list[str] | None = None, client: Callable[[ClientContext], bool] = run) -> int:
    """``python -m conformance.harness.clients.reference CONTEXT.json``: exit 0 on success,
    1 when the operation failed, 2 when the context cannot be read."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m conformance.harness.clients.reference CONTEXT.json",
              file=sys.stderr)
        return 2
    try:
        ctx = ClientContext.load(args[0])
    except ContextError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = client(ctx)
    with contextlib.suppress(BrokenPipeError):
        print(f"{ctx.case}: {'success' if ok else 'failure'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
