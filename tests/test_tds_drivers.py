"""The TDS endpoint with real SQL Server drivers (issue 8's driver matrix).

Each driver runs in a subprocess of its own (tests/tds_drivers/), connects to the endpoint of
one engine per module, and runs the same scenario: BACKUP to a virtual device served by
vdisim's client library (in this process), RESTORE FILELISTONLY whose rowset it decodes, a
RESTORE whose result is byte-identical (content hash), a failing statement whose error number
it reports, and a BACKUP cancelled while the client holds its first Write.  A driver that is
not installed is skipped with the reason; .ci/install-drivers.sh installs all of them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from vdisim import refclient
from vdisim.client import VirtualDeviceSet
from vdisim.engine import Engine
from vdisim.engine.media import FILELISTONLY_COLUMNS, HEADERONLY_COLUMNS, LABELONLY_COLUMNS
from vdisim.protocol.codes import HResult
from vdisim.protocol.records import VDConfig

HERE = Path(__file__).parent
DRIVERS = HERE / "tds_drivers"
REPO = HERE.parent
NODE_DIR = Path(os.environ.get("VDISIM_NODE_DRIVERS", REPO / "build" / "tds-drivers"))
JTDS_JAR = Path(os.environ.get("VDISIM_JTDS_JAR", "/usr/share/java/jtds.jar"))
TIMEOUT = 60.0


def _have_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _odbc_reason() -> str | None:
    if not _have_module("mssql_python"):
        return "mssql-python (Microsoft ODBC Driver 18) is not installed: pip install mssql-python"
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    if "libltdl.so.7" not in out.stdout:
        return "ODBC Driver 18 needs libltdl.so.7: apt-get install libltdl7"
    return None


def skip_reason(driver: str) -> str | None:
    if driver == "pytds":
        return None if _have_module("pytds") else \
            "python-tds is not installed: pip install python-tds"
    if driver == "pymssql":
        return None if _have_module("pymssql") else \
            "pymssql is not installed: pip install pymssql"
    if driver == "odbc":
        return _odbc_reason()
    if driver == "tedious":
        if shutil.which("node") is None:
            return "node is not installed"
        if not (NODE_DIR / "node_modules" / "tedious").is_dir():
            return f"tedious is not installed in {NODE_DIR}: .ci/install-drivers.sh"
        return None
    if driver == "jtds":
        if shutil.which("java") is None or shutil.which("javac") is None:
            return "java/javac are not installed"
        if not JTDS_JAR.exists():
            return f"{JTDS_JAR} missing: apt-get install libjtds-java"
        return None
    raise AssertionError(driver)


class DriverProcess:
    """One driver in a subprocess; ``execute`` has the shape refclient.run expects."""

    def __init__(self, cmd: list[str]) -> None:
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        first = self._next_line()
        if first != "ready":
            self.close()
            raise ConnectionError(f"{cmd[0]} did not connect: {first}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._lines.append("eof")
            self._cond.notify_all()

    def _next_line(self, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._lines:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.cmd[0]}: no answer in {timeout} s")
                self._cond.wait(left)
            line = self._lines.pop(0)
        if line == "eof":
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise EOFError(f"driver exited: {err[-2000:]}")
        return line

    def start(self, sql: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("exec " + sql.encode("utf-8").hex() + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        return dict(json.loads(self._next_line(timeout)))

    def execute(self, sql: str) -> dict[str, Any]:
        self.start(sql)
        return self.result()

    def execute_params(self, sql: str, params: list[str]) -> dict[str, Any]:
        """``sql`` with string parameters in the driver's placeholder style."""
        assert self.proc.stdin is not None
        plist = ",".join(p.encode("utf-8").hex() for p in params)
        self.proc.stdin.write(f"execp {sql.encode('utf-8').hex()} {plist}\n")
        self.proc.stdin.flush()
        return self.result()

    def cancel(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("cancel\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


_JAVA_BUILD: dict[str, Path] = {}


def _java_classes(tmp_root: Path) -> Path:
    if "dir" not in _JAVA_BUILD:
        out = tmp_root / "jtds-classes"
        out.mkdir(exist_ok=True)
        subprocess.run(["javac", "-cp", str(JTDS_JAR), "-d", str(out),
                        str(DRIVERS / "JtdsDriver.java")], check=True, timeout=120,
                       capture_output=True)
        _JAVA_BUILD["dir"] = out
    return _JAVA_BUILD["dir"]


def driver_command(driver: str, address: str, tmp_root: Path,
                   opts: dict[str, Any] | None = None) -> list[str]:
    host, _, port = address.rpartition(":")
    o = json.dumps(opts or {})
    if driver in ("pytds", "pymssql", "odbc"):
        return [sys.executable, str(DRIVERS / "pydriver.py"), driver, host, port, o]
    if driver == "tedious":
        return ["node", str(DRIVERS / "tedious_driver.js"), host, port, o]
    if driver == "jtds":
        cp = f"{_java_classes(tmp_root)}{os.pathsep}{JTDS_JAR}"
        return ["java", "-cp", cp, "JtdsDriver", host, port, o]
    raise AssertionError(driver)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.start(tds="127.0.0.1:0") as eng:
        assert eng.tds_address is not None
        yield eng


@pytest.fixture(scope="module")
def tls_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An endpoint with a self-signed certificate the command generates (tls_engine.cert)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make the test certificate)")
    d = tmp_path_factory.mktemp("tds-cert")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    with Engine.start(tds="127.0.0.1:0", tds_args=("--tds-generate-cert", "--tds-cert", cert,
                                                   "--tds-key", key)) as eng:
        assert os.path.exists(cert) and os.path.exists(key)
        eng.cert = cert  # type: ignore[attr-defined]
        yield eng


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tds")


def _connect(driver: str, address: str, tmp_root: Path,
             opts: dict[str, Any] | None = None) -> DriverProcess:
    reason = skip_reason(driver)
    if reason:
        pytest.skip(reason)
    return DriverProcess(driver_command(driver, address, tmp_root, opts))


def numbers(res: dict[str, Any]) -> list[int | None]:
    return [m[0] for m in res["messages"]]


def texts(res: dict[str, Any]) -> list[str]:
    return [m[1] for m in res["messages"]]


def _when(s: str) -> datetime | None:
    text = s.replace(" ", "T").removesuffix("Z")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def norm(v: Any) -> Any:
    """A driver's value (as pydriver/tedious/jTDS print it) in the engine's rowset form;
    datetimes (ISO strings in the engine's rowsets) become datetime objects."""
    if isinstance(v, dict) and v["t"] in ("datetime", "Timestamp"):
        return _when(v["v"])
    if isinstance(v, str) and len(v) >= 19 and v[4] == "-" and v[10] in "T " \
            and _when(v) is not None:
        return _when(v)
    if isinstance(v, dict):
        t, s = v["t"], v["v"]
        if t in ("Decimal", "BigDecimal", "decimal"):
            from decimal import Decimal

            d = Decimal(s)
            return int(d) if d == d.to_integral_value() else d
        if t in ("UUID", "guid"):
            return s.upper()
        if t == "bytes":
            return s
        return s
    if isinstance(v, str) and len(v) == 36 and v.count("-") == 4:
        return v.upper()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


#: The error number each driver reports for a failed BACKUP (18210 ..., 3013): most surface
#: the first error, pytds the last (spec tds-endpoint.md §2.2).
REPORTED = {"pytds": 3013, "pymssql": 18210, "odbc": 18210, "tedious": 18210, "jtds": 18210}
#: How each driver reports the cancelled BACKUP: pymssql and jTDS surface the 3013 that ends
#: the statement before the acknowledgment, ODBC and tedious their own cancel error, pytds the
#: query timeout that made it send ATTENTION.
CANCELLED = {"pytds": "TimeoutError: timed out",
             "pymssql": "BACKUP DATABASE is terminating abnormally.",
             "odbc": "Operation canceled", "tedious": "ECANCEL: Canceled.",
             "jtds": "BACKUP DATABASE is terminating abnormally."}
ALL_DRIVERS = ["pytds", "pymssql", "odbc", "tedious", "jtds"]


def assert_error(driver: str, res: dict[str, Any], number: int, text: str) -> None:
    """The driver reports error ``number`` (and its text).  mssql-python's exceptions carry
    SQLSTATE and the first error's text but no native number: it is judged by the text."""
    assert not res["ok"], res
    if driver == "odbc":
        assert res["error"] in (None, number) and text in res["error_text"], res
    else:
        assert res["error"] == number, res
        if driver != "pytds":  # pytds reports the last error (3013) with all texts joined
            assert text in res["error_text"], res


def _checksum(drv: DriverProcess, db: str) -> str:
    res = drv.execute(f"EXEC sp_vdisim_checksum '{db}'")
    assert res["ok"], res
    (rs,) = res["rowsets"]
    assert [c[0] for c in rs["columns"]] == ["database", "sha256", "pages", "lsn", "state"]
    (row,) = rs["rows"]
    assert norm(row[2]) == 128 and row[4] == "ONLINE"
    return str(row[1])


def _cancelled_backup(drv: DriverProcess, db: str) -> dict[str, Any]:
    name = "{" + str(uuid.uuid4()).upper() + "}"
    vds = VirtualDeviceSet()
    assert vds.create(name, VDConfig(device_count=1)) == HResult.NOERROR
    try:
        drv.start(f"BACKUP DATABASE [{db}] TO VIRTUAL_DEVICE = '{name}'")
        hr, _cfg = vds.get_configuration(30_000)
        assert hr == HResult.NOERROR
        hr, dev = vds.open_device(name)
        assert hr == HResult.NOERROR and dev is not None
        hr, cmd = dev.get_command(30_000)
        assert hr == HResult.NOERROR and cmd is not None and cmd.name == "VDC_Write"
        drv.cancel()  # the backup is running; we hold its first Write
        deadline = time.monotonic() + 30
        while hr == HResult.NOERROR:  # Writes already queued may still come, then the abort
            assert time.monotonic() < deadline, "no abort after ATTENTION"
            hr, cmd = dev.get_command(1000)
            if hr == HResult.VD_E_TIMEOUT:
                hr = HResult.NOERROR
        assert hr == HResult.VD_E_ABORT
    finally:
        vds.close()
    return drv.result()


def _backup(drv: DriverProcess, driver: str, db: str, media: Path) -> None:
    """BACKUP to a virtual device served by vdisim's client library (in this process)."""
    rep = refclient.run(drv, f"BACKUP DATABASE [{db}] TO {{devices}} WITH STATS = 50",  # type: ignore[arg-type]
                        media_dir=str(media), devices=1, writing=True)
    res: dict[str, Any] = rep.result  # type: ignore[assignment]
    assert res["ok"], res
    assert not rep.aborted and rep.close_hr == HResult.NOERROR
    assert any(t.endswith("percent processed.") for t in texts(res)), res
    assert texts(res)[-1].startswith("BACKUP DATABASE successfully processed 1"), res
    if driver != "pymssql":  # FreeTDS's message handler carries no message number
        assert numbers(res)[0] == 3211 and numbers(res)[-1] == 3014, res
        assert 4035 in numbers(res)


def _metadata(drv: DriverProcess, engine: Engine, media: Path, kind: str,
              columns: tuple[Any, ...]) -> list[list[Any]]:
    """RESTORE <kind>: the driver decodes the rowset; it must equal the engine's own."""
    rep = refclient.run(drv, f"RESTORE {kind} FROM {{devices}}",  # type: ignore[arg-type]
                        media_dir=str(media), devices=1, writing=False)
    res: dict[str, Any] = rep.result  # type: ignore[assignment]
    assert res["ok"], res
    (rs,) = res["rowsets"]
    assert [c[0] for c in rs["columns"]] == [c.name for c in columns]
    with Engine.connect(engine.address) as own:
        ref = refclient.run(own, f"RESTORE {kind} FROM {{devices}}", media_dir=str(media),
                            devices=1, writing=False)
    assert ref.result is not None and ref.result.ok
    expected = [[norm(v) for v in r] for r in ref.result.rowsets[0].rows]
    got = [[norm(v) for v in row] for row in rs["rows"]]
    assert got == expected
    return list(rs["rows"])


@pytest.mark.parametrize("driver", ALL_DRIVERS)
def test_driver_matrix(driver: str, engine: Engine, tmp_root: Path) -> None:
    assert engine.tds_address is not None
    drv = _connect(driver, engine.tds_address, tmp_root)
    try:
        db = f"tds_{driver}"
        media = tmp_root / driver / "full"
        res = drv.execute(f"CREATE DATABASE [{db}] WITH SIZE_MB = 1")
        assert res["ok"], res
        before = _checksum(drv, db)
        _backup(drv, driver, db, media)
        rows = _metadata(drv, engine, media, "FILELISTONLY", FILELISTONLY_COLUMNS)
        assert rows[1][3] is None  # FileGroupName of the log file is NULL
        (header,) = _metadata(drv, engine, media, "HEADERONLY", HEADERONLY_COLUMNS)
        assert header[HEADERONLY_COLUMNS.index(next(
            c for c in HEADERONLY_COLUMNS if c.name == "DatabaseName"))] == db
        _metadata(drv, engine, media, "LABELONLY", LABELONLY_COLUMNS)

        # RESTORE into a new database: byte-identical content.
        rep = refclient.run(drv, f"RESTORE DATABASE [{db}_copy] FROM {{devices}}",  # type: ignore[arg-type]
                            media_dir=str(media), devices=1, writing=False)
        res = rep.result  # type: ignore[assignment]
        assert res["ok"], res
        assert texts(res)[-1].startswith("RESTORE DATABASE successfully processed"), res
        assert _checksum(drv, f"{db}_copy") == before

        # A failing statement: the driver reports SQL Server's error number.
        res = drv.execute(f"BACKUP DATABASE [{db}] TO VIRTUAL_DEVICE = '{{no-such-set}}'")
        assert_error(driver, res, REPORTED[driver],
                     "Open failure on backup device '{no-such-set}'")
        res = drv.execute("SELECT name FROM sys.databases")
        assert_error(driver, res, 40517, "Keyword or statement option 'FROM' is not supported")

        # A cancelled BACKUP: ATTENTION aborts the VDI set; the connection stays usable.
        # pytds cancels through its query timeout (on a connection of its own).
        canceller = drv
        if driver == "pytds":
            canceller = _connect(driver, engine.tds_address, tmp_root, {"timeout": 2})
        try:
            res = _cancelled_backup(canceller, db)
            assert not res["ok"], res
            assert CANCELLED[driver] in res["error_text"], res
            res = canceller.execute("SELECT 1 AS one")
            assert res["ok"] and norm(res["rowsets"][0]["rows"][0][0]) == 1, res
        finally:
            if canceller is not drv:
                canceller.close()
    finally:
        drv.close()


class _Parameterised:
    """refclient.run's connection, running its statement with the database and the set name
    as driver parameters (RPC sp_executesql / sp_prepare+sp_execute / sp_prepexec)."""

    def __init__(self, drv: DriverProcess, template: str, db: str) -> None:
        self.drv, self.template, self.db = drv, template, db

    def execute(self, sql: str) -> dict[str, Any]:
        (name,) = re.findall(r"VIRTUAL_DEVICE = '([^']*)'", sql)
        return self.drv.execute_params(self.template, [self.db, name])


#: A BACKUP whose database and device are parameters, in each driver's placeholder style.
PARAM_SQL = {"pytds": "BACKUP DATABASE %s TO VIRTUAL_DEVICE = %s WITH STATS = 50",
             "odbc": "BACKUP DATABASE ? TO VIRTUAL_DEVICE = ? WITH STATS = 50",
             "tedious": "BACKUP DATABASE @p1 TO VIRTUAL_DEVICE = @p2 WITH STATS = 50",
             "jtds": "BACKUP DATABASE ? TO VIRTUAL_DEVICE = ? WITH STATS = 50"}


@pytest.mark.parametrize("driver", sorted(PARAM_SQL))
def test_parameterised_backup_through_rpc(driver: str, engine: Engine, tmp_root: Path) -> None:
    """Parameters travel as RPC: pytds and tedious send sp_executesql, ODBC 18 sp_prepexec and
    sp_unprepare, jTDS sp_prepare then sp_execute (the handles come back in RETURNVALUE)."""
    assert engine.tds_address is not None
    drv = _connect(driver, engine.tds_address, tmp_root)
    try:
        db = f"tdsp_{driver}"
        assert drv.execute(f"CREATE DATABASE [{db}] WITH SIZE_MB = 1")["ok"]
        conn = _Parameterised(drv, PARAM_SQL[driver], db)
        rep = refclient.run(conn, "BACKUP DATABASE x TO {devices}",  # type: ignore[arg-type]
                            media_dir=str(tmp_root / "param" / driver), devices=1,
                            writing=True)
        res: dict[str, Any] = rep.result  # type: ignore[assignment]
        assert res["ok"], res
        assert not rep.aborted and rep.devices[0].bytes > 1 << 20
        if driver != "odbc":  # mssql-python keeps no messages of a prepared execution
            assert texts(res)[-1].startswith("BACKUP DATABASE successfully processed 1"), res
        # The same parameterised statement again (jTDS: sp_execute of the prepared handle).
        res = drv.execute_params(PARAM_SQL[driver], [db, "{no-such-set}"])
        assert not res["ok"], res
        assert "Open failure on backup device '{no-such-set}'" in res["error_text"] \
            or driver == "pytds", res
    finally:
        drv.close()


@pytest.mark.parametrize("driver", ["pytds", "pymssql", "odbc"])
def test_backup_inside_a_transaction_is_3021(driver: str, engine: Engine,
                                             tmp_root: Path) -> None:
    """autocommit off: pytds and ODBC open the transaction with a transaction-manager request,
    pymssql with a BEGIN TRAN batch; BACKUP then fails with 3021 and 3013, as on SQL Server."""
    assert engine.tds_address is not None
    drv = _connect(driver, engine.tds_address, tmp_root, {"autocommit": False})
    try:
        res = drv.execute("BACKUP DATABASE [master] TO VIRTUAL_DEVICE = '{in-a-transaction}'")
        text = "Cannot perform a backup or restore operation within a transaction."
        assert_error(driver, res, 3013 if driver == "pytds" else 3021, text)
        assert text in res["error_text"], res
    finally:
        drv.close()


#: TLS ways (PRELOGIN-wrapped full and login-only, TDS 8 strict) and the drivers that use them.
TLS_CASES = [
    ("odbc", {"odbc": "Encrypt=yes;TrustServerCertificate=yes;"}),
    ("odbc", {"odbc": "Encrypt=no;"}),  # login-only
    ("odbc", {"odbc": "Encrypt=strict;ServerCertificate={cert};HostNameInCertificate=localhost;"}),
    ("pytds", {"cafile": "{cert}"}),
    ("pytds", {"cafile": "{cert}", "login_only": True}),
    ("pymssql", {}),  # FreeTDS asks for login-only TLS by default
    ("pymssql", {"encryption": "require"}),
    ("tedious", {"encrypt": True}),
]


@pytest.mark.parametrize(("case", "driver", "opts"),
                         [(i, d, o) for i, (d, o) in enumerate(TLS_CASES)],
                         ids=[f"{d}-{i}" for i, (d, _) in enumerate(TLS_CASES)])
def test_tls(case: int, driver: str, opts: dict[str, Any], tls_engine: Engine,
             tmp_root: Path) -> None:
    """Through TLS: progress messages streamed in several packets, a rowset, an error."""
    assert tls_engine.tds_address is not None
    cert = tls_engine.cert  # type: ignore[attr-defined]
    opts = {k: v.replace("{cert}", cert) if isinstance(v, str) else v for k, v in opts.items()}
    drv = _connect(driver, tls_engine.tds_address, tmp_root, opts)
    try:
        tag = f"tls{case}"
        db = f"tds_{tag}"
        assert drv.execute(f"CREATE DATABASE [{db}] WITH SIZE_MB = 1")["ok"]
        media = tmp_root / tag
        _backup(drv, driver, db, media)
        _metadata(drv, tls_engine, media, "FILELISTONLY", FILELISTONLY_COLUMNS)
        res = drv.execute("SELECT name FROM sys.databases")
        assert_error(driver, res, 40517, "Keyword or statement option 'FROM' is not supported")
    finally:
        drv.close()


def test_odbc_refuses_a_server_without_tls(engine: Engine, tmp_root: Path) -> None:
    """ODBC 18's default (Encrypt=yes) against the plaintext endpoint (ENCRYPT_NOT_SUP)."""
    assert engine.tds_address is not None
    with pytest.raises(ConnectionError, match="Encryption not supported"):
        _connect("odbc", engine.tds_address, tmp_root, {"odbc": "Encrypt=yes;"})


@pytest.fixture(scope="module")
def login_engine() -> Iterator[Engine]:
    with Engine.start(tds="127.0.0.1:0", tds_args=("--tds-login", "sa:secret")) as eng:
        yield eng


@pytest.mark.parametrize("driver", ALL_DRIVERS)
def test_configured_login(driver: str, login_engine: Engine, tmp_root: Path) -> None:
    """--tds-login: the right password logs in; a wrong one fails with 18456."""
    if skip_reason(driver):
        pytest.skip(skip_reason(driver))
    address = login_engine.tds_address
    assert address is not None
    drv = _connect(driver, address, tmp_root)  # the scripts log in as sa/secret
    try:
        assert drv.execute("SELECT 1 AS one")["ok"]
    finally:
        drv.close()
    with pytest.raises(ConnectionError) as info:
        _connect(driver, address, tmp_root, {"password": "wrong"})
    assert "Login failed for user 'sa'." in str(info.value)
    if driver in ("pytds", "pymssql", "jtds"):  # the others give no number at connect
        assert "18456" in str(info.value)


# --------------------------------------------------------------------------- no driver needed

class RawClient:
    """A minimal TDS client over a socket (vdisim's own codec builds the requests)."""

    def __init__(self, address: str, *, prelogin_first: bool = True,
                 version: int = 0x74000004) -> None:
        import socket

        from vdisim.engine.tds import login, packets, prelogin

        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.reader = packets.MessageReader()
        self.version = version
        if prelogin_first:
            req = prelogin.Prelogin(((prelogin.VERSION, bytes(6)),
                                     (prelogin.ENCRYPTION, b"\x02"))).pack()
            self.send(packets.PRELOGIN, req)
            kind, reply = self.recv()
            assert kind == packets.REPLY
            assert prelogin.parse(reply).encryption == prelogin.ENCRYPT_NOT_SUP
        self.send(packets.LOGIN7, login.build(tds_version=version))
        kind, self.login_reply = self.recv()
        assert kind == packets.REPLY and b"\xad" in self.login_reply

    def send(self, kind: int, payload: bytes) -> None:
        from vdisim.engine.tds import packets

        self.sock.sendall(packets.pack_message(kind, payload))

    def batch(self, sql: str) -> None:
        from vdisim.engine.tds import packets

        headers = (struct.pack("<IIH", 22, 18, 2) + bytes(8) + struct.pack("<I", 1)
                   if self.version >= 0x72000000 else b"")
        self.send(packets.SQL_BATCH, headers + sql.encode("utf-16-le"))

    def recv(self) -> tuple[int, bytes]:
        while True:
            msg = self.reader.next_message()
            if msg is not None:
                return msg[0], msg[2]
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("server closed")
            self.reader.feed(data)

    def close(self) -> None:
        self.sock.close()


def test_raw_client_without_prelogin_tds71(engine: Engine) -> None:
    """A TDS 7.1 LOGIN7 as the first packet (jTDS's way) and 7.1 token sizes."""
    assert engine.tds_address is not None
    c = RawClient(engine.tds_address, prelogin_first=False, version=0x71000001)
    try:
        assert b"\xad" in c.login_reply
        ack = c.login_reply[c.login_reply.index(b"\xad\x32\x00"):]
        assert ack[3:8] == bytes.fromhex("0171000001")  # LOGINACK: TDS 7.1, big-endian
        c.batch("SELECT 1 AS one")
        _, reply = c.recv()
        # COLMETADATA with a 2-byte UserType, the ROW, a DONE with a 4-byte row count.
        assert reply == (bytes.fromhex("810100 0000 0100 2604 03") + "one".encode("utf-16-le")
                         + bytes.fromhex("d1 04 01000000") + bytes.fromhex("fd 1000 c100 01000000"))
    finally:
        c.close()


def test_raw_client_attention_and_unknown_requests(engine: Engine) -> None:
    from vdisim.engine.tds import packets

    assert engine.tds_address is not None
    c = RawClient(engine.tds_address)
    try:
        c.send(packets.ATTENTION, b"")  # idle: acknowledged at once
        assert c.recv() == (packets.REPLY, bytes.fromhex("fd 2000 0000 0000000000000000"))
        c.send(packets.BULK_LOAD, b"\x00")
        _, reply = c.recv()
        assert reply[0] == 0xAA and struct.unpack_from("<i", reply, 3)[0] == 40517
        assert reply.endswith(bytes.fromhex("fd 0200 0000 0000000000000000"))
        c.batch("SELECT @@SPID AS spid")  # the SPID of the packet headers
        _, reply = c.recv()
        assert reply.find(bytes.fromhex("d1 02")) > 0
    finally:
        c.close()


def test_raw_client_gone_mid_backup_aborts_the_set(engine: Engine) -> None:
    """The client's connection drops during a BACKUP: the engine aborts its VDI set."""
    assert engine.tds_address is not None
    c = RawClient(engine.tds_address)
    name = "{" + str(uuid.uuid4()).upper() + "}"
    vds = VirtualDeviceSet()
    assert vds.create(name, VDConfig(device_count=1)) == HResult.NOERROR
    try:
        c.batch("CREATE DATABASE raw_gone WITH SIZE_MB = 1")
        c.recv()
        c.batch(f"BACKUP DATABASE raw_gone TO VIRTUAL_DEVICE = '{name}'")
        assert vds.get_configuration(30_000)[0] == HResult.NOERROR
        hr, dev = vds.open_device(name)
        assert dev is not None
        hr, cmd = dev.get_command(30_000)
        assert hr == HResult.NOERROR and cmd is not None and cmd.name == "VDC_Write"
        c.close()
        deadline = time.monotonic() + 30
        while hr == HResult.NOERROR:
            assert time.monotonic() < deadline, "no abort after the client left"
            hr, cmd = dev.get_command(1000)
            if hr == HResult.VD_E_TIMEOUT:
                hr = HResult.NOERROR
        assert hr == HResult.VD_E_ABORT
    finally:
        vds.close()


def test_harness_judges_a_driver_client(tmp_path: Path) -> None:
    """The client harness hands an --exec client the TDS address in its context; a client
    that issues its statement through pytds is judged like any other."""
    if skip_reason("pytds"):
        pytest.skip(skip_reason("pytds"))
    client = DRIVERS / "harness_pytds_client.py"
    out = subprocess.run([sys.executable, "-m", "vdisim", "run", "backup-plain", "restore-plain",
                          "--seed", "1", "--exec", f"{sys.executable} {client} {{context}}",
                          "--json", str(tmp_path / "report.json")],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0 failed" in out.stdout, out.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["counts"]["failed"] == 0 and report["counts"]["passed"] >= 10
    verdicts = {r["rule"]: r["verdict"] for r in report["rules"]}
    assert verdicts["CLIENT-STATEMENT-ISSUED"] == "passed"  # the engine saw it via TDS


def test_progress_messages_are_streamed_before_the_statement_ends(engine: Engine) -> None:
    """While the client still holds the backup's VDC_Complete, the STATS messages (3211)
    have already arrived, in packets without end-of-message; 3014 comes with the final one."""
    from vdisim.engine.tds import packets
    from vdisim.protocol.codes import Feature

    assert engine.tds_address is not None
    c = RawClient(engine.tds_address)
    name = "{" + str(uuid.uuid4()).upper() + "}"
    vds = VirtualDeviceSet()
    assert vds.create(name, VDConfig(device_count=1,
                                     features=Feature.VDF_RequestComplete)) == HResult.NOERROR
    try:
        c.batch("CREATE DATABASE raw_stream WITH SIZE_MB = 1")
        c.recv()
        c.batch(f"BACKUP DATABASE raw_stream TO VIRTUAL_DEVICE = '{name}' WITH STATS = 25")
        assert vds.get_configuration(30_000)[0] == HResult.NOERROR
        hr, dev = vds.open_device(name)
        assert dev is not None
        while True:  # complete the Writes (and Flushes); hold VDC_Complete
            hr, cmd = dev.get_command(30_000)
            assert hr == HResult.NOERROR and cmd is not None
            if cmd.name == "VDC_Complete":
                break
            dev.complete_command(cmd, 0, cmd.size if cmd.name == "VDC_Write" else 0, 0)
        early = bytearray()  # what arrived while the statement is still running
        while "100 percent processed.".encode("utf-16-le") not in early:
            got = c.reader.next_packet()
            if got is None:
                c.reader.feed(c.sock.recv(65536))
                continue
            header, payload = got
            assert header.type == packets.REPLY and not header.status & packets.EOM
            early += payload
        assert early[0] == 0xAB and struct.unpack_from("<i", early, 3)[0] == 3211
        dev.complete_command(cmd, 0, 0, 0)
        rest = bytearray()
        while True:
            got = c.reader.next_packet()
            if got is None:
                c.reader.feed(c.sock.recv(65536))
                continue
            rest += got[1]
            if got[0].status & packets.EOM:
                break
        assert "successfully processed".encode("utf-16-le") in rest
        assert rest.endswith(bytes.fromhex("fd 0000 0000 0000000000000000"))
        hr, cmd = dev.get_command(30_000)
        assert hr == HResult.VD_E_CLOSE
    finally:
        vds.close()
        c.close()
