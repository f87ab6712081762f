"""The engine process: ``vdisim engine serve``.

Listens on a statement address (AF_UNIX path or host:port); each connection gets a thread that
runs its requests one at a time, like a SQL Server session; several connections run statements
concurrently.  A statement never ends in a Python traceback: unexpected failures become SQL
error 3013-family messages and are logged to stderr.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any

from vdisim.engine import operations, tsql, wire, wirelog
from vdisim.engine.database import Database
from vdisim.engine.plan import Plan, PlanError
from vdisim.engine.results import Column, Rowset
from vdisim.engine.scripting import ScriptError, ScriptHost
from vdisim.engine.sqlerrors import SqlError, SqlMessage, message, sql_error

if TYPE_CHECKING:
    from vdisim.engine.tds.endpoint import TdsConfig

VERSION_STRING = ("Microsoft SQL Server 2022 (RTM) - 16.0.1000.6 (X64) (vdisim emulation)\n"
                  "\tvdisim 0.1.0 on Linux")


class EngineState:
    """Everything the engine knows: its databases and data directory."""

    def __init__(self, data_dir: str, seed: int = 0) -> None:
        self.data_dir = data_dir
        os.makedirs(data_dir, exist_ok=True)
        self.seed = seed
        self.catalog: dict[str, Database] = {}
        self.lock = threading.RLock()  # catalog changes
        self.db_locks: dict[str, threading.Lock] = {}
        self._next_db_id = 5
        self.armory = wirelog.Armory()  # plans the client harness armed, by set name

    def lookup(self, name: str) -> Database:
        with self.lock:
            for key, db in self.catalog.items():
                if key.lower() == name.lower():
                    return db
        raise sql_error(911, name)

    def db_lock(self, name: str) -> threading.Lock:
        with self.lock:
            return self.db_locks.setdefault(name.lower(), threading.Lock())

    def create_empty(self, name: str, n_pages: int) -> Database:
        """A database object to restore into (RESTORE ... WITH SNAPSHOT of a missing db)."""
        with self.lock:
            db = Database.create(name, n_pages, self.seed, self._next_db_id)
            self._next_db_id += 1
            self.catalog[name] = db
            return db

    def create(self, name: str, size_mb: int | None, seed: int | None) -> Database:
        with self.lock:
            if any(k.lower() == name.lower() for k in self.catalog):
                raise sql_error(1801, name)
            pages = max(1, (size_mb or 8) * 1024 * 1024 // 8192)
            db = Database.create(name, pages, self.seed if seed is None else seed,
                                 self._next_db_id)
            self._next_db_id += 1
            self.catalog[name] = db
            return db


class Session:
    """One client connection."""

    def __init__(self, engine: EngineState, stream: wire.Stream) -> None:
        self.engine = engine
        self.stream = stream
        self.cancel = threading.Event()
        self.script = ScriptHost()
        self.in_transaction = False
        self.database = "master"
        self.sql_text = ""

    def emit(self, msg: SqlMessage) -> None:
        with contextlib.suppress(OSError):
            self.stream.send(wire.Msg.MESSAGE, msg.to_json())

    def rowset(self, rs: Rowset) -> None:
        with contextlib.suppress(OSError):
            self.stream.send(wire.Msg.ROWSET, rs.to_json())

    def run(self) -> None:
        try:
            while True:
                try:
                    kind, payload = self.stream.recv()
                except (EOFError, OSError, wire.WireError):
                    return
                if kind is wire.Msg.ATTENTION:
                    continue  # nothing running: ignored, as SQL Server does
                if kind is wire.Msg.SCRIPT:
                    self._script(payload)
                    continue
                if kind is wire.Msg.HARNESS:
                    self._harness(payload)
                    continue
                self._request(kind, payload)
        finally:
            self.script.dispose()
            self.stream.close()

    def _script(self, payload: bytes) -> None:
        try:
            req = wire.parse_json(payload)
            result: dict[str, Any] = self.script.call(str(req["op"]), dict(req.get("args") or {}))
        except (ScriptError, wire.WireError, KeyError, IndexError, ValueError) as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            self.stream.send(wire.Msg.SCRIPT_RESULT, result)

    def _harness(self, payload: bytes) -> None:
        try:
            result = self.engine.armory.call(dict(wire.parse_json(payload)))
        except (wire.WireError, KeyError, TypeError, ValueError) as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            self.stream.send(wire.Msg.HARNESS_RESULT, result)

    def _request(self, kind: wire.Msg, payload: bytes) -> None:
        self.cancel.clear()
        stop = threading.Event()  # per statement: a late watcher must not eat the next request
        watcher = threading.Thread(target=self._watch_attention, args=(stop,), daemon=True)
        ok, attention = True, False
        try:
            if kind is wire.Msg.EXECUTE:
                self.sql_text = payload.decode("utf-8", errors="replace")
                batch = tsql.parse_batch(self.sql_text)
                self._watching(watcher)
                for stmt in batch:
                    self.execute(stmt)
            elif kind is wire.Msg.RUN_PLAN:
                plan = Plan.from_json(wire.parse_json(payload))
                self._watching(watcher)
                operations.run_plan(self.engine, plan, self.emit, self.rowset, self.cancel)
            else:
                raise sql_error(102, kind.name)
        except SqlError as err:
            ok = False
            for m in err.messages:
                self.emit(m)
        except PlanError as exc:
            ok = False
            self.emit(SqlMessage(50000, 16, 1, f"Invalid plan: {exc}"))
        except operations.Cancelled as exc:
            ok, attention = False, True
            if exc.args:
                self.emit(message(3013, exc.args[0]))
        except Exception as exc:  # never a traceback to the client
            ok = False
            traceback.print_exc(file=sys.stderr)
            self.emit(SqlMessage(3013, 16, 1, f"Statement failed in the emulator: {exc!r}"))
        finally:
            stop.set()
        with contextlib.suppress(OSError):
            self.stream.send(wire.Msg.DONE, {"ok": ok, "attention": attention})

    def _watching(self, watcher: threading.Thread) -> None:
        watcher.start()

    def _watch_attention(self, stop: threading.Event) -> None:
        """While a statement runs, the only thing a client may send is ATTENTION."""
        import select

        sock = self.stream.sock
        while not stop.is_set():
            try:
                r, _, _ = select.select([sock], [], [], 0.1)
            except (OSError, ValueError):  # the connection was closed under us
                self.cancel.set()
                return
            if not r or stop.is_set():
                continue
            try:
                kind, _ = self.stream.recv()
            except (EOFError, OSError, wire.WireError):
                self.cancel.set()  # client gone: abort the statement
                return
            if kind is wire.Msg.ATTENTION:
                self.cancel.set()

    # ------------------------------------------------------------------ statements
    def execute(self, stmt: tsql.Statement) -> None:
        eng = self.engine
        if isinstance(stmt, tsql.Backup | tsql.Restore):
            try:
                if self.in_transaction:
                    raise sql_error(3021)
                armed = eng.armory.take(stmt)
                if armed is not None:  # the client harness armed a plan for this set
                    armed.run(stmt, self.sql_text, lambda plan: operations.run_plan(
                        eng, plan, self.emit, self.rowset, self.cancel))
                else:
                    operations.run_statement(eng, stmt, self.emit, self.rowset, self.cancel)
            except SqlError as err:  # SQL Server ends every failed BACKUP/RESTORE with 3013
                if err.messages[-1].number != 3013:
                    label = tsql.statement_label(stmt)
                    raise SqlError([*err.messages, message(3013, label)]) from None
                raise
        elif isinstance(stmt, tsql.CreateDatabase):
            eng.create(stmt.name, stmt.size_mb, stmt.seed)
        elif isinstance(stmt, tsql.DropDatabase):
            with eng.lock:
                key = next((k for k in eng.catalog if k.lower() == stmt.name.lower()), None)
                if key is None:
                    if not stmt.if_exists:
                        raise sql_error(3701, stmt.name)
                else:
                    del eng.catalog[key]
        elif isinstance(stmt, tsql.SetRecovery):
            model = "FULL" if stmt.model == "BULK_LOGGED" else stmt.model  # bulk-logged ~ full [I]
            eng.lookup(stmt.name).set_recovery_model(model)
        elif isinstance(stmt, tsql.Workload):
            db = eng.lookup(stmt.database)
            with eng.db_lock(db.name):
                db.run_workload(stmt.changes, stmt.seed if stmt.seed is not None else eng.seed)
        elif isinstance(stmt, tsql.Checksum):
            db = eng.lookup(stmt.database)
            self.rowset(Rowset((Column("database", "nvarchar(128)"),
                                Column("sha256", "nvarchar(64)"),
                                Column("pages", "int"), Column("lsn", "numeric(25,0)"),
                                Column("state", "nvarchar(60)")),
                               ((db.name, db.content_hash(), db.n_pages, db.lsn,
                                 db.state),)))
        elif isinstance(stmt, tsql.ListDatabases):
            with eng.lock:
                rows = tuple((d.name, d.n_pages, d.state, d.recovery_model)
                             for d in eng.catalog.values())
            self.rowset(Rowset((Column("name", "nvarchar(128)"), Column("pages", "int"),
                                Column("state_desc", "nvarchar(60)"),
                                Column("recovery_model_desc", "nvarchar(60)")), rows))
        elif isinstance(stmt, tsql.Transaction):
            if stmt.action == "begin":
                self.in_transaction = True
            else:
                self.in_transaction = False
        elif isinstance(stmt, tsql.Use):
            if stmt.database.lower() not in ("master", "msdb", "tempdb", "model"):
                eng.lookup(stmt.database)
            self.database = stmt.database
            self.emit(SqlMessage(5701, 0, 1,
                                 f"Changed database context to '{stmt.database}'."))
        elif isinstance(stmt, tsql.SetOption):
            pass
        elif isinstance(stmt, tsql.Select):
            self.rowset(self._select(stmt))
        else:  # pragma: no cover - the parser returns only the types above
            raise sql_error(102, type(stmt).__name__)

    def _select(self, stmt: tsql.Select) -> Rowset:
        values: list[Any] = []
        cols: list[Column] = []
        for i, expr in enumerate(stmt.expressions):
            alias = stmt.aliases[i] or ""
            up = expr.upper()
            if up == "@@VERSION":
                v: Any = VERSION_STRING
                t = "nvarchar(300)"
            elif up == "@@SPID":
                v, t = 51 + threading.get_ident() % 1000, "smallint"
            elif up == "@@SERVERNAME":
                v, t = socket.gethostname().upper(), "nvarchar(128)"
            elif up == "@@MAX_PRECISION":
                v, t = 38, "tinyint"
            elif up.startswith("SERVERPROPERTY("):
                prop = expr[expr.index("(") + 1:-1].strip("N'\"")
                v = {"productversion": "16.0.1000.6", "edition": "Developer Edition (64-bit)",
                     "engineedition": 3, "productlevel": "RTM",
                     "servername": socket.gethostname().upper(),
                     "machinename": socket.gethostname().upper(),
                     "ishadrenabled": 0, "collation": "SQL_Latin1_General_CP1_CI_AS"
                     }.get(prop.lower())
                t = "sql_variant"
            elif up == "NULL":
                v, t = None, "int"
            elif expr.startswith(("N'", "'")):
                v, t = expr.split("'", 1)[1][:-1].replace("''", "'"), "varchar(8000)"
            else:
                try:
                    v, t = int(expr), "int"
                except ValueError:
                    v, t = float(expr), "numeric(38,10)"
            values.append(v)
            cols.append(Column(alias, t))
        return Rowset(tuple(cols), (tuple(values),))


def serve(address: str, data_dir: str, seed: int = 0, quiet: bool = False,
          tds: TdsConfig | None = None) -> int:
    """Run an engine until SIGTERM/SIGINT.  Returns the exit status.  ``tds``: a
    :class:`vdisim.engine.tds.endpoint.TdsConfig` to also listen for TDS clients."""
    from vdisim.transport.segments import sweep_stale

    sweep_stale()
    engine = EngineState(data_dir, seed)
    tds_listener = None
    if tds is not None:  # bound first: its address file exists once the engine accepts
        from vdisim.engine.tds.endpoint import TdsListener

        tds_listener = TdsListener(engine, tds)
    family, target = wire.parse_address(address)
    lsock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_UNIX:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        lsock.bind(target)  # 0600 before listen(): nobody can connect before that, and the
        os.chmod(target, 0o600)  # umask is left alone (it is per process, not per thread)
    else:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(target)
    lsock.listen(64)
    if family == socket.AF_INET:
        host, port = lsock.getsockname()[:2]
        address = f"{host}:{port}"
    if not quiet:
        print(f"vdisim engine listening on {address} (data {data_dir})", flush=True)
    if tds_listener is not None:
        tds_address = tds_listener.start()
        if not quiet:
            print(f"vdisim TDS endpoint listening on {tds_address} "
                  f"({'TLS available' if tds_listener.config.tls else 'no TLS'})", flush=True)
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()
        with contextlib.suppress(OSError):
            lsock.shutdown(socket.SHUT_RDWR)
        lsock.close()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                break
            session = Session(engine, wire.Stream(conn))
            threading.Thread(target=session.run, daemon=True).start()
    finally:
        from vdisim.engine.server_vds import close_all

        if tds_listener is not None:
            tds_listener.close()
        close_all()
        if family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                os.unlink(target)
    return 0


__all__ = ["EngineState", "Session", "message", "serve"]
