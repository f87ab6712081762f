"""The conformance executor on the sim backend: symbolic indices, capabilities, deadlines.

The executor performs trace steps on a real backend (vdisim's client in this process, a
secondary in an agent process, the engine in its own process) and reports what came back; these
tests check the mapping from symbolic indices to handles, the exact HRESULTs and outputs of a
canonical conversation, that a step the backend lacks raises ``NotCapable`` before anything
happens, that unusable steps raise ``HarnessError``, and that a call that never returns is
reported as a hang (``TIMEOUT-CALL-RETURNS``) instead of blocking the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conformance.backend import Capability, ClientSide, CommandView, NotCapable
from conformance.backends.sim import SimBackend, SimClient
from conformance.executor import HANG_RULE, Executor, HarnessError, required_capability
from conformance.trace import Step
from vdisim.protocol.codes import HResult, Win32

OK = HResult.NOERROR
WRITE, FLUSH = 2, 12


@pytest.fixture(scope="module")
def backend() -> Iterator[SimBackend]:
    b = SimBackend()
    b.open()
    yield b
    b.close()


@pytest.fixture
def ex(backend: SimBackend) -> Iterator[Executor]:
    e = Executor(backend)
    yield e
    e.close()
    assert backend.leaks() == []


def C(call: str, /, **args: Any) -> Step:
    return Step("client", call, args)


def S(call: str, /, **args: Any) -> Step:
    return Step("server", call, args)


def active(ex: Executor, n: int = 1) -> None:
    """Drive a set to Active: client device 0 open, server devices 0..n-1, agent running."""
    steps = [C("create", name="{set}", config={"device_count": n}),
             S("open", name="{set}"),
             S("begin_configuration", features=0x10000, block_size=512, alignment=0,
               max_transfer_size=65536, timeout_ms=0),
             S("request_buffers", size=65536, alignment=0, count=4),
             S("end_configuration"),
             C("get_configuration", timeout_ms=5000)]
    steps += [S("open_device")] * n + [S("start_agent"), C("open_device", name="{set}")]
    for s in steps:
        obs = ex.perform(s)
        assert obs.hr in (OK, None), obs


def test_canonical_conversation_symbolic_indices(ex: Executor) -> None:
    active(ex, 2)
    assert [o.out.get("index") for o in ex.trace if o.step.call == "open_device"
            and o.step.actor == "server"] == [0, 1]
    buf = ex.perform(S("allocate_buffer", size=4096, alignment=0, fill="5a"))
    assert buf.hr == OK and buf.out == {"buffer": 0}
    sent = ex.perform(S("send_command", device=0, code=WRITE, size=4096, position=0, buffer=0))
    assert sent.hr == OK and sent.out == {"command": 0}
    got = ex.perform(C("get_command", device=0, timeout_ms=5000))
    assert got.hr == OK
    assert {k: got.out[k] for k in ("command", "code", "size", "position", "has_buffer")} == {
        "command": 0, "code": WRITE, "size": 4096, "position": 0, "has_buffer": True}
    data = ex.perform(C("read_buffer", command=0, offset=0, length=4))
    assert data.out["data"] == "5a5a5a5a"
    assert ex.perform(C("complete_command", device=0, command=0, code=0, bytes=4096,
                        position=0)).hr == OK
    # the same command again, and a command index that names nothing: VD_E_INVALID (§2.5)
    assert ex.perform(C("complete_command", device=0, command=0, code=0, bytes=0)).hr == \
        HResult.VD_E_INVALID
    assert ex.perform(C("complete_command", device=0, command=99, code=0)).hr == \
        HResult.VD_E_INVALID
    done = ex.perform(S("wait_completion", command=0, timeout_ms=5000))
    assert done.hr is None
    assert done.out["done"] is True and done.out["completion_code"] == 0
    assert done.out["bytes_transferred"] == 4096
    # a send the server rejects reports its synchronous completion code (§3 SendCommand)
    ex.perform(S("send_command", device=0, code=WRITE, size=4096, position=0, buffer=0))
    ex.perform(C("get_command", device=0, timeout_ms=5000))
    assert ex.perform(C("complete_command", device=0, command=1, code=Win32.ERROR_DISK_FULL,
                        bytes=0)).hr == OK
    # the completion reaches the engine asynchronously; once it has, the device is IO-ERROR
    assert ex.perform(S("wait_completion", command=1, timeout_ms=5000)).out["done"] is True
    rejected = ex.perform(S("send_command", device=0, code=FLUSH))
    assert rejected.hr == HResult.VD_E_IO_ERROR
    assert rejected.out == {"command": 2, "completion_code": Win32.ERROR_IO_DEVICE}
    state = ex.perform(S("state"))
    assert state.out["state"] == "ACTIVE" and state.out["violations"] == []
    for s in (S("close_device", device=0), S("close_device", device=1)):
        assert ex.perform(s).hr == OK
    assert ex.perform(C("get_command", device=0, timeout_ms=5000)).hr == HResult.VD_E_CLOSE
    assert ex.perform(C("close")).hr == OK
    # the device interface of the closed set (capability SAFE_AFTER_CLOSE)
    after = ex.perform(C("device_after_close", device=0, call="get_command", timeout_ms=0))
    assert after.hr == HResult.VD_E_PROTOCOL and after.out == {"command": None}
    assert ex.perform(S("close")).hr == OK
    leak = ex.perform(Step("harness", "leak_check"))
    assert leak.out == {"leaks": []}


def test_set_name_placeholders(ex: Executor) -> None:
    assert ex.subst("{set}") == ex.set_name
    assert ex.subst(["{set}", "{set}1", "{other}"]) == [ex.set_name, ex.set_name + "1",
                                                        ex.other_name]
    assert ex.set_name != ex.other_name
    assert ex.perform(C("create", name="{set}", config={"device_count": 1})).hr == OK
    assert ex.perform(S("open", name="{other}")).hr == HResult.VD_E_INVALID
    assert ex.perform(S("open", name="{set}")).hr == OK
    assert ex.perform(C("close")).hr == OK
    assert ex.perform(S("close")).hr == OK


def test_garbage_buffer_handle(ex: Executor) -> None:
    active(ex)
    assert ex.perform(C("map_buffer_handle", handle=5)).out == {"mapped": False}
    assert ex.trace[-1].hr == HResult.VD_E_INVALID
    ex.perform(S("allocate_buffer", size=4096, alignment=0))
    ex.perform(S("send_command", device=0, code=WRITE, size=4096, position=0, buffer=0))
    ex.perform(C("get_command", device=0, timeout_ms=5000))
    h = ex.perform(C("get_buffer_handle", command=0))
    assert h.hr == OK and h.out == {"handle": 0}
    m = ex.perform(C("map_buffer_handle", handle=0))
    assert m.hr == OK and m.out == {"mapped": True}
    assert ex.perform(C("get_buffer_handle", command=7)).hr == HResult.VD_E_INVALID


def test_secondary_in_another_process(ex: Executor) -> None:
    """§1.9: a secondary attaches from an agent process, opens device 1, takes a command and
    hands its buffer to the primary by handle (§2.9)."""
    active(ex, 2)
    assert ex.perform(Step("secondary", "open_in_secondary", {"name": "{set}"})).hr == OK
    sec = ex.clients["secondary"]
    assert getattr(sec, "proc", None) is not None and sec.proc.pid > 0  # type: ignore[attr-defined]
    got = ex.perform(Step("secondary", "open_device", {"name": "{set}1"}))
    assert got.hr == OK and got.out == {"device": 0}  # the secondary's own first device
    ex.perform(S("allocate_buffer", size=4096, alignment=0, fill="13"))
    ex.perform(S("send_command", device=1, code=WRITE, size=4096, position=0, buffer=0))
    cmd = ex.perform(Step("secondary", "get_command", {"device": 0, "timeout_ms": 5000}))
    assert cmd.hr == OK and cmd.out["command"] == 0
    h = ex.perform(Step("secondary", "get_buffer_handle", {"command": 0}))
    assert h.hr == OK
    assert ex.perform(C("map_buffer_handle", handle=h.out["handle"])).out == {"mapped": True}
    assert ex.perform(Step("secondary", "complete_command",
                           {"device": 0, "command": 0, "code": 0, "bytes": 4096})).hr == OK
    done = ex.perform(S("wait_completion", command=0, timeout_ms=5000))
    assert done.out["completion_code"] == 0 and done.out["bytes_transferred"] == 4096


def test_secondary_killed(backend: SimBackend) -> None:
    ex = Executor(backend)
    try:
        active(ex, 2)
        assert ex.perform(Step("secondary", "open_in_secondary", {"name": "{set}"})).hr == OK
        assert ex.perform(Step("secondary", "open_device", {"name": "{set}1"})).hr == OK
        ex.perform(Step("harness", "kill_secondary"))
        assert not ex.clients["secondary"].alive  # type: ignore[attr-defined]
        # §1.9: VDI does not notice a secondary's death; the primary is still Active
        assert ex.perform(C("get_command", device=0, timeout_ms=0)).hr == HResult.VD_E_TIMEOUT
        assert ex.perform(C("signal_abort")).hr == OK
        with pytest.raises(HarnessError):
            ex.perform(Step("secondary", "get_configuration", {"timeout_ms": 0}))
    finally:
        ex.close()
    assert backend.leaks() == []


class NoHandles(SimBackend):
    capabilities = SimBackend.capabilities - {Capability.BUFFER_HANDLES,
                                              Capability.KILL_SERVER}


def test_not_capable_before_anything_happens() -> None:
    b = NoHandles()  # not opened: a capability check must not need the engine
    ex = Executor(b)
    try:
        for step in (C("get_buffer_handle", command=0), C("map_buffer_handle", handle=0),
                     Step("harness", "kill_server"), S("die")):
            with pytest.raises(NotCapable) as info:
                ex.perform(step)
            assert info.value.capability is required_capability(step)
        assert ex.trace == [] and ex.clients == {} and ex.server is None
        assert not ex.can(C("get_buffer_handle", command=0))
        assert ex.can(C("close"))
    finally:
        ex.close()


def test_harness_errors(ex: Executor) -> None:
    with pytest.raises(HarnessError, match="unknown call"):
        ex.perform(C("frobnicate"))
    with pytest.raises(HarnessError, match="no scripted server"):
        ex.perform(S("end_configuration"))
    with pytest.raises(HarnessError, match="no device"):
        ex.perform(C("get_command", device=3, timeout_ms=0))


class _StuckClient(SimClient):
    """A client whose GetCommand ignores its timeout: a genuine hang of the real library."""

    def get_command(self, device: int, timeout_ms: int) -> tuple[int, CommandView | None]:
        return super().get_command(device, -1)


class StuckBackend(SimBackend):
    def new_client(self) -> ClientSide:
        c = _StuckClient(self._remember)
        self._clients.append(c)
        return c


def test_a_call_that_never_returns_is_a_hang() -> None:
    b = StuckBackend()
    b.open()
    ex = Executor(b, margin_s=0.3)
    try:
        active(ex)
        obs = ex.perform(C("get_command", device=0, timeout_ms=0))
        assert obs.hr is None and obs.out["hang"] is True and obs.out["deadline_ms"] == 300
        assert ex.wedged is not None
        with pytest.raises(HarnessError, match="hang"):
            ex.perform(C("close"))
        assert HANG_RULE == "TIMEOUT-CALL-RETURNS"
        # Close from another thread wakes the stuck call (§2.7 / §8.2); then clean up.
        assert ex.clients["client"].close() == HResult.VD_E_OPEN
    finally:
        ex.wedged = None
        ex.close()
        b.close()
    assert b.leaks() == []


def test_kill_server_and_restart(backend: SimBackend) -> None:
    """§8.1: the engine's death aborts the client; the next server step starts a new engine."""
    ex = Executor(backend)
    try:
        active(ex)
        starts = backend.engine_starts
        ex.perform(Step("harness", "kill_server"))
        got = ex.perform(C("get_command", device=0, timeout_ms=5000))
        assert got.hr == HResult.VD_E_ABORT
        assert ex.perform(C("close")).hr == OK
        with pytest.raises(HarnessError):
            ex.perform(S("state"))
        assert ex.perform(C("create", name="{set}", config={"device_count": 1})).hr == OK
        assert ex.perform(S("open", name="{set}")).hr == OK
        assert backend.engine_starts == starts + 1
        assert ex.perform(S("state")).out["state"] == "CONNECTED"
    finally:
        ex.close()
    backend.sweep_dead()  # the killed engine's buffer area, as the OS would reclaim it
    assert backend.leaks() == []


def test_statement_steps(backend: SimBackend) -> None:
    """STATEMENTS: a BACKUP through T-SQL against a set the executor's client created."""
    db = backend.server.scratch_database()
    ex = Executor(backend)
    try:
        ex.perform(C("create", name="{set}", config={"device_count": 1}))
        ex.perform(Step("harness", "start_statement", {
            "sql": f"BACKUP DATABASE {db} TO VIRTUAL_DEVICE='{{set}}'"}))
        assert ex.perform(C("get_configuration", timeout_ms=10_000)).hr == OK
        assert ex.perform(C("open_device", name="{set}")).hr == OK
        n = 0
        while True:
            got = ex.perform(C("get_command", device=0, timeout_ms=10_000))
            if got.hr != OK:
                assert got.hr == HResult.VD_E_CLOSE
                break
            ex.perform(C("complete_command", device=0, command=n, code=0,
                         bytes=got.out["size"] if got.out["code"] == WRITE else 0))
            n += 1
        assert n > 2
        assert ex.perform(C("close")).hr == OK
        end = ex.perform(Step("harness", "wait_statement", {"timeout_ms": 30_000}))
        assert end.out == {"done": True, "ok": True, "errors": []}
    finally:
        ex.close()
