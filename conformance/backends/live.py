"""The ``shim`` and ``live`` backends: a native ``libsqlvdi.so`` driven through ctypes.

* ``shim`` -- vdisim's own drop-in ``libsqlvdi.so`` (built on demand with g++,
  ``vdisim build-libsqlvdi``) against a vdisim engine.  This is how live mode is tested where no
  SQL Server can run: the same ctypes binding as ``live``, the same suite, a real native library.
  Its server tier is the sim backend's (scripted steps, statements, engine kill).
* ``live`` -- Microsoft's ``/opt/mssql/lib/libsqlvdi.so`` against a real SQL Server: T-SQL on its
  own connection and thread through pymssql (or python-tds), autocommit, every result and
  message drained, COPY_ONLY backups of a scratch database the backend creates and drops.
  Capabilities: statements only (no scripted server, no safe_after_close).

Configuration (environment, or keyword options of :func:`live_backend`; docs/live.md):

==========================  ==================================================================
``VDISIM_LIVE_SERVER``      ``host``, ``host,port`` or ``host:port`` (required)
``VDISIM_LIVE_USER``        a sysadmin login (required)
``VDISIM_LIVE_PASSWORD``    its password (or ``VDISIM_LIVE_PASSWORD_FILE``) (required)
``VDISIM_LIVE_LIBSQLVDI``   the library (default ``/opt/mssql/lib/libsqlvdi.so``)
``VDISIM_LIVE_AGENT``       a command that runs the VDI side where the server's /dev/shm is,
                            e.g. ``docker exec -i sql1 python3 -m conformance.backends.live
                            --agent``; without it the library is loaded in this process
``VDISIM_LIVE_RECORD``      a directory: record every VDI session as a trace + replayable plan
==========================  ==================================================================

Every missing piece makes :meth:`LiveBackend.open` raise :class:`LiveUnavailable` with a precise
reason (tests skip with it; ``--live-required`` turns the skip into a failure).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from conformance.backend import (
    Backend,
    BackendUnavailable,
    Capability,
    ClientSide,
    ServerSide,
    StatementOutcome,
    StatementRun,
)
from conformance.backends.sim import (
    SIM_CAPABILITIES,
    AgentError,
    SimBackend,
    SimServer,
    _OpsClient,
)
from conformance.backends.tracerec import TraceRecorder
from conformance.backends.vdilib import LinuxVdi, NativeClient, VdiApi

__all__ = [
    "LIVE_CAPABILITIES",
    "SHIM_CAPABILITIES",
    "LiveBackend",
    "LiveConfig",
    "LiveUnavailable",
    "ShimBackend",
    "live_backend",
    "shim_backend",
]

DEFAULT_LIBSQLVDI = "/opt/mssql/lib/libsqlvdi.so"

#: vdisim's library serves no secondaries (OpenInSecondary -> VD_E_PROTOCOL); everything else
#: the sim backend offers comes from the engine, which is the same.
SHIM_CAPABILITIES = SIM_CAPABILITIES - {Capability.SECONDARY_PROCESS}

#: What a real SQL Server offers the suite: whole statements, and the client library's own
#: features.  No scripted server steps, no engine kill, no server-side observation, and a
#: device used after Close is undefined behaviour in Microsoft's library (no safe_after_close).
LIVE_CAPABILITIES = frozenset({Capability.STATEMENTS, Capability.BUFFER_HANDLES,
                               Capability.MULTI_DEVICE, Capability.COMPLETE})


class LiveUnavailable(BackendUnavailable):
    """A piece live mode needs is missing; the message says which (a skip reason)."""


# ---------------------------------------------------------------------------------------------
# shim


def _shim_library(out_dir: str | None) -> str:
    """The vdisim-built library: $VDISIM_SHIM_LIB if set, else built into ``out_dir`` (default
    ``$TMPDIR/vdisim-native-<uid>``) unless a build newer than every source is there."""
    env = os.environ.get("VDISIM_SHIM_LIB")
    if env:
        return env
    from vdisim.native.build import build, native_dir

    out = out_dir or os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                  f"vdisim-native-{os.geteuid()}")
    lib = Path(out) / "libsqlvdi.so"
    src = native_dir()
    newest = max(p.stat().st_mtime for p in [*src.glob("src/*"), *src.glob("include/*"),
                                             src / "symbols.txt"])
    if not lib.exists() or lib.stat().st_mtime < newest:
        build(out)
    return str(lib)


class ShimServer(SimServer):
    """The sim server tier; the scratch database is created without T-SQL control flow, and
    statements are shown to the trace recorder."""

    def start_statement(self, sql: str) -> StatementRun:
        recorder = getattr(self._b, "recorder", None)
        if recorder is not None:
            recorder.on_statement(sql)
        return super().start_statement(sql)

    def scratch_database(self) -> str:
        name = "vdisim_conform"
        with self._b.engine().connect() as conn:
            r = conn.execute(f"CREATE DATABASE {name}")
            if not r.ok and 1801 not in r.error_numbers:  # 1801: it exists already
                raise RuntimeError(f"cannot create {name}: {r.text()}")
        return name


class ShimBackend(SimBackend):
    """vdisim's native ``libsqlvdi.so`` (ctypes) + a vdisim engine process."""

    name = "shim"
    capabilities = SHIM_CAPABILITIES

    def __init__(self, *, library: str | None = None, build_dir: str | None = None,
                 engine_address: str | None = None, seed: int = 0,
                 record_dir: str | None = None) -> None:
        super().__init__(engine_address=engine_address, seed=seed)
        self.capabilities = self.capabilities - {Capability.SECONDARY_PROCESS}
        self._server = ShimServer(self)
        self._library = library
        self._build_dir = build_dir
        self._api: LinuxVdi | None = None
        self._native: list[NativeClient] = []
        self.recorder = TraceRecorder(record_dir) if record_dir else None

    @property
    def api(self) -> LinuxVdi:
        if self._api is None:
            self._api = LinuxVdi(self._library or _shim_library(self._build_dir))
        return self._api

    def open(self) -> None:
        _ = self.api
        super().open()

    def close(self) -> None:
        for c in self._native:
            c.release()
        self._native.clear()
        super().close()

    def _on_call(self, call: str, args: dict[str, Any], hr: int, out: dict[str, Any]) -> None:
        if call == "create" and hr == 0:
            self._remember(str(args["name"]), None)
        if self.recorder is not None:
            self.recorder.on_call(call, args, hr, out)

    def new_client(self) -> ClientSide:
        c = NativeClient(self.api, on_call=self._on_call)
        self._native.append(c)
        return c

    def new_secondary(self) -> ClientSide:
        return self.new_client()  # same process: no SECONDARY_PROCESS

    def retire(self, client: ClientSide) -> None:
        if isinstance(client, NativeClient):
            client.release()
            if client in self._native:
                self._native.remove(client)
            return
        super().retire(client)

    def describe(self) -> Mapping[str, str]:
        return {**super().describe(), "library": self.api.path}


def shim_backend(**options: Any) -> ShimBackend:
    """``BACKENDS["shim"]``: options ``library``, ``build_dir``, ``engine_address``, ``seed``,
    ``record_dir`` (default ``$VDISIM_LIVE_RECORD``)."""
    options.setdefault("record_dir", os.environ.get("VDISIM_LIVE_RECORD") or None)
    return ShimBackend(**options)


# ---------------------------------------------------------------------------------------------
# live: configuration


class LiveConfig:
    """Live-mode settings from keyword options, else the environment."""

    def __init__(self, env: Mapping[str, str] | None = None, **options: Any) -> None:
        env = os.environ if env is None else env

        def get(key: str, var: str, default: str | None = None) -> str | None:
            v = options.get(key)
            if v is None:
                v = env.get(var) or default
            return None if v is None else str(v)

        self.server = get("server", "VDISIM_LIVE_SERVER")
        self.user = get("user", "VDISIM_LIVE_USER")
        self.password = get("password", "VDISIM_LIVE_PASSWORD")
        pw_file = get("password_file", "VDISIM_LIVE_PASSWORD_FILE")
        if self.password is None and pw_file:
            with contextlib.suppress(OSError):
                self.password = Path(pw_file).read_text().strip()
        self.library = get("library", "VDISIM_LIVE_LIBSQLVDI", DEFAULT_LIBSQLVDI) or ""
        self.agent = get("agent", "VDISIM_LIVE_AGENT")
        self.driver = get("driver", "VDISIM_LIVE_DRIVER")
        self.record_dir = get("record_dir", "VDISIM_LIVE_RECORD")
        self.db_prefix = get("db_prefix", "VDISIM_LIVE_DB_PREFIX", "vdisim_live_") or ""
        self.timeout_s = float(get("timeout_s", "VDISIM_LIVE_TIMEOUT_S", "15") or 15)

    def host_port(self) -> tuple[str, int]:
        assert self.server
        s = self.server.strip()
        if "," in s:
            host, _, port = s.partition(",")
        elif s.count(":") == 1:
            host, _, port = s.partition(":")
        else:
            host, port = s, "1433"
        return host.strip() or "127.0.0.1", int(port.strip() or 1433)

    def missing(self) -> list[str]:
        """What is not configured, as skip reasons (secrets are never printed)."""
        out = []
        if not self.server:
            out.append("VDISIM_LIVE_SERVER is not set (host[,port] of a SQL Server)")
        if not self.user:
            out.append("VDISIM_LIVE_USER is not set (a sysadmin login)")
        if self.password is None:
            out.append("VDISIM_LIVE_PASSWORD (or VDISIM_LIVE_PASSWORD_FILE) is not set")
        if not self.agent and not os.path.exists(self.library):
            out.append(f"{self.library} does not exist (set VDISIM_LIVE_LIBSQLVDI, or "
                       "VDISIM_LIVE_AGENT to run the VDI side inside the SQL Server container)")
        return out


# ---------------------------------------------------------------------------------------------
# live: the T-SQL side


def _driver_module(name: str | None) -> tuple[str, Any]:
    """(name, module) of the first importable driver (pymssql, then python-tds)."""
    errors = []
    for cand in ([name] if name else ["pymssql", "pytds"]):
        try:
            return cand, __import__(cand)
        except ImportError as exc:
            errors.append(f"{cand}: {exc}")
    raise LiveUnavailable("no SQL Server driver importable (pip install pymssql): "
                          + "; ".join(errors))


_ERR_NUM = re.compile(r"\b(?:Msg|number)[ =]?(\d{3,6})", re.IGNORECASE)


class SqlConnection:
    """One autocommit connection through pymssql or python-tds.  ``run`` drains every result
    set and message and returns (ok, error numbers, text)."""

    def __init__(self, cfg: LiveConfig, driver: tuple[str, Any], database: str = "master"
                 ) -> None:
        self.kind, mod = driver
        self.cursor: Any = None
        host, port = cfg.host_port()
        self.messages: list[str] = []
        if self.kind == "pymssql":
            self.conn = mod.connect(server=host, port=port, user=cfg.user,
                                    password=cfg.password, database=database, autocommit=True,
                                    login_timeout=int(cfg.timeout_s))
            self.conn._conn.set_msghandler(self._pymssql_message)
        else:
            self.conn = mod.connect(dsn=host, port=port, user=cfg.user, password=cfg.password,
                                    database=database, autocommit=True,
                                    login_timeout=cfg.timeout_s)
        self.spid = int(self.query("SELECT @@SPID")[0][0])

    def _pymssql_message(self, msgstate: int, severity: int, srvname: str, procname: str,
                         line: int, msgtext: Any) -> None:
        text = msgtext.decode() if isinstance(msgtext, bytes) else str(msgtext)
        self.messages.append(text)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        self.cursor = cur
        cur.execute(sql)
        rows: list[tuple[Any, ...]] = []
        while True:
            with contextlib.suppress(Exception):
                rows.extend(cur.fetchall())
            if not cur.nextset():
                break
        return rows

    def run(self, sql: str) -> StatementOutcome:
        try:
            self.query(sql)
        except Exception as exc:  # the driver's error carries the SQL Server error numbers
            nums = [int(n) for n in _ERR_NUM.findall(" ".join(str(a) for a in exc.args))]
            number = getattr(exc, "number", None) or getattr(exc, "msg_no", None)
            if isinstance(number, int) and number not in nums:
                nums.insert(0, number)
            if exc.args and isinstance(exc.args[0], int) and exc.args[0] not in nums:
                nums.insert(0, exc.args[0])
            return StatementOutcome(False, tuple(nums), "\n".join([*self.messages, str(exc)]))
        return StatementOutcome(True, (), "\n".join(self.messages))

    def cancel(self) -> None:
        """The driver's own cancel (ATTENTION), where KILL is not available."""
        with contextlib.suppress(Exception):
            if self.kind == "pymssql":
                self.conn._conn.cancel()
            elif self.cursor is not None:
                self.cursor.cancel()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def _copy_only(sql: str) -> str:
    """Live backups never break the database's backup chain (live-mode.md §3.2)."""
    if re.match(r"\s*BACKUP\s+DATABASE\b", sql, re.IGNORECASE) and "COPY_ONLY" not in sql.upper():
        return sql + (", COPY_ONLY" if re.search(r"\bWITH\b", sql, re.IGNORECASE)
                      else " WITH COPY_ONLY")
    return sql


class _LiveStatement(StatementRun):
    def __init__(self, server: LiveServer, sql: str) -> None:
        self._server = server
        self._outcome: StatementOutcome | None = None
        self._conn: SqlConnection | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sql,), daemon=True)
        self._thread.start()
        self._ready.wait(server.cfg.timeout_s)

    def _run(self, sql: str) -> None:
        try:
            self._conn = self._server.connect()
        except Exception as exc:
            self._outcome = StatementOutcome(False, (), f"connection failed: {exc}")
            self._ready.set()
            return
        self._ready.set()
        try:
            self._outcome = self._conn.run(sql)
        finally:
            self._conn.close()

    def wait(self, timeout_s: float) -> StatementOutcome | None:
        self._thread.join(timeout_s)
        return None if self._thread.is_alive() else self._outcome

    def cancel(self) -> None:
        """KILL the statement's session from another connection (a reliable ATTENTION)."""
        conn = self._conn
        if conn is not None and self._thread.is_alive():
            if not self._server.run_admin(f"KILL {int(conn.spid)}").ok:
                conn.cancel()


class LiveServer(ServerSide):
    def __init__(self, cfg: LiveConfig, recorder: TraceRecorder | None) -> None:
        self.cfg = cfg
        self.driver: tuple[str, Any] | None = None
        self.recorder = recorder
        self.databases: list[str] = []
        self.version = ""

    def connect(self, database: str = "master") -> SqlConnection:
        assert self.driver is not None
        return SqlConnection(self.cfg, self.driver, database)

    def run_admin(self, sql: str) -> StatementOutcome:
        conn = self.connect()
        try:
            return conn.run(sql)
        finally:
            conn.close()

    def start_statement(self, sql: str) -> StatementRun:
        sql = _copy_only(sql)
        if self.recorder is not None:
            self.recorder.on_statement(sql)
        return _LiveStatement(self, sql)

    def scratch_database(self) -> str:
        if not self.databases:
            name = f"{self.cfg.db_prefix}{uuid.uuid4().hex[:12]}"
            out = self.run_admin(f"CREATE DATABASE [{name}]")
            if not out.ok:
                raise LiveUnavailable(f"cannot create scratch database {name}: {out.text}")
            self.databases.append(name)
        return self.databases[0]

    def drop_databases(self) -> None:
        for name in self.databases:
            if not name.startswith(self.cfg.db_prefix):
                continue  # only ever drop what we created, with our prefix
            self.run_admin(f"ALTER DATABASE [{name}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE")
            self.run_admin(f"DROP DATABASE [{name}]")
        self.databases.clear()


# ---------------------------------------------------------------------------------------------
# live: the VDI side in another process (inside the SQL Server container)


class AgentVdiClient(_OpsClient):
    """A NativeClient living in an agent process started by ``VDISIM_LIVE_AGENT`` (JSON lines
    on its stdin/stdout, the same operations as the sim backend's secondary agent)."""

    def __init__(self, command: str, library: str,
                 on_call: Callable[[str, dict[str, Any], int, dict[str, Any]], None] | None = None
                 ) -> None:
        self._on_call = on_call
        argv = shlex.split(command)
        if "--library" not in argv:
            argv += ["--library", library]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=0)
        self._lock = threading.Lock()
        self._buf = b""

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        import select

        with self._lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            try:
                self.proc.stdin.write(json.dumps({"op": op, "args": args}).encode() + b"\n")
            except OSError as exc:
                raise AgentError(f"live agent: {exc}") from exc
            deadline = time.monotonic() + 60
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
                if not r:
                    self.proc.kill()
                    raise AgentError("live agent did not answer in time (killed)")
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AgentError("live agent exited")
                self._buf += chunk
            line, _, self._buf = self._buf.partition(b"\n")
        reply = json.loads(line)
        if "error" in reply:
            raise AgentError(f"live agent: {reply['error']}")
        result = dict(reply["result"])
        if self._on_call is not None:
            self._note(op, args, result)
        return result

    def _note(self, op: str, args: dict[str, Any], r: dict[str, Any]) -> None:
        """Show the call to the trace recorder in NativeClient's vocabulary."""
        assert self._on_call is not None
        hr = int(r.get("hr", 0))
        a: dict[str, Any] = {"client": id(self)}
        out: dict[str, Any] = {}
        if op == "create":
            cfg = args.get("config") or {}
            a.update(name=args["name"], device_count=cfg.get("device_count", 0),
                     features=cfg.get("features", 0))
        elif op == "get_configuration" and r.get("config"):
            from vdisim.protocol.records import VDConfig

            out["config"] = VDConfig(**r["config"]).pack().hex()
        elif op == "open_device":
            a["name"] = args["name"]
            out["device"] = r.get("device")
        elif op == "get_command":
            a["device"] = args["device"]
            if r.get("command"):
                out = {k: r["command"][k] for k in ("code", "size", "position")}
        elif op == "complete_command":
            a.update(device=args["device"], code=args["completion_code"],
                     bytes=args.get("bytes_transferred", 0))
        self._on_call(op, a, hr, out)

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self._call("release")
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class _AgentOps:
    """The agent's side: ClientOps-style calls on a NativeClient."""

    def __init__(self, api: VdiApi) -> None:
        self.api = api
        self.client = NativeClient(api)

    def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        c = self.client
        if op == "create":
            from vdisim.protocol.records import VDConfig

            return {"hr": c.create(args["name"], VDConfig(**args["config"]), args.get("instance"))}
        if op == "get_configuration":
            hr, cfg = c.get_configuration(int(args["timeout_ms"]))
            import attrs

            return {"hr": hr, "config": attrs.asdict(cfg) if cfg else None}
        if op == "open_device":
            hr, dev = c.open_device(args["name"])
            return {"hr": hr, "device": dev}
        if op == "get_command":
            hr, view = c.get_command(int(args["device"]), int(args["timeout_ms"]))
            return {"hr": hr, "command": None if view is None else {
                "handle": view.handle, "code": view.code, "size": view.size,
                "position": view.position, "has_buffer": view.has_buffer}}
        if op == "complete_command":
            return {"hr": c.complete_command(int(args["device"]), int(args["command"]),
                                             int(args["completion_code"]),
                                             int(args.get("bytes_transferred", 0)),
                                             int(args.get("position", 0)))}
        if op in ("signal_abort", "close"):
            return {"hr": getattr(c, op)()}
        if op == "open_in_secondary":
            return {"hr": c.open_in_secondary(args["name"], args.get("instance"))}
        if op == "read_buffer":
            return {"hr": 0, "data": c.read_buffer(int(args["command"]), int(args.get("offset", 0)),
                                                   args.get("length")).hex()}
        if op == "write_buffer":
            data = bytes.fromhex(args["data"])
            c.write_buffer(int(args["command"]), data, int(args.get("offset", 0)))
            return {"hr": 0, "written": len(data)}
        if op == "get_buffer_handle":
            hr, handle = c.get_buffer_handle(int(args["command"]))
            return {"hr": hr, "handle": handle}
        if op == "map_buffer_handle":
            hr, mapped = c.map_buffer_handle(int(args["handle"]))
            return {"hr": hr, "mapped": mapped}
        if op == "release":
            c.release()
            self.client = NativeClient(self.api)
            return {"hr": 0}
        raise ValueError(f"unknown operation {op!r}")


def agent_main(library: str) -> int:
    """``python -m conformance.backends.live --agent [--library PATH]``: serve one client
    object on stdin/stdout.  libsqlvdi prints diagnostics on stdout, so the protocol uses a
    duplicate of fd 1 and fd 1 becomes stderr (live-mode.md §1.3); umask 0 as the sample."""
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    os.umask(0)
    ops = _AgentOps(LinuxVdi(library))
    for raw in sys.stdin.buffer:
        try:
            req = json.loads(raw)
            reply: dict[str, Any] = {"result": ops.call(str(req["op"]), dict(req["args"]))}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        proto.write(json.dumps(reply).encode() + b"\n")
    ops.client.release()
    return 0


# ---------------------------------------------------------------------------------------------
# live: the backend


class LiveBackend(Backend):
    """Microsoft's libsqlvdi.so (ctypes, here or in an agent) + a real SQL Server (T-SQL)."""

    name = "live"
    capabilities = LIVE_CAPABILITIES

    def __init__(self, cfg: LiveConfig) -> None:
        self.cfg = cfg
        self.recorder = TraceRecorder(cfg.record_dir) if cfg.record_dir else None
        self._server = LiveServer(cfg, self.recorder)
        self._api: LinuxVdi | None = None
        self._clients: list[ClientSide] = []

    def preflight(self) -> str | None:
        """None when live mode can run, else the precise reason it cannot."""
        missing = self.cfg.missing()
        if missing:
            return "live backend: " + "; ".join(missing)
        try:
            self._server.driver = _driver_module(self.cfg.driver)
        except LiveUnavailable as exc:
            return f"live backend: {exc}"
        host, port = self.cfg.host_port()
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            return f"live backend: cannot reach SQL Server at {host},{port}: {exc}"
        try:
            conn = self._server.connect()
        except Exception as exc:
            return f"live backend: login to {host},{port} as {self.cfg.user} failed: {exc}"
        try:
            self._server.version = str(conn.query("SELECT @@VERSION")[0][0]).splitlines()[0]
            if "vdisim" not in self._server.version:  # vdisim's TDS endpoint has no logins
                rows = conn.query("SELECT IS_SRVROLEMEMBER('sysadmin')")
                if not rows or rows[0][0] != 1:
                    return (f"live backend: login {self.cfg.user} is not sysadmin (BACKUP to a "
                            "virtual device needs sysadmin)")
        except Exception as exc:
            return f"live backend: cannot query the server: {exc}"
        finally:
            conn.close()
        if not self.cfg.agent:
            try:
                self._api = LinuxVdi(self.cfg.library)
            except OSError as exc:
                return f"live backend: cannot load {self.cfg.library}: {exc}"
        return None

    def open(self) -> None:
        reason = self.preflight()
        if reason is not None:
            raise LiveUnavailable(reason)

    def close(self) -> None:
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.release()
        self._clients.clear()
        if self._server.driver is not None:
            with contextlib.suppress(Exception):
                self._server.drop_databases()

    def _on_call(self, call: str, args: dict[str, Any], hr: int, out: dict[str, Any]) -> None:
        if self.recorder is not None:
            self.recorder.on_call(call, args, hr, out)

    def new_client(self) -> ClientSide:
        c: ClientSide
        if self.cfg.agent:
            c = AgentVdiClient(self.cfg.agent, self.cfg.library, on_call=self._on_call)
        else:
            if self._api is None:
                raise LiveUnavailable("live backend is not open")
            c = NativeClient(self._api, on_call=self._on_call)
        self._clients.append(c)
        return c

    def new_secondary(self) -> ClientSide:
        return self.new_client()

    @property
    def server(self) -> ServerSide:
        return self._server

    def describe(self) -> Mapping[str, str]:
        return {"library": self.cfg.library, "server": self.cfg.server or "",
                "agent": self.cfg.agent or "", "version": self._server.version}


def live_backend(**options: Any) -> LiveBackend:
    """``BACKENDS["live"]``: options ``server``, ``user``, ``password``, ``password_file``,
    ``library``, ``agent``, ``driver``, ``record_dir``, ``db_prefix``, ``timeout_s``; each
    falls back to its ``VDISIM_LIVE_*`` environment variable."""
    env = options.pop("env", None)
    return LiveBackend(LiveConfig(env, **options))


def skip_reason(**options: Any) -> str | None:
    """Why live mode cannot run here (None: it can).  Does not keep anything open."""
    backend = live_backend(**options)
    return backend.preflight()


def _main(argv: list[str]) -> int:
    if argv[:1] == ["--agent"]:
        lib = DEFAULT_LIBSQLVDI
        if "--library" in argv:
            lib = argv[argv.index("--library") + 1]
        return agent_main(lib)
    reason = skip_reason()
    print(reason or "live mode is configured and the server answers")
    return 0 if reason is None else 1


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
