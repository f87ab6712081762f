"""Seeded-bug clients: the reference client with exactly one bug each.

Every class below changes one step of :class:`~conformance.harness.clients.reference.
ReferenceClient`; its docstring names the rule of conformance/catalogue/client.py it must trip,
the bundled scenario that shows it (docs/scenarios.md), and the real client the bug comes from
(anchors: /work/shared/spec/anchors.md §A.2, §B).  :data:`BUGS` maps a bug's name to ``(run
function, rule ID)``; :data:`SEEDED` has the class and the scenario too.

Bugs that hang (wait forever, spin) are bounded: they give up after ``3 x timeouts.case_s`` so a
thread never outlives its test; the harness's watchdog (``case_s``) judges them hung long before.

As a program: ``python -m conformance.harness.clients.buggy BUG CONTEXT.json``.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections.abc import Callable

import attrs

from conformance.harness.clients.reference import (
    CAPABILITIES,
    CodeBytesPos,
    Issue,
    Medium,
    ReferenceClient,
    main,
)
from conformance.harness.context import ClientContext
from vdisim.client import Command, VirtualDevice, VirtualDeviceSet
from vdisim.protocol.codes import CommandCode, Feature, HResult, Win32, hresult_name
from vdisim.protocol.records import VDConfig
from vdisim.refclient import DeviceStats

__all__ = ["ABANDONED", "BUGS", "CAPABILITIES", "SEEDED", "SeededBug", "release_abandoned"]

#: Sets a crashed-like client left open (NoSignalAbort); the process exit releases them.
ABANDONED: list[VirtualDeviceSet] = []


def release_abandoned() -> None:
    """Close the sets :class:`NoSignalAbort` abandoned (tests; a real crash exits instead)."""
    while ABANDONED:
        ABANDONED.pop().close()


def _vanish() -> None:
    """At exit, a process that abandoned a set goes away like a crashed one: no Close, no
    destructors (the set's ``__del__`` would Close it), so the server sees the peer die."""
    if ABANDONED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


atexit.register(_vanish)


class _Bounded(ReferenceClient):
    def hang_limit_s(self) -> float:
        """How long a 'forever' of a hanging bug lasts: 3 x case_s."""
        return 3.0 * self.deadline_s()

    def watchdog_s(self) -> float:
        return self.hang_limit_s() + 1.0


class GetConfigHang(_Bounded):
    """CLIENT-GETCONFIG-NO-HANG: one long GetConfiguration, never checking whether the
    statement already failed (sql-snap before its PR #2; §2.2, §8.4).  Scenario:
    backup-open-failure."""

    def wait_configuration(self) -> tuple[int, VDConfig | None]:
        return self.vds.get_configuration(int(self.hang_limit_s() * 1000))


class EofSpin(_Bounded):
    """CLIENT-READ-EOF: the Read handler loops until the buffer is full, so at the end of the
    data it spins and never completes the Read (mssqlPipe; §6.4).  Scenario: restore-plain."""

    def read(self, cmd: Command, medium: Medium) -> CodeBytesPos:
        assert cmd.buffer is not None
        got = 0
        give_up = time.monotonic() + self.hang_limit_s()
        while got < cmd.size and time.monotonic() < give_up and not self.aborted.is_set():
            _rc, n = medium.read(cmd.buffer[got:], cmd.position + got)
            got += n
            if n == 0:
                time.sleep(0.01)  # "while (bytes < size) bytes += read(...)"
        if got < cmd.size:  # only the bound ends the spin: give up as the client's failure
            self.own_failure(f"Read of {cmd.size} bytes never filled ({got} read)")
        return Win32.ERROR_SUCCESS, got, 0


class LazyFlush(ReferenceClient):
    """CLIENT-FLUSH-DURABLE: Writes are kept in memory and acknowledged; Flush and Complete are
    acknowledged at once; the data reaches the file only when the devices close (VDI.NET's
    async writes, the samples' fflush; §6.4, KB3188454).  A crash (abort) after an acknowledged
    Flush loses it.  Scenarios: backup-plain (the harness copies the media at the Flush
    acknowledgement), backup-flush-then-abort."""

    def __init__(self, context: ClientContext, issue: Issue | None = None) -> None:
        super().__init__(context, issue)
        self.pending: dict[int, list[tuple[int, bytes]]] = {}

    def write(self, cmd: Command, medium: Medium) -> CodeBytesPos:
        assert cmd.buffer is not None
        self.pending.setdefault(id(medium), []).append((cmd.position, bytes(cmd.buffer)))
        return Win32.ERROR_SUCCESS, cmd.size, 0

    def flush(self, medium: Medium) -> int:
        return Win32.ERROR_SUCCESS

    def complete(self, medium: Medium) -> int:
        return Win32.ERROR_SUCCESS

    def serve_device(self, dev: VirtualDevice, medium: Medium, stats: DeviceStats) -> None:
        super().serve_device(dev, medium, stats)
        chunks = self.pending.pop(id(medium), [])
        if stats.end == "VD_E_CLOSE":  # written at the very end; an abort loses them
            for position, data in chunks:
                medium.write(memoryview(data), position)
            medium.flush()


class FinaliseAtFirstFlush(ReferenceClient):
    """CLIENT-COMPLETE-FINALISE: with VDC_Complete enabled, the first Flush still ends the
    backup: the file is finalised there, later Writes are acknowledged and dropped (Bareos
    before PR #2072; §6.4, KB3188454).  Scenario: backup-mid-flush."""

    def __init__(self, context: ClientContext, issue: Issue | None = None) -> None:
        super().__init__(context, issue)
        self.finalised: set[int] = set()

    def write(self, cmd: Command, medium: Medium) -> CodeBytesPos:
        if id(medium) in self.finalised:
            return Win32.ERROR_SUCCESS, cmd.size, 0  # "Received command ... when closing"
        return super().write(cmd, medium)

    def flush(self, medium: Medium) -> int:
        rc = super().flush(medium)
        assert self.final is not None
        if self.final.features & Feature.VDF_CompleteEnabled:
            self.finalised.add(id(medium))
        return rc


class DropWrites(ReferenceClient):
    """CLIENT-WRITE-KEPT: every fifth Write is acknowledged in full and not stored (Bareos's
    teardown, sql-snap's over-reported counts; §6.4).  Scenario: backup-plain."""

    def __init__(self, context: ClientContext, issue: Issue | None = None) -> None:
        super().__init__(context, issue)
        self.seen = 0

    def write(self, cmd: Command, medium: Medium) -> CodeBytesPos:
        with self._lock:
            self.seen += 1
            drop = self.seen % 5 == 0
        if drop:
            return Win32.ERROR_SUCCESS, cmd.size, 0
        return super().write(cmd, medium)


class CloseEarly(ReferenceClient):
    """CLIENT-CLOSE-AFTER-END: a device is taken as finished at its first Flush or Complete
    (backup) or at the end of the data (restore): the client finalises its file and closes the
    set there, without completing that command and without waiting for VD_E_CLOSE -- Close
    returns VD_E_OPEN and aborts the operation (most clients ignore Close's result; §2.7,
    §8.4).  Scenario: backup-plain."""

    def serve_device(self, dev: VirtualDevice, medium: Medium, stats: DeviceStats) -> None:
        timeout = self.ctx.timeout("get_command_ms")
        while True:
            hr, cmd = dev.get_command(timeout)
            if hr == HResult.VD_E_TIMEOUT and not self.aborted.is_set():
                continue
            if cmd is None:
                stats.end = hresult_name(hr)
                return
            if cmd.command_code in (CommandCode.VDC_Flush, CommandCode.VDC_Complete):
                medium.flush()
                stats.end = "finished at Flush (no VD_E_CLOSE)"
                return
            outcome = self.perform(cmd, medium, stats)
            if outcome is None:
                return
            code, nbytes, pos = outcome
            if cmd.command_code == CommandCode.VDC_Read and code != Win32.ERROR_SUCCESS:
                stats.end = "finished at the end of the data (no VD_E_CLOSE)"
                return
            dev.complete_command(cmd, code, nbytes, pos)


class NoSignalAbort(ReferenceClient):
    """CLIENT-SIGNAL-ABORT: when its own data sink fails, the client just stops -- the Write
    in hand is never completed, no SignalAbort, no Close -- and reports failure, leaving the
    server to find out when the process exits (Bareos, pbsgui, sql-snap; §2.6, §8.1).
    Scenario: backup-client-fails.  The abandoned set is kept in :data:`ABANDONED` (a process
    exit releases it; tests call :func:`release_abandoned`)."""

    def own_failure(self, reason: str) -> None:
        with self._lock:
            if self.report.own_failure is None:
                self.report.own_failure = reason
                self.report.note(f"own failure: {reason}; walking away")
        self.aborted.set()

    def close(self) -> None:
        if self.report.own_failure is None:
            super().close()
        else:
            ABANDONED.append(self.vds)

    def wait_statement(self) -> None:
        if self.report.own_failure is None:
            super().wait_statement()


class TimeoutFatal(ReferenceClient):
    """CLIENT-TIMEOUT-NOT-FATAL: VD_E_TIMEOUT from GetCommand is taken as a failure: the client
    signals abort although the server is only slow (VDI.NET, mssqlPipe; §2.4, §8.5).
    Scenario: backup-server-stall."""

    def on_timeout(self, stats: DeviceStats) -> bool:
        self.own_failure(f"{stats.name}: GetCommand timed out")
        return False


class UnknownSucceeds(ReferenceClient):
    """CLIENT-UNKNOWN-NOT-SUPPORTED: commands the client does not know are completed with
    ERROR_SUCCESS instead of ERROR_NOT_SUPPORTED (§6.4).  Scenario: backup-unknown-command."""

    def unknown(self, cmd: Command) -> int:
        return Win32.ERROR_SUCCESS


class RoundRobin(_Bounded):
    """CLIENT-DEVICES-CONCURRENT: one thread serves the devices in turn, waiting on each with a
    long GetCommand.  Buffers come from one pool for all devices (§1.8): while it waits on one
    device, the server's only free buffer sits in a command queued on another, and both wait
    forever (rushikesh90/vdi-cpp-wrapper).  Scenario: backup-one-buffer-2dev."""

    def serve_all(self, devices: list[tuple[VirtualDevice, Medium, DeviceStats]]) -> None:
        t = threading.Thread(target=self._round_robin, args=(devices,), daemon=True,
                             name="vdi-round-robin")
        t.start()
        self.join_devices([t])

    def _round_robin(self, devices: list[tuple[VirtualDevice, Medium, DeviceStats]]) -> None:
        live = list(devices)
        wait_ms = int(self.hang_limit_s() * 1000)
        while live:
            for entry in list(live):
                dev, medium, stats = entry
                hr, cmd = dev.get_command(wait_ms)
                if cmd is None:
                    if hr != HResult.VD_E_TIMEOUT:
                        stats.end = hresult_name(hr)
                        live.remove(entry)
                    continue
                outcome = self.perform(cmd, medium, stats)
                if outcome is None:
                    return
                code, nbytes, pos = outcome
                dev.complete_command(cmd, code, nbytes, pos)


class ScrubAfterComplete(ReferenceClient):
    """CLIENT-BUFFER-AFTER-COMPLETE: the client keeps its own mapping of every Write buffer
    (GetBufferHandle / MapBufferHandle) and wipes the buffers at each Flush -- after their
    commands were completed, when they belong to the server again (§2.5, §8.2: buffers are the
    server's once completed).  The backup itself is intact.  Scenario: backup-plain."""

    def __init__(self, context: ClientContext, issue: Issue | None = None) -> None:
        super().__init__(context, issue)
        self.kept: dict[int, memoryview] = {}
        self.scrubbed = 0

    def write(self, cmd: Command, medium: Medium) -> CodeBytesPos:
        hr, handle = self.vds.get_buffer_handle(cmd)
        if hr == HResult.NOERROR and handle is not None and handle not in self.kept:
            mhr, view = self.vds.map_buffer_handle(handle)
            if mhr == HResult.NOERROR and view is not None:
                with self._lock:
                    self.kept[handle] = view
        return super().write(cmd, medium)

    def flush(self, medium: Medium) -> int:
        rc = super().flush(medium)
        with self._lock:
            for view in self.kept.values():
                view[:] = bytes(len(view))  # touches buffers of completed commands
                self.scrubbed += 1
        return rc


class SuccessDespiteFailure(ReferenceClient):
    """CLIENT-SUCCESS-AGREES: success is decided from VD_E_CLOSE on every device, not from the
    statement's outcome (§1.6 step 10, §8.1: the server closes the devices normally after an
    error completion).  Scenario: backup-close-device-early."""

    def verdict(self) -> bool:
        devs = self.report.devices
        return bool(devs) and all(d.end == "VD_E_CLOSE" for d in devs)


# The run functions, one per bug (``--client conformance.harness.clients.buggy:eof_spin``).
def getconfig_hang(context: ClientContext) -> bool:
    return GetConfigHang(context).run()


def eof_spin(context: ClientContext) -> bool:
    return EofSpin(context).run()


def flush_not_durable(context: ClientContext) -> bool:
    return LazyFlush(context).run()


def finalise_at_first_flush(context: ClientContext) -> bool:
    return FinaliseAtFirstFlush(context).run()


def writes_dropped(context: ClientContext) -> bool:
    return DropWrites(context).run()


def close_devices_open(context: ClientContext) -> bool:
    return CloseEarly(context).run()


def no_signal_abort(context: ClientContext) -> bool:
    return NoSignalAbort(context).run()


def timeout_fatal(context: ClientContext) -> bool:
    return TimeoutFatal(context).run()


def unknown_success(context: ClientContext) -> bool:
    return UnknownSucceeds(context).run()


def round_robin(context: ClientContext) -> bool:
    return RoundRobin(context).run()


def buffer_after_complete(context: ClientContext) -> bool:
    return ScrubAfterComplete(context).run()


def success_despite_failure(context: ClientContext) -> bool:
    return SuccessDespiteFailure(context).run()


@attrs.frozen(slots=True)
class SeededBug:
    name: str
    cls: type[ReferenceClient]
    run: Callable[[ClientContext], bool]
    rule: str  # the rule ID it must trip (conformance/catalogue/client.py)
    scenario: str  # the bundled scenario that shows it

    @property
    def spec(self) -> str:
        """``module:function`` for ``--client``."""
        return f"{__name__}:{self.run.__name__}"


SEEDED: dict[str, SeededBug] = {b.name: b for b in (
    SeededBug("getconfig-hang", GetConfigHang, getconfig_hang, "CLIENT-GETCONFIG-NO-HANG",
              "backup-open-failure"),
    SeededBug("eof-spin", EofSpin, eof_spin, "CLIENT-READ-EOF", "restore-plain"),
    SeededBug("flush-not-durable", LazyFlush, flush_not_durable, "CLIENT-FLUSH-DURABLE",
              "backup-plain"),
    SeededBug("finalise-at-first-flush", FinaliseAtFirstFlush, finalise_at_first_flush,
              "CLIENT-COMPLETE-FINALISE", "backup-mid-flush"),
    SeededBug("writes-dropped", DropWrites, writes_dropped, "CLIENT-WRITE-KEPT",
              "backup-plain"),
    SeededBug("close-devices-open", CloseEarly, close_devices_open, "CLIENT-CLOSE-AFTER-END",
              "backup-plain"),
    SeededBug("no-signal-abort", NoSignalAbort, no_signal_abort, "CLIENT-SIGNAL-ABORT",
              "backup-client-fails"),
    SeededBug("timeout-fatal", TimeoutFatal, timeout_fatal, "CLIENT-TIMEOUT-NOT-FATAL",
              "backup-server-stall"),
    SeededBug("unknown-success", UnknownSucceeds, unknown_success,
              "CLIENT-UNKNOWN-NOT-SUPPORTED", "backup-unknown-command"),
    SeededBug("round-robin", RoundRobin, round_robin, "CLIENT-DEVICES-CONCURRENT",
              "backup-one-buffer-2dev"),
    SeededBug("buffer-after-complete", ScrubAfterComplete, buffer_after_complete,
              "CLIENT-BUFFER-AFTER-COMPLETE", "backup-plain"),
    SeededBug("success-despite-failure", SuccessDespiteFailure, success_despite_failure,
              "CLIENT-SUCCESS-AGREES", "backup-close-device-early"),
)}

#: name -> (run(context) -> bool, the rule ID it should trip)
BUGS: dict[str, tuple[Callable[[ClientContext], bool], str]] = {
    name: (bug.run, bug.rule) for name, bug in SEEDED.items()}


def cli(argv: list[str] | None = None) -> int:
    """``python -m conformance.harness.clients.buggy BUG CONTEXT.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in SEEDED:
        print(f"usage: python -m conformance.harness.clients.buggy {{{','.join(SEEDED)}}} "
              "CONTEXT.json", file=sys.stderr)
        return 2
    return main(args[1:], SEEDED[args[0]].run)


if __name__ == "__main__":
    sys.exit(cli())
