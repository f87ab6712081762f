"""Live mode (conformance/backends/live.py, docs/live.md): configuration, precise skip reasons,
``--live-required``, the Windows COM vtable marshalling (against a COM object built in Python,
no DLL), the in-container agent (driven here against vdisim's library and engine), and -- when
a real SQL Server is configured -- a backup/restore round trip through Microsoft's library.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.backend import BACKENDS, open_backend
from conformance.backends import live
from conformance.backends.tracerec import TraceRecorder
from conformance.backends.vdilib import (
    COM_DEVICE_PROTOS,
    COM_DEVICE_SLOTS,
    COM_SET_PROTOS,
    COM_SET_SLOTS,
    GUID,
    ComVdi,
    NativeClient,
    VDCCommand,
    VDConfigC,
    hresult,
)
from vdisim.engine import Plan
from vdisim.protocol.codes import HResult
from vdisim.protocol.records import VDConfig

LIVE_VARS = ("VDISIM_LIVE_SERVER", "VDISIM_LIVE_USER", "VDISIM_LIVE_PASSWORD",
             "VDISIM_LIVE_PASSWORD_FILE", "VDISIM_LIVE_LIBSQLVDI", "VDISIM_LIVE_AGENT")


def _live_required(config: pytest.Config) -> bool:
    return bool(config.getoption("--live-required", default=False)) or \
        os.environ.get("VDISIM_LIVE_REQUIRED") == "1"


# -- configuration and skip reasons --------------------------------------------------------------


def test_backends_are_registered() -> None:
    assert BACKENDS["live"] == "conformance.backends.live:live_backend"
    assert BACKENDS["shim"] == "conformance.backends.live:shim_backend"
    b = open_backend("live", env={})
    assert isinstance(b, live.LiveBackend)
    assert b.capabilities == live.LIVE_CAPABILITIES
    assert not b.has(live.Capability.SCRIPTED_SERVER)
    assert not b.has(live.Capability.SAFE_AFTER_CLOSE)


def test_nothing_configured_names_every_missing_piece(tmp_path: Path) -> None:
    reason = live.live_backend(env={}, library=str(tmp_path / "nope.so")).preflight()
    assert reason is not None
    assert reason.startswith("live backend: VDISIM_LIVE_SERVER is not set")
    assert "VDISIM_LIVE_USER is not set" in reason
    assert "VDISIM_LIVE_PASSWORD (or VDISIM_LIVE_PASSWORD_FILE) is not set" in reason
    assert f"{tmp_path / 'nope.so'} does not exist" in reason
    with pytest.raises(live.LiveUnavailable, match="VDISIM_LIVE_SERVER"):
        live.live_backend(env={}).open()


def test_unreachable_server_is_a_precise_reason(tmp_path: Path) -> None:
    lib = tmp_path / "libsqlvdi.so"
    lib.write_bytes(b"")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reason = live.live_backend(env={}, server=f"127.0.0.1,{port}", user="sa",
                               password="secret-not-printed", library=str(lib)).preflight()
    assert reason is not None
    assert reason.startswith(f"live backend: cannot reach SQL Server at 127.0.0.1,{port}")
    assert "secret-not-printed" not in reason


def test_password_file_and_server_forms(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    cfg = live.LiveConfig({"VDISIM_LIVE_PASSWORD_FILE": str(pw),
                           "VDISIM_LIVE_SERVER": "db.example,1444"})
    assert cfg.password == "s3cret"
    assert cfg.host_port() == ("db.example", 1444)
    assert live.LiveConfig({"VDISIM_LIVE_SERVER": "h:1500"}).host_port() == ("h", 1500)
    assert live.LiveConfig({"VDISIM_LIVE_SERVER": "h"}).host_port() == ("h", 1433)
    assert live.LiveConfig({}).library == live.DEFAULT_LIBSQLVDI


def test_live_backups_are_copy_only() -> None:
    assert live._copy_only("BACKUP DATABASE [d] TO VIRTUAL_DEVICE='x'").endswith(
        " WITH COPY_ONLY")
    assert live._copy_only("BACKUP DATABASE d TO VIRTUAL_DEVICE='x' WITH FORMAT").endswith(
        "WITH FORMAT, COPY_ONLY")
    assert live._copy_only("backup database d to virtual_device='x' with copy_only") == \
        "backup database d to virtual_device='x' with copy_only"
    assert live._copy_only("RESTORE DATABASE d FROM VIRTUAL_DEVICE='x'") == \
        "RESTORE DATABASE d FROM VIRTUAL_DEVICE='x'"


# -- live mode itself: skips here with the reason, fails with --live-required ------------------


@pytest.fixture
def live_backend(request: pytest.FixtureRequest) -> Iterator[live.LiveBackend]:
    backend = live.live_backend()
    reason = backend.preflight()
    if reason is not None:
        if _live_required(request.config):
            pytest.fail(f"--live-required: {reason}")
        pytest.skip(reason)
    yield backend
    backend.close()


def _serve(c: Any, name: str, data: bytearray | None, source: bytes | None) -> int:
    hr, _cfg = c.get_configuration(30000)
    assert hr == 0, f"GetConfiguration -> 0x{hr:08X}"
    hr, dev = c.open_device(name)
    assert hr == 0 and dev is not None
    offset = 0
    while True:
        hr, cmd = c.get_command(dev, 30000)
        if hr == HResult.VD_E_TIMEOUT:
            continue
        if hr:
            return int(hr)
        code, n = 0, 0
        if cmd.code == 2 and data is not None:
            data += c.read_buffer(cmd.handle)
            n = cmd.size
        elif cmd.code == 1 and source is not None:
            chunk = source[offset:offset + cmd.size]
            offset += len(chunk)
            if chunk:
                c.write_buffer(cmd.handle, chunk)
            n = len(chunk)
            code = 0 if n == cmd.size else 38  # ERROR_HANDLE_EOF
        elif cmd.code not in (3, 12, 19):
            code = 50  # ERROR_NOT_SUPPORTED
        assert c.complete_command(dev, cmd.handle, code, n) == 0


def test_live_backup_and_restore_round_trip(live_backend: live.LiveBackend) -> None:
    """Runs only against a configured SQL Server (docs/live.md)."""
    db = live_backend.server.scratch_database()
    c = live_backend.new_client()
    name = "{" + str(uuid.uuid4()).upper() + "}"
    assert c.create(name, VDConfig(device_count=1)) == 0
    run = live_backend.server.start_statement(
        f"BACKUP DATABASE [{db}] TO VIRTUAL_DEVICE = N'{name}'")
    stream = bytearray()
    assert _serve(c, name, stream, None) == HResult.VD_E_CLOSE
    assert c.close() == 0
    out = run.wait(120)
    assert out is not None and out.ok, out
    c2 = live_backend.new_client()
    name2 = "{" + str(uuid.uuid4()).upper() + "}"
    assert c2.create(name2, VDConfig(device_count=1)) == 0
    run = live_backend.server.start_statement(
        f"RESTORE VERIFYONLY FROM VIRTUAL_DEVICE = N'{name2}'")
    assert _serve(c2, name2, None, bytes(stream)) in (HResult.VD_E_CLOSE,)
    assert c2.close() == 0
    out = run.wait(120)
    assert out is not None and out.ok, out


# -- the agent (VDISIM_LIVE_AGENT), here against vdisim's library and engine ---------------------


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="needs g++")
def test_agent_runs_the_vdi_side_in_another_process(tmp_path_factory: pytest.TempPathFactory
                                                    ) -> None:
    from vdisim.engine import Engine

    from .test_native import session_native

    lib = session_native(tmp_path_factory)["library"]
    recorder = TraceRecorder(tmp_path_factory.mktemp("agent-traces"))
    client = live.AgentVdiClient(f"{sys.executable} -m conformance.backends.live --agent",
                                 str(lib), on_call=recorder.on_call)
    try:
        with Engine.start() as eng, eng.connect() as conn:
            assert conn.execute("CREATE DATABASE agentdb WITH SIZE_MB = 1").ok
            name = "{" + str(uuid.uuid4()).upper() + "}"
            assert client.create(name, VDConfig(device_count=1)) == 0
            assert client.create(name, VDConfig(device_count=1)) == HResult.VD_E_PROTOCOL
            result: list[Any] = []
            sql = f"BACKUP DATABASE agentdb TO VIRTUAL_DEVICE = '{name}'"
            recorder.on_statement(sql)
            t = threading.Thread(target=lambda: result.append(conn.execute(sql)))
            t.start()
            stream = bytearray()
            assert _serve(client, name, stream, None) == HResult.VD_E_CLOSE
            assert client.close() == 0
            t.join(30)
            assert result and result[0].ok
            assert len(stream) > 100_000
        # the agent's calls were recorded: a trace and a plan of this backup
        assert len(recorder.written) == 1
        plan = Plan.loads(Path(recorder.written[0][1]).read_text())
        assert (plan.operation, plan.database, plan.devices) == ("backup", "agentdb", (name,))
    finally:
        client.release()


# -- Windows COM marshalling (no DLL: a COM object built from Python callbacks) ------------------


class FakeCom:
    """An object laid out like a COM object: a pointer to a vtable of C function pointers."""

    def __init__(self, slots: dict[str, int], protos: dict[str, tuple[Any, ...]],
                 impl: dict[str, Any]) -> None:
        functype = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)
        n = max(slots.values()) + 1
        self.vtbl = (ctypes.c_void_p * n)()
        self.keep: list[Any] = []
        for name, slot in slots.items():
            if name not in protos:
                continue
            restype, *args = protos[name]
            cb = functype(restype, ctypes.c_void_p, *args)(impl[name])
            self.keep.append(cb)
            self.vtbl[slot] = ctypes.cast(cb, ctypes.c_void_p)
        self.obj = ctypes.c_void_p(ctypes.addressof(self.vtbl))

    @property
    def ptr(self) -> int:
        return ctypes.addressof(self.obj)


def _wstr(p: int | None) -> str | None:
    if not p:
        return None
    out = []
    i = 0
    while True:
        ch = ctypes.c_uint16.from_address(p + 2 * i).value
        if ch == 0:
            return "".join(out)
        out.append(chr(ch))
        i += 1


def test_com_vtable_marshalling() -> None:
    seen: dict[str, Any] = {}
    cmd = VDCCommand(2, 4096, 0, None)
    buf = (ctypes.c_ubyte * 4096)()
    cmd.buffer = ctypes.addressof(buf)
    E_ABORT = ctypes.c_long(-2139684860).value  # VD_E_ABORT as a signed HRESULT

    def dev_get(this: int, timeout: int, pp: Any) -> int:
        seen["timeout"] = timeout
        pp[0] = ctypes.pointer(cmd)
        return 0

    def dev_complete(this: int, p: Any, code: int, nbytes: int, pos: int) -> int:
        seen["complete"] = (ctypes.addressof(p.contents), code, nbytes, pos)
        return E_ABORT

    dev = FakeCom(COM_DEVICE_SLOTS, COM_DEVICE_PROTOS, {
        "Release": lambda this: 0, "GetCommand": dev_get, "CompleteCommand": dev_complete})

    def create_ex(this: int, inst: int | None, name: int, cfg: Any) -> int:
        seen["create"] = (_wstr(inst), _wstr(name), cfg.contents.deviceCount,
                          cfg.contents.features)
        return 0

    def get_cfg(this: int, timeout: int, cfg: Any) -> int:
        seen["cfg_timeout"] = timeout
        cfg.contents.blockSize = 65536
        return ctypes.c_long(-2139684861).value  # VD_E_TIMEOUT, signed

    def open_dev(this: int, name: int, pp: Any) -> int:
        seen["open"] = _wstr(name)
        pp[0] = dev.ptr
        return 0

    def map_handle(this: int, handle: int, pp: Any) -> int:
        seen["map"] = handle
        pp[0] = ctypes.addressof(buf)
        return 0

    def get_handle(this: int, b: int, ph: Any) -> int:
        seen["gbh"] = b
        ph[0] = 7
        return 0

    released: list[int] = []
    vds = FakeCom(COM_SET_SLOTS, COM_SET_PROTOS, {
        "Release": lambda this: released.append(this) or 0,
        "Create": lambda this, n, c: 0, "CreateEx": create_ex,
        "GetConfiguration": get_cfg, "OpenDevice": open_dev, "Close": lambda this: 0,
        "SignalAbort": lambda this: 0, "OpenInSecondary": lambda this, n: 0,
        "OpenInSecondaryEx": lambda this, i, n: ctypes.c_long(-2139684852).value,
        "GetBufferHandle": get_handle, "MapBufferHandle": map_handle})

    client = NativeClient(ComVdi(factory=lambda: vds.ptr))
    assert client.create("set-é", VDConfig(device_count=3, features=0x2000)) == 0
    assert seen["create"] == (None, "set-é", 3, 0x2000)  # NULL instance = default
    hr, cfg = client.get_configuration(-1)
    assert hr == HResult.VD_E_TIMEOUT and cfg is None  # signed HRESULT read as unsigned
    assert seen["cfg_timeout"] == 0xFFFFFFFF  # INFINITE
    hr, d = client.open_device("set-é1")
    assert (hr, d, seen["open"]) == (0, 0, "set-é1")
    hr, view = client.get_command(0, 1500)
    assert hr == 0 and view is not None and seen["timeout"] == 1500
    assert (view.code, view.size, view.has_buffer) == (2, 4096, True)
    assert client.complete_command(0, view.handle, 0xFFFFFFFF, 4096, 1 << 40) == \
        HResult.VD_E_ABORT
    assert seen["complete"] == (ctypes.addressof(cmd), 0xFFFFFFFF, 4096, 1 << 40)
    assert client.get_buffer_handle(view.handle) == (0, 7)
    assert seen["gbh"] == ctypes.addressof(buf)
    assert client.map_buffer_handle(7) == (0, True) and seen["map"] == 7
    assert client.open_in_secondary("x", "INST") == HResult.VD_E_PROTOCOL
    client.release()
    assert released == [vds.ptr]


def test_guids_and_hresults() -> None:
    g = GUID.from_string("{40700425-0080-11D2-851F-00C04FC21759}")
    assert (g.Data1, g.Data2, g.Data3) == (0x40700425, 0x0080, 0x11D2)
    assert bytes(g.Data4) == bytes.fromhex("851F00C04FC21759")
    assert str(g) == "{40700425-0080-11D2-851F-00C04FC21759}"
    assert ctypes.sizeof(GUID) == 16
    assert hresult(-2139684850) == HResult.VD_E_CLOSE == 0x8077000E
    assert ctypes.sizeof(VDConfigC) == 44 and ctypes.sizeof(VDCCommand) == 24


# -- the live backend's own code path, end to end, against vdisim ----------------------------------


@pytest.fixture(scope="module")
def tds_engine() -> Iterator[Any]:
    from vdisim.engine import Engine

    try:
        eng = Engine.start(tds="127.0.0.1:0")
    except TypeError:  # pragma: no cover - an engine without the TDS endpoint
        pytest.skip("this vdisim engine has no TDS endpoint")
    yield eng
    eng.stop()


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="needs g++")
@pytest.mark.parametrize("driver", ["pymssql", "pytds"])
def test_live_backend_against_vdisim_over_tds(tds_engine: Any, driver: str,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    """The real live backend -- a SQL Server driver over TDS for the statements, ctypes over a
    libsqlvdi.so for VDI -- with vdisim standing in for SQL Server (its TDS endpoint) and for
    Microsoft's library (vdisim's own build)."""
    pytest.importorskip(driver)
    from .test_native import session_native

    lib = session_native(tmp_path_factory)["library"]
    backend = live.live_backend(env={}, server=tds_engine.tds_address, user="sa",
                                password="any", library=str(lib), driver=driver)
    assert backend.preflight() is None
    assert "vdisim" in backend.describe()["version"]
    try:
        db = backend.server.scratch_database()
        assert db.startswith("vdisim_live_")
        c = backend.new_client()
        name = "{" + str(uuid.uuid4()).upper() + "}"
        assert c.create(name, VDConfig(device_count=1)) == 0
        run = backend.server.start_statement(
            f"BACKUP DATABASE [{db}] TO VIRTUAL_DEVICE = N'{name}'")
        stream = bytearray()
        assert _serve(c, name, stream, None) == HResult.VD_E_CLOSE
        assert c.close() == 0
        out = run.wait(60)
        assert out is not None and out.ok, out
        # a failing statement reports SQL Server's error numbers
        bad = backend.server.start_statement("EXEC sp_vdisim_checksum 'no_such_db'").wait(60)
        assert bad is not None and not bad.ok and bad.errors[:1] == (911,), bad
        c2 = backend.new_client()
        name2 = "{" + str(uuid.uuid4()).upper() + "}"
        assert c2.create(name2, VDConfig(device_count=1)) == 0
        run = backend.server.start_statement(
            f"RESTORE VERIFYONLY FROM VIRTUAL_DEVICE = N'{name2}'")
        assert _serve(c2, name2, None, bytes(stream)) == HResult.VD_E_CLOSE
        assert c2.close() == 0
        out = run.wait(60)
        assert out is not None and out.ok, out
    finally:
        backend.close()
    with tds_engine.connect() as conn:  # the scratch database was dropped
        rows = conn.execute("EXEC sp_vdisim_databases").rowsets[0].rows
        assert not [r for r in rows if str(r[0]).startswith("vdisim_live_")]


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="needs g++")
def test_conformance_suite_on_the_live_backend_against_vdisim(
        tds_engine: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """The suite through the live backend (statements only): every rule it can check passes;
    the rest is reported not checkable with the missing capability."""
    suite = pytest.importorskip("conformance.suite", reason="conformance.suite not built yet")
    from conformance import rules as catalogue
    from conformance.report import Verdict

    from .test_native import session_native

    lib = session_native(tmp_path_factory)["library"]
    backend = live.live_backend(env={}, server=tds_engine.tds_address, user="sa",
                                password="any", library=str(lib))
    selected = [r for r in catalogue.select() if r.area != "client"]
    with backend:
        report = suite.run_suite(backend, rules=selected, seed=4242, profile="quick",
                                 replay_dir=str(tmp_path / "replays"))
    verdicts = {rid: r.verdict for rid, r in report.results.items()}
    failed = {rid: [v.message for v in r.violations[:3]] for rid, r in report.results.items()
              if r.verdict is Verdict.FAILED}
    assert not failed, failed
    assert Verdict.PASSED in verdicts.values()
    reasons = {r.reason for r in report.results.values() if r.verdict is Verdict.NOT_CHECKABLE}
    assert any("scripted_server" in (x or "") for x in reasons), reasons
